"""The job queue and its workers: one thread per device, one job at a time each, the models loaded once.

Each worker builds its pipeline (``pipeline_factory(device)``) when it starts, on its own thread, so
the server answers at once while the models load; jobs wait in the queue meanwhile. A job runs in
stages (`STAGES`); between two stages the worker records the stage and its progress, and stops
the job there when a client asked to cancel it (status ``cancelled``) or the server is stopping
(the job goes back to ``queued`` and runs again after the restart). A stage itself is never
interrupted: a model call cannot be stopped half-way.
"""

from __future__ import annotations

import collections
import copy
import logging
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fourview.asset import Asset
from fourview.errors import InputError
from fourview.images import read_rgba
from fourview.matting import Matte
from fourview.mvgen.image_prompt import PHOTO_PROMPT
from fourview.pipeline import FourViewPipeline
from fourview.server.config import ServerConfig
from fourview.server.jobs import FINISHED, JOB_FILES, Job, JobStore
from fourview.server.submission import JobSettings, view_paths
from fourview.views import PosedViews

logger = logging.getLogger(__name__)

PipelineFactory = Callable[[str], FourViewPipeline]
STAGES: dict[str, tuple[tuple[str, float], ...]] = {
    "text": (("generating views", 0.05), ("reconstructing", 0.45), ("saving", 0.85)),
    "photo": (("generating views and reconstructing", 0.05), ("saving", 0.85)),
    "views": (("reconstructing", 0.05), ("saving", 0.8)),
}
"""Each kind of job's stages in order, with the fraction of the job done when the stage starts."""


class _Cancelled(Exception):
    """A client cancelled the running job (raised at a stage boundary)."""


class _Stopping(Exception):
    """The server is stopping (raised at a stage boundary): the job goes back to the queue."""


@dataclass(frozen=True)
class WorkerState:
    """A worker as `JobRunner.workers` reports it.

    Attributes:
        device: the device its models run on.
        state: ``loading`` (the models), ``ready`` or ``failed`` (the models could not be loaded).
        error: why the models could not be loaded.
        job: the id of the job it is running.
    """

    device: str
    state: str
    error: str | None = None
    job: str | None = None


