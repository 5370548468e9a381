"""Fixtures of the server's tests: the demo models loaded once, apps on temporary data folders, test images."""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server's tests need the [server] extra (FastAPI); pip install -e '.[dev]'")

from fastapi.testclient import TestClient  # noqa: E402

from fourview.pipeline import FourViewPipeline  # noqa: E402
from fourview.server import ServerConfig, create_app  # noqa: E402
from fourview.server.jobs import FINISHED  # noqa: E402

FAST = {"steps": 2, "faces": 800, "texture_size": 64, "grid": 32, "turntable": 2}
"""Job settings that keep a demo job to about two seconds on a CPU."""


@pytest.fixture(scope="session")
def demo_pipeline() -> FourViewPipeline:
    """The shipped demo models (about 20 MB), loaded once for every server test."""
    return FourViewPipeline.from_pretrained("demo", "demo")


def server_config(data, **changes) -> ServerConfig:
    return ServerConfig(data=data, turntable_frames=2, preview_resolution=32, **changes)


@contextmanager
def serve(config: ServerConfig, pipeline: FourViewPipeline | None = None, factory=None):
    """A TestClient on the app, its workers started and stopped with it; each worker gets ``pipeline``
    (or what ``factory(device)`` makes)."""
    factory = factory or (lambda device: pipeline)
    with TestClient(create_app(config, factory), base_url="http://127.0.0.1") as client:
        yield client


def wait_for(client, job_id: str, statuses=FINISHED, timeout: float = 120.0) -> dict:
    """Poll GET /jobs/{id} until the job's status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} ({job['stage']}) after {timeout} s")
        time.sleep(0.1)


def png_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """[H, W, 3|4] uint8 as an image file's bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def product_photo(size: int = 96) -> np.ndarray:
    """An opaque photo: a red box with a darker side on a light grey backdrop (uint8 [H, W, 3])."""
    photo = np.full((size, size, 3), 214, np.uint8)
    s = size // 4
    photo[s : 3 * s, s : 3 * s] = (200, 40, 35)
    photo[s : 3 * s, 2 * s : 3 * s] = (150, 25, 20)
    return photo


def cutout_view(size: int = 64, colour=(40, 90, 200)) -> np.ndarray:
    """An RGBA cut-out: a coloured disc on transparency (uint8 [H, W, 4])."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.3) ** 2
    view = np.zeros((size, size, 4), np.uint8)
    view[inside] = (*colour, 255)
    return view


class GatedPipeline(FourViewPipeline):
    """The demo pipeline whose view generation waits for ``gate``: a text job stays in its first stage until then."""

    def __init__(self, base: FourViewPipeline) -> None:
        super().__init__(base.generator, base.reconstructor, base.device, base.names)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def generate_views(self, *args, **kwargs):
        self.entered.set()
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        return super().generate_views(*args, **kwargs)
