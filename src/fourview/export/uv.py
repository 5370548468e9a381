"""UV atlas generation with xatlas.

`unwrap_uv` cuts a mesh into charts, flattens each, and packs them into the unit square. Vertices
on chart seams are split (one copy per chart); ``vmapping`` says which input vertex each output
vertex copies, so per-vertex data can follow. UVs follow the OBJ convention of
docs/conventions.md: ``(0, 0)`` is the bottom-left corner of the texture image.

xatlas's chart growing is super-linear in the chart size, so chart area is capped at what about
`UVConfig.max_chart_faces` average faces cover (the mesh's area times ``max_chart_faces / F``):
large meshes unwrap many times faster (docs/benchmarks.md), at the price of more, smaller charts
(more seams, which the baker pads). Small meshes are not capped at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fourview.errors import InputError
from fourview.export.mesh_cleanup import face_areas
from fourview.meshio.part_arrays import check_mesh


@dataclass(frozen=True)
class UVConfig:
    """Settings of `unwrap_uv`.

    Attributes:
        resolution: the texture side the atlas is packed for, texels (sets padding and
            xatlas's texel density).
        padding_px: empty texels kept between charts, at ``resolution``.
        max_chart_faces: caps each chart's area at the mesh's area times ``max_chart_faces / F``
            (about that many average faces); 0 = no cap (xatlas's default: slow on large meshes).
        max_iterations: xatlas chart-growing iterations (more = better charts, slower).
        rotate_charts: let the packer rotate charts to fit more tightly.
    """

    resolution: int = 1024
    padding_px: int = 2
    max_chart_faces: int = 200
    max_iterations: int = 1
    rotate_charts: bool = True

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise InputError(f"UV atlas resolution must be >= 8 texels, got {self.resolution}")
        if self.padding_px < 0:
            raise InputError(f"UV padding must be >= 0 texels, got {self.padding_px}")
        if self.max_chart_faces < 0:
            raise InputError(f"max_chart_faces must be >= 0 (0: no cap), got {self.max_chart_faces}")
        if self.max_iterations < 1:
            raise InputError(f"max_iterations must be >= 1, got {self.max_iterations}")


@dataclass(frozen=True)
class UVOutput:
    """A mesh with a UV atlas.

    Attributes:
        verts: [V', 3] float32 positions, seam vertices split (``verts == input_verts[vmapping]``).
        faces: [F, 3] int64 indices into ``verts``, in the input's face order and winding.
        uv: [V', 2] float32 texture coordinates in [0, 1], OBJ convention (v up).
        vmapping: [V'] int64 index of the input vertex each output vertex copies.
        num_charts: charts in the atlas.
    """

    verts: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    vmapping: np.ndarray
    num_charts: int


def unwrap_uv(verts: np.ndarray, faces: np.ndarray, config: UVConfig = UVConfig()) -> UVOutput:
    """Generate a UV atlas for a triangle mesh with xatlas.

    Args:
        verts: [V, 3] positions, object frame.
        faces: [F, 3] vertex indices.
        config: atlas settings.

    Returns:
        `UVOutput`; the face count and order are kept.

    Raises:
        InputError: a malformed mesh, or xatlas is not installed.
    """
    return unwrap_uv_levels([(verts, faces)], config)[0]


def unwrap_uv_levels(
    meshes: list[tuple[np.ndarray, np.ndarray]], config: UVConfig = UVConfig(), shrink: float = 0.5
) -> list[UVOutput]:
    """One UV atlas shared by several meshes (levels of detail of one object), packed together.

    Mesh ``k`` is given ``shrink ** (2 k)`` of the texel area per unit of surface the first mesh
    gets: a coarser level is seen smaller on screen, so it needs fewer texels, and the finest
    level keeps most of the texture (``1 / (1 + 1/4 + 1/16 + ...)``, over 3/4, with the default).

    Args:
        meshes: ``(verts [V, 3], faces [F, 3])`` per mesh, finest first.
        config: atlas settings (the chart-size cap is set from the first mesh).
        shrink: linear texel-density factor from one mesh to the next, in (0, 1].

    Returns:
        One `UVOutput` per mesh, in order, their UVs in the same unit square without overlaps.

    Raises:
        InputError: a malformed mesh, no meshes, a bad ``shrink``, or xatlas is not installed.
    """
    try:
        import xatlas  # optional compiled extension: imported where it is used
    except ImportError as error:
        raise InputError("UV unwrapping needs the 'xatlas' package (pip install xatlas)") from error
    if not meshes:
        raise InputError("no meshes to unwrap")
    if not 0.0 < shrink <= 1.0:
        raise InputError(f"texel-density shrink must be in (0, 1], got {shrink}")
    checked = [check_mesh(v, f) for v, f in meshes]
    atlas = xatlas.Atlas()
    for k, (verts64, faces64) in enumerate(checked):
        atlas.add_mesh((verts64 * shrink**k).astype(np.float32), faces64.astype(np.uint32))
    chart = xatlas.ChartOptions()
    chart.max_iterations = config.max_iterations
    verts0, faces0 = checked[0]
    if 0 < config.max_chart_faces < len(faces0):
        chart.max_chart_area = float(face_areas(verts0, faces0).sum() * config.max_chart_faces / len(faces0))
    pack = xatlas.PackOptions()
    pack.resolution = config.resolution
    pack.padding = config.padding_px
    pack.rotate_charts = config.rotate_charts
    pack.bilinear = True
    atlas.generate(chart, pack, verbose=False)
    outputs = []
    for k, (verts64, _) in enumerate(checked):
        vmapping, indices, uvs = atlas[k]  # [V'], [F, 3], [V', 2]
        # xatlas normalises by the atlas size with v growing with texel rows; any consistent choice
        # works for a fresh atlas (the baker renders it in the same convention), but keep it in [0, 1].
        uv = np.clip(np.asarray(uvs, dtype=np.float64), 0.0, 1.0)
        vmapping = np.asarray(vmapping, dtype=np.int64)
        outputs.append(
            UVOutput(
                verts=verts64[vmapping].astype(np.float32),
                faces=np.asarray(indices, dtype=np.int64).reshape(-1, 3),
                uv=uv.astype(np.float32),
                vmapping=vmapping,
                num_charts=int(atlas.chart_count),
            )
        )
    return outputs
