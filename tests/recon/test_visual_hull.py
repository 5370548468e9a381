"""The visual hull of posed silhouettes (`fourview.recon.visual_hull`)."""

from __future__ import annotations

import numpy as np
import torch

from fourview.cameras import orthogonal_rig, project_points
from fourview.recon.visual_hull import HullField, carve_visual_hull, project
from tests.recon.posed_sphere import RADIUS


def test_visual_hull_contains_the_sphere_and_projection_matches_cameras(rig):
    cams = orthogonal_rig(20.0)
    pts = torch.tensor([[0.3, 0.2, -0.1], [0.0, 0.0, 0.0]])
    g = project(pts, torch.from_numpy(rig.c2w).float(), torch.from_numpy(rig.fov_deg).float())
    for v, cam in enumerate(cams):
        ref = project_points(pts.numpy(), cam, 32)  # (col, row, depth)
        np.testing.assert_allclose((g[v, :, 0].numpy() + 1) / 2 * 32, ref[:, 0], atol=1e-3)
        np.testing.assert_allclose((g[v, :, 1].numpy() + 1) / 2 * 32, ref[:, 1], atol=1e-3)
    alpha = torch.from_numpy(rig.images[..., 3])
    occ = carve_visual_hull(alpha, torch.from_numpy(rig.c2w), torch.from_numpy(rig.fov_deg), 33)
    lin = np.linspace(-1, 1, 33)
    x, y, z = np.meshgrid(lin, lin, lin, indexing="ij")
    dist = np.sqrt(x**2 + y**2 + z**2)
    assert occ[dist < RADIUS - 0.1].all()  # the hull holds the object...
    assert not occ[dist > 3**0.5 * RADIUS + 0.1].any()  # ...inside the box of its silhouettes
    field = HullField.from_views(rig.images, rig.c2w, rig.fov_deg, resolution=33)
    assert float(field.sdf(torch.zeros(1, 3))) < 0 < float(field.sdf(torch.tensor([[0.95, 0.95, 0.95]])))
