"""Which Prefect task runner a flow maps its tasks on: threads (the default), a Dask cluster or a Ray cluster.

Dask and Ray start a local cluster for the flow, listening on loopback only and shut down when the flow ends, or join
the existing cluster named by MMFM_DASK_ADDRESS / MMFM_RAY_ADDRESS (docs/scale-out.md). Their workers import `flows`
and `tasks` from the installed package and read MMFM_PSEUDONYM_KEY from their own environment (inherited from this
process on a local cluster; set on the workers of an existing one): the key is never a task parameter, so it never
reaches Prefect's API or a cluster's object store. Task arguments do travel to the workers (a landed extract's
manifest, with the extract's relative paths; landing and staged paths): an existing cluster belongs in the same zone
as the workspace (docs/privacy.md). Prefect's API stores none of them, only which task ran with which inputs.
"""

from __future__ import annotations

import os
import sys

from prefect.task_runners import ThreadPoolTaskRunner

RUNNERS = ("threads", "dask", "ray")


def task_runner(runner: str, workers: int = 2):
    """The flow's task runner: `threads`, `dask` or `ray`, with `workers` threads, processes or CPUs.

    prefect_dask and prefect_ray are imported on demand: they are optional and slow to import.
    """
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "dask":
        return _dask(workers)
    if runner == "ray":
        return _ray(workers)
    raise ValueError(f"--runner must be threads, dask or ray, not {runner!r}")


def _dask(workers: int):
    from prefect_dask import DaskTaskRunner  # lazy: optional engine (~1.6 s), only for --runner dask

    if address := os.environ.get("MMFM_DASK_ADDRESS"):
        return DaskTaskRunner(address=address)
    no_dashboard()
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": None})


# distributed starts an HTTP server on its scheduler and workers even when the dashboard is off (dashboard_address=None
# below: no Bokeh dashboard); with no routes it serves nothing (no status pages, metrics or info), on loopback only
NO_HTTP_ROUTES = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}


def no_dashboard() -> None:
    """No dashboard and no HTTP pages on a local Dask cluster (docs/scale-out.md); set in this process's Dask config,
    which a local cluster's scheduler reads and its nannies pass to their workers."""
    import dask

    dask.config.set(NO_HTTP_ROUTES)


def _ray(workers: int):
    from prefect_ray import RayTaskRunner  # lazy: optional engine (~1 s), only for --runner ray; ray loads on first use

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address := os.environ.get("MMFM_RAY_ADDRESS"):
        return RayTaskRunner(address=address)
    # Ray replaces a loopback node address by the host's routable one (and its gRPC servers then listen on every
    # interface) unless this switch is off; ray reads it once, when it is imported
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError("--runner ray: ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set, so a "
                           "local cluster would listen on every interface; set it before importing ray")
    return RayTaskRunner(init_kwargs={"num_cpus": workers, "include_dashboard": False,
                                      "_node_ip_address": "127.0.0.1", "log_to_driver": False,
                                      "configure_logging": False})
