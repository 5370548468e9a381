"""The GSO benchmark (`fourview bench gso`): reconstruct each scan from renders, score it against the scan.

For every object of a folder of Google Scanned Objects (`fourview.evaluation.gso`):

1. Ground truth. The scan is loaded into the object frame (Z-up turned to +Y up, farthest vertex
   at 1) and drawn by the dataset renderer's `MeshRenderer` with `INPUT_LIGHTING` (the dataset
   renderer's default lighting; unlit albedo with ``albedo``), `SUPERSAMPLE` x `SUPERSAMPLE`
   samples per pixel: the four rig views at elevation 20 (`protocol.input_cameras`) at
   ``input_resolution`` (512), and the 24 novel views (`protocol.novel_cameras`) at each image
   resolution (128 and 512). Every image is quantised to 8 bits per channel, as the dataset
   renderer's PNG files hold it.
2. Reconstruction, by ``mode``: ``views`` gives the four views to the reconstructor
   (feed-forward), ``optimize`` and ``refine`` to the per-object fits, ``image`` gives the front
   view alone (azimuth 0) with a caption made from the object's name (`caption_from_name`) to
   the whole pipeline; ``text`` is not applicable (the inputs are renders of a scan). With
   ``method="hull"`` the visual hull of the four views with their colours projected
   (`fourview.recon.visual_hull.HullField`, exported as a per-object fit is) takes the
   reconstructor's place: a reference without trained weights, measured the same way.
3. Scores of the reconstructed mesh. Image metrics (`metrics.image_scores`: PSNR, SSIM, LPIPS
   when its weights are present) over the 24 novel views at each resolution, the mesh drawn as
   the ground truth is (same renderer, cameras, resolution, supersampling, quantisation) but
   unlit (`RECONSTRUCTION_LIGHTING`): its texture holds the input views' colours, lighting
   included, so lighting it again would shade it twice. Its colours are those its files hold
   (`as_files_hold_it`: the texture alone where there is one).
   Geometry (`geometry`): Chamfer distance and F-score at 0.05 / 0.1 / 0.2 on 10k surface points
   in the fixed object frame (our contract: a reconstruction where the views put it), the same
   after the SF3D/SPAR3D alignment (`alignment.align_points`: unit-box normalisation, rotation
   search, ICP with scale; thresholds then in units of the scan's longest side), and volume IoU
   on 64^3 in the object frame. Time per stage and peak memory.

Output folder ``OUT``:

    objects/NAME.json      one object's record (`ObjectResult`), written atomically when it is finished
    previews/NAME.png      ground truth (top) and reconstruction (bottom) at the 8 novel azimuths, elevation 15
    settings.json          the settings the records were made with (a rerun with others is refused)
    results.jsonl          the records of the selected objects, one JSON line each, in list order
    results.csv            the same as a table
    results.md             per-object rows, the mean row, the anchors' published numbers
    summary.json           means per metric, counts, machine, date, load average, settings

A rerun skips the objects whose record exists (delete ``objects/NAME.json`` to redo one). Objects
are split across processes as the dataset renderer splits them (``RANK``/``WORLD_SIZE`` or
``SLURM_PROCID``/``SLURM_NTASKS``: object ``i`` of the selection belongs to shard
``i % world_size``); every shard writes its own records, and the tables are assembled from all
the records found in ``OUT`` (the last shard to finish writes the complete ones; a rerun, which
skips everything, rewrites them). An object whose reconstruction fails with an `InputError` (a
field without a surface) gets a record with the error: it is counted and listed, never averaged.

This module sits below the pipeline: `run_gso_benchmark` takes the loaded
`fourview.pipeline.FourViewPipeline` (built by the caller from `GsoBenchConfig.pipeline_models`)
and the pipeline's settings objects, and calls them. docs/benchmark-protocol.md writes every choice
down.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from tqdm import tqdm

from fourview import __version__
from fourview.atomic import write_text_atomic
from fourview.cameras import Camera
from fourview.data.captions import caption_from_name
from fourview.data.dataset_renderer import RenderSettings, shard_from_env
from fourview.errors import InputError
from fourview.evaluation.alignment import AlignmentConfig, align_points
from fourview.evaluation.geometry import geometry_scores, surface_points, volume_iou
from fourview.evaluation.gso import (
    GsoObject,
    evaluation_objects,
    find_gso_objects,
    load_gso_object,
    read_object_list,
    select_objects,
)
from fourview.evaluation.metrics import Lpips, image_scores, load_lpips
from fourview.evaluation.protocol import (
    FSCORE_THRESHOLDS,
    IMAGE_RESOLUTIONS,
    INPUT_ELEVATION_DEG,
    NOVEL_AZIMUTHS_DEG,
    NOVEL_ELEVATIONS_DEG,
    SURFACE_POINTS,
    VOLUME_RESOLUTION,
    input_cameras,
    novel_cameras,
)
from fourview.evaluation.run_record import check_settings, machine_record, peak_rss_mb, read_record
from fourview.export.exporter import export_field
from fourview.export.presets import optimize_export_config
from fourview.images import to_uint8, write_png
from fourview.mesh import MeshAsset
from fourview.recon.visual_hull import HullField
from fourview.render.mesh_renderer import Lighting, MeshRenderer
from fourview.views import PosedViews

if TYPE_CHECKING:  # the pipeline sits above this stage: its objects are passed in, never imported
    from fourview.pipeline import ExportSettings, FitSettings, FourViewPipeline, SamplingSettings
    from fourview.recon.optimize import OptimizeConfig
    from fourview.recon.refine import RefineConfig

logger = logging.getLogger(__name__)

INPUT_LIGHTING: Lighting = RenderSettings().lighting
"""Lighting of the scans' renders (inputs and ground truth): the dataset renderer's default."""
RECONSTRUCTION_LIGHTING: Lighting = Lighting(albedo=True)
"""Lighting of the reconstructions' renders: none. Their colours are the input views' (baked into the texture,
lighting included); lit again they would be shaded twice (darker, and black where no view saw them)."""
SUPERSAMPLE: int = RenderSettings().supersample
"""Samples per pixel along each axis of every render: the dataset renderer's default."""
PREVIEW_ELEVATION_DEG: float = 15.0
"""Elevation of the novel views shown in ``previews/NAME.png``."""

