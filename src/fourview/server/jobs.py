"""Jobs on disk: one folder per job, its record rewritten atomically at every change of state.

Layout under the server's data folder::

    DATA/jobs/ID/job.json     the job's record (`Job`): kind, status, stage, progress, settings, error
    DATA/jobs/ID/inputs/      what was uploaded, checked: the photo's cut-out and mask, or the four views
    DATA/jobs/ID/asset/       the finished asset (`fourview.asset.Asset.save`: complete or absent)

A job folder appears complete (record and inputs) or not at all (`fourview.atomic.atomic_folder`),
so a request that fails its checks leaves nothing behind. After a restart, `JobStore.load` lists
every job again: finished ones as they were, queued ones to be queued again (their inputs are on
disk), and the ones that were running marked failed with `LOST_AT_RESTART` (their work is gone,
and a job that brought the server down must not run again by itself).

IDs are 32 lowercase hex digits made here (`new_job_id`); anything else names no job and never
reaches the file system.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, get_args

from fourview.atomic import atomic_folder, remove_stale_temporaries, write_text_atomic
from fourview.errors import InputError

logger = logging.getLogger(__name__)

JobKind = Literal["text", "photo", "views"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[str, ...] = ("done", "failed", "cancelled")
JOB_FILES: tuple[str, ...] = ("model.glb", "views.png", "turntable.gif", "meta.json", "mask.png")
"""The asset files a client may download (`JobStore.file`); no other name is ever looked up."""
JOB_ID = re.compile(r"[0-9a-f]{32}")
RECORD_NAME = "job.json"
LOST_AT_RESTART = "lost at server restart: the job was running when the server stopped"


def new_job_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Job:
    """One job's record (``job.json``).

    Attributes:
        id: 32 hex digits.
        kind: ``text`` (a prompt), ``photo`` (one photo) or ``views`` (four photos of the rig).
        status: ``queued``, ``running``, ``done``, ``failed`` or ``cancelled``.
        settings: the job's settings as accepted (`fourview.server.submission.JobSettings`, JSON).
        created: submission time, seconds since the epoch.
        stage: what the job is doing now, in words (``queued``, ``generating views``, ``saving``...).
        progress: fraction of the job done, in [0, 1].
        error: the one-line reason of a failure.
        started, finished: times the job started running and ended (None before).
        cancel_requested: a running job stops at its next stage boundary.
        device: the device of the worker that ran it.
        inputs: what was uploaded (client file names) and how the background was removed.
        files: the asset files there are to download (names from `JOB_FILES`).
    """

    id: str
    kind: JobKind
    status: JobStatus
    settings: dict
    created: float
    stage: str = "queued"
    progress: float = 0.0
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False
    device: str | None = None
    inputs: dict | None = None
    files: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, record: dict) -> Job:
        """A job from its ``job.json`` record.

        Raises:
            InputError: a record that is not one (missing or unknown keys, a bad id, kind or status).
        """
        names = {f.name for f in fields(cls)}
        if not isinstance(record, dict) or not {"id", "kind", "status", "settings", "created"} <= set(record):
            raise InputError("not a job record")
        unknown = set(record) - names
        if unknown:
            raise InputError(f"unknown keys {sorted(unknown)}")
        job = cls(**{**record, "files": tuple(record.get("files", ()))})
        if not JOB_ID.fullmatch(str(job.id)) or job.kind not in get_args(JobKind):
            raise InputError(f"bad id or kind {job.id!r}, {job.kind!r}")
        if job.status not in get_args(JobStatus):
            raise InputError(f"bad status {job.status!r}")
        return job

    def record(self) -> dict:
        return {**asdict(self), "files": list(self.files)}


class JobStore:
    """The jobs of one data folder, in memory and on disk; every change is written before it is seen.

    Thread-safe: one lock orders every change, so a record on disk is never older than one that
    was shown to a client.
    """

    def __init__(self, data: str | Path) -> None:
        self.root = Path(data) / "jobs"
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()

    def load(self) -> list[Job]:
        """Read every job folder (at start-up); returns the queued jobs, oldest first, to queue again.

        Jobs that were running are marked failed with `LOST_AT_RESTART`; the temporaries a killed
        server left (a job folder, a record or an asset half-written) are removed. A folder whose
        record cannot be read is skipped with a warning (and left as it is).

        Raises:
            InputError: the data folder cannot be created or read.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.root)  # job folders a killed server was assembling
            folders = sorted(p for p in self.root.iterdir() if JOB_ID.fullmatch(p.name) and p.is_dir())
            for folder in folders:  # its records and assets being written
                remove_stale_temporaries(folder)
        except OSError as e:
            raise InputError(f"cannot use the data folder {self.root.parent}: {e.strerror or e}") from None
        with self._lock:
            self._jobs.clear()
            for folder in folders:
                try:
                    job = Job.from_record(json.loads((folder / RECORD_NAME).read_text(encoding="utf-8")))
                    if job.id != folder.name:
                        raise InputError(f"the record names job {job.id}")
                except (OSError, ValueError, TypeError) as e:
                    logger.warning("skipped the job folder %s: %s", folder, e)
                    continue
                self._jobs[job.id] = job
                if job.status == "running":
                    self.update(job.id, status="failed", stage="failed", error=LOST_AT_RESTART, finished=time.time())
                elif job.status == "queued" and (job.stage != "queued" or job.progress):
                    self.update(job.id, stage="queued", progress=0.0)
            return sorted((j for j in self._jobs.values() if j.status == "queued"), key=lambda j: j.created)

    def create(self, job: Job, write_inputs: Callable[[Path], dict | None]) -> Job:
        """Make the job's folder: ``write_inputs(inputs_folder)`` writes (and checks) the uploads and
        returns what to record of them; the folder appears only if it succeeds.

        Raises:
            InputError: from ``write_inputs``, or the folder cannot be written.
        """
        with atomic_folder(self.folder(job.id)) as tmp:
            (tmp / "inputs").mkdir()
            job = replace(job, inputs=write_inputs(tmp / "inputs"))
            write_text_atomic(tmp / RECORD_NAME, json.dumps(job.record(), indent=1) + "\n")
        with self._lock:
            self._jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        """The job, or None for an unknown or malformed id."""
        with self._lock:
            return self._jobs.get(job_id) if JOB_ID.fullmatch(job_id) else None

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def update(self, job_id: str, **changes) -> Job:
        """Change a job's record: written to ``job.json`` atomically, then kept in memory."""
        with self._lock:
            job = replace(self._jobs[job_id], **changes)
            write_text_atomic(self.folder(job_id) / RECORD_NAME, json.dumps(job.record(), indent=1) + "\n")
            self._jobs[job_id] = job
            return job

    def folder(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):  # ids are made here; anything else is a bug, not a path
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def inputs(self, job_id: str) -> Path:
        return self.folder(job_id) / "inputs"

    def asset(self, job_id: str) -> Path:
        return self.folder(job_id) / "asset"

    def file(self, job_id: str, name: str) -> Path | None:
        """The path of a finished job's asset file ``name`` (one of `JOB_FILES`), or None."""
        job = self.get(job_id)
        if job is None or name not in JOB_FILES or name not in job.files:
            return None
        path = self.asset(job_id) / name
        return path if path.is_file() else None
