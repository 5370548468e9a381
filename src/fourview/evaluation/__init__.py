"""Evaluation: the metrics and protocol pieces of the benchmarks.

Above the export and recon stages, below the pipeline: it may import `data`, `recon`, `export`,
`render` and the floor. Modules: `protocol` (the GSO protocol's cameras and fixed numbers), `gso`
(finding, listing and loading GSO-layout objects), `metrics` (PSNR, SSIM, LPIPS when its weights
are present), `geometry` (Chamfer distance, F-score, volume IoU), `alignment` (the SF3D/SPAR3D
normalise + rotation search + ICP protocol) and `adherence` (the synthetic world's colour and
shape adherence).
"""

from fourview.evaluation.adherence import canonical_mesh, nearest_colour, srgb_to_lab, surface_albedo, voxelize
from fourview.evaluation.geometry import (
    GeometryScores,
    chamfer_distance,
    geometry_scores,
    occupancy_grid,
    surface_points,
    volume_iou,
    voxel_iou,
)
from fourview.evaluation.protocol import input_cameras, novel_cameras

__all__ = [
    "GeometryScores",
    "canonical_mesh",
    "chamfer_distance",
    "geometry_scores",
    "input_cameras",
    "nearest_colour",
    "novel_cameras",
    "occupancy_grid",
    "srgb_to_lab",
    "surface_albedo",
    "surface_points",
    "volume_iou",
    "voxel_iou",
    "voxelize",
]
