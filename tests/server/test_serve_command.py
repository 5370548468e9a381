"""`fourview serve`: refusals before anything starts, and a real server killed with SIGKILL and started again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from fourview.cli import main
from fourview.server.jobs import LOST_AT_RESTART

# asyncio's event loop makes a socket pair, which pytest-socket would refuse; the server listens on 127.0.0.1 only.
pytestmark = pytest.mark.enable_socket


def run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0, which is not a loopback address, without --api-key"),
        (["--host", "192.168.7.7", "--api-key", "short"], "--api-key must be at least 8 printable characters"),
        (["--port", "99999"], "--port must be in [0, 65535], got 99999"),
        (["--device", "banana"], "unknown device 'banana'"),
        (["--worker", "cuda:7"], "device 'cuda:7'"),
        (["--mvgen", "/no/such/weights"], "mvgen weights not found: /no/such/weights"),
    ],
)
def test_refusals_are_one_line_and_exit_2_before_anything_starts(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("FOURVIEW_API_KEY", raising=False)
    code, out, err = run(["serve", "--data", tmp_path / "data", *args], capsys)
    assert code == 2 and out == ""
    assert err.startswith("fourview: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "data").exists()


def test_the_key_may_come_from_the_environment_and_uvicorn_gets_the_app(capsys, tmp_path, monkeypatch):
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.update(app=app, **kwargs))
    monkeypatch.setenv("FOURVIEW_API_KEY", "from-the-environment")
    code, _, err = run(["serve", "--host", "0.0.0.0", "--port", 8123, "--data", tmp_path / "data"], capsys)
    assert code == 0 and "fourview serve: http://0.0.0.0:8123/ (API: /docs)" in err
    assert started["host"] == "0.0.0.0" and started["port"] == 8123
    assert started["app"].title == "fourview" and (tmp_path / "data").is_dir()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _start(port: int, data) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "fourview.cli", "serve", "--port", str(port), "--data", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            if _call(f"http://127.0.0.1:{port}/health")["workers"][0]["state"] == "ready":
                return server
        except (urllib.error.URLError, ConnectionError):
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"fourview serve did not start: {server.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)


def _wait(url: str, statuses: tuple[str, ...]) -> dict:
    deadline = time.monotonic() + 120
    while (job := _call(url))["status"] not in statuses:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def test_a_server_killed_with_sigkill_keeps_finished_jobs_reports_the_running_one_and_reruns_the_queued(tmp_path):
    port, data = _free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    fast = {"steps": 2, "faces": 800, "texture_size": 64, "grid": 32, "turntable": 0}
    server = _start(port, data)
    try:
        done = _call(f"{base}/jobs", {"prompt": "a red mug", **fast})["id"]
        _wait(f"{base}/jobs/{done}", ("done",))
        running = _call(f"{base}/jobs", {**fast, "prompt": "a blue car", "steps": 200})["id"]
        queued = _call(f"{base}/jobs", {"prompt": "a green bottle", **fast})["id"]
        _wait(f"{base}/jobs/{running}", ("running",))
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the server and anything it started, at once
        server.wait(30)
        server.stderr.close()
    server = _start(port, data)
    try:
        assert _call(f"{base}/jobs/{done}")["status"] == "done"
        with urllib.request.urlopen(f"{base}/jobs/{done}/files/model.glb", timeout=30) as response:
            assert response.read(4) == b"glTF"
        lost = _call(f"{base}/jobs/{running}")
        assert lost["status"] == "failed" and lost["error"] == LOST_AT_RESTART
        assert _wait(f"{base}/jobs/{queued}", ("done", "failed"))["status"] == "done"
        assert [p for p in data.rglob("*") if ".fourview-tmp-" in p.name] == []  # the killed run's temporaries
    finally:
        server.terminate()
        server.wait(60)
        server.stderr.close()
