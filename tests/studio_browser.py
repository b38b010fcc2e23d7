"""Helpers for the studio's real-browser tests: Debian's headless Chromium driven by selenium
through the system chromedriver (nothing is downloaded), and the real `xnodectl studio` process."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from xnodectl import process

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces it may lack
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
REPO = Path(__file__).resolve().parent.parent


def need_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"needs Debian's chromium and chromium-driver ({', '.join(missing)} missing)")


def screenshots_dir(tmp_path: Path) -> Path:
    """Where the run writes its screenshots: $XNODECTL_SCREENSHOTS (docs/studio regenerates the
    README's), else the test's tmp dir."""
    target = os.environ.get("XNODECTL_SCREENSHOTS")
    directory = REPO / target if target else tmp_path / "screenshots"  # an absolute target wins
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextmanager
def browser(profile: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def studio(
    ws: Path, env: dict[str, str] | None = None, listen: str = "127.0.0.1:0", *extra: str
) -> Iterator[tuple[str, process.Spawned]]:
    """The real `xnodectl studio` on a free loopback port; yields (URL with token, process).
    Stopped with SIGINT (Ctrl-C), and must exit by itself."""
    argv = [sys.executable, "-m", "xnodectl", "studio", "-w", str(ws), "--listen", listen, *extra]
    proc = process.spawn(argv, env=env, stdout=process.PIPE, stderr=process.PIPE, new_session=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()
    assert url.startswith(f"http://{listen.rsplit(':', 1)[0]}:"), url
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
                raise


def wait(what: Callable[[], Any], seconds: float = 30, message: str = "") -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
        except Exception as exc:  # the page is still changing under the check: try again
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {message}: {last!r}")
