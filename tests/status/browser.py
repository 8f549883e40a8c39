"""Headless Debian Chromium driven by Selenium with the system's chromedriver (no browser or
driver is downloaded at run time: `make setup` installs the apt packages chromium and
chromium-driver)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

CHROMIUM = os.environ.get("FRAMESTREAM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FRAMESTREAM_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")


def chrome() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not shutil.which(path):
            raise AssertionError(f"{path} not found: install the apt package {pkg} (`make setup` "
                                 f"does), or set FRAMESTREAM_TEST_{pkg.upper().replace('-', '')}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1500", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def wait_page(driver: Any, check: Callable[[Any], Any], timeout: float, what: str,
              explain: Callable[[], str] = lambda: "") -> Any:
    """Poll ``check(driver)`` until it returns something truthy (bounded by ``timeout``)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {timeout}s. {explain()}") \
            from None


def text(driver: Any, css: str) -> str:
    """The element's text, read in one script call (the page re-renders several times a second,
    so element handles go stale between WebDriver calls)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)


def table(driver: Any, table_id: str, attr: str) -> dict[str, list[str]]:
    """``data-<attr>`` of each row of ``table_id`` -> the row's cell texts (one script call)."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)].map(tr => "
        "[tr.dataset[arguments[1]] ?? null, [...tr.cells].map(td => td.innerText)]);",
        table_id, attr)
    return {key: cells for key, cells in rows}


def overflowing(driver: Any) -> list[str]:
    """Tiles and cards whose content is wider than they are (they would scroll or clip), and the
    page itself if it scrolls sideways: ``["<id or class>: <content> > <box> px", ...]``."""
    return driver.execute_script(
        "const out = [];"
        "for (const e of document.querySelectorAll('.tile, .card')) {"
        "  if (e.scrollWidth > e.clientWidth + 1) out.push("
        "    `${e.querySelector('[id]')?.id || e.className}: ${e.scrollWidth} > ${e.clientWidth} px`);"
        "}"
        "const d = document.documentElement;"
        "if (d.scrollWidth > d.clientWidth + 1) out.push(`page: ${d.scrollWidth} > ${d.clientWidth} px`);"
        "return out;")


def resize(driver: Any, width: int, height: int = 2000, fit: bool = False) -> None:
    """Set the window, then wait (bounded) until the page's layout has the new width; with
    ``fit``, make the window as tall as the page (a screenshot of all of it, nothing more)."""
    driver.set_window_size(width, height)
    wait_page(driver, lambda d: abs(d.execute_script("return window.innerWidth") - width) <= 20,
              10, f"a {width} px wide window")
    if fit:
        tall, chrome_h = driver.execute_script(  # the page's content, the window's own bars
            "return [document.body.getBoundingClientRect().bottom + window.scrollY,"
            " window.outerHeight - window.innerHeight];")
        driver.set_window_size(width, min(4000, int(tall) + 16 + int(chrome_h)))
