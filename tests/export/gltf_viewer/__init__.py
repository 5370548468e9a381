"""A real glTF viewer for the tests: three.js (index.html, viewer.mjs) on 127.0.0.1, driven in headless Chromium.

three.js is an npm package of this folder (package-lock.json pins it): ``npm ci --prefix
tests/export/gltf_viewer``, which .ci/run does; without it the tests that need the viewer skip,
saying so (`THREE_MISSING`). The browser is `tests.browser.start_chromium`'s. `serve_viewer`
serves the page and the GLBs over http (ES modules and the importmap need http, not file://),
`open_model` loads one GLB and returns what three.js made of it, `render` draws it again with the
normal maps, colours or occlusion off.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

VIEWER = Path(__file__).resolve().parent
HAVE_THREE = (VIEWER / "node_modules" / "three" / "build" / "three.module.js").is_file()
THREE_MISSING = (
    "three.js is not installed for the glTF viewer test (npm ci --prefix tests/export/gltf_viewer; .ci/run does it)"
)


class _ViewerFiles(SimpleHTTPRequestHandler):
    """This folder's files, and each GLB of ``models`` at /models/NAME."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript"}

    def __init__(self, *args, models: Mapping[str, Path], **kwargs) -> None:
        self.models = models  # before super().__init__, which handles the request
        super().__init__(*args, directory=str(VIEWER), **kwargs)

    def translate_path(self, path: str) -> str:
        name = urllib.parse.unquote(urllib.parse.urlsplit(path).path).removeprefix("/models/")
        if path.startswith("/models/") and name in self.models:
            return str(self.models[name])
        return super().translate_path(path)

    def log_message(self, format, *args) -> None:
        pass  # no line per request in the test output


@contextmanager
def serve_viewer(models: Mapping[str, Path]) -> Iterator[str]:
    """Serve the viewer and ``models`` (name -> GLB file) on a free port of 127.0.0.1 from a thread; yields the URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_ViewerFiles, models=dict(models)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def open_model(
    driver,
    url: str,
    name: str,
    *,
    size: int = 512,
    azimuth: float = 0.0,
    elevation: float = 20.0,
    frame: list[float] | None = None,
    timeout: float = 60.0,
) -> dict:
    """Load /models/NAME into the viewer and render it; returns three.js's view of it (``window.viewer.info``).

    ``frame`` (centre x, y, z and radius, world units) fixes the camera's frame; by default it is the
    bounding sphere of the model's world bounding box. Fails with the page's error if it has one.
    """
    query = {"model": f"/models/{name}", "size": size, "azimuth": azimuth, "elevation": elevation}
    if frame is not None:
        query["frame"] = ",".join(f"{v:.9g}" for v in frame)
    driver.get(f"{url}/index.html?{urllib.parse.urlencode(query)}")
    deadline = time.monotonic() + timeout
    while not driver.execute_script("return Boolean(window.viewer && (window.viewer.ready || window.viewer.error))"):
        if time.monotonic() > deadline:
            raise AssertionError(f"the viewer did not show {name} in {timeout:.0f} s: {messages(driver)}")
        time.sleep(0.1)
    error = driver.execute_script("return window.viewer.error")
    if error:
        raise AssertionError(f"the viewer could not show {name}: {error}")
    return driver.execute_script("return window.viewer.info")


def messages(driver) -> list[str]:
    """The page's console warnings and errors so far (three.js reports problems with a file there)."""
    return driver.execute_script("return window.viewer ? window.viewer.messages : ['no viewer on the page']")


def render(
    driver, *, normal_map: bool = True, flip_green: bool = False, albedo: bool = True, occlusion: bool = True
) -> np.ndarray:
    """Render the loaded model again -> [H, W, 4] uint8 RGBA (straight alpha; background transparent).

    ``normal_map=False`` sets every material's normalMap to null; ``flip_green`` reads the normal maps
    with their green channel the wrong way (normalScale.y negated: a control for the tests);
    ``albedo=False`` makes the materials white (no colour texture or vertex colours);
    ``occlusion=False`` drops the aoMap.
    """
    options = {"normalMap": normal_map, "flipGreen": flip_green, "albedo": albedo, "occlusion": occlusion}
    data_url = driver.execute_script("return window.viewer.render(arguments[0])", options)
    png = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
