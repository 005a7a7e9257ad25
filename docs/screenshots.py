"""Full-page screenshots of what a reviewer opens in a workspace (model card, audit report, Data Docs index, drift
report), taken offline: headless Chromium with every request outside the report's folder aborted, so a picture
shows what a hospital network without internet shows.

    .venv/bin/python docs/screenshots.py --workspace demo-workspace --out screenshots/

Prints one line per page: its PNG, the verdict it carries, and anything it tried to fetch from outside or could not
show (external requests, broken images). Exit 1 when a page is missing or broke one of those rules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reports.browser import OfflineBrowser, report_pages  # noqa: E402 - after the repository is on the path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    pages, bad = report_pages(args.workspace), 0
    args.out.mkdir(parents=True, exist_ok=True)
    with OfflineBrowser() as browser:
        for name, page in pages.items():
            if page is None:
                print(f"{name}: no page in this workspace")
                bad += 1
                continue
            png = args.out / f"{name}.png"
            shot = browser.screenshot(page, png)
            check = browser.open(page)
            problems = [f"{len(shot.external)} external requests"] * bool(shot.external) \
                + [f"{len(check.broken_images)} broken images"] * bool(check.broken_images)
            bad += bool(problems)
            print(f"{name}: {png} verdict={check.verdict}" + (f" ({'; '.join(problems)})" if problems else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
