import re

import numpy as np
import pytest
import trimesh

from fourview.errors import InputError
from fourview.export.mesh_cleanup import CleanupConfig, clean_mesh, orient_faces, simplify_mesh


def sphere(subdivisions=3, radius=0.6, centre=(0.0, 0.0, 0.0)):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return (m.vertices + np.asarray(centre)).astype(np.float32), m.faces.astype(np.int64)


def directed_edge_counts(faces):
    """Each directed edge of a consistently wound closed mesh appears once, its reverse once."""
    edges = np.stack([faces, np.roll(faces, -1, axis=1)], axis=-1).reshape(-1, 2)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return edges, counts


def signed_volume(verts, faces):
    tri = verts[faces].astype(np.float64)
    return np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0


def test_clean_sphere_is_unchanged():
    v, f = sphere()
    out = clean_mesh(v, f)
    np.testing.assert_array_equal(out.verts, v)
    np.testing.assert_array_equal(out.faces, f)
    assert (out.merged_verts, out.degenerate_faces, out.duplicate_faces, out.small_components, out.flipped_faces) == (
        0,
        0,
        0,
        0,
        0,
    )


def test_orientation_is_repaired_from_random_flips_and_inversion():
    v, f = sphere()
    rng = np.random.default_rng(0)
    bad = f[:, ::-1].copy()  # inverted...
    flip = rng.random(len(f)) < 0.4
    bad[flip] = bad[flip][:, ::-1]  # ...and 40% flipped back at random
    out, n_flipped = orient_faces(v.astype(np.float64), bad)
    np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(f, axis=1))  # same faces, same order
    # Every face now winds as the original (outward) one: the same cyclic order.
    same = [tuple(a) in {tuple(np.roll(b, k)) for k in range(3)} for a, b in zip(out, f)]
    assert all(same)
    assert n_flipped == int((~flip).sum())
    _, counts = directed_edge_counts(out)
    assert counts.max() == 1
    assert signed_volume(v, out) > 0


def test_each_piece_is_turned_outwards_separately():
    v1, f1 = sphere(2, 0.3, (-0.5, 0, 0))
    v2, f2 = sphere(2, 0.3, (0.5, 0, 0))
    verts = np.concatenate([v1, v2])
    faces = np.concatenate([f1, f2[:, ::-1] + len(v1)])  # the second sphere inside out
    out = clean_mesh(verts, faces)
    assert out.flipped_faces == len(f2)
    half = len(f1)
    assert signed_volume(out.verts, out.faces[:half]) > 0 and signed_volume(out.verts, out.faces[half:]) > 0


def test_small_components_degenerate_duplicate_faces_and_unused_verts_are_removed():
    v, f = sphere()
    n = len(v)
    speck_v = np.array([[0.9, 0.9, 0.9], [0.91, 0.9, 0.9], [0.9, 0.91, 0.9], [0.9, 0.9, 0.91]], np.float32)
    speck_f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]) + n  # a tiny closed tetrahedron
    unused = np.array([[5.0, 5.0, 5.0]], np.float32)
    verts = np.concatenate([v, speck_v, unused])
    faces = np.concatenate(
        [
            f,
            speck_f,
            [[0, 0, 1]],  # repeated index
            [[f[0, 0], f[0, 1], f[0, 1]]],  # repeated index
            f[:5],  # duplicates
            f[5:7, ::-1],  # duplicates with the opposite winding
        ]
    )
    out = clean_mesh(verts, faces)
    assert out.degenerate_faces == 2
    assert out.duplicate_faces == 7
    assert out.small_components == 1
    np.testing.assert_array_equal(out.verts, v)  # speck and unused vertex gone, order kept
    np.testing.assert_array_equal(out.faces, f)


def test_collinear_faces_are_degenerate_and_duplicate_verts_merge():
    v, f = sphere(2)
    extra = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]], np.float32)  # collinear
    dup = v[f[0]]  # exact copies of the corners of face 0
    verts = np.concatenate([v, extra, dup])
    n = len(v)
    faces = np.concatenate([f, [[n, n + 1, n + 2]], [[n + 3, n + 4, n + 5]]])
    out = clean_mesh(verts, faces, CleanupConfig(min_component_faces=0, min_component_area_fraction=0.0))
    assert out.merged_verts == 3
    assert out.degenerate_faces == 1
    assert out.duplicate_faces == 1  # the copy of face 0, once its vertices are merged
    np.testing.assert_array_equal(out.verts, v)
    np.testing.assert_array_equal(out.faces, f)


def test_area_fraction_threshold_is_a_setting():
    v1, f1 = sphere(3, 0.6)
    v2, f2 = sphere(3, 0.1, (0.9, 0.0, 0.0))  # 1/36 of the big sphere's area, same face count
    verts, faces = np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)])
    assert clean_mesh(verts, faces, CleanupConfig(min_component_area_fraction=0.05)).small_components == 1
    assert clean_mesh(verts, faces, CleanupConfig(min_component_area_fraction=0.01)).small_components == 0
    kept = clean_mesh(verts, faces, CleanupConfig(min_component_faces=len(f1) + 1, min_component_area_fraction=0.0))
    assert len(kept.faces) == len(f1)  # the largest piece always stays


def test_simplify_honours_the_budget_and_keeps_the_shape():
    v, f = sphere(5)  # 20480 faces
    verts, faces = simplify_mesh(v, f, 2000)
    assert len(faces) <= 2000 and len(faces) > 1800
    mesh = trimesh.Trimesh(verts, faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.6**3, rel=0.03)
    assert np.abs(np.linalg.norm(verts, axis=1) - 0.6).max() < 0.02


def test_simplify_within_budget_keeps_the_faces():
    v, f = sphere(2)
    verts, faces = simplify_mesh(v, f, len(f))
    np.testing.assert_array_equal(faces, f)
    np.testing.assert_array_equal(verts, v)


@pytest.mark.parametrize("budget", [0, -5, 2.5])
def test_bad_budget_is_an_input_error(budget):
    v, f = sphere(1)
    with pytest.raises(InputError, match="face budget"):
        simplify_mesh(v, f, budget)


def test_malformed_meshes_are_input_errors():
    """`clean_mesh` checks its input (`fourview.meshio.part_arrays.check_mesh`, tested there)."""
    with pytest.raises(InputError, match="face indices"):
        clean_mesh(np.zeros((3, 3)), np.array([[0, 1, 3]]))


def test_cleanup_config_rejects_bad_thresholds():
    with pytest.raises(InputError, match=re.escape("min_component_area_fraction must be in [0, 1), got 1.5")):
        CleanupConfig(min_component_area_fraction=1.5)
    with pytest.raises(InputError, match="min_component_faces must be >= 0, got -1"):
        CleanupConfig(min_component_faces=-1)
