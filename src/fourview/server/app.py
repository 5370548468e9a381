"""The FastAPI app of `fourview serve`: the REST API, its OpenAPI document and the web page.

Endpoints (the OpenAPI document at ``/openapi.json``, browsable at ``/docs``)::

    POST   /jobs                    submit a job -> 202 {id, status, ...}: JSON {prompt, seed, ...} for
                                    text; multipart/form-data with a 'photo' file, or four 'views'
                                    files (az 0, 90, 180, 270), and the settings as form fields
    GET    /jobs                    the jobs, newest first
    GET    /jobs/{id}               status, stage, progress (0..1), error, files
    DELETE /jobs/{id}               cancel: a queued job at once, a running one at its next stage
    GET    /jobs/{id}/files/{name}  model.glb, views.png, turntable.gif, meta.json, mask.png
    GET    /health                  version, workers (loading / ready / failed), queue length
    GET    /                        the web page (static/: our own script and WebGL viewer)

Errors are JSON ``{"detail": "one line"}``: 400 a malformed body, 401 a missing or wrong API key,
403 a foreign Host or Origin, 404 an unknown job or file, 409 a job that has finished, 413 an
upload over the limit, 415 a body or image of another type, 422 settings or images the checks
refuse (`fourview.errors.InputError`'s message), 429 a full queue.

Safety: with an API key (`ServerConfig.api_key`) every API request needs it in the ``X-API-Key``
header; the page, its script and the API's description hold no data and are served to anyone (a
browser cannot add a header to the page's own address). On a loopback address, requests must name
the server by a loopback host (no DNS rebinding), and a request from another origin is refused.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path as FilePath
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from fastapi import FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

import fourview
from fourview.errors import InputError
from fourview.server.config import ServerConfig, is_loopback
from fourview.server.jobs import JOB_FILES, Job, JobKind, JobStatus, JobStore, new_job_id
from fourview.server.runner import JobRunner, PipelineFactory, load_pipeline
from fourview.server.submission import (
    JobSettings,
    UnsupportedImage,
    Upload,
    UploadTooLarge,
    write_photo_inputs,
    write_views_inputs,
)

try:  # Swagger UI's files from PyPI (the [server] extra), so /docs works offline
    from swagger_ui_bundle import swagger_ui_path
except ImportError:  # pragma: no cover - without it /docs says where the document is
    swagger_ui_path = None

STATIC = FilePath(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 64_000
MEDIA_TYPES = {".glb": "model/gltf-binary", ".png": "image/png", ".gif": "image/gif", ".json": "application/json"}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PAGE_POLICY = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'"


class ErrorMessage(BaseModel):
    detail: str


class JobView(BaseModel):
    """A job as the API shows it."""

    id: str
    kind: JobKind
    status: JobStatus
    stage: str
    progress: float
    error: str | None
    created: float
    started: float | None
    finished: float | None
    queue_position: int | None
    cancel_requested: bool
    device: str | None
    settings: dict
    inputs: dict | None
    files: dict[str, str]
    """Asset files there are to download: name -> URL."""


class JobList(BaseModel):
    jobs: list[JobView]


class WorkerView(BaseModel):
    device: str
    state: Literal["loading", "ready", "failed"]


class Health(BaseModel):
    version: str
    api_key_required: bool
    queued: int
    workers: list[WorkerView]


def _submit_openapi() -> dict:
    """POST /jobs's request bodies for the OpenAPI document (the route reads its body itself)."""
    settings = JobSettings.model_json_schema()
    form = {
        "type": "object",
        "properties": {
            "photo": {"type": "string", "format": "binary", "description": "One photo (PNG, JPEG or WebP)."},
            "views": {
                "type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 4, "maxItems": 4,
                "description": "Four photos of the object from azimuths 0, 90, 180, 270 (front, right, back, left).",
            },
            **settings["properties"],
        },
    }  # fmt: skip
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {**settings, "required": ["prompt"]}},
                "multipart/form-data": {"schema": form},
            },
        }
    }


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _validation_message(errors: list[dict]) -> str:
    """Pydantic's errors as one line: ``where: what; ...``."""
    parts = []
    for error in errors[:5]:
        loc = [str(x) for x in error.get("loc", ()) if x not in ("body", "path", "query", "header")]
        parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
    return _one_line("; ".join(parts))


async def _read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) once it is over ``limit`` bytes, declared or sent."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(f"the request is {int(declared) / 1e6:.1f} MB, over the limit of {limit / 1e6:g} MB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge(f"the request is over the limit of {limit / 1e6:g} MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_form(request: Request, body: bytes) -> tuple[dict[str, list[Upload]], dict[str, str]]:
    """(files by field name, other fields) of a multipart body."""

    async def once():
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=4, max_fields=32, max_part_size=64_000).parse()
    except (MultiPartException, KeyError, ValueError) as e:
        raise HTTPException(400, f"malformed multipart body: {_one_line(str(e)) or type(e).__name__}") from None
    files: dict[str, list[Upload]] = {}
    fields: dict[str, str] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.setdefault(key, []).append(Upload(value.filename or "upload", await value.read()))
            elif key in fields:
                raise InputError(f"form field {key[:40]!r} is given twice")
            elif value.strip():  # an empty form field is a setting left out
                fields[key] = value
    finally:
        await form.close()
    return files, fields