Mode = Literal["views", "optimize", "refine", "image", "text"]
LISTS_DIR: Path = Path(__file__).resolve().parent / "lists"
"""The shipped object lists (``NAME.txt``; their headers say how each was made)."""
PIPELINE_METHODS: dict[str, str] = {"views": "feedforward", "optimize": "optimize", "refine": "refine"}
"""`FourViewPipeline.views_to_3d`'s method for each mode that starts from the four views."""


@dataclass(frozen=True)
class GsoBenchConfig:
    """Settings of `run_gso_benchmark` (docs/benchmark-protocol.md)."""

    objects: str | None = None
    """Object list file (names, one per line, '#' comments) or a shipped list: gso_all, gso_300, shared_gso_eval
    [default: the folder's evaluation subset, --subset]."""
    subset: Literal["evaluation", "all"] = "evaluation"
    """Without --objects: the folder's evaluation subset (fourview.data.splits, never trained on) or all objects."""
    mode: Mode = "views"
    """views: the four rig views -> reconstructor; optimize / refine: the per-object fits; image: the front view
    alone -> the whole pipeline; text: not applicable."""
    method: Literal["pipeline", "hull"] = "pipeline"
    """pipeline: the models of --mode; hull: the visual hull of the four views with projected colours (the
    weight-free baseline; --mode views)."""
    input_resolution: int = 512
    """Side of the rendered input views, pixels."""
    albedo: bool = False
    """Unlit albedo renders of the scans (inputs and ground truth) instead of the fixed lighting."""
    recon: str = "demo"
    """Reconstructor of --mode views, refine and image: 'demo', a folder or a hub id."""
    mvgen: str = "demo"
    """Generator of --mode image: 'demo', a diffusers folder or a hub id."""
    device: str = "cpu"
    """Torch device of the models and renders: cpu, cuda, cuda:N or mps (the hull runs on the CPU)."""
    max_objects: int | None = None
    """Only the first N objects of the selection (before sharding)."""
    seed: int = 0
    """Seed of the surface points, the alignment's subsampling and the generator (--mode image)."""
    hull_resolution: int = 128
    """Grid cells per side of the visual hull (--method hull)."""
    image_resolutions: tuple[int, ...] = IMAGE_RESOLUTIONS
    """Sides of the novel views the image metrics are computed at, pixels (the protocol's: 128 and 512)."""
    surface_points: int = SURFACE_POINTS
    """Points drawn on each surface for Chamfer distance and F-score (the protocol's: 10k)."""
    volume_resolution: int = VOLUME_RESOLUTION
    """Cells per side of the volume IoU grid over [-1, 1]^3 (the protocol's: 64)."""

    def __post_init__(self) -> None:
        if self.mode == "text":
            raise InputError(
                "--mode text is not applicable to GSO: its inputs are renders of each scan, not prompts "
                "(text-to-3D has its own benchmark)"
            )
        if self.method == "hull" and self.mode != "views":
            raise InputError(
                f"--method hull reconstructs the four input views: use it with --mode views, not {self.mode}"
            )
        if not 16 <= self.input_resolution <= 2048:
            raise InputError(f"input resolution must be in [16, 2048] pixels, got {self.input_resolution}")
        if self.max_objects is not None and self.max_objects < 1:
            raise InputError(f"--max-objects must be >= 1, got {self.max_objects}")
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        if not 16 <= self.hull_resolution <= 1024:
            raise InputError(f"hull resolution must be in [16, 1024], got {self.hull_resolution}")
        if not self.image_resolutions or any(not 8 <= r <= 2048 for r in self.image_resolutions):
            raise InputError(f"image resolutions must be in [8, 2048] pixels, got {self.image_resolutions}")
        if len(set(self.image_resolutions)) != len(self.image_resolutions):
            raise InputError(f"image resolutions repeat: {self.image_resolutions}")
        if self.surface_points < 100:
            raise InputError(f"surface points must be >= 100, got {self.surface_points}")
        if not 8 <= self.volume_resolution <= 512:
            raise InputError(f"volume resolution must be in [8, 512], got {self.volume_resolution}")

    @property
    def lighting(self) -> Lighting:
        return replace(INPUT_LIGHTING, albedo=self.albedo)

    def pipeline_models(self) -> dict[str, str | None] | None:
        """``mvgen`` and ``recon`` for `FourViewPipeline.from_pretrained`, None for the hull (no model)."""
        if self.method == "hull":
            return None
        return {
            "mvgen": self.mvgen if self.mode == "image" else None,
            "recon": None if self.mode == "optimize" else self.recon,
        }

    def metric_keys(self) -> list[str]:
        """The keys of `ObjectResult.metrics`, in table order."""
        keys = [f"{m}_{r}" for r in self.image_resolutions for m in ("psnr", "ssim", "lpips")]
        for prefix in ("", "aligned_"):
            keys += [f"{prefix}chamfer", *(f"{prefix}fscore@{t:g}" for t in FSCORE_THRESHOLDS)]
        return [*keys, "volume_iou"]


