"""Evaluation: the metrics and protocol pieces of the benchmarks.

Above the export and recon stages, below the pipeline: it may import `data`, `recon`, `export`,
`render` and the floor. Modules: `protocol` (the GSO protocol's cameras and fixed numbers), `gso`
(finding, listing and loading GSO-layout objects), `metrics` (PSNR, SSIM, LPIPS when its weights
are present), `geometry` (Chamfer distance, F-score, volume IoU), `alignment` (the SF3D/SPAR3D
normalise + rotation search + ICP protocol), `adherence` (the synthetic world's colour and
shape adherence) and `gso_benchmark` (the GSO benchmark of `fourview bench gso`, run on a loaded
pipeline).
"""

from fourview.evaluation.adherence import canonical_mesh, nearest_colour, srgb_to_lab, surface_albedo, voxelize
from fourview.evaluation.alignment import Alignment, AlignmentConfig, align_points
from fourview.evaluation.geometry import (
    GeometryScores,
    chamfer_distance,
    geometry_scores,
    occupancy_grid,
    surface_points,
    volume_iou,
    voxel_iou,
)
from fourview.evaluation.gso import (
    GSO_UP_AXIS,
    GsoObject,
    evaluation_objects,
    find_gso_objects,
    load_gso_object,
    read_object_list,
    select_objects,
)
from fourview.evaluation.gso_benchmark import (
    GsoBenchConfig,
    GsoBenchSummary,
    ObjectResult,
    run_gso_benchmark,
)
from fourview.evaluation.metrics import ImageScores, Lpips, image_scores, load_lpips
from fourview.evaluation.protocol import input_cameras, novel_cameras

__all__ = [
    "GSO_UP_AXIS",
    "Alignment",
    "AlignmentConfig",
    "GeometryScores",
    "GsoBenchConfig",
    "GsoBenchSummary",
    "GsoObject",
    "ImageScores",
    "Lpips",
    "ObjectResult",
    "align_points",
    "canonical_mesh",
    "chamfer_distance",
    "evaluation_objects",
    "find_gso_objects",
    "geometry_scores",
    "image_scores",
    "input_cameras",
    "load_gso_object",
    "load_lpips",
    "nearest_colour",
    "novel_cameras",
    "occupancy_grid",
    "read_object_list",
    "run_gso_benchmark",
    "select_objects",
    "srgb_to_lab",
    "surface_albedo",
    "surface_points",
    "volume_iou",
    "voxel_iou",
    "voxelize",
]