def create_app(config: ServerConfig, pipeline_factory: PipelineFactory | None = None) -> FastAPI:
    """The app: jobs kept under ``config.data``, run by one worker per device.

    Args:
        config: the server's settings (address, key, limits, models).
        pipeline_factory: builds a worker's pipeline for its device, on the worker's thread
            [default: ``config.models`` loaded with `FourViewPipeline.from_pretrained`].
    """
    store = JobStore(config.data)
    runner = JobRunner(store, config, pipeline_factory or partial(load_pipeline, config))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            await run_in_threadpool(runner.stop)

    app = FastAPI(
        title="fourview",
        version=fourview.__version__,
        summary="Text, one photo or four photos to a textured 3D mesh (GLB).",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runner = runner
    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's --api-key.")

    def require_key(key: str | None = Security(api_key_header)) -> None:
        expected = config.api_key
        if expected is not None and (key is None or not hmac.compare_digest(key.encode(), expected.encode())):
            raise HTTPException(401, "this server needs its API key in the X-API-Key header")

    keyed = [Security(require_key)]
    allowed_hosts = LOOPBACK_HOSTS if is_loopback(config.host) else None

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = request.headers.get("host", "")
        name = urlsplit(f"//{host}").hostname or ""
        if allowed_hosts is not None and name not in allowed_hosts:
            return JSONResponse({"detail": f"this server answers to {config.host} only"}, 403)
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            return JSONResponse({"detail": "requests from another origin are refused"}, 403)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(error))}, getattr(error, "status_code", 422))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(error.errors())}, 422)

    def view(job: Job) -> JobView:
        files = {name: f"/jobs/{job.id}/files/{name}" for name in job.files}
        fields = {k: v for k, v in job.record().items() if k != "files"}
        return JobView(**fields, files=files, queue_position=runner.position(job.id))

    def find(job_id: str) -> Job:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id[:40]!r}")
        return job

    def create(kind: str, settings: JobSettings, files: dict[str, list[Upload]]) -> Job:
        settings.check(kind, config.models.mvgen)  # the prompts' tokens too, before any model has loaded
        if settings.prompt is not None and kind != "views":  # the loaded generator's own check (a hub id's too)
            runner.check_prompt(settings.prompt)
        if runner.queued() >= config.max_queued:
            raise HTTPException(429, f"the queue is full ({config.max_queued} jobs waiting); try again later")
        job = Job(
            id=new_job_id(), kind=kind, status="queued", settings=settings.model_dump(mode="json", exclude_none=True),
            created=time.time(),
        )  # fmt: skip
        limit = config.max_upload_bytes
        if kind == "photo":
            job = store.create(job, lambda folder: write_photo_inputs(files["photo"][0], settings, folder, limit))
        elif kind == "views":
            job = store.create(job, lambda folder: write_views_inputs(files["views"], settings, folder, limit))
        else:
            job = store.create(job, lambda folder: None)
        runner.submit(job)
        return job

    errors = {s: {"model": ErrorMessage} for s in (400, 401, 403, 404, 409, 413, 415, 422, 429)}

    @app.post(
        "/jobs", status_code=202, response_model=JobView, openapi_extra=_submit_openapi(), dependencies=keyed,
        responses={s: errors[s] for s in (400, 401, 403, 413, 415, 422, 429)}, summary="Submit a job",
    )  # fmt: skip
    async def submit_job(request: Request) -> JSONResponse:
        """A text job as JSON (or a form), or a photo / four views as multipart/form-data (settings as form fields)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            body = await _read_body(request, MAX_JSON_BYTES)
            try:
                settings = JobSettings.model_validate_json(body, strict=True)
            except ValidationError as e:
                raise InputError(_validation_message(e.errors())) from None
            kind, files = "text", {}
        elif content_type == "multipart/form-data":
            body = await _read_body(request, 4 * config.max_upload_bytes + 1_000_000)
            files, fields = await _read_form(request, body)
            unknown = sorted(set(files) - {"photo", "views"})
            if unknown:
                raise InputError(f"unknown file field {unknown[0][:40]!r}; send 'photo' (one) or 'views' (four)")
            if "photo" in files and "views" in files:
                raise InputError("a job takes one 'photo' or four 'views', not both")
            if len(files.get("photo", ())) > 1:
                raise InputError(f"a photo job takes one 'photo' file, got {len(files['photo'])}")
            kind = "photo" if "photo" in files else "views" if "views" in files else "text"
        elif content_type == "application/x-www-form-urlencoded":  # a text job from a plain form or curl -d
            body = await _read_body(request, MAX_JSON_BYTES)
            try:
                pairs = parse_qsl(body.decode("ascii"), max_num_fields=32, errors="strict")
            except (UnicodeDecodeError, ValueError) as e:
                raise HTTPException(400, f"malformed form body: {_one_line(str(e))}") from None
            kind, files, fields = "text", {}, {}
            for key, value in pairs:
                if key in fields:
                    raise InputError(f"form field {key[:40]!r} is given twice")
                if value.strip():
                    fields[key] = value
        else:
            raise UnsupportedImage(
                "send JSON or a form (a text job), or multipart/form-data (a 'photo' or four 'views'), "
                f"not {content_type[:60] or 'no content type'!r}"
            )
        if content_type != "application/json":
            try:
                settings = JobSettings.model_validate(fields)
            except ValidationError as e:
                raise InputError(_validation_message(e.errors())) from None
        job = await run_in_threadpool(create, kind, settings, files)
        job = store.get(job.id)  # as it is now: a free worker may have started it already
        return JSONResponse(view(job).model_dump(mode="json"), 202, headers={"Location": f"/jobs/{job.id}"})

    @app.get("/jobs", response_model=JobList, dependencies=keyed, responses={401: errors[401]}, summary="List jobs")
    def list_jobs(
        status: JobStatus | None = Query(None, description="Only jobs with this status."),
        limit: int = Query(100, ge=1, le=1000, description="Most jobs to list."),
    ) -> JobList:
        """The jobs, newest first."""
        jobs = [job for job in store.jobs() if status is None or job.status == status]
        return JobList(jobs=[view(job) for job in jobs[:limit]])

    @app.get(
        "/jobs/{job_id}", response_model=JobView, dependencies=keyed, responses={s: errors[s] for s in (401, 404)},
        summary="A job's status and progress",
    )  # fmt: skip
    def get_job(job_id: str = Path(..., max_length=200)) -> JobView:
        """Status (queued, running, done, failed, cancelled), stage, progress in [0, 1], error, files."""
        return view(find(job_id))

    @app.delete(
        "/jobs/{job_id}", response_model=JobView, dependencies=keyed,
        responses={202: {"model": JobView, "description": "A running job will stop at its next stage."},
                   **{s: errors[s] for s in (401, 404, 409)}},
        summary="Cancel a job",
    )  # fmt: skip
    def cancel_job(job_id: str = Path(..., max_length=200)) -> JSONResponse:
        """Cancel a queued job (200), or ask a running one to stop at its next stage boundary (202)."""
        job = find(job_id)
        if job.status in ("done", "failed", "cancelled"):
            raise HTTPException(409, f"job {job.id} is {job.status}; there is nothing to cancel")
        job = runner.cancel(job.id)
        return JSONResponse(view(job).model_dump(mode="json"), 200 if job.status == "cancelled" else 202)

    @app.get(
        "/jobs/{job_id}/files/{name}", dependencies=keyed, responses={s: errors[s] for s in (401, 404, 422)},
        summary="Download a file of a finished job", response_class=FileResponse,
    )  # fmt: skip
    def get_file(job_id: str = Path(..., max_length=200), name: Literal[JOB_FILES] = Path(...)) -> FileResponse:
        """One of the asset's files; only these names exist, and only once the job is done."""
        job = find(job_id)
        path = store.file(job.id, name)
        if path is None:
            raise HTTPException(404, f"job {job.id} has no {name} ({job.status})")
        suffix = path.suffix
        disposition = "attachment" if suffix == ".glb" else "inline"
        return FileResponse(
            path, media_type=MEDIA_TYPES[suffix], filename=f"fourview-{job.id[:8]}-{name}",
            content_disposition_type=disposition,
        )  # fmt: skip

    @app.get("/health", response_model=Health, summary="Workers and queue")
    def health() -> Health:
        """Whether the models are loaded, and how many jobs wait (no key needed; no job data)."""
        workers = [WorkerView(device=w.device, state=w.state) for w in runner.workers()]
        return Health(version=fourview.__version__, api_key_required=config.api_key is not None,
                      queued=runner.queued(), workers=workers)  # fmt: skip

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if swagger_ui_path is not None:
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if swagger_ui_path is None:
            return HTMLResponse(
                "<!doctype html><title>fourview API</title><p>Swagger UI's files are not installed "
                "(<code>pip install 'fourview[server]'</code>); the API's OpenAPI document is at "
                "<a href='/openapi.json'>/openapi.json</a>.</p>"
            )
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="fourview API", swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css", swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )  # fmt: skip

    return app


__all__ = ["JobList", "JobView", "create_app"]
