"""The web page in a real browser: Debian's headless chromium driven by Selenium against uvicorn on 127.0.0.1.

A prompt typed and submitted shows the model in the page's WebGL viewer (the centre of the canvas is
no longer the background), and the GLB the page downloads passes the Khronos validator; a photo
uploaded does the same. The browser is started by `tests.browser.start_chromium` (Debian's chromium
and chromium-driver); without them the tests skip, saying so.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fourview.server import create_app
from tests.browser import CHROMIUM_MISSING, HAVE_CHROMIUM, SELENIUM_MISSING, start_chromium
from tests.gltf_validation import validate_glb
from tests.server.conftest import cutout_view, png_bytes, product_photo, server_config

TIMEOUT = 120.0

pytestmark = [
    pytest.mark.enable_socket,  # uvicorn, chromedriver and chromium on 127.0.0.1 only
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=CHROMIUM_MISSING),
]
pytest.importorskip("selenium.webdriver", reason=SELENIUM_MISSING)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_pipeline):
    """uvicorn serving the app with the demo models on a free port of 127.0.0.1, in a thread; yields the URL."""
    import uvicorn

    app = create_app(server_config(tmp_path_factory.mktemp("web-data")), lambda device: demo_pipeline)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv.should_exit = True
    thread.join(60)
    sock.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, downloads):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), downloads)
    yield driver
    driver.quit()


def _fill(driver, settings: dict[str, str]) -> None:
    driver.find_element(By.CSS_SELECTOR, "details summary").click()
    for name, value in settings.items():
        field = driver.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)


def _wait_for_model(driver) -> int:
    """Wait until the viewer has drawn a model; returns its triangle count (fails with the page's status)."""

    def shown(d):
        status = d.find_element(By.ID, "status")
        if "error" in (status.get_attribute("class") or ""):
            raise AssertionError(f"the page says: {status.text}")
        return d.find_element(By.ID, "result").get_attribute("data-shown")  # every file fetched and shown

    WebDriverWait(driver, TIMEOUT, poll_frequency=0.25).until(shown)
    time.sleep(0.3)  # the frame after the upload
    return int(driver.find_element(By.ID, "viewer").get_attribute("data-triangles"))


def _centre_differs_from_background(driver) -> float:
    """Fraction of the canvas's centre (the middle 20% of each side) unlike its corner (the background)."""
    shot = np.asarray(Image.open(io.BytesIO(driver.find_element(By.ID, "viewer").screenshot_as_png)).convert("RGB"))
    h, w = shot.shape[:2]
    background = shot[2, 2].astype(int)
    centre = shot[int(h * 0.4) : int(h * 0.6), int(w * 0.4) : int(w * 0.6)].astype(int)
    return float((np.abs(centre - background).sum(axis=-1) > 30).mean())


def _download(driver, downloads: Path, link_id: str) -> Path:
    link = driver.find_element(By.ID, link_id)
    name = link.get_attribute("download")
    link.click()
    path = downloads / name
    deadline = time.monotonic() + 30
    while not path.is_file() or any(downloads.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"{name} was not downloaded"
        time.sleep(0.1)
    return path


def test_a_typed_prompt_shows_its_model_and_downloads_a_valid_glb(server, browser, downloads):
    browser.get(server + "/")
    assert browser.title == "fourview"
    WebDriverWait(browser, 30).until(lambda d: "cpu: ready" in d.find_element(By.ID, "health").text)
    assert _centre_differs_from_background(browser) == 0.0  # nothing drawn yet: the check can fail
    browser.find_element(By.ID, "prompt").send_keys("a red mug")
    _fill(browser, {"steps": "4", "faces": "2000", "texture_size": "128", "turntable": "4"})
    browser.find_element(By.ID, "submit").click()
    assert _wait_for_model(browser) > 100
    assert _centre_differs_from_background(browser) > 0.3
    assert browser.find_element(By.ID, "status").text == "done"
    turntable = browser.find_element(By.ID, "turntable-image")
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return arguments[0].complete", turntable))
    assert browser.execute_script("return arguments[0].naturalWidth", turntable) == 32
    glb = _download(browser, downloads, "download-model-glb")
    report = validate_glb(glb)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    jobs = browser.find_elements(By.CSS_SELECTOR, "#jobs li")
    assert jobs and jobs[0].text == "done · text · a red mug"


def test_an_uploaded_photo_shows_its_model(server, browser, downloads, tmp_path):
    photo = tmp_path / "product.png"
    photo.write_bytes(png_bytes(product_photo(128)))
    browser.get(server + "/")
    browser.find_element(By.CSS_SELECTOR, "input[name=kind][value=photo]").click()
    assert browser.find_element(By.ID, "photo-row").is_displayed()
    browser.find_element(By.ID, "photo").send_keys(str(photo))
    browser.find_element(By.ID, "prompt").send_keys("a red box")
    _fill(browser, {"steps": "4", "faces": "2000", "texture_size": "64", "turntable": "0"})
    browser.find_element(By.ID, "submit").click()
    assert _wait_for_model(browser) > 100
    assert _centre_differs_from_background(browser) > 0.1
    with Image.open(_download(browser, downloads, "download-mask-png")) as mask:
        assert mask.size == (128, 128)  # the photo's own size: the matte that went in
    assert _download(browser, downloads, "download-model-glb").read_bytes()[:4] == b"glTF"


def test_four_uploaded_photos_show_their_model(server, browser, tmp_path):
    browser.get(server + "/")
    browser.find_element(By.CSS_SELECTOR, "input[name=kind][value=views]").click()
    assert not browser.find_element(By.ID, "prompt-row").is_displayed()
    for i, colour in enumerate([(200, 40, 35), (40, 160, 60), (40, 90, 200), (220, 190, 40)]):
        view = tmp_path / f"view{i}.png"
        view.write_bytes(png_bytes(cutout_view(96, colour)))
        browser.find_element(By.ID, f"view{i}").send_keys(str(view))
    _fill(browser, {"faces": "2000", "texture_size": "64", "turntable": "0"})  # seed and steps stay unsent
    browser.find_element(By.ID, "submit").click()
    assert _wait_for_model(browser) > 100
    assert _centre_differs_from_background(browser) > 0.1
