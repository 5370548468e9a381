"""The end-to-end jobs behind the commands: four views -> reconstruction -> exported files.

`reconstruct_views` runs stage 2 and the export stage on four rig views and writes, into one
output folder, atomically (everything appears at the end, or nothing does):

    model.glb            textured mesh in the object frame (+Y up), PBR material
    views.png            the input views as a 2x2 grid on white
    reconstruction/      the triplanes and decoder (`fourview export` re-exports from it)
    turntable.gif        optional orbit preview
    meta.json            settings, model id, counts, time per stage, peak memory
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

import fourview
from fourview.cameras import DEFAULT_ELEVATION_DEG
from fourview.errors import InputError
from fourview.export.extract import ExportConfig, ExportResult, export_field
from fourview.images import composite_on_white, write_png
from fourview.views import check_views, grid_image, views_to_model_input

DEMO_RECON = Path(fourview.__file__).resolve().parent / "weights" / "recon-demo"
"""The shipped demo reconstructor (trained by `fourview train recon`, see docs/training.md)."""


def export_preset(size: str) -> ExportConfig:
    """Export settings that fit a model size: ``demo`` (small, fast on a CPU) or ``full``."""
    if size == "demo":
        return ExportConfig(resolution=128, face_budget=20_000, texture_size=256)
    if size == "full":
        return ExportConfig()
    raise InputError(f"unknown export preset {size!r}; expected 'demo' or 'full'")


def resolve_recon(name_or_path: str) -> str:
    """``demo`` names the shipped weights; anything else is a folder or a hub id."""
    if name_or_path == "demo":
        if not (DEMO_RECON / "model.safetensors").is_file():
            raise InputError(f"the shipped demo reconstructor is missing from the installation ({DEMO_RECON})")
        return str(DEMO_RECON)
    return name_or_path


@dataclass(frozen=True)
class ReconstructSettings:
    """Settings of `reconstruct_views`.

    Attributes:
        elevation_deg: elevation of the input rig, degrees.
        export_overrides: `ExportConfig` fields to change from the preset that fits the model's size
            (`export_preset`: ``demo`` for views of 64 px or less, else ``full``).
        formats: files to write besides the GLB (``obj``, ``ply``).
        turntable_frames: frames of ``turntable.gif`` (0: no turntable).
        preview_resolution: side of the turntable frames, pixels.
        device: torch device for the model.
    """

    elevation_deg: float = DEFAULT_ELEVATION_DEG
    export_overrides: dict = field(default_factory=dict)
    formats: tuple[str, ...] = ()
    turntable_frames: int = 0
    preview_resolution: int = 256
    device: str = "cpu"


@dataclass
class ReconstructResult:
    """What `reconstruct_views` wrote and measured."""

    out_dir: Path
    files: list[Path]
    export: ExportResult
    timings: dict[str, float] = field(default_factory=dict)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reconstruct_views(
    views: np.ndarray,
    out_dir: str | os.PathLike,
    recon: str = "demo",
    settings: ReconstructSettings = ReconstructSettings(),
    extra_meta: dict | None = None,
    timings: dict[str, float] | None = None,
) -> ReconstructResult:
    """Reconstruct an object from its four rig views and write the asset folder.

    Args:
        views: [4, H, W, 4] RGBA (or [4, H, W, 3] RGB on white) float in [0, 1], rig order.
        out_dir: output folder (created; files of the same names in it are replaced).
        recon: ``demo``, a folder written by ``save_pretrained``, or a hub id.
        settings: see `ReconstructSettings`.
        extra_meta: more entries for ``meta.json`` (the generate command adds its own).
        timings: earlier stages' times (seconds) to report alongside this job's.

    Raises:
        InputError: bad views, weights that cannot be loaded, a field without a surface.
    """
    from fourview.recon.model import Reconstructor
    from fourview.recon.saved_field import save_field

    if views.ndim != 4 or views.shape[0] != 4 or views.shape[-1] not in (3, 4):
        raise InputError(f"expected views [4, H, W, 3|4], got {tuple(views.shape)}")
    check_views(views)
    timings = dict(timings or {})
    out = Path(out_dir)
    t0 = time.perf_counter()
    recon_path = resolve_recon(recon)
    model = Reconstructor.from_pretrained(recon_path, device=settings.device).eval()
    timings["load_recon_s"] = time.perf_counter() - t0
    cfg = model.config
    preset = export_preset("demo" if cfg.unet.resolution <= 64 else "full")
    export_cfg = replace(preset, **{**settings.export_overrides, "device": settings.device})

    t0 = time.perf_counter()
    x = views_to_model_input(views, cfg.unet.view_resolution).to(settings.device)
    with torch.no_grad():
        planes = model(x, settings.elevation_deg)
    field_ = model.field(planes, 0)
    timings["reconstruct_s"] = time.perf_counter() - t0

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        names = ["model.glb", *(f"model.{fmt}" for fmt in settings.formats)]
        t0 = time.perf_counter()
        with torch.no_grad():
            exported = export_field(field_, [tmp / n for n in names], export_cfg)
        timings["export_s"] = time.perf_counter() - t0
        rgb = composite_on_white(views) if views.shape[-1] == 4 else views
        write_png(tmp / "views.png", grid_image(rgb))
        save_field(tmp / "reconstruction", field_, cfg, {"recon": recon})
        if settings.turntable_frames > 0:
            from fourview.data.assets import load_asset
            from fourview.export.preview import orbit_cameras, render_frames, write_turntable

            t0 = time.perf_counter()
            asset = load_asset(tmp / "model.glb", normalize=False)
            cams = orbit_cameras(settings.turntable_frames, settings.elevation_deg)
            write_turntable(tmp / "turntable.gif", render_frames(asset, cams, settings.preview_resolution))
            timings["turntable_s"] = time.perf_counter() - t0
        meta = {
            "fourview_version": fourview.__version__,
            "recon": recon,
            "recon_path": recon_path,
            "elevation_deg": settings.elevation_deg,
            "export": asdict(export_cfg),
            "mesh": {
                "vertices": exported.num_verts,
                "faces": exported.num_faces,
                "texture_size": exported.texture_size,
            },
            "files": sorted(p.name for p in tmp.iterdir()),
            "timings_s": {**timings, **{f"export_{k}": v for k, v in exported.timings.items()}},
            "peak_memory_mb": peak_memory_mb(),
            **(extra_meta or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
        files = _move_into(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ReconstructResult(out_dir=out, files=files, export=exported, timings=timings)


def _move_into(src: Path, dst: Path) -> list[Path]:
    """Move every entry of ``src`` into ``dst`` (replacing same-named ones); returns the new paths."""
    dst.mkdir(parents=True, exist_ok=True)
    moved = []
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
        moved.append(target)
    return moved
