"""The end-to-end jobs behind the commands: four views -> reconstruction -> exported files.

`reconstruct_views` runs stage 2 and the export stage on four rig views (`optimize_views`
fits or refines a field on posed views per object instead, `fourview.recon.optimize`) and writes,
into one output folder, atomically (everything appears at the end, or nothing does):

    model.glb            textured mesh in the object frame (+Y up), PBR material
    views.png            the input views as a 2x2 grid on white (other view counts: rows of four)
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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

import fourview
from fourview.cameras import DEFAULT_ELEVATION_DEG, orthogonal_rig
from fourview.errors import InputError
from fourview.export.extract import ExportConfig, ExportResult, export_field
from fourview.export.projection import ViewImages
from fourview.images import WHITE_ALPHA_HIGH, composite_on_white, write_png
from fourview.recon.config import ReconConfig
from fourview.recon.saved_field import VIEWS_NAME
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


def optimize_export_config() -> ExportConfig:
    """Export settings for a per-object optimised field (`fourview reconstruct --optimize`).

    Finer than the ``demo`` preset: the optimised field holds detail at the views' resolution
    (128 px by default), which a 128^3 grid and a 256 px texture would blur.
    """
    return ExportConfig(resolution=160, face_budget=40_000, texture_size=512)


def trained_surface_export(recon: ReconConfig, export: ExportConfig, overrides: Mapping[str, object]) -> ExportConfig:
    """``export`` set to extract the surface a stage-B (DMTet) reconstructor was trained to render.

    Such a model's surface is its deformed tet-grid mesh (`fourview.recon.model.DMTetRenderer`):
    marching tetrahedra with the decoder's deformation, on its ``tet_grid_resolution`` grid (or the
    user's ``resolution``). Marching cubes of its SDF would ignore the trained deformation. A
    ``method`` in ``overrides`` (the user's choice) and stage-A models keep ``export`` as it is.
    """
    if recon.renderer != "dmtet" or "method" in overrides:
        return export
    return replace(export, method="dmtet", resolution=int(overrides.get("resolution", recon.tet_grid_resolution)))


def reexport_config(
    recon: ReconConfig, metadata: Mapping[str, object], export: ExportConfig, overrides: Mapping[str, object]
) -> ExportConfig:
    """`fourview export`'s settings for a saved field: extracted as the command that saved it did.

    A fitted or refined field (``metadata["method"]`` "optimize" or "refine", `optimize_views`) was
    fitted to volume renders and keeps ``export`` (marching cubes); a reconstructor's prediction
    gets `trained_surface_export`.
    """
    if metadata.get("method") in ("optimize", "refine"):
        return export
    return trained_surface_export(recon, export, overrides)


def sized_export_config(recon: ReconConfig, overrides: Mapping[str, object], device: str) -> ExportConfig:
    """The export preset of a reconstructor's size (``demo`` up to 64-pixel views), then ``overrides``."""
    preset = export_preset("demo" if recon.unet.resolution <= 64 else "full")
    return replace(preset, **{**overrides, "device": device})


def recon_export_config(recon: ReconConfig, overrides: Mapping[str, object], device: str) -> ExportConfig:
    """Export settings for a reconstructor's prediction: `sized_export_config`, its trained surface."""
    return trained_surface_export(recon, sized_export_config(recon, overrides, device), overrides)


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
        project_views: bake the input views' colours into the texture where they see the
            surface (`fourview.export.projection`); False bakes the field's colour alone.
    """

    elevation_deg: float = DEFAULT_ELEVATION_DEG
    export_overrides: dict = field(default_factory=dict)
    formats: tuple[str, ...] = ()
    turntable_frames: int = 0
    preview_resolution: int = 256
    device: str = "cpu"
    project_views: bool = True


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
    export_cfg = recon_export_config(cfg, settings.export_overrides, settings.device)

    t0 = time.perf_counter()
    x = views_to_model_input(views, cfg.unet.view_resolution).to(settings.device)
    with torch.no_grad():
        planes = model(x, settings.elevation_deg)
    field_ = model.field(planes, 0)
    timings["reconstruct_s"] = time.perf_counter() - t0

    rgb = composite_on_white(views) if views.shape[-1] == 4 else views
    posed = ViewImages.from_cameras(_with_alpha(views), orthogonal_rig(settings.elevation_deg))
    job_meta = {"recon": recon, "recon_path": recon_path, "elevation_deg": settings.elevation_deg}
    return _write_asset_folder(
        out, field_, cfg, grid_image(rgb), posed, export_cfg, settings, {"recon": recon}, job_meta, extra_meta,
        timings,
    )  # fmt: skip


def _write_asset_folder(
    out: Path,
    field_,
    config,
    views_image: np.ndarray,
    posed_views: ViewImages,
    export_cfg: ExportConfig,
    settings: ReconstructSettings,
    field_meta: dict,
    job_meta: dict,
    extra_meta: dict | None,
    timings: dict[str, float],
) -> ReconstructResult:
    """Export ``field_`` and write the asset folder ``out`` atomically (see the module docstring).

    Args:
        views_image: [H, W, 3] the input views on white (``views.png``).
        posed_views: the input views with their cameras, projected onto the texture when
            ``settings.project_views``.
        config: the `ReconConfig` saved with the field in ``reconstruction/``.
        field_meta: metadata stored in the saved field.
        job_meta: the job's own entries at the top of ``meta.json``.
    """
    from fourview.recon.saved_field import save_field

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        names = ["model.glb", *(f"model.{fmt}" for fmt in settings.formats)]
        t0 = time.perf_counter()
        with torch.no_grad():
            projected = posed_views if settings.project_views else None
            exported = export_field(field_, [tmp / n for n in names], export_cfg, views=projected)
        timings["export_s"] = time.perf_counter() - t0
        write_png(tmp / "views.png", views_image)
        save_field(tmp / "reconstruction", field_, config, field_meta)
        if settings.project_views:  # so that `fourview export` bakes the same texture
            posed_views.save(tmp / "reconstruction" / VIEWS_NAME)
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
            **job_meta,
            "export": asdict(export_cfg),
            "mesh": {
                "vertices": exported.num_verts,
                "faces": exported.num_faces,
                "texture_size": exported.texture_size,
            },
            "project_views": settings.project_views,
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


def optimize_views(
    views,
    out_dir: str | os.PathLike,
    settings: ReconstructSettings = ReconstructSettings(),
    recon: str | None = None,
    optimize=None,
    refine=None,
    progress: bool = False,
    extra_meta: dict | None = None,
) -> ReconstructResult:
    """Per-object optimisation (`fourview.recon.optimize`) on posed views, then the same asset folder.

    Without ``recon`` a triplane SDF + colour field is fitted from a start shape; with ``recon``
    the reconstructor's prediction for the four rig views is refined on them.

    Args:
        views: a `fourview.recon.optimize.ViewSet` (the rig views, or images with a cameras.json).
        out_dir: output folder, written as `reconstruct_views` writes it.
        settings: export, formats, turntable (``elevation_deg`` is the rig's for refinement).
        recon: None to fit from scratch; else ``demo``, a folder or a hub id to refine.
        optimize: `fourview.recon.optimize.OptimizeConfig` (default when None).
        refine: `fourview.recon.optimize.RefineConfig` (default when None).
        progress: progress bar with the loss.
        extra_meta: more entries for ``meta.json``.

    Raises:
        InputError: views that cannot be fitted, weights that cannot be loaded, a field without a surface.
    """
    from dataclasses import asdict as _asdict

    from fourview.recon.optimize import OptimizeConfig, RefineConfig, optimize_field, refine_reconstruction

    timings: dict[str, float] = {}
    out = Path(out_dir)
    if recon is None:
        cfg = optimize or OptimizeConfig()
        result = optimize_field(views, cfg, progress=progress)
        export_cfg = replace(optimize_export_config(), **{**settings.export_overrides, "device": settings.device})
        job_meta = {"method": "optimize", "recon": None, "optimize": _asdict(cfg)}
    else:
        from fourview.recon.model import Reconstructor

        cfg = refine or RefineConfig()
        t0 = time.perf_counter()
        recon_path = resolve_recon(recon)
        model = Reconstructor.from_pretrained(recon_path, device=settings.device).eval()
        timings["load_recon_s"] = time.perf_counter() - t0
        result = refine_reconstruction(model, views, settings.elevation_deg, cfg, progress=progress)
        # Refinement fits volume renders, so its surface is the level set, not the DMTet grid's
        # trained deformation: marching cubes, also for stage-B models (+1.0 dB against the
        # deformed 48-cell mesh on 8 held-out objects, docs/benchmarks.md).
        export_cfg = sized_export_config(model.config, settings.export_overrides, settings.device)
        job_meta = {"method": "refine", "recon": recon, "recon_path": recon_path, "refine": _asdict(cfg)}
    timings["optimize_s"] = result.time_s
    job_meta.update(
        elevation_deg=settings.elevation_deg,
        views=list(views.names),
        final_loss=result.final_loss,
        loss_history=result.history,
    )
    return _write_asset_folder(
        out, result.field, result.config, _views_sheet(composite_on_white(views.images)),
        views.for_projection(), export_cfg, settings,
        {"method": job_meta["method"], "recon": recon}, job_meta, extra_meta, timings,
    )  # fmt: skip


def _with_alpha(views: np.ndarray) -> np.ndarray:
    """[V, H, W, 4] views with alpha; opaque or RGB views get alpha 0 on near-white pixels.

    Only the texture projection uses this alpha (it skips pixels near a view's silhouette): views
    on white without alpha would otherwise paint the background onto the mesh's edges.
    """
    if views.shape[-1] == 4 and float(views[..., 3].min()) < 1.0:
        return views.astype(np.float32)
    rgb = views[..., :3]
    alpha = (1.0 - rgb.min(axis=-1)) > WHITE_ALPHA_HIGH  # [V, H, W] clearly not white
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def _views_sheet(rgb: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] views -> one image: the 2x2 grid for four views, else rows of up to four."""
    if len(rgb) == 4:
        return grid_image(rgb)
    cols = min(4, len(rgb))
    rows = -(-len(rgb) // cols)
    h, w = rgb.shape[1:3]
    sheet = np.ones((rows * h, cols * w, 3), np.float32)
    for i, img in enumerate(rgb):
        r, c = divmod(i, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return sheet


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


# -------------------------------------------------------------------------------------------------
# generate: text (or a photo) -> four views (stage 1) -> reconstruction and export (stage 2)


@dataclass(frozen=True)
class GenerateSettings:
    """Settings of `generate_asset` (stage 1 sampling, then `ReconstructSettings` for stage 2).

    Attributes:
        seed: seed of the sampler's noise (the same seed gives the same asset).
        steps: sampler steps of the full schedule; None: the generator's recommendation
            (`MultiViewPipeline.sampling_defaults`: 30, or the student's own, 1 for the demo student).
        guidance_scale: classifier-free guidance weight; None: the recommendation (5, or the student's 1).
        negative_prompt: what to steer away from, or None.
        size: grid side in pixels (a multiple of 16); the generator's own when None.
        blob_sigma: width of the Gaussian start blobs, fraction of the cell side.
        blob_strength: start strength in (0, 1]; 1 = pure noise (blob start off).
        elevation_deg: elevation of the generated rig, degrees (the generator draws the rig it was
            trained on, 20 degrees for the demo; this tells the reconstructor).
        export_overrides: `ExportConfig` fields to change (see `ReconstructSettings`).
        formats: files to write besides the GLB (``obj``, ``ply``).
        turntable_frames: frames of ``turntable.gif`` (0: none).
        preview_resolution: side of the turntable frames, pixels.
        device: torch device of both models.
        lora: LoRA weights for the generator, or None.
        student: few-step student for the generator (``demo`` or a folder), or None.
        project_views: see `ReconstructSettings`.
        candidates: best-of-K sampling: K grids drawn, the one the prompt explains best kept
            (`fourview.mvgen.rerank`); 1: one draw.
    """

    seed: int = 0
    steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    size: int | None = None
    blob_sigma: float = 0.17
    blob_strength: float = 1.0
    elevation_deg: float = DEFAULT_ELEVATION_DEG
    export_overrides: dict = field(default_factory=dict)
    formats: tuple[str, ...] = ()
    turntable_frames: int = 24
    preview_resolution: int = 192
    device: str = "cpu"
    lora: str | None = None
    student: str | None = None
    project_views: bool = True
    candidates: int = 1


@dataclass
class GenerateResult:
    """What `generate_asset` wrote and measured.

    Attributes:
        out_dir: the asset folder.
        files: paths written into it.
        grid: [S, S, 3] float32, the generated 2x2 grid (RGB on white).
        views: [4, S / 2, S / 2, 4] float32 RGBA views given to the reconstructor.
        timings: seconds per stage (load_mvgen_s, mvgen_s, load_recon_s, reconstruct_s, export_s,
            turntable_s) and total_s.
        peak_memory_mb: peak resident memory of the process, MB.
    """

    out_dir: Path
    files: list[Path]
    grid: np.ndarray
    views: np.ndarray
    timings: dict[str, float]
    peak_memory_mb: float


def generate_asset(
    prompt: str,
    out_dir: str | os.PathLike,
    mvgen: str | fourview.mvgen.pipeline.MultiViewPipeline = "demo",
    recon: str = "demo",
    image: str | os.PathLike | np.ndarray | None = None,
    settings: GenerateSettings = GenerateSettings(),
) -> GenerateResult:
    """Text (or a photo and text) to a textured mesh: the job behind ``fourview generate``.

    Stage 1 draws the 2x2 grid of the rig views (`fourview.mvgen.pipeline.MultiViewPipeline`),
    its white background becomes alpha, and `reconstruct_views` runs stage 2 and the export. The
    output folder gets ``model.glb``, ``views.png`` (the generated views on white),
    ``turntable.gif`` (unless ``turntable_frames`` is 0), ``reconstruction/`` and ``meta.json``
    (prompt, seed, steps, model ids, time per stage, peak memory). Everything is checked before
    any model runs, and the folder is written atomically: on an error nothing is left behind.

    Args:
        prompt: the object to make.
        out_dir: output folder.
        mvgen: ``demo``, a diffusers folder, a hub id, or a loaded `MultiViewPipeline`.
        recon: ``demo``, a reconstructor folder, or a hub id.
        image: a photo (file or [H, W, 3|4] array in [0, 1]) for the front view, or None.
        settings: see `GenerateSettings`.

    Raises:
        InputError: an empty or overlong prompt, weights that cannot be found or loaded, a bad
            grid size or setting, an unreadable photo, an output path that is a file.
    """
    from fourview.images import read_rgba
    from fourview.mvgen.blobs import check_strength
    from fourview.mvgen.pipeline import MultiViewPipeline
    from fourview.recon.loading import CONFIG_NAME, resolve_pretrained

    t_start = time.perf_counter()
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("prompt is empty; describe the object, e.g. 'a red mug'")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder is a file: {out}")
    s = settings
    if s.size is not None and (s.size <= 0 or s.size % 16):
        raise InputError(f"grid size must be a positive multiple of 16 pixels, got {s.size}")
    if s.steps is not None:
        if s.steps < 1:
            raise InputError(f"steps must be >= 1, got {s.steps}")
        check_strength(s.blob_strength, s.steps)
    elif not 0.0 < s.blob_strength <= 1.0:
        check_strength(s.blob_strength, 1)
    if not -90.0 <= s.elevation_deg <= 90.0:
        raise InputError(f"elevation must be in [-90, 90] degrees, got {s.elevation_deg}")
    if s.turntable_frames < 0:
        raise InputError(f"turntable frames must be >= 0, got {s.turntable_frames}")
    if s.candidates < 1:
        raise InputError(f"candidates must be >= 1, got {s.candidates}")
    photo = read_rgba(image) if isinstance(image, (str, os.PathLike)) else image
    recon_folder = resolve_pretrained(resolve_recon(recon))  # fail on a bad reconstructor before sampling
    if not (recon_folder / CONFIG_NAME).is_file():
        raise InputError(f"reconstructor folder has no {CONFIG_NAME}: {recon_folder}")

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if isinstance(mvgen, MultiViewPipeline):
        pipe = mvgen
    else:
        pipe = MultiViewPipeline.from_pretrained(
            str(mvgen), lora=s.lora, student=s.student, device=s.device
        )  # fmt: skip
    timings["load_mvgen_s"] = time.perf_counter() - t0
    default_steps, default_guidance = pipe.sampling_defaults()
    steps = default_steps if s.steps is None else s.steps
    guidance = default_guidance if s.guidance_scale is None else s.guidance_scale
    t0 = time.perf_counter()
    result = pipe(
        prompt,
        negative_prompt=s.negative_prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=s.seed,
        size=s.size,
        blob_sigma=s.blob_sigma,
        blob_strength=s.blob_strength,
        image=photo,
        candidates=s.candidates,
    )
    timings["mvgen_s"] = time.perf_counter() - t0
    views = result.views[0]  # [4, h, w, 4]
    meta = {
        "prompt": prompt,
        "negative_prompt": s.negative_prompt,
        "seed": s.seed,
        "candidates": s.candidates,
        "kept_seed": result.seeds[0],
        "steps": steps,
        "guidance_scale": guidance,
        "grid_size": int(result.grids.shape[1]),
        "blob_sigma": s.blob_sigma,
        "blob_strength": s.blob_strength,
        "mvgen": pipe.name,
        "mvgen_lora": s.lora,
        "mvgen_student": pipe.student,
        "mvgen_attention": pipe.attention,
        "image": str(image) if isinstance(image, (str, os.PathLike)) else ("array" if image is not None else None),
        "peak_memory_after_mvgen_mb": peak_memory_mb(),
    }
    recon_settings = ReconstructSettings(
        elevation_deg=s.elevation_deg,
        export_overrides=dict(s.export_overrides),
        formats=tuple(s.formats),
        turntable_frames=s.turntable_frames,
        preview_resolution=s.preview_resolution,
        device=s.device,
        project_views=s.project_views,
    )
    rec = reconstruct_views(views, out, recon, recon_settings, extra_meta=meta, timings=timings)
    timings = {**timings, **rec.timings, "total_s": time.perf_counter() - t_start}
    return GenerateResult(
        out_dir=out, files=rec.files, grid=result.grids[0], views=views, timings=timings,
        peak_memory_mb=peak_memory_mb(),
    )  # fmt: skip