@dataclass(frozen=True)
class ObjectResult:
    """One object's record (``objects/NAME.json``, a line of ``results.jsonl``).

    Attributes:
        name: the object's name.
        metrics: `GsoBenchConfig.metric_keys` -> value (LPIPS None when unavailable); empty when ``error``.
        timings_s: seconds per stage: ``ground_truth_s`` (load and render the scan), the reconstruction's
            (the pipeline's own, or ``hull_s`` and ``export_s``), ``scores_s`` (render and score), ``total_s``.
        peak_memory_mb: peak resident memory of the process when the object was finished, MB.
        peak_gpu_memory_mb: peak CUDA memory allocated during the object, MB (None off CUDA).
        faces: faces of the reconstructed mesh.
        alignment: the SF3D/SPAR3D alignment's ``scale`` (ground truth over prediction, normalised frames)
            and ``rotation_deg`` (its rotation's angle).
        error: why the object has no scores (the reconstruction failed), else None.
    """

    name: str
    metrics: dict[str, float | None] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    peak_gpu_memory_mb: float | None = None
    faces: int = 0
    alignment: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_json(cls, record: dict) -> ObjectResult:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})


@dataclass(frozen=True)
class GsoBenchSummary:
    """What `run_gso_benchmark` found and wrote.

    Attributes:
        results: the records of the selected objects found in the output folder, in selection order.
        means: metric -> mean over the records without error (None where no record has a value).
        selected: how many objects the selection holds (all shards).
        computed: how many objects this call reconstructed and scored.
        skipped: how many objects of this shard had a record already.
        files: the tables written.
    """

    results: list[ObjectResult]
    means: dict[str, float | None]
    selected: int
    computed: int
    skipped: int
    files: list[Path]


