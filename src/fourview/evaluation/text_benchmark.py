"""The text-to-3D benchmark (`fourview bench text`): generate each prompt of a set, score what was made.

For every prompt of a set (`fourview.evaluation.prompt_sets`: a shipped public set, the synthetic
world's, or a file):

1. Generation: `FourViewPipeline.text_to_3d` with the run's sampling and export settings (the same
   seed for every prompt, as `benchmarks/bench_prompt_adherence.py` draws them), then `Asset.save`
   into ``assets/NAME/`` with a turntable (``turntable.gif``, the frames `fourview sbs` shows).
2. CLIP score and CLIP R-precision (`fourview.evaluation.clip_metrics`), when CLIP weights are
   given: on `CLIP_VIEWS` views of the turntable's orbit (the rig's elevation, azimuths
   ``360 k / CLIP_VIEWS``) rendered at `CLIP_RESOLUTION` pixels from the mesh in memory (not the
   GIF's palette), against the set's distinct prompts. Without weights both are reported
   unavailable, with the reason; no other metric takes their place.
3. The synthetic world's colour and shape adherence, for prompts that carry their shape and colour
   (the ``synthetic_*`` sets, or records with ``shape`` and ``colour``): the saved GLB is loaded
   normalised and scored as `benchmarks/bench_prompt_adherence.py` scores it (`adherence.synthetic_adherence`).
4. Time per stage (the pipeline's own, ``save_s``, and the scoring's) and peak memory: the process's
   peak resident memory when the prompt was finished (it never decreases within a run), and on
   CUDA the peak GPU memory allocated during the prompt.

Output folder ``OUT``:

    assets/NAME/           the asset (`Asset.save`: model.glb, views.png, turntable.gif, reconstruction/, meta.json)
    prompts/NAME.json      the prompt's record (`PromptResult`), written atomically after its asset
    settings.json          the settings the records were made with (a rerun with others is refused)
    results.jsonl          the records of the selected prompts, one JSON line each, in set order
    results.md             per-prompt rows and the mean row
    summary.json           means, counts, machine, date, load average, settings

A rerun skips the prompts whose record exists; shards split the prompts as `bench gso` splits
objects (``RANK``/``WORLD_SIZE``, ``SLURM_PROCID``/``SLURM_NTASKS``: prompt ``i`` belongs to shard
``i % world_size``), and the tables hold every record found. A prompt the pipeline refuses (an
`InputError`, e.g. longer than the text encoder's 77 tokens) gets a record with the error: counted
and listed, never averaged. docs/benchmark-protocol.md writes every choice down.

Like `fourview.evaluation.gso_benchmark` this sits below the pipeline: the caller loads the
`FourViewPipeline` (and the CLIP weights, `clip_metrics.load_clip`) and passes them in.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from fourview import __version__
from fourview.atomic import write_text_atomic
from fourview.data.assets import load_asset
from fourview.data.dataset_renderer import shard_from_env
from fourview.data.filter import DEFAULT_CLIP_MODEL, ClipScorer
from fourview.errors import InputError
from fourview.evaluation.adherence import canonical_grids, synthetic_adherence
from fourview.evaluation.clip_metrics import CLIP_UNAVAILABLE, clip_scores, view_images
from fourview.evaluation.prompt_sets import PromptItem, PromptSet, read_prompt_set
from fourview.evaluation.run_record import check_settings, machine_record, peak_rss_mb, read_record

if TYPE_CHECKING:  # the pipeline sits above this stage: its objects are passed in, never imported
    from fourview.pipeline import ExportSettings, FourViewPipeline, SamplingSettings

logger = logging.getLogger(__name__)

CLIP_VIEWS: int = 8
"""Views of the turntable's orbit each asset's CLIP scores are computed on."""
CLIP_RESOLUTION: int = 224
"""Side of those views, pixels (CLIP's input size; its preprocessing resizes anything else)."""
MODEL_KEYS: tuple[str, ...] = ("mvgen", "student", "lora", "recon")
"""The pipeline's model names that the records depend on (`FourViewPipeline.names`)."""


@dataclass(frozen=True)
class TextBenchConfig:
    """Settings of `run_text_benchmark` (docs/benchmark-protocol.md)."""

    prompts: str = "synthetic_heldout"
    """Prompt file (.txt one per line, .json, .jsonl) or a shipped set: df415, gpteval3d_110, t3bench_prompt_single,
    t3bench_prompt_surr, t3bench_prompt_multi, synthetic_heldout, synthetic_train."""
    max_prompts: int | None = None
    """Only the first N prompts of the set (before sharding; R-precision still ranks among the whole set)."""
    clip: str | None = None
    """CLIP weights: a transformers CLIP folder or hub id, or an open_clip checkpoint file / folder [default: none;
    CLIP score and R-precision are then reported unavailable]."""
    clip_model: str = DEFAULT_CLIP_MODEL
    """open_clip architecture of a --clip checkpoint file."""
    turntable_frames: int = 24
    """Frames of each asset's turntable.gif."""
    preview_resolution: int = 256
    """Side of the turntable frames, pixels."""
    adherence_resolution: int = 32
    """Voxel grid of the shape adherence (benchmarks/bench_prompt_adherence.py's: 32)."""

    def __post_init__(self) -> None:
        if self.max_prompts is not None and self.max_prompts < 1:
            raise InputError(f"--max-prompts must be >= 1, got {self.max_prompts}")
        if not 1 <= self.turntable_frames <= 720:
            raise InputError(f"turntable frames must be in [1, 720] (the side-by-side study shows them), "
                             f"got {self.turntable_frames}")  # fmt: skip
        if not 16 <= self.preview_resolution <= 2048:
            raise InputError(f"preview resolution must be in [16, 2048] pixels, got {self.preview_resolution}")
        if not 8 <= self.adherence_resolution <= 256:
            raise InputError(f"adherence resolution must be in [8, 256], got {self.adherence_resolution}")


@dataclass(frozen=True)
class PromptResult:
    """One prompt's record (``prompts/NAME.json``, a line of ``results.jsonl``).

    Attributes:
        name: the asset's folder name.
        prompt: the prompt.
        timings_s: seconds per stage: the pipeline's (``mvgen_s`` ... ``total_s``), ``save_s`` (files and
            turntable), ``clip_s``, ``adherence_s``; ``asset_s`` = ``total_s`` + ``save_s``.
        peak_memory_mb: peak resident memory of the process when the prompt was finished, MB.
        peak_gpu_memory_mb: peak CUDA memory allocated during the prompt, MB (None off CUDA).
        faces: faces of the mesh.
        clip_score: CLIP score in [0, 100], None when unavailable.
        clip_r_precision: CLIP R-precision in [0, 1], None when unavailable.
        clip_ranks: per view, the rank of the prompt among the set's, None when unavailable.
        adherence: `adherence.AdherenceScores` as a dict with the prompt's ``target_shape`` and ``target_colour``,
            None for prompts not of the synthetic world.
        error: why the prompt has no asset, else None.
    """

    name: str
    prompt: str
    timings_s: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    peak_gpu_memory_mb: float | None = None
    faces: int = 0
    clip_score: float | None = None
    clip_r_precision: float | None = None
    clip_ranks: list[int] | None = None
    adherence: dict | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, record: dict) -> PromptResult:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})


