"""Open mmfm's HTML reports the way a reviewer on a hospital network without internet does: headless Chromium
(the system's /usr/bin/chromium through the `playwright` package's driver, never a downloaded browser) with every
request outside the report's own folder recorded and aborted.

    with OfflineBrowser() as browser:
        page = browser.open(Path("data/audit/audit-mmfm-multimodal-v1.html"))
        page.external            # URLs the page tried to reach outside its folder (aborted)
        page.broken_images       # <img> that did not decode (naturalWidth == 0)
        page.verdicts            # data-verdict of every #mmfm-verdict element
        browser.screenshot(path, png)   # full-page PNG, same rules

Used by tests/reports/test_offline_html.py and docs/screenshots.py.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 1000}


def chromium_available() -> bool:
    return Path(CHROMIUM).is_file() or shutil.which("chromium") is not None


@dataclass
class PageCheck:
    path: Path
    external: list[str] = field(default_factory=list)  # requests outside the report's folder (aborted)
    failed: list[str] = field(default_factory=list)  # requests inside the folder that did not load
    broken_images: list[str] = field(default_factory=list)
    verdicts: list[str | None] = field(default_factory=list)  # data-verdict of each #mmfm-verdict
    verdict_text: str = ""  # what a reader sees in the verdict element

    @property
    def verdict(self) -> str | None:
        return self.verdicts[0] if len(self.verdicts) == 1 else None


def verdict_json(page: Path) -> Path:
    """The JSON beside a report: same stem; an Evidently page's verdict is its folder's drift.json."""
    same = page.with_suffix(".json")
    return same if same.is_file() or not (page.parent / "drift.json").is_file() else page.parent / "drift.json"


def expected_verdict(page: Path) -> str | None:
    path = verdict_json(page)
    return json.loads(path.read_text()).get("verdict") if path.is_file() else None


def report_folder(page: Path) -> Path:
    """Where a page may load from: its folder, or for a Data Docs page its site (index.html + static/ above it)."""
    for folder in list(page.parents)[:5]:
        if (folder / "index.html").is_file() and (folder / "static").is_dir():
            return folder
    return page.parent


class OfflineBrowser:
    """One Chromium for many pages; `root` (default: each page's folder) is where file:// requests may go."""

    def __init__(self, root: Path | None = None):
        self.root = None if root is None else Path(root).resolve()

    def __enter__(self) -> OfflineBrowser:
        from playwright.sync_api import sync_playwright  # lazy: only a browser check pays for the driver

        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        return self

    def __exit__(self, *exc) -> None:
        self._browser.close()
        self._pw.stop()

    def _page(self, path: Path, check: PageCheck):
        allowed = (self.root or report_folder(path)).as_uri()
        context = self._browser.new_context(viewport=VIEWPORT, offline=True, java_script_enabled=True)
        page = context.new_page()

        def route(r):
            url = r.request.url
            if url.startswith("data:") or url.startswith("blob:") or url.startswith(allowed + "/") \
                    or url == path.as_uri() or url.startswith(path.as_uri() + "#"):
                r.continue_()
            else:
                check.external.append(url)
                r.abort()

        page.route("**/*", route)
        page.on("requestfailed", lambda req: None if req.url in check.external else check.failed.append(req.url))
        page.goto(path.as_uri(), wait_until="load", timeout=60_000)
        page.wait_for_timeout(300)  # scripts that draw after load (Evidently's React dashboard)
        return context, page

    def open(self, path: Path) -> PageCheck:
        path = Path(path).resolve()
        check = PageCheck(path)
        context, page = self._page(path, check)
        try:
            check.broken_images = page.eval_on_selector_all(
                "img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0))"
                       ".map(e => (e.getAttribute('src') || '').slice(0, 80))")
            check.verdicts = page.eval_on_selector_all("[id='mmfm-verdict']",
                                                       "els => els.map(e => e.getAttribute('data-verdict'))")
            if check.verdicts:
                check.verdict_text = page.inner_text("[id='mmfm-verdict']")
        finally:
            context.close()
        return check

    def screenshot(self, path: Path, png: Path) -> PageCheck:
        path = Path(path).resolve()
        check = PageCheck(path)
        context, page = self._page(path, check)
        try:
            Path(png).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=True)
        finally:
            context.close()
        return check


# ------------------------------------------------------------------------------------------------ a workspace's pages
DATA_DOCS = Path("data/reports/gx/gx/uncommitted/data_docs/local_site")


def _newest(paths) -> Path | None:
    paths = [p for p in paths if p.is_file()]
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def report_pages(workspace: Path) -> dict[str, Path | None]:
    """The newest page of each report a reviewer opens: model card (an MLflow run artifact), audit report, Data Docs
    index, drift report (mmfm's per-site page). None where the workspace has none yet."""
    ws = Path(workspace)
    monitoring = ws / "data" / "monitoring"
    return {"model_card": _newest(ws.glob(".mmfm/**/card/model_card.html")),
            "audit_report": _newest((ws / "data" / "audit").glob("*.html")),
            "data_docs": _newest([ws / DATA_DOCS / "index.html"]),
            "drift_report": _newest(monitoring.glob("*/drift.html")) or _newest(monitoring.glob("*/tabular.html"))}


def every_report_page(workspace: Path) -> list[Path]:
    """Every HTML page mmfm writes in a workspace: cards, audit reports, every Data Docs page, drift pages."""
    ws = Path(workspace)
    found = [*ws.glob(".mmfm/**/card/*.html"), *(ws / "data" / "audit").glob("*.html"),
             *(ws / DATA_DOCS).rglob("*.html"), *(ws / "data" / "monitoring").glob("*/*.html")]
    return sorted(set(found))
