import numpy as np

from fourview.export.tangents import vertex_tangents
from fourview.meshio.part_arrays import vertex_normals


def plane(mirror: bool):
    """Two triangles in z = 0 facing +Z; u along +x, v along +y (or -y when mirrored)."""
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = verts[:, :2].copy()
    if mirror:
        uv[:, 1] = 1.0 - uv[:, 1]
    return verts, faces, uv


def test_tangent_follows_u_and_handedness_follows_v():
    for mirror, w in ((False, 1.0), (True, -1.0)):
        verts, faces, uv = plane(mirror)
        tangents = vertex_tangents(verts, faces, uv, vertex_normals(verts, faces))
        np.testing.assert_allclose(tangents[:, :3], np.tile([1.0, 0.0, 0.0], (4, 1)), atol=1e-6)
        np.testing.assert_array_equal(tangents[:, 3], w)


def test_tangents_are_unit_and_orthogonal_to_the_normals():
    rng = np.random.default_rng(0)
    verts = rng.normal(size=(30, 3)).astype(np.float32)
    faces = rng.integers(0, 30, size=(40, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    uv = rng.random((30, 2)).astype(np.float32)
    normals = vertex_normals(verts, faces)
    tangents = vertex_tangents(verts, faces, uv, normals)
    np.testing.assert_allclose(np.linalg.norm(tangents[:, :3], axis=1), 1.0, atol=1e-5)
    assert np.abs((tangents[:, :3] * normals).sum(1)).max() < 1e-5
    assert set(np.unique(tangents[:, 3])) <= {-1.0, 1.0}
