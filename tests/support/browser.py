"""Headless Chromium driven by Selenium, for the console tests.

Debian's ``chromium`` and ``chromium-driver`` are installed with apt-get when they are missing (CI runs
as root on a clean machine); the browser tests are never skipped in CI. Chromium starts with a fresh
profile and without its background networking (it would try the closed network), at 1280x800, with
downloads going to a directory of the test. Screenshots go to ``var/screenshots/`` as test artefacts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
WIDTH, HEIGHT = 1280, 800
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
                  "--disable-features=Translate,MediaRouter,OptimizationHints", f"--window-size={WIDTH},{HEIGHT}")


def install_chromium() -> None:
    """apt-get the two Debian packages (as root, or through sudo -n); fail loudly in CI, else skip."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    ci = bool(os.environ.get("CI"))
    sudo: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            message = f"{' and '.join(map(str, (CHROMIUM, CHROMEDRIVER)))} missing; install {' '.join(PACKAGES)}"
            if ci:
                pytest.fail(message)
            pytest.skip(message)
        sudo = ["sudo", "-n"]
    apt_get = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    for argv in ([*apt_get, "update", "-q"], [*apt_get, "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} still missing after installing {' '.join(PACKAGES)}")


class Browser:
    """A Chromium session: the driver, its download directory, waits and screenshots."""

    def __init__(self, driver: Any, downloads: Path):
        self.driver = driver
        self.downloads = downloads

    def wait(self, condition: Callable[[Any], Any], timeout: float = 20, message: str = "") -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(condition, message)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, timeout: float = 20) -> Any:
        """The first element matching ``css`` once it is displayed."""
        def shown(_driver: Any) -> Any:
            found = self.find_all(css)
            return found[0] if found and found[0].is_displayed() else False

        return self.wait(shown, timeout, f"{css} never appeared")

    def wait_loaded(self, page: str, timeout: float = 20) -> None:
        """The router rendered ``page`` (main[data-page]) and nothing is loading."""
        self.wait(lambda d: d.execute_script(
            "const m = document.getElementById('main');"
            "return m.dataset.page === arguments[0] && !m.hasAttribute('aria-busy');", page),
            timeout, f"page {page} did not finish loading")

    def screenshot(self, name: str, width: int = WIDTH, height: int = HEIGHT) -> Path:
        """The viewport at ``width`` x ``height``, saved as ``var/screenshots/<name>.png``."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.viewport(width, height)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def viewport(self, width: int, height: int) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def wait_for_download(self, name: str, timeout: float = 30) -> Path:
        """A finished download (Chromium writes ``.crdownload`` first, then renames)."""
        target = self.downloads / name
        deadline = time.time() + timeout
        while time.time() < deadline:
            if target.exists() and not any(p.suffix == ".crdownload" for p in self.downloads.iterdir()):
                return target
            time.sleep(0.1)
        raise AssertionError(f"{name} was not downloaded; the directory holds {sorted(os.listdir(self.downloads))}")

    def console_messages(self) -> list[dict[str, Any]]:
        return self.driver.get_log("browser")

    def active(self) -> Any:
        return self.driver.switch_to.active_element


@pytest.fixture(scope="session")
def chromium() -> Path:
    install_chromium()
    return CHROMIUM


@pytest.fixture
def browser(chromium: Path, tmp_path: Path) -> Iterator[Browser]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager is not used (both paths are given)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "safebrowsing.enabled": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.set_script_timeout(30)
        session = Browser(driver, downloads)
        session.viewport(WIDTH, HEIGHT)
        yield session
    finally:
        driver.quit()
