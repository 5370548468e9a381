"""The REST API on 127.0.0.1 (FastAPI's TestClient): every endpoint, the 4xx answers, the key, restarts."""

from __future__ import annotations

import io
import json
import re
import threading

import numpy as np
import pytest
from PIL import Image

from fourview.server.jobs import JOB_FILES
from tests.server.conftest import FAST, cutout_view, png_bytes, product_photo, serve, server_config, wait_for

# asyncio's event loop makes a socket pair, which pytest-socket would refuse; these tests talk to 127.0.0.1 only.
pytestmark = pytest.mark.enable_socket

ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("server-data")


@pytest.fixture(scope="module")
def client(data, demo_pipeline):
    with serve(server_config(data, max_upload_mb=1), demo_pipeline) as client:
        yield client


@pytest.fixture(scope="module")
def finished(client):
    """A text, a photo and a views job, submitted together and run to the end."""
    text = client.post("/jobs", json={"prompt": "a red mug", "seed": 3, **FAST})
    photo = client.post(
        "/jobs", files={"photo": ("shot one.jpg", png_bytes(product_photo(), "JPEG"), "image/jpeg")},
        data={"prompt": "a red box", **{k: str(v) for k, v in FAST.items()}},
    )  # fmt: skip
    views = [("views", (f"v{i}.png", png_bytes(cutout_view()), "image/png")) for i in range(4)]
    views = client.post("/jobs", files=views, data={"faces": "800", "grid": "32", "turntable": "0"})
    for response in (text, photo, views):
        assert response.status_code == 202, response.text
    ids = {kind: r.json()["id"] for kind, r in (("text", text), ("photo", photo), ("views", views))}
    return {kind: wait_for(client, job_id) for kind, job_id in ids.items()} | {"submitted": text}


def test_a_text_job_is_queued_run_and_its_files_served(client, finished):
    submitted = finished["submitted"]
    body = submitted.json()
    assert ID.fullmatch(body["id"]) and submitted.headers["location"] == f"/jobs/{body['id']}"
    assert body["status"] in ("queued", "running") and body["kind"] == "text" and body["files"] == {}
    assert body["settings"]["prompt"] == "a red mug" and body["settings"]["seed"] == 3
    job = finished["text"]
    assert job["status"] == "done", job["error"]
    assert job["progress"] == 1.0 and job["stage"] == "done" and job["device"] == "cpu"
    assert job["created"] <= job["started"] <= job["finished"] and job["queue_position"] is None
    assert set(job["files"]) == {"model.glb", "views.png", "turntable.gif", "meta.json"}
    glb = client.get(job["files"]["model.glb"])
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert glb.content[:4] == b"glTF" and "attachment" in glb.headers["content-disposition"]
    meta = client.get(job["files"]["meta.json"]).json()
    assert meta["prompt"] == "a red mug" and meta["seed"] == 3 and meta["steps"] == 2
    assert meta["server_job"] == job["id"] and meta["mesh"]["faces"] <= 800
    gif = client.get(job["files"]["turntable.gif"])
    assert gif.headers["content-type"] == "image/gif"
    with Image.open(io.BytesIO(gif.content)) as im:
        assert im.n_frames == 2 and im.size == (32, 32)
    views = client.get(job["files"]["views.png"])
    assert views.headers["content-type"] == "image/png" and views.content[:4] == b"\x89PNG"
    assert client.get(f"/jobs/{job['id']}/files/mask.png").json() == {
        "detail": f"job {job['id']} has no mask.png (done)"
    }


def test_a_photo_job_keeps_its_mask_and_matting(client, finished):
    job = finished["photo"]
    assert job["status"] == "done", job["error"]
    assert job["kind"] == "photo" and job["inputs"]["photo"] == "shot one.jpg"
    assert job["inputs"]["matting"]["method"] == "grabcut"
    assert "mask.png" in job["files"]
    mask = np.asarray(Image.open(io.BytesIO(client.get(job["files"]["mask.png"]).content)))
    assert mask.shape[:2] == (96, 96) and mask[48, 48] > 200 and mask[3, 3] < 50  # the box kept, the backdrop not
    meta = client.get(job["files"]["meta.json"]).json()
    assert meta["image"] == "shot one.jpg" and meta["matting"]["method"] == "grabcut" and meta["prompt"] == "a red box"