@dataclass(frozen=True)
class GroundTruth:
    """One scan's inputs and references.

    Attributes:
        asset: the scan in the object frame.
        views: the four rig views at `INPUT_ELEVATION_DEG`, ``input_resolution`` pixels.
        novel: image resolution -> [24, R, R, 4] the novel views.
        points: [N, 3] points on the scan's surface.
    """

    asset: MeshAsset
    views: PosedViews
    novel: dict[int, np.ndarray]
    points: np.ndarray


def render_views(
    asset: MeshAsset, cameras: list[Camera], resolution: int, lighting: Lighting, device: str = "cpu"
) -> np.ndarray:
    """[V, R, R, 4] RGBA renders, `SUPERSAMPLE`d and quantised to 8 bits (as the dataset renderer's PNGs).

    Raises:
        InputError: the asset has no faces.
    """
    if asset.num_faces == 0:
        raise InputError(f"mesh {asset.name!r} has no faces to render")
    renderer = MeshRenderer(asset, device)
    rgba = np.stack([renderer.render(c, resolution, lighting, SUPERSAMPLE).rgba for c in cameras])
    return to_uint8(rgba).astype(np.float32) / 255.0


def render_ground_truth(obj: GsoObject, config: GsoBenchConfig) -> GroundTruth:
    """Load the scan and render its inputs and novel views, and draw its surface points (step 1 of the module)."""
    asset = load_gso_object(obj)
    lighting, cams = config.lighting, novel_cameras()
    views = render_views(asset, input_cameras(), config.input_resolution, lighting, config.device)
    novel = {r: render_views(asset, cams, r, lighting, config.device) for r in config.image_resolutions}
    points = surface_points(asset, config.surface_points, seed=config.seed)
    return GroundTruth(asset, PosedViews.from_rig(views, INPUT_ELEVATION_DEG), novel, points)


@dataclass(frozen=True)
class MeshScores:
    """The scores of one reconstruction (`score_mesh`).

    Attributes:
        metrics: `GsoBenchConfig.metric_keys` -> value (LPIPS None when unavailable).
        alignment: ``scale`` (ground truth over prediction, normalised frames) and ``rotation_deg``
            (the angle of the rotation) of the SF3D/SPAR3D alignment.
        renders: image resolution -> [24, R, R, 4] the reconstruction's novel views.
    """

    metrics: dict[str, float | None]
    alignment: dict[str, float]
    renders: dict[int, np.ndarray]


def as_files_hold_it(mesh: MeshAsset) -> MeshAsset:
    """``mesh`` with the colours its GLB / OBJ files give it: a textured part's colour is its texture alone.

    The exporter's mesh also carries per-vertex colours (for writers without textures, PLY); the
    renderer would multiply them into the texture (`fourview.meshio.part_arrays.PartArrays.untextured_colors`).
    """
    parts = tuple(replace(p, vertex_colors=None) if p.material.texture is not None else p for p in mesh.parts)
    return replace(mesh, parts=parts)


def score_mesh(pred: MeshAsset, gt: GroundTruth, config: GsoBenchConfig, lpips: Lpips | None = None) -> MeshScores:
    """Step 3 of the module: image metrics, geometry in both frames, volume IoU of ``pred`` (object frame)."""
    pred = as_files_hold_it(pred)
    metrics: dict[str, float | None] = {}
    renders = {}
    for res in config.image_resolutions:
        renders[res] = render_views(pred, novel_cameras(), res, RECONSTRUCTION_LIGHTING, config.device)
        scores = image_scores(renders[res], gt.novel[res], lpips)
        metrics.update({f"psnr_{res}": scores.psnr, f"ssim_{res}": scores.ssim, f"lpips_{res}": scores.lpips})
    points = surface_points(pred, config.surface_points, seed=config.seed + 1)
    fixed = geometry_scores(points, gt.points, FSCORE_THRESHOLDS)
    alignment = align_points(points, gt.points, AlignmentConfig(seed=config.seed))
    aligned = geometry_scores(alignment.pred_points, alignment.gt_points, FSCORE_THRESHOLDS)
    for prefix, scores in (("", fixed), ("aligned_", aligned)):
        metrics[f"{prefix}chamfer"] = scores.chamfer
        metrics.update({f"{prefix}fscore@{t:g}": scores.fscore[t] for t in FSCORE_THRESHOLDS})
    metrics["volume_iou"] = volume_iou(pred, gt.asset, config.volume_resolution)
    linear = alignment.transform[:3, :3]  # scale x rotation, from the prediction's frame to the scan's
    rotation = linear / np.cbrt(np.linalg.det(linear))
    angle = math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))
    return MeshScores(metrics, {"scale": alignment.scale, "rotation_deg": angle}, renders)


