"""Open generated pages in a real browser: headless Debian chromium driven by selenium.

Usage::

    driver = start_chromium()          # None, with the reason, where chromium cannot run
    check = inspect_page(driver, path)
    assert check.broken_images == [] and check.console_errors == [] and check.network == []

:func:`inspect_page` loads a file, waits for its images, and reports every
image that did not decode (``naturalWidth == 0``), every console message of
level SEVERE, and every request whose URL is neither ``data:`` nor ``file:``
(from chromium's performance log, which records each request the page makes).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

#: Where Debian's chromium and chromium-driver put their programs.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)
LOCAL_SCHEMES = ("data:", "file:")


def _which(names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def start_chromium():
    """(driver, None) for a headless chromium, or (None, why) when it cannot be started here."""
    chromium, chromedriver = _which(CHROMIUM_NAMES), _which(DRIVER_NAMES)
    if chromium is None or chromedriver is None:
        return None, "chromium and chromedriver not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium not installed (pip install -e '.[test]')"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,2000", "--no-first-run", "--disable-extensions"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
    except Exception as exc:  # selenium raises many kinds when the browser cannot start
        return None, f"chromium did not start: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    driver.set_page_load_timeout(60)
    return driver, None


@dataclass
class PageCheck:
    """What a page did in the browser."""

    url: str
    title: str
    images: list = field(default_factory=list)  # (first 40 characters of src, naturalWidth)
    console_errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)  # every URL requested

    @property
    def broken_images(self) -> list:
        return [src for src, width in self.images if not width]

    @property
    def network(self) -> list:
        return [u for u in self.requests if not u.startswith(LOCAL_SCHEMES)]


_IMAGES_JS = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = r; i.onerror = r; })))
  .then(() => done(imgs.map(i => [i.getAttribute('src').slice(0, 40), i.naturalWidth])));
"""


def inspect_page(driver, path, *, screenshot=None) -> PageCheck:
    """Load ``path`` (a local file) and report its images, console errors and requests."""
    driver.get_log("browser")  # drop what earlier pages left
    driver.get_log("performance")
    url = Path(path).resolve().as_uri()
    driver.get(url)
    driver.set_script_timeout(30)
    images = driver.execute_async_script(_IMAGES_JS)
    check = PageCheck(url=url, title=driver.title, images=[tuple(x) for x in images])
    check.console_errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            check.requests.append(msg["params"]["request"]["url"])
    if screenshot is not None:
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(max(800, int(height) + 100), 12000))
        driver.save_screenshot(str(screenshot))
        driver.set_window_size(1280, 2000)
    return check
