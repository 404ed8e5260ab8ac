"""A real browser and a real board for the board's tests, screenshots and benchmark.

Chromium and chromedriver come from the Debian archive (hack/install-browser.sh, run by
`make test`); Selenium drives them with no download of its own (the driver's path is
given, so Selenium Manager never runs). `driftguard board --port 0` prints its URL once it
listens: the board is started as a process, as a person would, with a kubeconfig of its own.
"""

import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

URL = re.compile(rb"driftguard board: (http://\S+/)")


def browser_paths() -> tuple[str, str] | None:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def require_browser() -> tuple[str, str]:
    """The browser and its driver; missing, the test skips, except under CI=true: it fails."""
    found = browser_paths()
    if found is None:
        message = "chromium and chromedriver missing: run hack/install-browser.sh (apt-get)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def chrome(browser: str, driver: str, *, width: int = 1400, height: int = 900) -> webdriver.Chrome:
    options = Options()
    options.binary_location = browser
    # Headless as root in a container: no sandbox (it needs user namespaces), no /dev/shm.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(driver))


class Board:
    """A `driftguard board` process on a free port, as one kubeconfig's user."""

    def __init__(self, kubeconfig: Path, scope: Sequence[str], log: Path) -> None:
        self.kubeconfig, self.scope, self.log = kubeconfig, list(scope), log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, *, timeout: float = 30.0) -> "Board":
        binary = Path(sys.executable).parent / "driftguard"
        argv = [str(binary), "--kubeconfig", str(self.kubeconfig), "board", "--port", "0"]
        self.process = subprocess.Popen(
            [*argv, *self.scope], stdout=subprocess.PIPE, stderr=self.log.open("ab")
        )
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and selector.select(deadline - time.monotonic()):
                line = self.process.stdout.readline()
                if not line:
                    break
                found = URL.search(line)
                if found:
                    self.url = found.group(1).decode()
                    return self
        self.stop()
        raise AssertionError(f"the board did not start:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