@dataclass(frozen=True)
class TextBenchSummary:
    """What `run_text_benchmark` found and wrote.

    Attributes:
        results: the records of the selected prompts found in the output folder, in set order.
        means: `MEAN_KEYS` -> mean over the records without error (None where none has a value).
        selected: how many prompts the selection holds (all shards).
        computed: how many prompts this call generated and scored.
        skipped: how many prompts of this shard had a record already.
        files: the tables written.
        clip: ``available`` or the reason CLIP scores are unavailable.
    """

    results: list[PromptResult]
    means: dict[str, float | None]
    selected: int
    computed: int
    skipped: int
    files: list[Path]
    clip: str


MEAN_KEYS: tuple[str, ...] = ("clip_score", "clip_r_precision", "colour_rate", "shape_rate", "asset_s")
"""The summary's means: CLIP score, R-precision, the adherence rates (synthetic prompts), seconds per asset."""


def select_prompts(config: TextBenchConfig) -> tuple[PromptSet, list[PromptItem]]:
    """The whole set and the prompts the run makes (its first ``max_prompts``).

    Raises:
        InputError: an unknown set or a bad file.
    """
    prompt_set = read_prompt_set(config.prompts)
    return prompt_set, list(prompt_set.items[: config.max_prompts])


def settings_record(
    config: TextBenchConfig,
    prompt_set: PromptSet,
    models: dict,
    sampling: SamplingSettings | None = None,
    export: ExportSettings | None = None,
) -> dict:
    """The settings the records depend on (not how many prompts, nor where or in how many shards).

    Args:
        models: the pipeline's model names (`FourViewPipeline.names`, or the `ModelSettings` it is loaded from):
            only `MODEL_KEYS` count.
    """
    record = {k: v for k, v in asdict(config).items() if k not in ("prompts", "max_prompts")}
    record.update(
        prompts_digest=prompt_set.digest,
        clip_views=CLIP_VIEWS if config.clip else None,
        clip_resolution=CLIP_RESOLUTION if config.clip else None,
        models={k: models.get(k) for k in MODEL_KEYS},
        sampling=None if sampling is None else asdict(sampling),
        export=None if export is None else asdict(export),
    )
    return json.loads(json.dumps(record))  # tuples as lists, as they read back