def reconstruct(
    gt: GroundTruth,
    name: str,
    config: GsoBenchConfig,
    pipeline: FourViewPipeline | None,
    export: ExportSettings | None = None,
    fit: FitSettings | OptimizeConfig | RefineConfig | None = None,
    sampling: SamplingSettings | None = None,
) -> tuple[MeshAsset, dict[str, float]]:
    """Step 2 of the module: the reconstructed mesh (object frame) and seconds per stage.

    Raises:
        InputError: a reconstruction without a surface.
    """
    if config.method == "hull":
        t0 = time.perf_counter()
        views = gt.views
        hull = HullField.from_views(views.images, views.c2w, views.fov_deg, resolution=config.hull_resolution)
        hull_s = time.perf_counter() - t0
        overrides = {} if export is None else export.overrides()
        with torch.no_grad():
            # The hull's grid and colour projector live on the CPU (`HullField`).
            exported = export_field(hull, replace(optimize_export_config(), **{**overrides, "device": "cpu"}))
        return exported.mesh, {"hull_s": hull_s, "export_s": exported.timings.get("total", 0.0)}
    assert pipeline is not None, "run_gso_benchmark checks the pipeline first"
    settings = {} if export is None else {"export": export}
    if config.mode == "image":
        if sampling is not None:
            settings["sampling"] = sampling
        photo = gt.views.images[0]  # the front view (azimuth 0)
        asset = pipeline.image_to_3d(photo, caption_from_name(name), **settings)
    else:
        if fit is not None:
            settings["fit"] = fit
        asset = pipeline.views_to_3d(gt.views, PIPELINE_METHODS[config.mode], **settings)
    return asset.mesh, dict(asset.timings)


