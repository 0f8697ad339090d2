"""Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by selenium.

The driver is the system's chromedriver, given by path, so selenium never downloads one. The
flags keep Chromium from calling home (this machine's network is closed to it) and let it run
as root in a container. Browser console messages are kept: a CSP violation shows up there.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions")


def browser_missing() -> str | None:
    """Why no browser test can run here (None: they can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="mq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def sign_in(driver: WebDriver, base: str, secret: str) -> None:
    """Sign in through the form, as a person would."""
    driver.delete_all_cookies()
    driver.get(f"{base}/dashboard/sign-in")
    driver.find_element(By.ID, "token").send_keys(secret)
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, lambda d: "/sign-in" not in d.current_url, "signed in")


def wait_for(driver: WebDriver, check: Any, what: str, timeout: float = 20) -> Any:
    """Poll `check` until it answers something true. An element the page's live refresh
    replaced between finding and reading it (stale) is looked up again."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        check, message=f"waiting for {what} on {driver.current_url}")


def click(driver: WebDriver, element_id: str) -> None:
    """Click the element with this id, found again if a live refresh replaced it."""
    wait_for(driver, lambda d: d.find_element(By.ID, element_id).click() or True,
             f"#{element_id} to click")


def text_by_id(driver: WebDriver, element_id: str) -> str:
    return str(wait_for(driver, lambda d: d.find_element(By.ID, element_id).text or " ",
                        f"#{element_id}"))


def text_of(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)
