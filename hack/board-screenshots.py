"""docs/board-*.png: the board's main views, photographed at the end of `make demo`'s story.

Runs the demo (a local control plane, the operator, the shop's dev, staging and prod, the
downgrade, history, an exception), then opens its board in headless Chromium and saves the
grid, compare of the shop Blueprint and prod's page. Needs chromium and chromedriver
(hack/install-browser.sh).

    .venv/bin/python hack/board-screenshots.py    # or: make board-images
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from browser import browser_paths, chrome  # noqa: E402

from driftguard.cli import demo  # noqa: E402

VIEWS = {
    "board-grid.png": ("", 1400, 720),
    "board-compare.png": ("compare?blueprint=shop", 1400, 1000),
    "board-environment.png": ("env/platform/prod", 1400, 1500),
}


def shoot(url: str) -> None:
    found = browser_paths()
    if found is None:
        raise SystemExit("chromium and chromedriver missing: run hack/install-browser.sh")
    for name, (path, width, height) in VIEWS.items():
        browser = chrome(*found, width=width, height=height)
        try:
            browser.get(url + path)
            live = "return document.getElementById('live').dataset.live === 'on'"
            deadline = time.monotonic() + 10
            while not browser.execute_script(live) and time.monotonic() < deadline:
                time.sleep(0.05)  # the footer says "Live" once the event stream is open
            browser.save_screenshot(str(ROOT / "docs" / name))
        finally:
            browser.quit()
        print(f"wrote docs/{name}", flush=True)


if __name__ == "__main__":
    sys.exit(demo.main(then=shoot))