def check_output(
    config: TextBenchConfig,
    out: str | os.PathLike,
    models: dict,
    sampling: SamplingSettings | None = None,
    export: ExportSettings | None = None,
) -> None:
    """Refuse, before any model loads, a bad prompt set or an output folder holding records of other settings.

    Raises:
        InputError: as `read_prompt_set`, or records made with other settings in ``out``.
    """
    prompt_set, _ = select_prompts(config)
    settings = settings_record(config, prompt_set, models, sampling, export)
    path = Path(out) / "settings.json"
    if path.is_file():
        check_settings(path, settings)


def run_text_benchmark(
    config: TextBenchConfig,
    out: str | os.PathLike,
    pipeline: FourViewPipeline,
    clip: ClipScorer | None = None,
    sampling: SamplingSettings | None = None,
    export: ExportSettings | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> TextBenchSummary:
    """Generate and score this shard's prompts that have no record yet, then write the tables of all records.

    Args:
        config: the benchmark's settings.
        out: the output folder (created; a rerun resumes in it).
        pipeline: the loaded models (a generator and a reconstructor).
        clip: the CLIP weights ``config.clip`` names (`clip_metrics.load_clip`); None when ``config.clip`` is None.
        sampling: the generator's settings (`fourview.pipeline.SamplingSettings`) [default: the pipeline's].
        export: the export settings (`fourview.pipeline.ExportSettings`) [default: the pipeline's].
        rank: this shard [default: from the environment, `shard_from_env`].
        world_size: how many shards.
        progress: a progress bar.

    Raises:
        InputError: a bad prompt set, an output folder holding records of other settings, a pipeline
            without a generator or a reconstructor, or CLIP weights named but not passed (or the reverse).
    """
    if pipeline.generator is None or pipeline.reconstructor is None:
        raise InputError("the text benchmark needs a pipeline with a generator and a reconstructor")
    if (clip is None) != (config.clip is None):
        raise InputError("pass the loaded CLIP weights exactly when the settings name them (--clip)")
    if rank is None or world_size is None:
        rank, world_size = shard_from_env()
    prompt_set, selected = select_prompts(config)
    out = Path(out)
    (out / "prompts").mkdir(parents=True, exist_ok=True)
    (out / "assets").mkdir(exist_ok=True)
    settings = settings_record(config, prompt_set, pipeline.names, sampling, export)
    check_settings(out / "settings.json", settings)
    mine = [item for i, item in enumerate(selected) if i % world_size == rank]
    todo = [item for item in mine if not (out / "prompts" / f"{item.name}.json").is_file()]
    scorer = _Scorer(config, prompt_set, clip)
    bar = tqdm(todo, desc=f"bench text [{rank}/{world_size}]", unit="prompt", disable=not progress)
    for item in bar:
        result = run_prompt(item, config, pipeline, scorer, out / "assets", sampling, export)
        write_text_atomic(out / "prompts" / f"{item.name}.json", json.dumps(asdict(result), indent=1) + "\n")
    records = [read_record(out / "prompts" / f"{i.name}.json", PromptResult.from_json, "prompt") for i in selected]
    results = [r for r in records if r is not None]
    means = mean_scores(results)
    clip_note = "available" if clip is not None else CLIP_UNAVAILABLE
    files = write_tables(out, results, means, prompt_set, len(selected), settings, clip_note, str(pipeline.device))
    return TextBenchSummary(results, means, len(selected), len(todo), len(mine) - len(todo), files, clip_note)


class _Scorer:
    """What every prompt is scored with, made once per run: the set's prompt embeddings, the canonical shapes."""

    def __init__(self, config: TextBenchConfig, prompt_set: PromptSet, clip: ClipScorer | None) -> None:
        self.clip = clip
        self.prompts = prompt_set.prompts
        self.prompt_features = None if clip is None else clip.text_features(self.prompts)  # [P, D]
        self.resolution = config.adherence_resolution
        self._canon: dict[str, np.ndarray] | None = None

    @property
    def canon(self) -> dict[str, np.ndarray]:
        """Every shape's canonical mesh voxelised (only a run with synthetic prompts needs them)."""
        if self._canon is None:
            self._canon = canonical_grids(self.resolution)
        return self._canon


def run_prompt(
    item: PromptItem,
    config: TextBenchConfig,
    pipeline: FourViewPipeline,
    scorer: _Scorer,
    assets: Path,
    sampling: SamplingSettings | None = None,
    export: ExportSettings | None = None,
) -> PromptResult:
    """Steps 1-4 of the module for one prompt; a prompt the pipeline refuses gives a record with its error."""
    cuda = pipeline.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(pipeline.device)
    settings = {k: v for k, v in (("sampling", sampling), ("export", export)) if v is not None}
    try:
        asset = pipeline.text_to_3d(item.prompt, **settings)
    except InputError as error:
        logger.warning("%s: no asset: %s", item.name, error)
        return PromptResult(item.name, item.prompt, peak_memory_mb=peak_rss_mb(), error=str(error))
    timings = dict(asset.timings)
    t0 = time.perf_counter()
    folder = assets / item.name
    # A folder without a record is a run killed after saving: replace it whole.
    asset.save(folder, turntable_frames=config.turntable_frames, preview_resolution=config.preview_resolution,
               overwrite=True)  # fmt: skip
    timings["save_s"] = time.perf_counter() - t0
    timings["asset_s"] = timings.get("total_s", 0.0) + timings["save_s"]
    scores = {}
    if scorer.clip is not None:
        t0 = time.perf_counter()
        views = view_images(asset.turntable(CLIP_VIEWS, CLIP_RESOLUTION))
        own = scorer.prompts.index(item.prompt)
        found = clip_scores(scorer.clip.image_features(views), scorer.prompt_features, own)
        scores.update(clip_score=found.score, clip_r_precision=found.r_precision, clip_ranks=list(found.ranks))
        timings["clip_s"] = time.perf_counter() - t0
    if item.synthetic:
        t0 = time.perf_counter()
        mesh = load_asset(folder / "model.glb")  # what the file holds, normalised like canonical_mesh
        found = synthetic_adherence(mesh, item.shape, item.colour, scorer.canon, scorer.resolution)
        scores["adherence"] = {"target_shape": item.shape, "target_colour": item.colour, **asdict(found)}
        timings["adherence_s"] = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated(pipeline.device) / 2**20 if cuda else None
    return PromptResult(item.name, item.prompt, timings, peak_rss_mb(), gpu, asset.num_faces, **scores)


def mean_scores(results: list[PromptResult]) -> dict[str, float | None]:
    """`MEAN_KEYS` -> mean over the records without error that have a value (None where none has)."""
    done = [r for r in results if r.error is None]
    synthetic = [r.adherence for r in done if r.adherence is not None]
    values = {
        "clip_score": [r.clip_score for r in done if r.clip_score is not None],
        "clip_r_precision": [r.clip_r_precision for r in done if r.clip_r_precision is not None],
        "colour_rate": [float(a["colour_hit"]) for a in synthetic],
        "shape_rate": [float(a["shape_hit"]) for a in synthetic],
        "asset_s": [r.timings_s["asset_s"] for r in done if "asset_s" in r.timings_s],
    }
    return {k: float(np.mean(values[k])) if values[k] else None for k in MEAN_KEYS}


def write_tables(
    out: Path,
    results: list[PromptResult],
    means: dict[str, float | None],
    prompt_set: PromptSet,
    selected: int,
    settings: dict,
    clip_note: str,
    device: str = "cpu",
) -> list[Path]:
    """Write results.jsonl, results.md and summary.json (each atomically); returns their paths."""
    done = [r for r in results if r.error is None]
    timing_keys = sorted({k for r in done for k in r.timings_s})
    summary = {
        "benchmark": "text",
        "fourview_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_record(device),
        "load_average": list(os.getloadavg()),
        "prompt_set": {"name": prompt_set.name, "prompts": len(prompt_set.items), "digest": prompt_set.digest},
        "prompts": {
            "selected": selected,
            "finished": len(results),
            "generated": len(done),
            "synthetic": sum(r.adherence is not None for r in done),
            "failed": {r.name: r.error for r in results if r.error is not None},
        },
        "clip": clip_note,
        "means": means,
        "mean_timings_s": {k: float(np.mean([r.timings_s[k] for r in done if k in r.timings_s])) for k in timing_keys},
        "max_peak_memory_mb": max((r.peak_memory_mb for r in results), default=0.0),
        "max_peak_gpu_memory_mb": max((r.peak_gpu_memory_mb or 0.0 for r in results), default=0.0) or None,
        "settings": settings,
    }
    files = {
        "results.jsonl": "".join(json.dumps(asdict(r)) + "\n" for r in results),
        "results.md": results_markdown(results, means, prompt_set, selected, clip_note),
        "summary.json": json.dumps(summary, indent=1) + "\n",
    }
    for name, text in files.items():
        write_text_atomic(out / name, text)
    return [out / name for name in files]


def results_markdown(
    results: list[PromptResult],
    means: dict[str, float | None],
    prompt_set: PromptSet,
    selected: int,
    clip_note: str,
) -> str:
    """The Markdown table of results.md: one row per prompt, then the mean row."""
    failed = [r for r in results if r.error is not None]
    na = "n/a" if clip_note == "available" else "unavailable"
    clip = "CLIP score (0-100) and R-precision (R=1, among the set's prompts)" if clip_note == "available" else (
        f"CLIP score and R-precision: {clip_note}")  # fmt: skip
    lines = [
        f"# Text-to-3D benchmark: {prompt_set.name}",
        "",
        f"{len(results)} of {selected} prompts finished, {len(failed)} failed. {clip}. Adherence (synthetic-world "
        f"prompts only): the nearest colour word and the best-matching shape, 'hit' when they are the prompt's. "
        f"Time: generation and saving per asset. Protocol: docs/benchmark-protocol.md.",
        "",
        "| asset | prompt | CLIP | R@1 | colour | shape | faces | time s | peak MB |",
        "|" + " --- |" * 9,
    ]
    for r in results:
        prompt = r.prompt.replace("|", "\\|")
        if r.error is not None:
            error = r.error.replace("|", "\\|")
            lines.append(f"| {r.name} | {prompt} | failed: {error} |" + " |" * 6)
            continue
        a = r.adherence
        colour = shape = "-"
        if a is not None:
            colour = a["colour"] + (" (hit)" if a["colour_hit"] else f" (asked {a['target_colour']})")
            shape = a["shape"] + (" (hit)" if a["shape_hit"] else f" (asked {a['target_shape']})")
        lines.append(
            f"| {r.name} | {prompt} | {_cell(r.clip_score, '{:.2f}', na)} | "
            f"{_cell(r.clip_r_precision, '{:.2f}', na)} | {colour} | {shape} | {r.faces} | "
            f"{r.timings_s.get('asset_s', 0.0):.1f} | {r.peak_memory_mb:.0f} |"
        )
    done = len(results) - len(failed)
    lines.append(
        f"| **mean ({done})** | | {_cell(means['clip_score'], '{:.2f}', na)} | "
        f"{_cell(means['clip_r_precision'], '{:.2f}', na)} | {_cell(means['colour_rate'], '{:.0%}')} | "
        f"{_cell(means['shape_rate'], '{:.0%}')} | | {_cell(means['asset_s'], '{:.1f}')} | |"
    )
    return "\n".join(lines) + "\n"


def _cell(value: float | None, fmt: str, missing: str = "n/a") -> str:
    return missing if value is None else fmt.format(value)
