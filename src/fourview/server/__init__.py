"""`fourview serve`: a local web app and REST API over one loaded pipeline.

- `config`: `ServerConfig` (address, API key, data folder, limits, models);
- `jobs`: a job's record (`Job`) and the jobs on disk (`JobStore`), kept across restarts;
- `submission`: a job's settings (`JobSettings`) and the checks of its uploads, before it is queued;
- `runner`: the queue and its workers (`JobRunner`), one per device, the models loaded once;
- `app`: the FastAPI app (`create_app`): the REST API, its OpenAPI document, the web page (``static/``).

Needs the ``[server]`` extra (FastAPI, uvicorn, python-multipart, Swagger UI's files).
"""

from __future__ import annotations

from fourview.server.app import create_app
from fourview.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
