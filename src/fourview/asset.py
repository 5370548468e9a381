"""An asset: what one job made, in memory, and the folder it is saved as.

`fourview.pipeline.FourViewPipeline` returns an `Asset`; `Asset.save` writes it once, atomically
(the folder appears complete or not at all, `fourview.atomic.atomic_folder`):

    model.glb            textured mesh in the object frame (+Y up), PBR material
    model_lod1.glb ...   coarser levels of detail, when asked for (`ExportConfig.lods`), and
    model_lods.glb       all levels in one file (MSFT_lod); every level shares one texture set
    model.obj / .ply     the same mesh in other formats, when asked for
    views.png            the views on white (the 2x2 grid for the rig; other counts: rows of four)
    mask.png ...         the asset's extra images (`Asset.extra_images`), e.g. the photo's mask
    reconstruction/      the field (triplanes + decoder) and the views with their cameras:
                         `fourview export` re-exports from it without running a model
    turntable.gif        an orbit of the mesh, when asked for
    meta.json            the job's settings, model ids, counts (each level's), the placement
                         (axes, metres, height, pivot), time per stage, peak memory
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

import fourview
from fourview.atomic import atomic_folder, write_text_atomic
from fourview.cameras import DEFAULT_ELEVATION_DEG
from fourview.errors import InputError
from fourview.export.exporter import ExportConfig
from fourview.export.preview import orbit_cameras, render_frames, write_turntable
from fourview.images import write_png
from fourview.mesh import MeshAsset
from fourview.meshio import write_mesh_files
from fourview.recon.config import ReconConfig
from fourview.recon.decoder import TriplaneField
from fourview.recon.saved_field import VIEWS_NAME, save_field
from fourview.views import PosedViews

MESH_FORMATS: tuple[str, ...] = ("glb", "obj", "ply")
"""Mesh formats `Asset.save` writes; the GLB always."""
EXTRA_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.png")
"""The file names `Asset.extra_images` may use (no folders)."""


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class Asset:
    """A textured mesh with what it was made from.

    Attributes:
        mesh: the exported mesh (object frame, +Y up): positions, faces, UVs, vertex colours and
            the material with its baked texture.
        views: the views it was reconstructed from, with their cameras.
        field: the SDF + colour field the mesh was extracted from.
        field_config: the `ReconConfig` that sizes ``field`` (saved with it).
        export_config: the export settings the mesh was made with.
        project_views: whether the views' colours were projected onto the texture.
        meta: the job's own record (prompt, seed, model ids, method, settings), JSON-serialisable.
        timings: seconds per stage.
        peak_memory_mb: peak resident memory of the process when the asset was made.
        extra_images: more PNGs written beside the views, file name -> [H, W] or [H, W, 3|4]
            float in [0, 1] (the photo's mask and cut-out, so a user can see what went in).
    """

    mesh: MeshAsset
    views: PosedViews
    field: TriplaneField
    field_config: ReconConfig
    export_config: ExportConfig
    project_views: bool
    meta: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    extra_images: dict[str, np.ndarray] = field(default_factory=dict)

    num_verts = property(lambda self: self.mesh.num_verts, doc="Vertices of the mesh.")
    num_faces = property(lambda self: self.mesh.num_faces, doc="Faces of the mesh.")
    texture_size = property(lambda self: self.mesh.texture_size, doc="Baked texture side; None with vertex colours.")

    def turntable(self, frames: int = 24, resolution: int = 256, progress: bool = False) -> list[np.ndarray]:
        """[resolution, resolution, 3] uint8 RGB frames on white: an orbit of the mesh at the views' rig elevation."""
        try:
            elevation = self.views.rig_elevation_deg()
        except InputError:
            elevation = DEFAULT_ELEVATION_DEG
        return render_frames(self.mesh, orbit_cameras(frames, elevation), resolution, progress=progress)

    def save(
        self,
        out_dir: str | os.PathLike,
        formats: tuple[str, ...] = (),
        turntable_frames: int = 0,
        preview_resolution: int = 256,
        overwrite: bool = False,
        progress: bool = False,
    ) -> list[Path]:
        """Write the asset folder (see the module docstring) atomically; returns the paths in it.

        Args:
            out_dir: the folder; it must not exist or be empty unless ``overwrite`` (then it is
                replaced as a whole: two runs' files never mix).
            formats: mesh formats besides the GLB (``obj``, ``ply``).
            turntable_frames: frames of ``turntable.gif`` (0: none).
            preview_resolution: side of the turntable frames, pixels.
            overwrite: replace an existing non-empty folder.
            progress: a progress bar over the turntable's frames.

        Raises:
            InputError: an unknown format, a folder that cannot be written or would mix two runs.
        """
        check_save_options(formats, turntable_frames, preview_resolution)
        for name in self.extra_images:
            if not EXTRA_IMAGE_NAME.fullmatch(name) or name in ("views.png", "model.png"):
                raise InputError(f"an extra image needs a plain .png file name of its own, got {name!r}")
        out = Path(out_dir)
        timings = dict(self.timings)
        with atomic_folder(out, overwrite=overwrite) as tmp:
            names = ["model.glb", *(f"model.{fmt}" for fmt in formats if fmt != "glb")]
            t0 = time.perf_counter()
            write_mesh_files(self.mesh, [tmp / n for n in names])
            timings["write_s"] = time.perf_counter() - t0
            write_png(tmp / "views.png", self.views.contact_sheet())
            for name, image in self.extra_images.items():
                write_png(tmp / name, image)
            field_meta = {"method": self.meta.get("method"), "recon": self.meta.get("recon")}
            save_field(tmp / "reconstruction", self.field, self.field_config, field_meta)
            if self.project_views:  # so that `fourview export` bakes the same texture
                self.views.save(tmp / "reconstruction" / VIEWS_NAME)
            if turntable_frames > 0:
                t0 = time.perf_counter()
                write_turntable(tmp / "turntable.gif", self.turntable(turntable_frames, preview_resolution, progress))
                timings["turntable_s"] = time.perf_counter() - t0
            meta = {
                "fourview_version": fourview.__version__,
                **self.meta,
                "export": asdict(self.export_config),
                "mesh": self.mesh.summary(),
                "project_views": self.project_views,
                "files": sorted([*(p.name for p in tmp.iterdir()), "meta.json"]),
                "timings_s": timings,
                "peak_memory_mb": max(self.peak_memory_mb, peak_memory_mb()),
            }
            write_text_atomic(tmp / "meta.json", json.dumps(meta, indent=1, default=str) + "\n")
        return sorted(out.iterdir())


@dataclass(frozen=True)
class SaveSettings:
    """What `Asset.save` writes besides the GLB, and whether it may replace a folder."""

    formats: tuple[Literal["obj", "ply"], ...] = ()
    """Also write model.obj (+ .mtl, .png) or model.ply (repeat the option for both)."""
    turntable_frames: int = 0
    """Frames of turntable.gif (0: none)."""
    preview_resolution: int = 256
    """Side of the turntable frames, pixels."""
    overwrite: bool = False
    """Replace a non-empty output folder as a whole (never mixes two runs' files)."""

    def __post_init__(self) -> None:
        check_save_options(self.formats, self.turntable_frames, self.preview_resolution)


def check_save_options(formats: tuple[str, ...], turntable_frames: int, preview_resolution: int) -> None:
    """Check `Asset.save`'s options before any work is done.

    Raises:
        InputError: an unknown format, a negative frame count or a preview size out of range.
    """
    for fmt in formats:
        if fmt not in MESH_FORMATS:
            raise InputError(f"unknown mesh format {fmt!r}; expected one of {', '.join(MESH_FORMATS)}")
    if not 0 <= turntable_frames <= 720:
        raise InputError(f"turntable frames must be in [0, 720], got {turntable_frames}")
    if not 16 <= preview_resolution <= 2048:
        raise InputError(f"preview resolution must be in [16, 2048] pixels, got {preview_resolution}")
