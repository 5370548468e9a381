"""Real-world size and origin of an exported mesh.

The object frame (docs/conventions.md) is already glTF's: +Y up, front +Z, one unit one metre;
loading normalised every object into the unit sphere, so an exported mesh is about 2 m tall unless
it is scaled. `place_mesh` scales it uniformly so that its bounding box is ``height`` metres tall
and moves its origin to the pivot: the centre of the bounding box's base (``bottom``: a prop stands
on the ground at its origin, as engines expect), the bounding box's centre (``center``), or the
object frame's own origin (``object``). The levels of detail move with the finest level, so they
stay aligned. The result records what was done (`fourview.mesh.Placement`), for meta.json and the
GLB's ``extras``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fourview.errors import InputError
from fourview.mesh import MeshAsset, Pivot, Placement


def place_mesh(
    mesh: MeshAsset, height: float | None = None, pivot: Pivot = "object", target: str | None = None
) -> MeshAsset:
    """Scale ``mesh`` (and its levels of detail) to ``height`` metres and put its origin at ``pivot``.

    Args:
        mesh: the mesh in the object frame.
        height: the bounding box's height along +Y after scaling, metres; None keeps the size.
        pivot: ``object``, ``bottom`` or ``center`` (module docstring).
        target: the export target, recorded in the placement.

    Returns:
        The placed mesh, its ``placement`` set (levels of detail too).

    Raises:
        InputError: a height that is not positive and finite, an unknown pivot, or a flat mesh
            (no height to scale).
    """
    if height is not None and not (np.isfinite(height) and height > 0):
        raise InputError(f"height must be a positive number of metres, got {height}")
    if pivot not in ("object", "bottom", "center"):
        raise InputError(f"unknown pivot {pivot!r}; expected 'bottom', 'center' or 'object'")
    lo, hi = mesh.bounds().astype(np.float64)
    extent = hi[1] - lo[1]
    if height is not None and extent <= 0:
        raise InputError("the mesh has no height to scale (it is flat in Y)")
    scale = 1.0 if height is None else float(height) / extent
    if pivot == "bottom":
        origin = np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])
    elif pivot == "center":
        origin = (lo + hi) / 2
    else:
        origin = np.zeros(3)
    matrix = np.eye(4)
    matrix[:3, :3] *= scale
    matrix[:3, 3] = -origin * scale
    placed = mesh.transformed(matrix)
    placement = Placement(height=extent * scale, pivot=pivot, scale=scale, target=target)
    return replace(placed, placement=placement, lods=tuple(replace(m, placement=placement) for m in placed.lods))