def run_object(
    obj: GsoObject,
    config: GsoBenchConfig,
    pipeline: FourViewPipeline | None,
    lpips: Lpips | None = None,
    export: ExportSettings | None = None,
    fit: FitSettings | OptimizeConfig | RefineConfig | None = None,
    sampling: SamplingSettings | None = None,
    previews: Path | None = None,
) -> ObjectResult:
    """Render, reconstruct and score one object; a failed reconstruction gives a record with its error."""
    start = time.perf_counter()
    cuda = torch.device(config.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(config.device)
    timings: dict[str, float] = {}
    try:
        try:
            gt = render_ground_truth(obj, config)
        except InputError as error:
            raise InputError(f"ground truth: {error}") from None
        timings["ground_truth_s"] = time.perf_counter() - start
        mesh, stages = reconstruct(gt, obj.name, config, pipeline, export, fit, sampling)
        timings.update(stages)
        t0 = time.perf_counter()
        scores = score_mesh(mesh, gt, config, lpips)
        timings["scores_s"] = time.perf_counter() - t0
    except InputError as error:
        logger.warning("%s: no scores: %s", obj.name, error)
        return ObjectResult(obj.name, timings_s=timings, peak_memory_mb=peak_rss_mb(), error=str(error))
    if previews is not None:
        res = min(config.image_resolutions)
        write_png(previews / f"{obj.name}.png", _preview(gt.novel[res], scores.renders[res]))
    timings["total_s"] = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated(config.device) / 2**20 if cuda else None
    return ObjectResult(obj.name, scores.metrics, timings, peak_rss_mb(), gpu, mesh.num_faces, scores.alignment)


def check_pipeline(config: GsoBenchConfig, pipeline: FourViewPipeline | None) -> None:
    """Refuse a pipeline without the models the mode needs (before any object is rendered).

    Raises:
        InputError: no pipeline, or one without the generator / reconstructor that
            `GsoBenchConfig.pipeline_models` names.
    """
    models = config.pipeline_models()
    if models is None:
        return
    kinds = {"mvgen": "a generator", "recon": "a reconstructor"}
    needed = [kinds[k] for k, v in models.items() if v is not None]
    what = " and ".join(needed) or "no model"
    if pipeline is None:
        raise InputError(f"--mode {config.mode} runs through a FourViewPipeline (with {what}); none was given")
    have = {"mvgen": pipeline.generator is not None, "recon": pipeline.reconstructor is not None}
    lacking = [kinds[k] for k, v in models.items() if v is not None and not have[k]]
    if lacking:
        raise InputError(f"--mode {config.mode} needs {what}; the pipeline lacks {' and '.join(lacking)}")


def object_list_path(objects: str) -> Path:
    """The list file ``objects`` names: a path, or a shipped list's name (`LISTS_DIR`) when no such path exists."""
    path = Path(objects)
    shipped = LISTS_DIR / f"{objects}.txt"
    return shipped if not path.exists() and path.name == objects and shipped.is_file() else path


def select_benchmark_objects(root: str | os.PathLike, config: GsoBenchConfig) -> list[GsoObject]:
    """The objects of ``root`` the benchmark runs on (all shards): the list file's, or the subset's; then
    the first ``max_objects``.

    Raises:
        InputError: no objects, an unreadable list, or a listed name without its object.
    """
    objects = find_gso_objects(root)
    if config.objects is not None:
        objects = select_objects(objects, read_object_list(object_list_path(config.objects)))
    elif config.subset == "evaluation":
        objects = evaluation_objects(objects)
    if config.max_objects is not None:
        objects = objects[: config.max_objects]
    if not objects:
        raise InputError(f"no objects selected in {root} (the list is empty, or no object is in the subset)")
    return objects


def run_gso_benchmark(
    config: GsoBenchConfig,
    root: str | os.PathLike,
    out: str | os.PathLike,
    pipeline: FourViewPipeline | None = None,
    export: ExportSettings | None = None,
    fit: FitSettings | OptimizeConfig | RefineConfig | None = None,
    sampling: SamplingSettings | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> GsoBenchSummary:
    """Run this shard's objects that have no record yet, then write the tables of all records (module docstring).

    Args:
        config: the benchmark's settings.
        root: the folder of GSO-layout objects.
        out: the output folder (created; a rerun resumes in it).
        pipeline: the loaded models (`GsoBenchConfig.pipeline_models`); None for the hull.
        export: the pipeline's export settings (`fourview.pipeline.ExportSettings`) [default: its own].
        fit: settings of the per-object fits (``optimize`` / ``refine``) [default: the pipeline's].
        sampling: the generator's settings (``image``) [default: the pipeline's].
        rank: this shard [default: from the environment, `shard_from_env`].
        world_size: how many shards.
        progress: a progress bar.

    Raises:
        InputError: a bad folder or list, an output folder holding records of other settings, or a
            pipeline that lacks the model the mode needs.
    """
    check_pipeline(config, pipeline)
    if rank is None or world_size is None:
        rank, world_size = shard_from_env()
    selected = select_benchmark_objects(root, config)
    out = Path(out)
    (out / "objects").mkdir(parents=True, exist_ok=True)
    (out / "previews").mkdir(exist_ok=True)
    settings = _settings_record(config, pipeline, export, fit, sampling)
    check_settings(out / "settings.json", settings)
    mine = [o for i, o in enumerate(selected) if i % world_size == rank]
    todo = [o for o in mine if not (out / "objects" / f"{o.name}.json").is_file()]
    lpips = load_lpips()
    bar = tqdm(todo, desc=f"bench gso {config.mode} [{rank}/{world_size}]", unit="obj", disable=not progress)
    for obj in bar:
        result = run_object(obj, config, pipeline, lpips, export, fit, sampling, out / "previews")
        write_text_atomic(out / "objects" / f"{obj.name}.json", json.dumps(asdict(result), indent=1) + "\n")
    results = [read_record(out / "objects" / f"{o.name}.json", ObjectResult.from_json, "object") for o in selected]
    results = [r for r in results if r is not None]
    means = mean_metrics(results, config.metric_keys())
    files = write_tables(out, results, means, config, settings, len(selected), lpips.note)
    return GsoBenchSummary(results, means, len(selected), len(todo), len(mine) - len(todo), files)


def mean_metrics(results: list[ObjectResult], keys: list[str]) -> dict[str, float | None]:
    """Metric -> mean over the results without error that have a value (None where none has)."""
    means: dict[str, float | None] = {}
    for key in keys:
        values = [r.metrics[key] for r in results if r.error is None and r.metrics.get(key) is not None]
        means[key] = float(np.mean(values)) if values else None
    return means


def write_tables(
    out: Path,
    results: list[ObjectResult],
    means: dict[str, float | None],
    config: GsoBenchConfig,
    settings: dict,
    selected: int,
    lpips_note: str,
) -> list[Path]:
    """Write results.jsonl, results.csv, results.md and summary.json (each atomically); returns their paths."""
    keys = config.metric_keys()
    lines = "".join(json.dumps(asdict(r)) + "\n" for r in results)
    scored = [r for r in results if r.error is None]
    timing_keys = sorted({k for r in scored for k in r.timings_s})
    summary = {
        "benchmark": "gso",
        "fourview_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_record(config.device),
        "load_average": list(os.getloadavg()),
        "objects": {
            "selected": selected,
            "finished": len(results),
            "scored": len(scored),
            "failed": {r.name: r.error for r in results if r.error is not None},
        },
        "means": means,
        "mean_timings_s": {
            k: float(np.mean([r.timings_s[k] for r in scored if k in r.timings_s])) for k in timing_keys
        },
        "max_peak_memory_mb": max((r.peak_memory_mb for r in results), default=0.0),
        "lpips": lpips_note,
        "settings": settings,
    }
    files = {
        "results.jsonl": lines,
        "results.csv": _csv(results, keys, timing_keys),
        "results.md": results_markdown(results, means, config, selected, lpips_note),
        "summary.json": json.dumps(summary, indent=1) + "\n",
    }
    for name, text in files.items():
        write_text_atomic(out / name, text)
    return [out / name for name in files]


# The anchors: published numbers of other systems, each under its own protocol (docs/benchmark-protocol.md).
FOUR_VIEW_ANCHORS: tuple[tuple[str, str], ...] = (
    ("Instant3D", "GSO, 4 views in; 128 px: PSNR 26.54, SSIM 0.8934, LPIPS 0.0643"),
    ("LGM", "GSO, 4 views in; 256 px: PSNR 21.44"),
    ("GS-LRM", "GSO, 4 views in; 256 px: PSNR 29.59; 512 px: PSNR 30.52"),
)
"""Published 4-view reconstruction numbers on GSO (their renders, cameras, lighting and object sets)."""
SINGLE_IMAGE_ANCHORS: tuple[tuple[str, str], ...] = (
    ("InstantMesh", "GSO, 1 image in (SPAR3D's table): CD 0.135, F@0.1 0.545"),
    ("SF3D", "GSO, 1 image in (SPAR3D's table): CD 0.137, F@0.1 0.540"),
    ("SPAR3D", "GSO, 1 image in (SPAR3D's table): CD 0.120, F@0.1 0.584"),
)
"""Published single-image numbers on GSO from SPAR3D's table (aligned geometry; their renders and object set)."""

_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.4f}", "lpips": "{:.4f}", "chamfer": "{:.4f}", "fscore": "{:.3f}",
            "volume_iou": "{:.3f}"}  # fmt: skip


