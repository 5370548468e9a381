"""`JobStore`: job folders that appear whole, records rewritten atomically, what a restart finds."""

from __future__ import annotations

import json
import logging

import pytest

from fourview.atomic import TMP_MARK
from fourview.errors import InputError
from fourview.server.jobs import JOB_FILES, LOST_AT_RESTART, Job, JobStore, new_job_id

SETTINGS = {"prompt": "a red mug", "seed": 0}


def job(job_id: str, status: str = "queued", created: float = 1.0) -> Job:
    return Job(job_id, "text", status, SETTINGS, created)


def test_a_job_folder_appears_whole_or_not_at_all(tmp_path):
    store = JobStore(tmp_path)
    store.load()
    made = store.create(job("a" * 32), lambda folder: (folder / "x.png").write_bytes(b"png") and {"photo": "x.png"})
    assert made.inputs == {"photo": "x.png"} and store.get("a" * 32) == made
    assert (tmp_path / "jobs" / ("a" * 32) / "inputs" / "x.png").read_bytes() == b"png"
    assert json.loads((tmp_path / "jobs" / ("a" * 32) / "job.json").read_text()) == made.record()

    def refuse(folder):
        (folder / "half.png").write_bytes(b"half")
        raise InputError("the photo is unreadable")

    with pytest.raises(InputError, match="unreadable"):
        store.create(job("b" * 32), refuse)
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == ["a" * 32]  # no folder, no temporary
    assert store.get("b" * 32) is None


def test_updates_are_on_disk_before_they_are_seen_and_survive_a_reload(tmp_path):
    store = JobStore(tmp_path)
    store.create(job("c" * 32), lambda folder: None)
    store.update("c" * 32, status="done", stage="done", progress=1.0, files=("model.glb",))
    record = json.loads((tmp_path / "jobs" / ("c" * 32) / "job.json").read_text())
    assert record["status"] == "done" and record["files"] == ["model.glb"]
    again = JobStore(tmp_path)
    assert again.load() == [] and again.get("c" * 32) == store.get("c" * 32)
    assert not [p for p in (tmp_path / "jobs" / ("c" * 32)).iterdir() if TMP_MARK in p.name]


def test_load_requeues_queued_jobs_oldest_first_and_fails_running_ones(tmp_path, caplog):
    store = JobStore(tmp_path)
    for job_id, status, created in (("1" * 32, "queued", 5.0), ("2" * 32, "running", 1.0), ("3" * 32, "queued", 2.0),
                                    ("4" * 32, "cancelled", 3.0)):  # fmt: skip
        store.create(job(job_id, status, created), lambda folder: None)
    store.update("1" * 32, stage="generating views", progress=0.3)  # a stage left by a stop mid-job
    (tmp_path / "jobs" / ("5" * 32)).mkdir()
    (tmp_path / "jobs" / ("5" * 32) / "job.json").write_text("{not json")
    (tmp_path / "jobs" / "notes").mkdir()  # not a job: never read
    with caplog.at_level(logging.WARNING, logger="fourview.server.jobs"):
        queued = JobStore(tmp_path).load()
    assert [j.id for j in queued] == ["3" * 32, "1" * 32]
    assert queued[1].stage == "queued" and queued[1].progress == 0.0
    reloaded = JobStore(tmp_path)
    reloaded.load()
    lost = reloaded.get("2" * 32)
    assert lost.status == "failed" and lost.error == LOST_AT_RESTART and lost.finished is not None
    assert reloaded.get("4" * 32).status == "cancelled" and reloaded.get("5" * 32) is None
    assert "skipped the job folder" in caplog.text
    assert [j.id for j in reloaded.jobs()] == ["1" * 32, "4" * 32, "3" * 32, "2" * 32]  # newest first


@pytest.mark.parametrize("bad", ["../etc", "A" * 32, "a" * 31, "a" * 33, "", "a" * 32 + "/x", "." * 32])
def test_malformed_ids_name_no_job_and_no_path(tmp_path, bad):
    store = JobStore(tmp_path)
    assert store.get(bad) is None and store.file(bad, "model.glb") is None
    with pytest.raises(ValueError, match="not a job id"):
        store.folder(bad)


def test_files_are_only_the_listed_asset_files_of_the_job(tmp_path):
    store = JobStore(tmp_path)
    job_id = new_job_id()
    store.create(job(job_id), lambda folder: None)
    asset = tmp_path / "jobs" / job_id / "asset"
    asset.mkdir()
    for name in ("model.glb", "views.png", "secret.txt"):
        (asset / name).write_bytes(b"x")
    assert store.file(job_id, "model.glb") is None  # not done yet: nothing listed
    store.update(job_id, status="done", files=("model.glb", "views.png"))
    assert store.file(job_id, "model.glb") == asset / "model.glb"
    assert store.file(job_id, "secret.txt") is None and store.file(job_id, "../job.json") is None
    assert store.file(job_id, "turntable.gif") is None and "turntable.gif" in JOB_FILES


@pytest.mark.parametrize(
    "record, match",
    [
        ([], "not a job record"),
        ({"id": "a" * 32, "kind": "text", "status": "done"}, "not a job record"),
        ({**job("a" * 32).record(), "colour": "red"}, r"unknown keys \['colour'\]"),
        ({**job("a" * 32).record(), "kind": "video"}, "bad id or kind"),
        ({**job("a" * 32).record(), "status": "lost"}, "bad status"),
    ],
)
def test_bad_records_are_refused(record, match):
    with pytest.raises(InputError, match=match):
        Job.from_record(record)
