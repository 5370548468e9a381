"""`ServerConfig`: where `fourview serve` listens, who may call it, where it keeps its jobs, its limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from fourview.errors import InputError
from fourview.pipeline import ModelSettings

LOOPBACK_NAMES: tuple[str, ...] = ("localhost",)
"""Host names taken for loopback without resolving them (any other name may resolve to anything)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    """How `fourview serve` runs (`fourview.server.app.create_app`)."""

    data: Path = Path("fourview-server")
    """Folder of the server's jobs: DATA/jobs/ID/ with job.json, the uploads and the asset (kept across restarts)."""
    host: str = "127.0.0.1"
    """Address to listen on; anything but loopback needs --api-key (or --insecure)."""
    port: int = 8000
    """Port to listen on."""
    api_key: str | None = None
    """Key every API request must carry in the X-API-Key header (None: no key asked for)."""
    insecure: bool = False
    """Allow a non-loopback --host without --api-key: anyone who reaches the port can run jobs and read them."""
    workers: tuple[str, ...] = ()
    """Devices that run jobs, one worker (and one copy of the models) each; repeat for several GPUs
    [default: --device]."""
    max_upload_mb: int = 20
    """Largest uploaded image, MB."""
    max_queued: int = 100
    """Most jobs waiting at once; more are refused (HTTP 429)."""
    turntable_frames: int = 24
    """Frames of a job's turntable.gif unless the job asks for another count (0: none)."""
    preview_resolution: int = 192
    """Side of the turntable frames, pixels."""
    models: ModelSettings = field(default_factory=ModelSettings)
    """The models each worker loads."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "workers", tuple(self.workers))
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port must be in [0, 65535], got {self.port}")
        if self.api_key is not None and (len(self.api_key) < 8 or not self.api_key.isprintable()):
            raise InputError("--api-key must be at least 8 printable characters")
        if not is_loopback(self.host) and self.api_key is None and not self.insecure:
            raise InputError(
                f"refusing to listen on {self.host}, which is not a loopback address, without --api-key KEY "
                "(or --insecure to let anyone who reaches it run jobs)"
            )
        if not 1 <= self.max_upload_mb <= 1024:
            raise InputError(f"--max-upload-mb must be in [1, 1024], got {self.max_upload_mb}")
        if not 1 <= self.max_queued <= 100_000:
            raise InputError(f"--max-queued must be in [1, 100000], got {self.max_queued}")
        if not 0 <= self.turntable_frames <= 120 or not 16 <= self.preview_resolution <= 1024:
            raise InputError(
                "--turntable-frames must be in [0, 120] and --preview-resolution in [16, 1024], got "
                f"{self.turntable_frames}, {self.preview_resolution}"
            )

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices that run jobs: ``workers``, else the models' device."""
        return self.workers or (self.models.device,)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1_000_000
