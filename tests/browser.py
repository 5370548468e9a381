"""Debian's headless chromium driven by Selenium, for the tests of web pages (the server's, the study's).

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``; .ci/run
installs them): Selenium is handed /usr/bin/chromedriver and never downloads a browser or a
driver. Without them, or without selenium (the dev extra), the tests that need a browser skip,
saying so (`CHROMIUM_MISSING`, `start_chromium`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = [  # what Chromium needs on these machines: no sandbox as root, no GPU, no network beyond loopback
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-unsafe-swiftshader",  # WebGL on the CPU (SwiftShader), where newer Chromium asks for it
    "--window-size=1280,1000",
]  # fmt: skip
HAVE_CHROMIUM = CHROMIUM.is_file() and CHROMEDRIVER.is_file()
CHROMIUM_MISSING = (
    "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver; "
    ".ci/run installs them)"
)
SELENIUM_MISSING = "the browser tests need selenium (the dev extra)"


def start_chromium(profile: Path, downloads: Path):
    """A headless Chromium WebDriver with its own ``profile`` folder that saves downloads into ``downloads`` unasked.

    Skips the calling test without chromium, its driver or selenium. The caller quits the driver.
    """
    if not HAVE_CHROMIUM:
        pytest.skip(CHROMIUM_MISSING)
    webdriver = pytest.importorskip("selenium.webdriver", reason=SELENIUM_MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver
