"""Evaluation: the metrics and protocol pieces of the benchmarks, and the benchmarks run on a loaded pipeline.

Above the export and recon stages, below the pipeline: it may import `data`, `recon`, `export`,
`render` and the floor. Modules: `protocol` (the GSO protocol's cameras and fixed numbers), `gso`
(finding, listing and loading GSO-layout objects), `metrics` (PSNR, SSIM, LPIPS when its weights
are present), `geometry` (Chamfer distance, F-score, volume IoU), `alignment` (the SF3D/SPAR3D
normalise + rotation search + ICP protocol), `adherence` (the synthetic world's colour and
shape adherence), `clip_metrics` (CLIP score and R-precision), `prompt_sets` (the text
benchmark's prompt sets), `run_record` (a resumable benchmark's settings check, records, machine
and peak memory), `gso_benchmark` and `text_benchmark` (`fourview bench gso` and `fourview bench
text`), and `sbs` (`fourview sbs`: side-by-side studies, no torch).

The names below are exported here and resolved on first use, so that importing a light module
of the package (`sbs`) does not import torch.
"""

_EXPORTS = {
    "AdherenceScores": "fourview.evaluation.adherence",
    "SyntheticMatch": "fourview.evaluation.adherence",
    "canonical_grids": "fourview.evaluation.adherence",
    "canonical_mesh": "fourview.evaluation.adherence",
    "match_synthetic": "fourview.evaluation.adherence",
    "nearest_colour": "fourview.evaluation.adherence",
    "srgb_to_lab": "fourview.evaluation.adherence",
    "surface_albedo": "fourview.evaluation.adherence",
    "synthetic_adherence": "fourview.evaluation.adherence",
    "voxelize": "fourview.evaluation.adherence",
    "Alignment": "fourview.evaluation.alignment",
    "AlignmentConfig": "fourview.evaluation.alignment",
    "align_points": "fourview.evaluation.alignment",
    "GeometryScores": "fourview.evaluation.geometry",
    "chamfer_distance": "fourview.evaluation.geometry",
    "geometry_scores": "fourview.evaluation.geometry",
    "occupancy_grid": "fourview.evaluation.geometry",
    "surface_points": "fourview.evaluation.geometry",
    "volume_iou": "fourview.evaluation.geometry",
    "voxel_iou": "fourview.evaluation.geometry",
    "GSO_UP_AXIS": "fourview.evaluation.gso",
    "GsoObject": "fourview.evaluation.gso",
    "evaluation_objects": "fourview.evaluation.gso",
    "find_gso_objects": "fourview.evaluation.gso",
    "load_gso_object": "fourview.evaluation.gso",
    "read_object_list": "fourview.evaluation.gso",
    "select_objects": "fourview.evaluation.gso",
    "GsoBenchConfig": "fourview.evaluation.gso_benchmark",
    "GsoBenchSummary": "fourview.evaluation.gso_benchmark",
    "ObjectResult": "fourview.evaluation.gso_benchmark",
    "run_gso_benchmark": "fourview.evaluation.gso_benchmark",
    "ImageScores": "fourview.evaluation.metrics",
    "Lpips": "fourview.evaluation.metrics",
    "image_scores": "fourview.evaluation.metrics",
    "load_lpips": "fourview.evaluation.metrics",
    "input_cameras": "fourview.evaluation.protocol",
    "novel_cameras": "fourview.evaluation.protocol",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Resolved on first use: `fourview sbs` imports `fourview.evaluation.sbs`, which needs no torch.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fourview.evaluation' has no attribute {name!r}")
