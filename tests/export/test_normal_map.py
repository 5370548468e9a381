"""The normal map gives the budget mesh the dense mesh's shading back (issue 21's measurement, small)."""

from __future__ import annotations

import numpy as np
import pytest

from fourview.cameras import orthogonal_rig
from fourview.export.bake import uv_texels
from fourview.export.exporter import ExportConfig, export_field
from fourview.export.extract import extract_mesh
from fourview.export.mesh_cleanup import clean_mesh
from fourview.export.normal_map import DenseSurface, bake_normal_map, shaded_render, surface_psnr
from fourview.export.tangents import vertex_tangents
from fourview.export.uv import unwrap_uv
from fourview.mesh import MeshAsset, MeshPart
from fourview.meshio.part_arrays import vertex_normals
from fourview.recon.fields import TorusField

pytest.importorskip("xatlas")


def test_normal_map_wins_at_least_3_db_on_the_torus():
    field = TorusField()
    config = ExportConfig(resolution=128, face_budget=2000, texture_size=512, normal_map=True)
    budget = export_field(field, config).mesh
    extracted = extract_mesh(field, 128)
    cleaned = clean_mesh(extracted.verts, extracted.faces)
    dense = MeshAsset("dense", (MeshPart(cleaned.verts, cleaned.faces),))
    gains = []
    for camera in orthogonal_rig():
        reference, ref_alpha = shaded_render(dense, camera, 128)
        plain, alpha = shaded_render(budget, camera, 128, normal_map=False)
        mapped, _ = shaded_render(budget, camera, 128, normal_map=True)
        surface = (ref_alpha == 1.0) & (alpha == 1.0)  # a normal map cannot move the silhouette
        gains.append(surface_psnr(mapped, reference, surface) - surface_psnr(plain, reference, surface))
    assert min(gains) > 0.0 and np.mean(gains) >= 3.0, gains


def test_a_mesh_baked_against_itself_gets_the_flat_normal():
    extracted = extract_mesh(TorusField(), 32)
    cleaned = clean_mesh(extracted.verts, extracted.faces)
    unwrapped = unwrap_uv(cleaned.verts, cleaned.faces)
    normals = vertex_normals(unwrapped.verts, unwrapped.faces)
    tangents = vertex_tangents(unwrapped.verts, unwrapped.faces, unwrapped.uv, normals)
    texels = uv_texels(unwrapped.verts, unwrapped.faces, unwrapped.uv, 128, extrapolate_px=0)
    dense = DenseSurface.build(cleaned.verts, cleaned.faces)
    encoded = bake_normal_map(texels, dense, unwrapped.faces, normals, tangents, dilation_px=0)
    local = encoded[texels.rows, texels.cols] * 2.0 - 1.0
    assert np.percentile(local[:, 2], 1) > 0.999  # the texel's own interpolated normal: (0, 0, 1)


def test_closest_points_on_a_dense_surface():
    extracted = extract_mesh(TorusField(), 48)
    dense = DenseSurface.build(extracted.verts, extracted.faces)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, len(dense.faces), 200)
    bary = rng.dirichlet(np.ones(3), 200)
    points = np.einsum("nk,nkc->nc", bary, dense.verts[dense.faces[faces]])
    tri, found = dense.closest_points(points)
    back = np.einsum("nk,nkc->nc", found, dense.verts[dense.faces[tri]])
    np.testing.assert_allclose(back, points, atol=1e-9)
