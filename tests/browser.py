"""A real headless Chromium for the explorer's tests and benchmark (Playwright drives it).

The browser is the system's (Debian's ``chromium`` package; ``.ci/run`` installs it),
never one downloaded by ``playwright install``. ``HEAR_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_ENV = "HEAR_CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Chromium flags: no sandbox (CI runs as root), a fake microphone that plays a tone and
#: is granted without a prompt, autoplay without a user gesture.
ARGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def find_chromium() -> str | None:
    """The Chromium binary to drive, or None when this machine has none."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return given if os.access(given, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def why_no_browser() -> str | None:
    """None when the browser tests can run, else the reason they cannot."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if find_chromium() is None:
        return (
            f"no Chromium found (looked for ${CHROMIUM_ENV}, {', '.join(CANDIDATES)}); "
            "install Debian's chromium package (`apt-get install chromium`; .ci/run does)"
        )
    return None


@contextmanager
def chromium(**launch: Any) -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``), closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError(why_no_browser())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=ARGS, **launch)
        try:
            yield browser
        finally:
            browser.close()