class JobRunner:
    """The queue of a `JobStore`'s jobs and the worker threads that run them."""

    def __init__(self, store: JobStore, config: ServerConfig, pipeline_factory: PipelineFactory) -> None:
        self.store = store
        self.config = config
        self._factory = pipeline_factory
        self._queue: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._states = {device: WorkerState(device, "loading") for device in config.devices}
        self._prompt_check: Callable[[str], None] | None = None

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Read the store (queued jobs queue again, running ones are reported lost) and start the workers."""
        queued = self.store.load()
        with self._cond:
            self._stopping = False
            self._queue.extend(job.id for job in queued)
        for device in self.config.devices:
            thread = threading.Thread(target=self._work, args=(device,), name=f"fourview-worker-{device}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if queued:
            logger.info("queued %d jobs again after the restart", len(queued))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers: a running job stops at its next stage boundary and is queued again."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called: the workers take no new job."""
        with self._cond:
            return self._stopping

    # -- what clients ask ----------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job the store has made."""
        with self._cond:
            self._queue.append(job.id)
            self._cond.notify()

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def position(self, job_id: str) -> int | None:
        """The job's place in the queue (0: next), or None when it is not waiting."""
        with self._cond:
            try:
                return self._queue.index(job_id)
            except ValueError:
                return None

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or ask a running one to stop at its next stage boundary.

        Returns:
            The job's record after the change (a finished job is returned unchanged).
        """
        with self._cond:
            job = self.store.get(job_id)
            if job is None or job.status in FINISHED:
                return job
            if job.status == "queued":
                self._queue.remove(job_id)
                return self.store.update(job_id, status="cancelled", stage="cancelled", finished=time.time())
            return self.store.update(job_id, cancel_requested=True)

    def workers(self) -> list[WorkerState]:
        with self._cond:
            return list(self._states.values())

    def check_prompt(self, prompt: str) -> None:
        """The loaded generator's check of a prompt's length in tokens (nothing before it has loaded).

        Raises:
            InputError: a prompt longer than the text encoders take.
        """
        check = self._prompt_check
        if check is None:
            return
        try:
            check(prompt)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - the job's own check runs anyway; this one only answers early
            logger.debug("prompt check skipped: %s", e)

    # -- the workers -----------------------------------------------------------------------------

    def _set_state(self, device: str, **changes) -> None:
        with self._cond:
            old = self._states[device]
            self._states[device] = WorkerState(**{**old.__dict__, **changes})

    def _work(self, device: str) -> None:
        t0 = time.perf_counter()
        pipe = None
        try:
            pipe = self._factory(device)
        except Exception as e:  # noqa: BLE001 - reported on every job this worker takes, and in /health
            message = _one_line(e)
            logger.error("the models could not be loaded on %s: %s", device, message)
            self._set_state(device, state="failed", error=message)
        else:
            if self._prompt_check is None:
                self._prompt_check = _prompt_checker(pipe)
            logger.info("models loaded on %s in %.1f s", device, time.perf_counter() - t0)
            self._set_state(device, state="ready")
        while True:
            job_id = self._next(device)
            if job_id is None:
                return
            self._set_state(device, job=job_id)
            try:
                self._run(pipe, device, job_id)
            finally:
                self._set_state(device, job=None)

    def _next(self, device: str) -> str | None:
        """The next job, marked running in the same step (so a cancel sees it queued or running); None to stop."""
        with self._cond:
            while not self._stopping and not self._queue:
                self._cond.wait()
            if self._stopping:
                return None
            job_id = self._queue.popleft()
            stage, progress = STAGES[self.store.get(job_id).kind][0]
            self.store.update(
                job_id, status="running", stage=stage, progress=progress, started=time.time(), device=device
            )
            return job_id

    def _boundary(self, job_id: str, stage: str, progress: float) -> None:
        """Between two stages: stop for a cancel or a stopping server, else record the next stage."""
        if self.store.get(job_id).cancel_requested:
            raise _Cancelled
        if self.stopping:
            raise _Stopping
        self.store.update(job_id, stage=stage, progress=progress)

    def _run(self, pipe: FourViewPipeline | None, device: str, job_id: str) -> None:
        job = self.store.get(job_id)
        try:
            if pipe is None:
                raise InputError(f"the models could not be loaded on {device}: {self._states[device].error}")
            asset = self._make_asset(pipe, job)
            frames = job.settings.get("turntable")
            self._boundary(job_id, *STAGES[job.kind][-1])
            asset.meta["server_job"] = job_id
            asset.save(
                self.store.asset(job_id),
                turntable_frames=self.config.turntable_frames if frames is None else frames,
                preview_resolution=self.config.preview_resolution,
                overwrite=True,  # a folder left by a run that stopped before its record said done
            )
            files = tuple(name for name in JOB_FILES if (self.store.asset(job_id) / name).is_file())
            self.store.update(job_id, status="done", stage="done", progress=1.0, finished=time.time(), files=files)
        except _Cancelled:
            self.store.update(job_id, status="cancelled", stage="cancelled", finished=time.time())
        except _Stopping:
            self.store.update(job_id, status="queued", stage="queued", progress=0.0, started=None, device=None)
        except Exception as e:  # noqa: BLE001 - a failing job is recorded with its reason; the worker goes on
            message = _one_line(e) if isinstance(e, InputError) else f"{type(e).__name__}: {_one_line(e)}"
            if not isinstance(e, InputError):
                logger.exception("job %s failed", job_id)
            self.store.update(job_id, status="failed", stage="failed", error=message, finished=time.time())
        finally:
            if torch.device(device).type == "cuda":  # a failed job's cached blocks are the next job's memory
                torch.cuda.empty_cache()

    def _make_asset(self, pipe: FourViewPipeline, job: Job) -> Asset:
        """Run a job's model stages (every stage but saving) on the loaded pipeline."""
        settings = JobSettings.model_validate(job.settings)
        sampling, export = settings.sampling(), settings.export()
        inputs = self.store.inputs(job.id)
        stages = STAGES[job.kind]
        if job.kind == "text":
            start = time.perf_counter()
            generated = pipe.generate_views(settings.prompt, None, sampling)
            self._boundary(job.id, *stages[1])
            asset = pipe.views_to_3d(generated.views, "feedforward", export, meta=generated.meta)
            asset.timings = {**generated.timings, **asset.timings, "total_s": time.perf_counter() - start}
            return asset
        if job.kind == "photo":
            rgba = read_rgba(inputs / "photo_rgba.png")
            matting = job.inputs["matting"]
            matte = Matte(rgba=rgba, mask=rgba[..., 3], method=matting["method"], note=matting["note"])
            asset = pipe.image_to_3d(matte, settings.prompt or PHOTO_PROMPT, sampling, export)
            asset.meta["image"] = job.inputs["photo"]
            return asset
        views = PosedViews.read(view_paths(inputs), settings.elevation)
        asset = pipe.views_to_3d(views, "feedforward", export, meta={"inputs": job.inputs["views"]})
        if job.inputs.get("matting"):
            asset.extra_images["mask.png"] = read_rgba(inputs / "mask.png")[..., 0]
            asset.meta["matting"] = job.inputs["matting"]
        return asset


def _prompt_checker(pipe: FourViewPipeline) -> Callable[[str], None] | None:
    """The generator's own prompt check, run on copies of its tokenizers.

    A request thread checks prompts while a worker may be tokenizing: a fast tokenizer shared
    between threads can fail ("Already borrowed"), so the check gets tokenizers of its own.
    """
    generator = getattr(pipe, "generator", None)
    sdxl = getattr(generator, "sdxl", None)
    if generator is None or sdxl is None or not hasattr(generator, "check_prompt"):
        return None
    checker = copy.copy(generator)
    checker.sdxl = types.SimpleNamespace(
        tokenizer=copy.deepcopy(sdxl.tokenizer), tokenizer_2=copy.deepcopy(getattr(sdxl, "tokenizer_2", None))
    )
    return checker.check_prompt


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def load_pipeline(config: ServerConfig, device: str) -> FourViewPipeline:
    """The default pipeline factory: ``config.models`` loaded on ``device``."""
    m = config.models
    return FourViewPipeline.from_pretrained(
        m.mvgen, m.recon, student=m.student, lora=m.lora, device=device, dtype=m.dtype, cpu_offload=m.cpu_offload
    )


__all__ = ["STAGES", "JobRunner", "PipelineFactory", "WorkerState", "load_pipeline"]