def results_markdown(
    results: list[ObjectResult],
    means: dict[str, float | None],
    config: GsoBenchConfig,
    selected: int,
    lpips_note: str,
) -> str:
    """The Markdown tables of results.md: one row per object, the mean row, then the anchors."""
    keys = config.metric_keys()
    what = "visual hull (no weights)" if config.method == "hull" else f"--mode {config.mode}"
    lighting = "unlit albedo" if config.albedo else "the dataset renderer's default lighting"
    failed = [r for r in results if r.error is not None]
    lines = [
        f"# GSO benchmark: {what}",
        "",
        f"{len(results)} of {selected} objects finished, {len(failed)} failed; inputs {config.input_resolution} px, "
        f"scans drawn with {lighting}, reconstructions unlit; image metrics over 24 novel views. 'al.' columns: "
        f"after the SF3D/SPAR3D alignment "
        f"(thresholds in units of the scan's longest side); the others in the fixed object frame (farthest vertex "
        f"at 1). LPIPS: {lpips_note}. Protocol: docs/benchmark-protocol.md.",
        "",
        "| object | " + " | ".join(_column(k) for k in keys) + " | faces | time s | peak MB |",
        "|" + " --- |" * (len(keys) + 4),
    ]
    for r in results:
        if r.error is not None:
            error = r.error.replace("|", "\\|")
            lines.append(f"| {r.name} | failed: {error} |" + " |" * (len(keys) + 2))
            continue
        cells = [_cell(k, r.metrics.get(k)) for k in keys]
        total = r.timings_s.get("total_s", 0.0)
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {r.faces} | {total:.1f} | {r.peak_memory_mb:.0f} |")
    scored = [r for r in results if r.error is None]
    mean_time = np.mean([r.timings_s.get("total_s", 0.0) for r in scored]) if scored else float("nan")
    lines.append(
        f"| **mean ({len(scored)})** | "
        + " | ".join(_cell(k, means.get(k)) for k in keys)
        + f" | | {mean_time:.1f} | |"
    )
    lines += ["", "Published numbers of other systems (other protocols: renders, cameras, lighting, object sets "
              "and metric code differ; not comparable one to one):", "", "| system | setting and numbers |",
              "| --- | --- |"]  # fmt: skip
    for anchors in (FOUR_VIEW_ANCHORS, SINGLE_IMAGE_ANCHORS):
        lines += [f"| {system} | {numbers} |" for system, numbers in anchors]
    return "\n".join(lines) + "\n"


