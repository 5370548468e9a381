"""The job queue: cancels at stage boundaries, a stop and a restart, jobs lost in a crash, models that fail to load."""

from __future__ import annotations

import json
import threading
import time

import pytest

from fourview.errors import InputError
from fourview.server.jobs import LOST_AT_RESTART, Job, JobStore
from tests.server.conftest import FAST, GatedPipeline, serve, server_config, wait_for

# asyncio's event loop makes a socket pair, which pytest-socket would refuse; these tests talk to 127.0.0.1 only.
pytestmark = pytest.mark.enable_socket


def test_cancel_a_queued_job_at_once_and_a_running_one_at_its_next_stage(tmp_path, demo_pipeline):
    gated = GatedPipeline(demo_pipeline)
    with serve(server_config(tmp_path, max_queued=1), gated) as client:
        running = client.post("/jobs", json={"prompt": "a red mug", **FAST}).json()
        assert gated.entered.wait(30)
        queued = client.post("/jobs", json={"prompt": "a blue car", **FAST}).json()
        assert client.get(f"/jobs/{queued['id']}").json()["queue_position"] == 0
        full = client.post("/jobs", json={"prompt": "a chair"})
        assert full.status_code == 429
        assert full.json() == {"detail": "the queue is full (1 jobs waiting); try again later"}

        cancelled = client.delete(f"/jobs/{queued['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert client.delete(f"/jobs/{queued['id']}").status_code == 409

        job = client.get(f"/jobs/{running['id']}").json()
        assert job["status"] == "running" and job["stage"] == "generating views" and job["progress"] == 0.05
        asked = client.delete(f"/jobs/{running['id']}")
        assert asked.status_code == 202 and asked.json()["status"] == "running" and asked.json()["cancel_requested"]
        gated.gate.set()  # the views are drawn; the job stops before reconstructing
        job = wait_for(client, running["id"])
        assert job["status"] == "cancelled" and job["stage"] == "cancelled" and job["files"] == {}
        assert not (tmp_path / "jobs" / running["id"] / "asset").exists()
        assert client.get(f"/jobs/{queued['id']}").json()["started"] is None  # never ran


def test_a_stopping_server_queues_its_running_job_again_and_the_restart_runs_it(tmp_path, demo_pipeline):
    gated = GatedPipeline(demo_pipeline)
    with serve(server_config(tmp_path), gated) as client:
        job_id = client.post("/jobs", json={"prompt": "a red mug", **FAST}).json()["id"]
        assert gated.entered.wait(30)
        runner = client.app.state.runner
        stopping = threading.Thread(target=runner.stop)
        stopping.start()
        while not runner.stopping:
            time.sleep(0.01)
        gated.gate.set()
        stopping.join(60)
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "queued" and job["started"] is None and job["progress"] == 0.0
    with serve(server_config(tmp_path), demo_pipeline) as client:
        job = wait_for(client, job_id)
        assert job["status"] == "done" and "model.glb" in job["files"]


def test_a_restart_reports_running_jobs_lost_and_runs_queued_ones(tmp_path, demo_pipeline):
    store = JobStore(tmp_path)  # the records a crash leaves: one job running, one queued
    settings = {"prompt": "a red mug", **FAST}
    lost = store.create(Job("a" * 32, "text", "running", settings, 1.0, stage="reconstructing", started=2.0),
                        lambda folder: None)  # fmt: skip
    waiting = store.create(Job("b" * 32, "text", "queued", settings, 3.0), lambda folder: None)
    with serve(server_config(tmp_path), demo_pipeline) as client:
        job = client.get(f"/jobs/{lost.id}").json()
        assert job["status"] == "failed" and job["error"] == LOST_AT_RESTART == (
            "lost at server restart: the job was running when the server stopped"
        )
        assert json.loads((tmp_path / "jobs" / lost.id / "job.json").read_text())["status"] == "failed"
        assert wait_for(client, waiting.id)["status"] == "done"


def test_models_that_fail_to_load_fail_each_job_with_the_reason(tmp_path):
    def factory(device):
        raise InputError("mvgen weights not found: /nowhere")

    with serve(server_config(tmp_path), factory=factory) as client:
        job = wait_for(client, client.post("/jobs", json={"prompt": "a red mug"}).json()["id"])
        assert job["status"] == "failed"
        assert job["error"] == "the models could not be loaded on cpu: mvgen weights not found: /nowhere"
        assert client.get("/health").json()["workers"] == [{"device": "cpu", "state": "failed"}]


def test_an_unexpected_error_fails_the_job_with_its_type_and_the_worker_goes_on(tmp_path, demo_pipeline):
    class Broken(GatedPipeline):
        def generate_views(self, prompt, *args, **kwargs):
            if prompt == "boom":
                raise RuntimeError("out of\nmemory")
            return super(GatedPipeline, self).generate_views(prompt, *args, **kwargs)

    with serve(server_config(tmp_path), Broken(demo_pipeline)) as client:
        boom = client.post("/jobs", json={"prompt": "boom"}).json()["id"]
        fine = client.post("/jobs", json={"prompt": "a red mug", **FAST}).json()["id"]
        assert wait_for(client, boom)["error"] == "RuntimeError: out of memory"
        assert wait_for(client, fine)["status"] == "done"
