"""`FourViewPipeline`: text, a photo or posed views to an `Asset`, with the models loaded once.

The one path of the data (docs/architecture.md)::

    prompt / photo ──mvgen──► PosedViews ──recon (feed-forward, fit or refine)──► field
        ──export (extract, UV, bake, project the views)──► Asset ──Asset.save──► files

Diffusers-style: `FourViewPipeline.from_pretrained` resolves and loads each model once; the
constructor only holds what it is given. A second call reuses the loaded models. Every setting is
checked before any model runs (the settings dataclasses check themselves when built).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from fourview.asset import Asset, peak_memory_mb
from fourview.cameras import DEFAULT_ELEVATION_DEG
from fourview.errors import EmptySurfaceError, InputError
from fourview.export.exporter import ExportConfig, export_field
from fourview.export.extract import extract_mesh
from fourview.export.presets import (
    optimize_export_config,
    recon_export_config,
    sized_export_config,
    target_overrides,
)
from fourview.export.projection import surface_coverage
from fourview.images import MIN_PHOTO_SIDE, read_rgba
from fourview.matting import Matte, MattingConfig, remove_background
from fourview.mvgen.blobs import BLOB_SIGMA, check_strength
from fourview.mvgen.image_prompt import PHOTO_PROMPT, demo_photo_warning
from fourview.mvgen.prompt_check import unfamiliar_prompt_warning
from fourview.pretrained import resolve_lora, resolve_weights
from fourview.recon.carving import SilhouetteBound, missed_silhouettes
from fourview.recon.decoder import TriplaneField
from fourview.recon.model import Reconstructor
from fourview.recon.optimize import OptimizeConfig, optimize_field
from fourview.recon.refine import RefineConfig, refine_reconstruction
from fourview.views import PosedViews

logger = logging.getLogger(__name__)

Method = Literal["feedforward", "optimize", "refine"]
METHODS: tuple[str, ...] = ("feedforward", "optimize", "refine")

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Names of the parameter dtypes `FourViewPipeline.from_pretrained` takes."""

MAX_SEED = 2**63 - 1
MAX_STEPS = 1000
MAX_CANDIDATES = 16
MAX_GRID_SIZE = 4096
MAX_FIT_STEPS = 10_000
"""Most steps of the per-object fit or refinement (`FitSettings`): about 20 times the fit's default."""
RESTORE_GRID = 96
"""Marching-cubes grid on which a refined field's surface is checked against its silhouettes
(`_restore_missed_parts`)."""
CARVING_SKIPPED = "the views' silhouettes do not meet in one visual hull: the reconstruction is not carved by them"
"""The record's ``carving_skipped`` (and the logged warning) when carving would leave no surface."""


@dataclass(frozen=True)
class SamplingSettings:
    """How stage 1 draws the four views (`fourview.mvgen.pipeline.MultiViewPipeline`)."""

    seed: int = 0
    """Seed of the sampler's noise (the same seed gives the same asset)."""
    steps: int | None = None
    """Sampler steps [default: the generator's 8, or its student's own]."""
    guidance_scale: float | None = None
    """Classifier-free guidance weight [default: 5, or the student's 1]."""
    negative_prompt: str | None = None
    """What to steer away from."""
    size: int | None = None
    """Grid side in pixels, a multiple of 16 [default: the generator's own]."""
    blob_sigma: float = BLOB_SIGMA
    """Width of the Gaussian start blobs, fraction of the view."""
    blob_strength: float = 1.0
    """Start strength in (0, 1]; 1 = pure noise (blob start off)."""
    candidates: int = 1
    """Best of K: draw K grids, keep the one the prompt explains best."""
    elevation_deg: float = DEFAULT_ELEVATION_DEG
    """Elevation of the rig the generator draws, degrees (the demo's: 20)."""

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"seed must be in [0, 2**63 - 1], got {self.seed}")
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"steps must be in [1, {MAX_STEPS}], got {self.steps}")
        if self.guidance_scale is not None and not 0.0 <= self.guidance_scale <= 100.0:
            raise InputError(f"guidance must be in [0, 100], got {self.guidance_scale}")
        if self.size is not None and (not 16 <= self.size <= MAX_GRID_SIZE or self.size % 16):
            raise InputError(f"grid size must be a multiple of 16 pixels in [16, {MAX_GRID_SIZE}], got {self.size}")
        if not 0.0 < self.blob_sigma <= 1.0:
            raise InputError(f"blob sigma must be in (0, 1], got {self.blob_sigma}")
        check_strength(self.blob_strength, self.steps or 1)
        if not 1 <= self.candidates <= MAX_CANDIDATES:
            raise InputError(f"candidates must be in [1, {MAX_CANDIDATES}], got {self.candidates}")
        if not -90.0 <= self.elevation_deg <= 90.0:
            raise InputError(f"elevation must be in [-90, 90] degrees, got {self.elevation_deg}")


