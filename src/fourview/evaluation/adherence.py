"""Prompt adherence in the synthetic world: does a mesh have the prompt's colour and shape?

For a prompt such as "a red mug" (`fourview.data.synthetic`), the generated mesh's area-weighted
mean albedo (`surface_albedo`) must be nearest (`nearest_colour`, CIELAB distance) to
``COLOURS["red"]``, and its best match by `fourview.evaluation.geometry.voxel_iou` among the
`canonical_mesh` of every shape (voxelised by `voxelize`, all of them by `canonical_grids`) must be
the mug. The world is built so that both hold for its own objects (see `fourview.data.synthetic`).
`match_synthetic` finds a mesh's colour word and shape, `synthetic_adherence` tests them against a
prompt's; `fourview bench text` and the adherence benchmarks (`benchmarks/bench_prompt_adherence.py`,
`benchmarks/bench_recon_adherence.py`) score meshes with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.ndimage import binary_dilation

from fourview.data.primitives import concatenate, weld
from fourview.data.shapes import normaliser, shape_pieces
from fourview.data.synthetic import COLOURS, PROPORTIONS, SHAPES
from fourview.errors import InputError
from fourview.evaluation.geometry import asset_trimesh, voxel_iou
from fourview.mesh import MeshAsset, linear_to_srgb, srgb_to_linear


def canonical_mesh(shape: str) -> trimesh.Trimesh:
    """Reference geometry of a shape: default proportions, normalised like `fourview.data.synthetic.build_asset`.

    Returns:
        An untextured mesh with vertices welded by position: a union of closed, outward-facing
        components (one per primitive; they may overlap, so use `voxelize`, which handles that,
        rather than ``contains`` on the whole mesh).
    """
    if shape not in SHAPES:
        raise InputError(f"unknown synthetic shape {shape!r}; expected one of {', '.join(SHAPES)}")
    body, accent = shape_pieces(shape, {k: v[1] for k, v in PROPORTIONS[shape].items()})
    centre, scale = normaliser(body + accent)
    whole = concatenate(body + accent)
    verts, faces = weld((whole.verts - centre) * scale, whole.faces)
    return trimesh.Trimesh(verts, faces, process=False)


def voxelize(mesh: trimesh.Trimesh, resolution: int = 32, dilation: int = 0) -> np.ndarray:
    """Occupancy of a normalised mesh on a grid over [-1, 1]^3.

    Each connected component is tested on its own (ray parity, trimesh ``contains``) and the
    results are united, so overlapping closed parts (as in `canonical_mesh`) come out right.

    Args:
        mesh: a mesh in the object frame (inside the unit ball).
        resolution: cells per side.
        dilation: grow the occupancy by this many cells (6-connected), which makes IoU forgiving
            of thin parts (legs, shafts) that are a cell or two off.

    Returns:
        [R, R, R] bool, indexed (x, y, z), cell centres at ``(i + 0.5) / R * 2 - 1``.
    """
    c = (np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0
    grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1).reshape(-1, 3)  # [R^3, 3]
    occupied = np.zeros(len(grid), dtype=bool)
    for part in mesh.split(only_watertight=False):
        lo, hi = part.bounds
        near = np.flatnonzero(((grid >= lo) & (grid <= hi)).all(axis=1))
        if len(near):
            occupied[near] |= part.contains(grid[near])
    occupied = occupied.reshape(resolution, resolution, resolution)
    if dilation > 0:
        occupied = binary_dilation(occupied, iterations=dilation)
    return occupied


def surface_albedo(asset: MeshAsset, samples: int = 20000, seed: int = 0) -> np.ndarray:
    """Area-weighted mean albedo of an asset's surface, as sRGB.

    The mean is taken in linear space (`fourview.mesh`: ``srgb_to_linear(texture or vertex
    colour) * base_color``) over ``samples`` points drawn uniformly over the surface area with a
    fixed ``seed`` (Monte Carlo; the standard error is about 0.002 at the default), then encoded
    as sRGB. Textures are sampled at the nearest texel.

    Returns:
        [3] float64 sRGB in [0, 1].
    """
    tris, uvs, sources = [], [], []
    for k, part in enumerate(asset.parts):
        tris.append(part.verts[part.faces].astype(np.float64))  # [F, 3, 3]
        uvs.append(part.uv[part.faces] if part.uv is not None else np.zeros((len(part.faces), 3, 2)))
        sources.append(np.full(len(part.faces), k))
    tri = np.concatenate(tris)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)  # [F]
    if area.sum() <= 0:
        raise InputError(f"asset {asset.name!r} has no surface area")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(area), size=samples, p=area / area.sum())  # [S]
    r1, r2 = np.sqrt(rng.random(samples)), rng.random(samples)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)  # [S, 3] uniform over a triangle
    uv = np.einsum("sk,skj->sj", bary, np.concatenate(uvs)[face])  # [S, 2]
    part_of = np.concatenate(sources)[face]
    local = face - np.concatenate([[0], np.cumsum([len(p.faces) for p in asset.parts])])[part_of]
    colour = np.ones((samples, 3))
    for k, part in enumerate(asset.parts):
        sel = part_of == k
        tex, mat = part.material.texture, part.material
        if tex is not None and part.uv is not None:
            h, w = tex.shape[:2]
            col = np.clip((uv[sel, 0] * w).astype(int), 0, w - 1)
            row = np.clip(((1.0 - uv[sel, 1]) * h).astype(int), 0, h - 1)
            colour[sel] = srgb_to_linear(tex[row, col, :3])
        elif part.vertex_colors is not None:
            vc = part.vertex_colors[part.faces[local[sel]]]  # [s, 3, 3]
            colour[sel] = srgb_to_linear(np.einsum("sk,skj->sj", bary[sel], vc))
        colour[sel] *= np.asarray(mat.base_color[:3])
    return linear_to_srgb(colour.mean(axis=0)).astype(np.float64)


def nearest_colour(srgb: np.ndarray) -> str:
    """The `COLOURS` word nearest to an sRGB colour in [0, 1], by CIELAB distance (Delta E 1976)."""
    lab = srgb_to_lab(np.asarray(srgb, dtype=np.float64).reshape(1, 3))
    table = srgb_to_lab(np.array(list(COLOURS.values()), dtype=np.float64) / 255.0)
    return list(COLOURS)[int(np.linalg.norm(table - lab, axis=1).argmin())]


def srgb_to_lab(srgb: np.ndarray) -> np.ndarray:
    """[N, 3] sRGB in [0, 1] to CIELAB (D65 white): [N, 3] (L*, a*, b*)."""
    lin = srgb_to_linear(np.clip(srgb, 0.0, 1.0)).astype(np.float64)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    d = 6.0 / 29.0
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d * d) + 4.0 / 29.0)
    return np.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1)


@dataclass(frozen=True)
class SyntheticMatch:
    """A mesh as the synthetic world's test sees it (`match_synthetic`).

    Attributes:
        albedo_srgb: [3] float64, the mean surface albedo (`surface_albedo`), sRGB in [0, 1].
        colour: the `COLOURS` word nearest to it (`nearest_colour`).
        ious: every shape -> the voxel IoU of the mesh with the shape's canonical mesh.
    """

    albedo_srgb: np.ndarray
    colour: str
    ious: dict[str, float]

    @property
    def shape(self) -> str:
        """The shape whose canonical mesh overlaps the mesh most."""
        return max(self.ious, key=self.ious.get)


@dataclass(frozen=True)
class AdherenceScores:
    """The synthetic world's test of one mesh against a prompt (`synthetic_adherence`).

    Attributes:
        colour: the `COLOURS` word nearest to the mesh's mean surface albedo.
        shape: the shape whose canonical mesh overlaps the mesh most (voxel IoU).
        colour_hit: ``colour`` is the prompt's.
        shape_hit: ``shape`` is the prompt's.
        best_iou: the IoU of ``shape``.
        prompt_shape_iou: the IoU of the prompt's shape.
        albedo_srgb: the mean surface albedo, sRGB in [0, 1], rounded to 4 decimals.
    """

    colour: str
    shape: str
    colour_hit: bool
    shape_hit: bool
    best_iou: float
    prompt_shape_iou: float
    albedo_srgb: tuple[float, float, float]


def canonical_grids(resolution: int = 32, dilation: int = 0) -> dict[str, np.ndarray]:
    """Every shape -> its `canonical_mesh` voxelised (`voxelize`): [R, R, R] bool."""
    return {s: voxelize(canonical_mesh(s), resolution, dilation) for s in SHAPES}


def match_synthetic(
    mesh: MeshAsset, canon: dict[str, np.ndarray], resolution: int = 32, dilation: int = 0
) -> SyntheticMatch:
    """The colour word and the shape IoUs of a normalised mesh.

    Args:
        mesh: the mesh, normalised like `canonical_mesh` (``load_asset(..., normalize=True)``).
        canon: every shape -> its canonical mesh voxelised (`canonical_grids`) at ``resolution`` and ``dilation``.
        resolution: the voxel grid.
        dilation: the voxel dilation (`voxelize`), the same as ``canon``'s.
    """
    albedo = surface_albedo(mesh)
    whole = asset_trimesh(mesh)
    # UV seams split vertices; welded, each closed component is one (voxelize tests components by ray parity).
    whole.merge_vertices(merge_tex=True, merge_norm=True)
    occupied = voxelize(whole, resolution, dilation)
    ious = {s: voxel_iou(occupied, grid) for s, grid in canon.items()}
    return SyntheticMatch(albedo, nearest_colour(albedo), ious)


def synthetic_adherence(
    mesh: MeshAsset, shape: str, colour: str, canon: dict[str, np.ndarray], resolution: int = 32
) -> AdherenceScores:
    """The synthetic world's colour and shape test of a normalised mesh against a prompt's shape and colour word.

    Args:
        mesh: the mesh, normalised like `canonical_mesh` (``load_asset(..., normalize=True)``).
        shape: the prompt's shape.
        colour: the prompt's colour word.
        canon: every shape -> its canonical mesh voxelised (`canonical_grids`) at ``resolution``.
        resolution: the voxel grid.
    """
    found = match_synthetic(mesh, canon, resolution)
    rgb = tuple(round(float(x), 4) for x in found.albedo_srgb)
    best = found.shape
    return AdherenceScores(
        found.colour, best, found.colour == colour, best == shape, found.ious[best], found.ious[shape], rgb
    )
