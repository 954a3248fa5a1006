"""Headless Chromium for the tests that check what a person sees: the demo page, the MLflow
and Prefect UIs, the offline reports.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium;
a test that needs it is skipped, saying which is missing, without them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def browser_missing() -> str | None:
    """Why no browser can run here, or None."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "no headless browser: apt-get install chromium chromium-driver (.ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[pipeline,test]'"
    return None


def skip_without_browser() -> None:
    if reason := browser_missing():
        pytest.skip(reason)


@contextmanager
def headless_chromium(*arguments: str) -> Iterator[Any]:
    """A selenium driver of headless Chromium, quit at the end whatever happens."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", *arguments):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1100")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], seconds: float) -> Any:
    """``condition(driver)`` once it is truthy; a TimeoutException after ``seconds``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(condition)


def page_text(driver: Any) -> str:
    return driver.find_element("tag name", "body").text


def shows(driver: Any, text: str, seconds: float) -> bool:
    """Whether the page's visible text comes to contain ``text`` within ``seconds`` (pages
    that fetch their content render it some time after they load)."""
    from selenium.common.exceptions import TimeoutException

    try:
        wait_for(driver, lambda d: text in page_text(d), seconds)
    except TimeoutException:
        return False
    return True