@dataclass(frozen=True)
class ExportSettings:
    """How the field becomes the mesh: changes to the export preset that fits the method and model."""

    face_budget: int | None = None
    """Face budget [default: the preset's: 20k demo, 50k full]."""
    texture_size: int | None = None
    """Baked texture side, a power of two [default: 256 demo, 1024 full]."""
    grid_resolution: int | None = None
    """Extraction grid resolution [default: 128 demo, 256 full]."""
    method: Literal["marching_cubes", "dmtet"] | None = None
    """Surface extraction [default: what the model was trained to render]."""
    vertex_colors: bool = False
    """Skip UVs and baking: colour per vertex."""
    roughness: float | None = None
    """glTF roughness factor [default: 0.8]."""
    metallic: float | None = None
    """glTF metallic factor [default: 0]."""
    project_views: bool = True
    """Bake the views' own colours into the texture where they see the surface (else the field's colour only)."""
    target: Literal["game", "film", "print"] | None = None
    """What the mesh is for: game (10k triangles; 1024² base colour, normal and occlusion-roughness-metallic
    textures; origin at the base), film (100k, 2048²) or print (200k, vertex colours); --faces, --texture-size and
    the options below still win."""
    height: float | None = None
    """Scale the mesh to this height (its bounding box along +Y), metres [default: the object frame's, about 2]."""
    pivot: Literal["bottom", "center"] | None = None
    """Origin at the centre of the base or of the bounding box [default: the target's, else the object frame's]."""
    lods: int = 1
    """Levels of detail, the finest included, each with half the faces of the one before and one shared texture set:
    model_lod1.glb, ... and model_lods.glb (MSFT_lod) beside model.glb."""
    normal_map: bool | None = None
    """Bake a tangent-space normal map of the dense surface [default: the target's; none without a target]."""
    occlusion: bool | None = None
    """Bake the field's ambient occlusion (an occlusion-roughness-metallic texture) [default: the target's]."""
    quad_remesh: bool = False
    """Quad-remesh the surface before simplifying (needs the optional package pynanoinstantmeshes)."""

    def __post_init__(self) -> None:
        if self.face_budget is not None and not 4 <= self.face_budget <= 10_000_000:
            raise InputError(f"face budget must be in [4, 10000000], got {self.face_budget}")
        if self.grid_resolution is not None and not 8 <= self.grid_resolution <= 1024:
            raise InputError(f"extraction grid must be in [8, 1024], got {self.grid_resolution}")
        ExportConfig(**self.overrides())  # texture size, roughness and metallic checked as the exporter does

    def overrides(self) -> dict:
        """The `ExportConfig` fields set here: the target's (`target_overrides`), then the ones given."""
        changes = {
            "face_budget": self.face_budget,
            "texture_size": self.texture_size,
            "resolution": self.grid_resolution,
            "method": self.method,
            "roughness": self.roughness,
            "metallic": self.metallic,
            "vertex_colors": True if self.vertex_colors else None,
            "height": self.height,
            "pivot": self.pivot,
            "lods": self.lods if self.lods != 1 else None,
            "normal_map": self.normal_map,
            "occlusion": self.occlusion,
            "quad_remesh": True if self.quad_remesh else None,
        }
        given = {k: v for k, v in changes.items() if v is not None}
        base = target_overrides(self.target) if self.target is not None else {}
        if self.vertex_colors:  # colour per vertex: no texture maps unless asked for (then an error)
            base = {**base, "normal_map": False, "occlusion": False}
        return {**base, **given}