def _column(key: str) -> str:
    aligned = key.startswith("aligned_")
    base = key.removeprefix("aligned_")
    if "_" in base and base.split("_")[0] in ("psnr", "ssim", "lpips"):
        metric, res = base.split("_")
        name = f"{metric.upper()} {res}"
    elif base.startswith("fscore@"):
        name = "F@" + base.split("@")[1]
    else:
        name = {"chamfer": "CD", "volume_iou": "IoU"}[base]
    return f"{name} al." if aligned else name


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    base = key.removeprefix("aligned_")
    kind = next(k for k in _FORMATS if base.startswith(k))
    return _FORMATS[kind].format(value)


def _csv(results: list[ObjectResult], keys: list[str], timing_keys: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "error", *keys, "faces", "alignment_scale", "alignment_rotation_deg",
                     *(f"time_{k}" for k in timing_keys), "peak_memory_mb", "peak_gpu_memory_mb"])  # fmt: skip
    for r in results:
        writer.writerow([r.name, r.error or "", *(_blank(r.metrics.get(k)) for k in keys), r.faces,
                         _blank(r.alignment.get("scale")), _blank(r.alignment.get("rotation_deg")),
                         *(_blank(r.timings_s.get(k)) for k in timing_keys), r.peak_memory_mb,
                         _blank(r.peak_gpu_memory_mb)])  # fmt: skip
    return buffer.getvalue()


def _blank(value: float | None) -> object:
    return "" if value is None else value


def _preview(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """[2R, 8R, 4] the ground truth (top row) and the reconstruction at elevation `PREVIEW_ELEVATION_DEG`."""
    first = NOVEL_ELEVATIONS_DEG.index(PREVIEW_ELEVATION_DEG) * len(NOVEL_AZIMUTHS_DEG)  # elevation-major cameras
    views = slice(first, first + len(NOVEL_AZIMUTHS_DEG))
    return np.concatenate([np.concatenate(list(images[views]), axis=1) for images in (gt, pred)], axis=0)


def _settings_record(config, pipeline, export, fit, sampling) -> dict:
    """The settings the records depend on (not which objects, nor where or in how many shards)."""
    record = {k: v for k, v in asdict(config).items() if k not in ("objects", "subset", "max_objects", "device")}
    record.update(
        lighting=asdict(config.lighting),
        reconstruction_lighting=asdict(RECONSTRUCTION_LIGHTING),
        supersample=SUPERSAMPLE,
        novel_cameras=[[c.azimuth_deg, c.elevation_deg] for c in novel_cameras()],
        fscore_thresholds=list(FSCORE_THRESHOLDS),
        alignment=asdict(AlignmentConfig(seed=config.seed)),
        models=None if pipeline is None else {k: v for k, v in pipeline.names.items() if k != "recon_path"},
        export=None if export is None else asdict(export),
        fit=None if fit is None else {"kind": type(fit).__name__, **asdict(fit)},
        sampling=None if sampling is None else asdict(sampling),
    )
    return json.loads(json.dumps(record))  # tuples as lists, as they read back
