"""Headless Chromium for the tests that drive a real page (the user study, the app): found, or the test skipped
locally and failed under CI, where .ci/run installs it."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver); skips locally, fails under CI, when either or selenium is missing."""
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    missing = [what for what, ok in (("chromium", chromium), ("chromedriver (Debian: chromium-driver)", driver),
                                     ("the selenium package", importlib.util.find_spec("selenium"))) if not ok]
    if missing:
        unavailable(f"the headless browser test needs {', '.join(missing)}", ci=".ci/run installs them",
                    local="apt-get install chromium chromium-driver; pip install selenium")
    return chromium, driver


def unavailable(reason: str, ci: str, local: str) -> NoReturn:
    """A test's browser or optional package is missing: fail under CI (where .ci/run installs everything the suite
    needs, `ci` says how), skip elsewhere (`local` says how to get it)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; {ci}")
    pytest.skip(f"{reason} ({local})")


def headless_chrome(downloads: Path | None = None, size: tuple[int, int] = (1200, 900)):
    """A selenium Chrome driver on headless Chromium (downloads into `downloads`, without asking)."""
    chromium, chromedriver = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={size[0]},{size[1]}"):
        options.add_argument(arg)
    if downloads is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(chromedriver), options=options)