@dataclass(frozen=True)
class FitSettings:
    """The per-object paths' common settings (`views_to_3d` with ``optimize`` or ``refine``)."""

    steps: int | None = None
    """Optimisation steps [default: 480 for the fit, 300 for refinement]."""
    resolution: int | None = None
    """Side of the images the losses see, pixels [default: 128 for the fit, the views' own for refinement]."""
    round_bottom: bool = False
    """The fit keeps the visual hull below the lowest point the views see (an unseen underside that is round, as a
    ball's); by default, with every view from above, it starts cut there: a flat bottom."""

    def __post_init__(self) -> None:
        if self.steps is not None and not 1 <= self.steps <= MAX_FIT_STEPS:
            raise InputError(f"--steps must be in [1, {MAX_FIT_STEPS}], got {self.steps}")
        if self.resolution is not None and not 8 <= self.resolution <= 2048:
            raise InputError(f"--res must be in [8, 2048] pixels, got {self.resolution}")

    def optimize_config(self) -> OptimizeConfig:
        changes = {"steps": self.steps, "resolution": self.resolution}
        cfg = OptimizeConfig(**{k: v for k, v in changes.items() if v is not None})
        return replace(cfg, flat_bottom=False) if self.round_bottom else cfg

    def refine_config(self) -> RefineConfig:
        if self.round_bottom:
            raise InputError("--round-bottom is a setting of the fit from the visual hull, not of --recon refinement")
        changes = {"steps": self.steps, "resolution": self.resolution}
        return RefineConfig(**{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class ModelSettings:
    """Which models a pipeline loads, and where (`FourViewPipeline.from_pretrained`'s arguments)."""

    mvgen: str | None = "demo"
    """Generator: 'demo', a diffusers folder or a hub id."""
    recon: str | None = "demo"
    """Reconstructor: 'demo', a folder or a hub id."""
    student: str | None = None
    """Few-step student for the generator: 'demo' or a folder from 'fourview train mvgen-lcm'."""
    lora: str | None = None
    """LoRA weights for the generator (diffusers format)."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N or mps."""
    dtype: Literal["float32", "bf16", "fp16"] = "float32"
    """The generator's parameter dtype (bf16/fp16 on GPUs)."""
    cpu_offload: bool = False
    """Keep the generator on the CPU and move each module to the GPU only while it runs (needs CUDA)."""


@dataclass(frozen=True)
class GeneratedViews:
    """Stage 1's output: the four rig views and how they were drawn (for ``meta.json``)."""

    views: PosedViews
    meta: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def check_device(device: str) -> torch.device:
    """The torch device named ``device``, checked before any model loads.

    Raises:
        InputError: an unknown device name, or CUDA/MPS asked for where there is none.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: only {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' asked for, but MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r} (expected cpu, cuda, cuda:N or mps)")
    return dev


def read_photo(photo: str | os.PathLike | np.ndarray, min_side: int | None = None) -> np.ndarray:
    """A photo as RGBA float32 [H, W, 4] in [0, 1] (a file is read with `read_rgba`'s checks, and at
    least ``min_side`` pixels a side when given; an array is checked)."""
    if isinstance(photo, (str, os.PathLike)):
        return read_rgba(photo) if min_side is None else read_rgba(photo, min_side)
    arr = np.asarray(photo, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(f"a photo must be an [H, W, 3|4] image, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise InputError("the photo holds non-finite values")
    return arr


class FourViewPipeline:
    """Text, a photo or posed views to a textured mesh (`Asset`).

    Build one with `from_pretrained` (the shipped demo models with no arguments), or from loaded
    models. The pipeline owns them: every call reuses them.

    Args:
        generator: the multi-view generator (`fourview.mvgen.pipeline.MultiViewPipeline`), or None
            (then only `views_to_3d` works).
        reconstructor: the triplane reconstructor, or None (then only ``method="optimize"``).
        device: where the fields are queried and fitted.
        names: what the models were loaded from (``mvgen``, ``student``, ``lora``, ``recon``), for ``meta.json``.
        progress: progress bars (tqdm, on stderr) for the sampling steps and each stage.
    """

    def __init__(
        self,
        generator=None,
        reconstructor: Reconstructor | None = None,
        device: str | torch.device = "cpu",
        names: dict[str, str | None] | None = None,
        progress: bool = False,
    ) -> None:
        self.progress = progress
        self.generator = generator
        self.reconstructor = reconstructor
        self.device = torch.device(device)
        self.names = dict(names or {})

    @classmethod
    def from_pretrained(
        cls,
        mvgen: str | None = "demo",
        recon: str | None = "demo",
        *,
        student: str | None = None,
        lora: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        cpu_offload: bool = False,
        progress: bool = False,
    ) -> FourViewPipeline:
        """Load the models: ``demo`` (shipped), a folder or a hub id each; None leaves one out.

        Args:
            mvgen: the generator's weights (SDXL architecture, diffusers folder or hub id).
            recon: the reconstructor's weights.
            student: a few-step student for the generator (``demo`` or a folder), or None.
            lora: LoRA weights for the generator, or None.
            device: torch device of the models (``cpu``, ``cuda``, ``cuda:1``...).
            dtype: the generator's parameter dtype: ``float32``, ``bf16`` or ``fp16`` (GPUs).
            cpu_offload: keep the generator's modules on the CPU and move each to the GPU only
                while it runs (diffusers' model offload; needs CUDA and accelerate).
            progress: progress bars for the sampling steps and each stage.

        Raises:
            InputError: weights that are missing or cannot be loaded, a bad device or dtype
                (all names are checked before any model loads).
        """
        dev = check_device(device)
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        if dtype == "fp16" and dev.type == "cpu":
            raise InputError("fp16 needs a GPU; use --dtype float32 or bf16 on the CPU")
        if cpu_offload and dev.type != "cuda":
            raise InputError("CPU offload moves the models to a GPU while they run: it needs --device cuda")
        mvgen_src = None if mvgen is None else resolve_weights(mvgen, "mvgen")
        student_src = None if student is None else resolve_weights(student, "student")
        recon_src = None if recon is None else resolve_weights(recon, "recon")
        lora = None if lora is None else resolve_lora(lora)
        if mvgen is None and (student is not None or lora is not None):
            raise InputError("a student or LoRA needs a generator (mvgen)")
        generator = None
        if mvgen_src is not None:
            from fourview.mvgen.pipeline import MultiViewPipeline  # diffusers: seconds to import

            generator = MultiViewPipeline.from_pretrained(
                mvgen_src.location,
                lora=lora,
                student=None if student_src is None else student_src.location,
                device="cpu" if cpu_offload else dev,
                dtype=DTYPES[dtype],
            )
            if cpu_offload:
                generator.sdxl.enable_model_cpu_offload(device=dev)
        reconstructor = None if recon_src is None else Reconstructor.from_pretrained(recon_src.location, device=dev)
        if reconstructor is not None:
            reconstructor.eval()
        names = {
            "mvgen": mvgen,
            "student": student,
            "lora": lora,
            "recon": recon,
            "recon_path": None if recon_src is None else recon_src.location,
        }
        return cls(generator, reconstructor, dev, names, progress)

    # -- stage 1 -----------------------------------------------------------------------------------

    def generate_views(
        self,
        prompt: str,
        photo: str | os.PathLike | np.ndarray | None = None,
        sampling: SamplingSettings = SamplingSettings(),
    ) -> GeneratedViews:
        """Draw the four rig views of ``prompt`` (and ``photo`` in the front cell, when given).

        Raises:
            InputError: no generator, an empty or overlong prompt, an unreadable photo, a bad setting.
        """
        if self.generator is None:
            raise InputError("this pipeline has no generator (mvgen); load one to make views from text or a photo")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("prompt is empty; describe the object, e.g. 'a red mug'")
        image = None if photo is None else read_photo(photo)
        s = sampling
        default_steps, default_guidance = self.generator.sampling_defaults()
        steps = default_steps if s.steps is None else s.steps
        guidance = default_guidance if s.guidance_scale is None else s.guidance_scale
        self.generator.progress = self.progress  # diffusers' bar over the sampling steps
        t0 = time.perf_counter()
        out = self.generator(
            prompt, negative_prompt=s.negative_prompt, num_inference_steps=steps, guidance_scale=guidance,
            seed=s.seed, size=s.size, blob_sigma=s.blob_sigma, blob_strength=s.blob_strength, image=image,
            candidates=s.candidates,
        )  # fmt: skip
        timings = {"mvgen_s": time.perf_counter() - t0}
        meta = {
            "prompt": prompt,
            **{k: v for k, v in asdict(s).items() if k not in ("steps", "guidance_scale", "elevation_deg")},
            "kept_seed": out.seeds[0],
            "steps": steps,
            "guidance_scale": guidance,
            "grid_size": int(out.grids.shape[1]),
            "mvgen": self.names.get("mvgen", self.generator.name),
            "mvgen_lora": self.names.get("lora"),
            "mvgen_student": self.generator.student,
            "mvgen_attention": self.generator.attention,
            "image": str(photo) if isinstance(photo, (str, os.PathLike)) else ("array" if photo is not None else None),
            "peak_memory_after_mvgen_mb": peak_memory_mb(),
        }
        warning = None if photo is not None else unfamiliar_prompt_warning(prompt, self.generator.training_words)
        if warning:
            logger.warning("warning: %s", warning)
            meta["warning"] = warning
        return GeneratedViews(PosedViews.from_rig(out.views[0], s.elevation_deg), meta, timings)

    # -- the three jobs ----------------------------------------------------------------------------

    def text_to_3d(
        self,
        prompt: str,
        sampling: SamplingSettings = SamplingSettings(),
        export: ExportSettings = ExportSettings(),
        method: Method = "feedforward",
    ) -> Asset:
        """Text to a textured mesh: four views drawn by the generator, then `views_to_3d`."""
        return self._generate(prompt, None, sampling, export, method)

    def image_to_3d(
        self,
        photo: str | os.PathLike | np.ndarray | Matte,
        prompt: str = PHOTO_PROMPT,
        sampling: SamplingSettings = SamplingSettings(),
        export: ExportSettings = ExportSettings(),
        method: Method = "feedforward",
        matting: MattingConfig = MattingConfig(),
    ) -> Asset:
        """A photo and what it shows to a textured mesh.

        The background is removed first (`fourview.matting.remove_background`: the photo's alpha, a
        segmentation model on disk, or GrabCut) unless ``photo`` is already a `Matte`; the asset
        keeps the mask and the cut-out (``mask.png``, ``photo_rgba.png``) and records the method,
        and a warning when the shipped demo generator is asked for a photo.
        """
        if not isinstance(photo, Matte):
            image = read_photo(photo, MIN_PHOTO_SIDE)
            photo_name = str(photo) if isinstance(photo, (str, os.PathLike)) else "array"
            photo = remove_background(image, matting)
        else:
            photo_name = "matte"
        asset = self._generate(prompt, photo.rgba, sampling, export, method)
        asset.meta.update(image=photo_name, matting={"method": photo.method, "note": photo.note})
        warning = demo_photo_warning(self.names.get("mvgen"))
        if warning:
            logger.warning("warning: %s", warning)
            asset.meta["warning"] = warning
        asset.extra_images.update({"mask.png": photo.mask, "photo_rgba.png": photo.rgba})
        return asset

    def _generate(self, prompt, photo, sampling, export, method) -> Asset:
        self._check_method(method)
        start = time.perf_counter()
        generated = self.generate_views(prompt, photo, sampling)
        asset = self.views_to_3d(generated.views, method, export, meta=generated.meta)
        asset.timings = {**generated.timings, **asset.timings, "total_s": time.perf_counter() - start}
        return asset

    def views_to_3d(
        self,
        views: PosedViews,
        method: Method = "feedforward",
        export: ExportSettings = ExportSettings(),
        fit: FitSettings | OptimizeConfig | RefineConfig = FitSettings(),
        progress: bool = False,
        meta: dict | None = None,
    ) -> Asset:
        """Posed views to a textured mesh.

        Args:
            views: the four rig views (``feedforward``, ``refine``), or any posed views (``optimize``).
            method: ``feedforward`` (the reconstructor's prediction), ``optimize`` (a field fitted to
                the views, no trained weights) or ``refine`` (the prediction fitted to the views).
            export: changes to the export preset.
            fit: settings of ``optimize`` / ``refine``: the common `FitSettings`, or the full
                `OptimizeConfig` / `RefineConfig` of the method.
            progress: progress bars for the fit.
            meta: more entries for the asset's record (stage 1's).

        Raises:
            InputError: views the method cannot use, no reconstructor for a method that needs one,
                a field without a surface.
        """
        self._check_method(method)
        start = time.perf_counter()
        views.check_objects()
        progress = progress or self.progress
        stages = tqdm(total=2, desc=method, unit="stage", disable=not progress, leave=False)
        timings: dict[str, float] = {}
        record: dict = {"method": method, "views": list(views.names)}
        overrides = export.overrides()
        uncarved = None  # the reconstructor's field before carving (`CARVING_SKIPPED`)
        if method == "optimize":
            cfg = fit.optimize_config() if isinstance(fit, FitSettings) else fit
            if not isinstance(cfg, OptimizeConfig):
                raise InputError("method 'optimize' takes FitSettings or an OptimizeConfig")
            result = optimize_field(views, cfg, progress=progress)
            field_, field_config = result.field, result.config
            export_cfg = replace(optimize_export_config(), **{**overrides, "device": str(self.device)})
            timings["optimize_s"] = result.time_s
            record.update(recon=None, optimize=asdict(cfg), final_loss=result.final_loss, loss_history=result.history)
        else:
            model = self._require_reconstructor(method)
            elevation = views.rig_elevation_deg()
            record.update(recon=self.names.get("recon"), recon_path=self.names.get("recon_path"))
            record["elevation_deg"] = elevation
            if method == "feedforward":
                t0 = time.perf_counter()
                uncarved = model.field(model.predict(views), 0)
                field_ = model.carve(uncarved, views)
                timings["reconstruct_s"] = time.perf_counter() - t0
                export_cfg = recon_export_config(model.config, overrides, str(self.device))
            else:
                cfg = fit.refine_config() if isinstance(fit, FitSettings) else fit
                if not isinstance(cfg, RefineConfig):
                    raise InputError("method 'refine' takes FitSettings or a RefineConfig")
                result = refine_reconstruction(model, views, cfg, progress=progress)
                uncarved = result.field
                field_ = model.carve(uncarved, views)  # the fit, like the prediction, stays inside the hull
                field_, record["restored_pixels"] = _restore_missed_parts(field_, views, model.config.carve.threshold)
                timings["optimize_s"] = result.time_s
                # Refinement fits volume renders: its surface is the level set (marching cubes), not
                # the DMTet grid's trained deformation.
                export_cfg = sized_export_config(model.config, overrides, str(self.device))
                record.update(refine=asdict(cfg), final_loss=result.final_loss, loss_history=result.history)
            field_config = model.config
        if method == "optimize":
            record["elevation_deg"] = _elevation_or_none(views)
        stages.update()
        stages.set_description("export")
        projected = views.with_white_key() if export.project_views else None
        with torch.no_grad():
            try:
                exported = export_field(field_, export_cfg, views=projected)
            except EmptySurfaceError:
                if uncarved is None or field_ is uncarved:
                    raise
                # Views whose silhouettes do not meet (generated views that disagree) have an empty
                # visual hull: the prediction itself is the better answer than no mesh.
                field_ = uncarved
                record["carving_skipped"] = CARVING_SKIPPED
                logger.warning("warning: %s", CARVING_SKIPPED)
                exported = export_field(field_, export_cfg, views=projected)
        timings["export_s"] = exported.timings.get("total", 0.0)
        timings.update({f"export_{k}": v for k, v in exported.timings.items()})
        timings["views_to_3d_s"] = time.perf_counter() - start
        stages.update()
        stages.close()
        return Asset(
            mesh=exported.mesh,
            views=projected if projected is not None else views,
            field=field_,
            field_config=field_config,
            export_config=export_cfg,
            project_views=export.project_views,
            meta={**record, **(meta or {})},
            timings=timings,
            peak_memory_mb=peak_memory_mb(),
        )

    def _check_method(self, method: str) -> None:
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if method != "optimize":
            self._require_reconstructor(method)

    def _require_reconstructor(self, method: str) -> Reconstructor:
        if self.reconstructor is None:
            raise InputError(f"method {method!r} needs a reconstructor; this pipeline has none (use 'optimize')")
        return self.reconstructor


def _restore_missed_parts(field: TriplaneField, views: PosedViews, threshold: float) -> tuple[TriplaneField, int]:
    """A carved field with the hull restored where its surface leaves out silhouette pixels
    (`fourview.recon.carving.missed_silhouettes`), and how many pixels that is.

    What the views' silhouettes show is there: a thin part or a loose piece that the learned prior
    dropped comes back as the part of the visual hull behind it. Its surface is found on a coarse
    grid (`RESTORE_GRID`): a part narrower than a cell is not missed.
    """
    if field.outer_bound is None:
        return field, 0
    try:
        surface = extract_mesh(field, RESTORE_GRID)
        coverage = surface_coverage(surface.verts, surface.faces, views)
    except InputError:  # no surface at all: every silhouette pixel is missed
        coverage = np.zeros(views.images.shape[:3], bool)
    missed = missed_silhouettes(views, coverage, threshold)
    if not missed.any():
        return field, 0
    return field.restored(SilhouetteBound.from_masks(missed, views)), int(missed.sum())


def _elevation_or_none(views: PosedViews) -> float | None:
    try:
        return views.rig_elevation_deg()
    except InputError:
        return None


__all__ = [
    "Asset",
    "ExportSettings",
    "FitSettings",
    "FourViewPipeline",
    "GeneratedViews",
    "ModelSettings",
    "SamplingSettings",
    "check_device",
]
