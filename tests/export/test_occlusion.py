import numpy as np

from fourview.export.extract import extract_mesh
from fourview.export.occlusion import OcclusionConfig, vertex_occlusion
from fourview.meshio.part_arrays import vertex_normals
from fourview.recon.fields import SphereField, TorusField


def occlusion_of(field):
    mesh = extract_mesh(field, 48)
    normals = vertex_normals(mesh.verts, mesh.faces)
    return mesh.verts, vertex_occlusion(field, mesh.verts, mesh.faces, normals, OcclusionConfig(grid=48, distance=1.0))


def test_a_convex_surface_is_unoccluded():
    _, occlusion = occlusion_of(SphereField())
    assert occlusion.min() > 0.98


def test_the_inside_of_a_torus_ring_is_darker_than_its_outside():
    verts, occlusion = occlusion_of(TorusField())
    radius = np.hypot(verts[:, 0], verts[:, 2])
    inner = occlusion[(radius < 0.4) & (np.abs(verts[:, 1]) < 0.05)]
    outer = occlusion[(radius > 0.7) & (np.abs(verts[:, 1]) < 0.05)]
    assert inner.mean() < outer.mean() - 0.1 and outer.min() > 0.95
