"""Property-based fuzzing of every endpoint (hypothesis, bounded): whatever arrives, the answer is never a 5xx."""

from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fourview.errors import InputError  # noqa: E402
from fourview.server.jobs import JOB_FILES  # noqa: E402
from fourview.server.submission import JobSettings  # noqa: E402
from tests.server.conftest import png_bytes, product_photo, serve, server_config  # noqa: E402

# asyncio's event loop makes a socket pair, which pytest-socket would refuse; these tests talk to 127.0.0.1 only.
pytestmark = pytest.mark.enable_socket

BOUNDED = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None
)
KEYS = list(JobSettings.model_fields)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
NEAR_VALID = {  # settings of the right types, in range or just outside it: the accepted path gets fuzzed too
    "seed": st.integers(-1, 2**64),
    "steps": st.integers(-1, 250),
    "guidance": st.floats(allow_nan=True, allow_infinity=True),
    "faces": st.integers(0, 10**6),
    "texture_size": st.sampled_from([0, 16, 64, 100, 4096, 8192]),
    "grid": st.integers(0, 600),
    "turntable": st.integers(-1, 200),
    "method": st.sampled_from(["dmtet", "marching_cubes", "voxels"]),
}
SEGMENTS = st.text(max_size=40) | st.sampled_from(["..", ".", "%2e%2e", "a" * 32, "0" * 32, "model.glb", "", "~"])
IMAGE_BYTES = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=200).map(lambda b: b"\xff\xd8\xff" + b),
    st.binary(max_size=200).map(lambda b: b"RIFF\0\0\0\0WEBP" + b),
    st.just(png_bytes(product_photo(48))),
    st.just(png_bytes(np.zeros((20, 20, 4), np.uint8))),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    def no_models(device):  # jobs that get through fail at once: the fuzzing is of the endpoints
        raise InputError("no models in the fuzz tests")

    config = server_config(tmp_path_factory.mktemp("fuzz"), max_upload_mb=1, max_queued=3)
    with serve(config, factory=no_models) as client:
        yield client


@pytest.fixture(scope="module")
def job_id(client):
    return client.post("/jobs", json={"prompt": "a red mug"}).json()["id"]


def _check(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    json_error = response.headers.get("content-type", "").startswith("application/json") and response.content
    if json_error and response.status_code >= 400:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail


@BOUNDED
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]),
    template=st.sampled_from(["/jobs", "/jobs/{a}", "/jobs/{a}/files/{b}", "/jobs/{job}/files/{b}",
                              "/jobs/{job}/files/{file}", "/health", "/", "/docs", "/static/{a}", "/{a}/{b}"]),
    a=SEGMENTS,
    b=SEGMENTS,
    file=st.sampled_from(JOB_FILES),
    query=st.dictionaries(st.sampled_from(["limit", "status", "x"]), st.text(max_size=10), max_size=2),
    headers=st.dictionaries(st.sampled_from(["X-API-Key", "Origin", "Content-Type", "Accept"]),
                            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30), max_size=2),
)  # fmt: skip
def test_any_request_to_any_endpoint_gets_no_5xx(client, job_id, method, template, a, b, file, query, headers):
    path = template.format(a=quote(a, safe=""), b=quote(b, safe=""), job=job_id, file=file)
    _check(client.request(method, path, params=query, headers=headers))


@BOUNDED
@given(
    body=st.one_of(
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), JSON_VALUES, max_size=6),
        st.fixed_dictionaries({"prompt": st.text(max_size=60)}, optional={k: JSON_VALUES for k in KEYS[1:]}),
        st.fixed_dictionaries({"prompt": st.text(min_size=1, max_size=60)}, optional=NEAR_VALID),
        JSON_VALUES,
    ),
    raw=st.none() | st.binary(max_size=100),
)
def test_any_json_body_gets_no_5xx(client, body, raw):
    content = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
    _check(client.post("/jobs", content=content, headers={"content-type": "application/json"}))


@BOUNDED
@given(
    fields=st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), st.text(max_size=20), max_size=4),
    files=st.lists(
        st.tuples(st.sampled_from(["photo", "views", "image", ""]), st.text(max_size=20), IMAGE_BYTES), max_size=5
    ),
    content_type=st.sampled_from(["multipart/form-data", "application/x-www-form-urlencoded", "text/plain", ""]),
)
def test_any_form_and_upload_gets_no_5xx(client, fields, files, content_type):
    if content_type == "multipart/form-data" or files:
        uploads = [(field, (name or "f", data, "application/octet-stream")) for field, name, data in files]
        response = client.post("/jobs", data=fields, files=uploads or {"views": ("a", b"", "image/png")})
    else:
        response = client.post("/jobs", content="&".join(f"{quote(k)}={quote(v)}" for k, v in fields.items()),
                               headers={"content-type": content_type})  # fmt: skip
    _check(response)
