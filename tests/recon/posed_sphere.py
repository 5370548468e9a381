"""Posed views of a coloured sphere: what the fit, its loss terms, refinement and the visual hull are tested on."""

from __future__ import annotations

import numpy as np
import trimesh

from fourview.cameras import Camera
from fourview.mesh import MeshAsset, MeshPart
from fourview.render.mesh_renderer import Lighting, MeshRenderer

RADIUS = 0.6
"""Radius of the sphere, object units."""


def sphere_views(cams: list[Camera], res: int = 32) -> np.ndarray:
    """[V, res, res, 4] albedo renders of the sphere of ``RADIUS``, coloured ``0.5 + 0.4 sin(3 xyz)``, anti-aliased."""
    m = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    verts = m.vertices.astype(np.float32)
    colors = (0.5 + 0.4 * np.sin(3.0 * verts)).astype(np.float32)
    asset = MeshAsset("sphere", (MeshPart(verts, m.faces.astype(np.int64), vertex_colors=colors),))
    r = MeshRenderer(asset)
    return np.stack([r.render(c, res, Lighting(albedo=True), supersample=2).rgba for c in cams])