def test_a_views_job_reconstructs_the_four_uploads(client, finished):
    job = finished["views"]
    assert job["status"] == "done", job["error"]
    assert job["inputs"] == {"views": ["v0.png", "v1.png", "v2.png", "v3.png"], "matting": None}
    assert set(job["files"]) == {"model.glb", "views.png", "meta.json"}  # turntable 0: none
    meta = client.get(job["files"]["meta.json"]).json()
    assert meta["inputs"] == ["v0.png", "v1.png", "v2.png", "v3.png"] and meta["method"] == "feedforward"


def test_list_filter_limit_and_cancel_of_finished_jobs(client, finished):
    listed = client.get("/jobs").json()["jobs"]
    ids = [finished[k]["id"] for k in ("views", "photo", "text")]
    assert [j["id"] for j in listed if j["id"] in ids] == ids  # newest first
    assert all(j["status"] == "done" for j in client.get("/jobs?status=done").json()["jobs"])
    assert len(client.get("/jobs?limit=1").json()["jobs"]) == 1
    response = client.delete(f"/jobs/{finished['text']['id']}")
    assert response.status_code == 409 and response.json()["detail"] == f"job {finished['text']['id']} is done; " \
        "there is nothing to cancel"  # fmt: skip


def test_health_page_static_files_and_offline_docs(client, finished):
    health = client.get("/health").json()
    assert health["workers"] == [{"device": "cpu", "state": "ready"}] and health["api_key_required"] is False
    page = client.get("/")
    assert page.status_code == 200 and 'id="viewer"' in page.text and "/static/viewer.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert re.findall(r"(?:src|href)=\"(https?:)", page.text) == []  # nothing from another host
    ids = re.findall(r'id="([^"]+)"', page.text)
    assert len(ids) == len(set(ids))  # the script finds each element by its id
    script = client.get("/static/viewer.js")
    assert script.status_code == 200 and "class GlbViewer" in script.text
    assert client.get("/static/../app.py").status_code == 404
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert re.findall(r"https?://", docs.text) == []  # Swagger UI from this server: /docs works offline
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/files/{name}", "/health"}
    body = spec["paths"]["/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert {"photo", "views", "prompt", "seed"} <= set(body["multipart/form-data"]["schema"]["properties"])
    files = spec["paths"]["/jobs/{job_id}/files/{name}"]["get"]["parameters"]
    assert next(p for p in files if p["name"] == "name")["schema"]["enum"] == list(JOB_FILES)


def _photo(name: str, data: bytes, mime: str = "image/png"):
    return {"photo": (name, data, mime)}


def _bomb() -> bytes:
    """A small PNG that declares 7000 x 6000 pixels (42 megapixels: over read_rgba's 40)."""
    return png_bytes(np.zeros((6000, 7000), bool))


BAD_REQUESTS = [
    ({"json": {"prompt": ""}}, 422, r"^prompt is empty; describe the object"),
    ({"json": {"seed": 1}}, 422, r"^prompt is empty"),
    ({"json": {"prompt": "a", "steps": 0}}, 422, r"^steps: Input should be greater than or equal to 1$"),
    ({"json": {"prompt": "a", "steps": 5000}}, 422, r"^steps: Input should be less than or equal to 200$"),
    ({"json": {"prompt": "a", "colour": "red"}}, 422, r"^colour: Extra inputs are not permitted$"),
    ({"json": {"prompt": "a", "seed": "3"}}, 422, r"^seed: Input should be a valid integer$"),
    ({"json": {"prompt": "a", "seed": 2**70}}, 422, r"^seed: Input should be less than or equal to 92233"),
    ({"json": {"prompt": "a", "texture_size": 100}}, 422, r"^texture size must be a power of two"),
    ({"json": {"prompt": "a", "matting": "grabcut"}}, 422, r"^'matting' is a setting of photo and views jobs$"),
    ({"json": {"prompt": "x" * 1001}}, 422, r"^prompt: String should have at most 1000 characters$"),
    ({"json": {"prompt": "red " * 80}}, 422, r"^prompt is too long: 82 tokens with start and end"),
    ({"content": b"{", "headers": {"content-type": "application/json"}}, 422, r"^body: Invalid JSON"),
    ({"content": b"[1]", "headers": {"content-type": "application/json"}}, 422, r"^body: Input should be an object"),
    ({"content": b" " * 70_000, "headers": {"content-type": "application/json"}}, 413, r"over the limit of 0.064 MB"),
    ({"content": b"a mug", "headers": {"content-type": "text/plain"}}, 415, r"^send JSON or a form \(a text"),
    ({"content": b"a mug"}, 415, r"not 'no content type'$"),
    ({"files": _photo("a.gif", b"GIF89a" + b"\0" * 50, "image/gif")}, 415, r"^'a.gif' is not a PNG, JPEG or WebP"),
    ({"files": _photo("notes.png", b"just text")}, 415, r"^'notes.png' is not a PNG, JPEG or WebP image$"),
    ({"files": _photo("big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 1_100_000)}, 413, r"^'big.png' is 1.1 MB, over the "
     r"limit of 1 MB$"),
    ({"files": _photo("tiny.png", png_bytes(np.zeros((1, 1, 3), np.uint8)))}, 422, r"image 'tiny.png' is 1x1 pixels: "
     r"too small \(at least 16"),
    ({"files": _photo("bomb.png", _bomb())}, 422, r"image 'bomb.png' is 7000x6000 pixels, over the limit of 40 mega"),
    ({"files": _photo("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)}, 422, r"^cannot read image 'broken.png'"),
    ({"files": _photo("clear.png", png_bytes(np.zeros((32, 32, 4), np.uint8)))}, 422, r"^no object found in the "
     r"photo \(alpha"),
    ({"files": [("photo", ("a.png", png_bytes(product_photo()))), ("photo", ("b.png", png_bytes(product_photo())))]},
     422, r"^a photo job takes one 'photo' file, got 2$"),
    ({"files": [("photo", ("a.png", png_bytes(product_photo()))), ("views", ("b.png", png_bytes(cutout_view())))]},
     422, r"^a job takes one 'photo' or four 'views', not both$"),
    ({"files": [("views", (f"{i}.png", png_bytes(cutout_view()))) for i in range(3)]}, 422, r"^a views job takes 4 "
     r"photos \(az 0, 90, 180, 270\), got 3$"),
    ({"files": [("views", (f"{i}.png", png_bytes(cutout_view(64 if i else 48)))) for i in range(4)]}, 422,
     r"^the 4 views must have the same size, got '0.png' 48x48, '1.png' 64x64"),
    ({"files": [("views", (f"{i}.png", png_bytes(cutout_view()))) for i in range(4)], "data": {"steps": "3"}}, 422,
     r"^'steps' is a setting of the generator; a views job does not use one$"),
    ({"files": {"image": ("a.png", png_bytes(product_photo()))}}, 422, r"^unknown file field 'image'; send 'photo'"),
    ({"files": _photo("a.png", png_bytes(product_photo())), "data": {"seed": "-1"}}, 422, r"^seed: Input should be "
     r"greater than or equal to 0$"),
    ({"files": _photo("a.png", png_bytes(product_photo())), "data": {"matting": "magic"}}, 422, r"^matting: Input "
     r"should be 'auto', 'alpha', 'model', 'grabcut' or 'border_key'$"),
    ({"data": {"seed": "2"}}, 422, r"^prompt is empty"),
    ({"data": {"prompt": "a", "steps": "many"}}, 422, r"^steps: Input should be a valid integer, unable to parse"),
    ({"content": b"prompt=a&prompt=b", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 422,
     r"^form field 'prompt' is given twice$"),
    ({"content": b"prompt=%FF", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 400,
     r"^malformed form body"),
    ({"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, r"^malformed multipart body"),
]  # fmt: skip


@pytest.mark.parametrize("request_kwargs, status, message", BAD_REQUESTS)
def test_bad_submissions_get_a_4xx_with_one_clear_line_and_leave_nothing(
    client, finished, data, request_kwargs, status, message
):
    before = sorted(p.name for p in (data / "jobs").iterdir())
    response = client.post("/jobs", **request_kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert re.search(message, detail), detail
    assert "\n" not in detail and str(data) not in detail  # one line, and no path of the server's
    assert sorted(p.name for p in (data / "jobs").iterdir()) == before


@pytest.mark.parametrize(
    "method, path, status, message",
    [
        ("get", "/jobs/nope", 404, r"^no job 'nope'$"),
        ("get", "/jobs/" + "0" * 32, 404, r"^no job '0{32}'$"),
        ("delete", "/jobs/" + "a" * 32, 404, r"^no job"),
        ("get", "/jobs/" + "0" * 32 + "/files/model.glb", 404, r"^no job"),
        ("get", "/jobs/{id}/files/job.json", 422, r"^name: Input should be 'model.glb', 'views.png', 'turntable.gif'"),
        ("get", "/jobs/{id}/files/..%2Fjob.json", 404, r"^Not Found$"),  # no route: the slash splits the path
        ("get", "/jobs/{id}/files/%2E%2E", 422, r"^name: Input should be"),
        ("get", "/jobs?limit=0", 422, r"^limit: Input should be greater than or equal to 1$"),
        ("get", "/jobs?status=lost", 422, r"^status: Input should be 'queued', 'running', 'done', 'failed' or "),
        ("put", "/jobs", 405, r"^Method Not Allowed$"),
        ("get", "/nothing/here", 404, r"^Not Found$"),
    ],
)
def test_unknown_jobs_files_and_parameters(client, finished, method, path, status, message):
    response = getattr(client, method)(path.format(id=finished["text"]["id"]))
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["detail"]), response.json()


def test_the_api_key_guards_the_api_but_not_the_page(tmp_path, demo_pipeline):
    key = "k3y-for-tests"
    with serve(server_config(tmp_path, api_key=key), demo_pipeline) as client:
        for response in (client.get("/jobs"), client.get("/jobs", headers={"X-API-Key": "wrong-key"})):
            assert response.status_code == 401
            assert response.json() == {"detail": "this server needs its API key in the X-API-Key header"}
        assert client.post("/jobs", json={"prompt": "a red mug"}).status_code == 401
        assert client.get("/jobs/" + "0" * 32 + "/files/model.glb").status_code == 401
        assert client.get("/jobs", headers={"X-API-Key": key}).json() == {"jobs": []}
        assert client.get("/health").json()["api_key_required"] is True
        assert client.get("/").status_code == 200 and client.get("/openapi.json").status_code == 200
        spec = client.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
            "type": "apiKey", "description": "The server's --api-key.", "in": "header", "name": "X-API-Key"
        }  # fmt: skip


def test_prompts_are_counted_at_submission_while_the_models_load(tmp_path, monkeypatch):
    """The generator's tokenizers alone count a prompt's tokens: an overlong prompt (or negative prompt) is
    refused with HTTP 422 while the worker is still loading its models, and no job is made."""
    from fourview.mvgen.pipeline import MultiViewPipeline

    def never(*args, **kwargs):
        raise AssertionError("a model loaded to check a prompt")

    monkeypatch.setattr(MultiViewPipeline, "from_pretrained", never)
    loading = threading.Event()

    def still_loading(device):
        loading.wait(60)
        raise RuntimeError("the test is over")

    long = "red " * 80
    photo = _photo("a.png", png_bytes(product_photo()))
    requests = [
        ({"json": {"prompt": long}}, r"^prompt is too long: 82 tokens with start and end, the text encoders take 77"),
        ({"json": {"prompt": "a red mug", "negative": long}}, r"^negative prompt is too long: 82 tokens"),
        ({"files": photo, "data": {"prompt": long}}, r"^prompt is too long: 82 tokens"),
        ({"data": {"prompt": "a red mug", "negative": long}}, r"^negative prompt is too long: 82 tokens"),
    ]
    with serve(server_config(tmp_path), factory=still_loading) as client:
        try:
            for request_kwargs, message in requests:
                response = client.post("/jobs", **request_kwargs)
                assert response.status_code == 422, response.text
                assert re.search(message, response.json()["detail"]), response.json()
            assert [w["state"] for w in client.get("/health").json()["workers"]] == ["loading"]
            assert client.get("/jobs").json() == {"jobs": []}
            assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())
        finally:
            loading.set()  # the worker's load ends (failed), so the server stops at once


def test_foreign_hosts_and_origins_are_refused_on_loopback(client):
    assert client.get("/health", headers={"host": "attacker.example"}).json() == {
        "detail": "this server answers to 127.0.0.1 only"
    }
    assert client.get("/health", headers={"host": "localhost:8000"}).status_code == 200
    refused = client.post("/jobs", json={"prompt": "a"}, headers={"origin": "http://attacker.example"})
    assert refused.status_code == 403 and refused.json() == {"detail": "requests from another origin are refused"}
    assert client.get("/health", headers={"origin": "http://127.0.0.1"}).status_code == 200


def test_a_restart_lists_finished_jobs_and_serves_their_files(data, client, finished, demo_pipeline, tmp_path):
    job = finished["text"]
    glb = client.get(job["files"]["model.glb"]).content
    with serve(server_config(data), demo_pipeline) as again:  # a second server on the same folder
        listed = {j["id"]: j for j in again.get("/jobs").json()["jobs"]}
        assert {finished[k]["id"] for k in ("text", "photo", "views")} <= set(listed)
        assert listed[job["id"]] == job
        assert again.get(job["files"]["model.glb"]).content == glb
        record = json.loads((data / "jobs" / job["id"] / "job.json").read_text())
        assert record["status"] == "done" and record["files"] == list(job["files"])
