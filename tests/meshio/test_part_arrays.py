import io

import numpy as np
import pytest
import trimesh
from PIL import Image

from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, MeshPart
from fourview.meshio.part_arrays import check_mesh, encode_png, mesh_part_arrays, part_arrays, vertex_normals

TET_VERTS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
TET_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
TET_UV = np.array([[0, 0], [1, 0], [0, 1], [0.5, 0.5]], np.float32)


def sphere(subdivisions=3, radius=0.6):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return m.vertices.astype(np.float32), m.faces.astype(np.int64)


@pytest.mark.parametrize(
    "verts,faces,match",
    [
        (np.zeros((3, 2)), np.array([[0, 1, 2]]), r"verts must be \[V, 3\]"),
        (np.zeros((3, 3)), np.array([[0, 1, 3]]), "face indices"),
        (np.zeros((3, 3)), np.array([[0.0, 1.0, 2.0]]), "integers"),
        (np.zeros((3, 3)), np.zeros((0, 3), np.int64), "no faces"),
        (np.full((3, 3), np.nan), np.array([[0, 1, 2]]), "non-finite"),
    ],
)
def test_malformed_meshes_are_input_errors(verts, faces, match):
    with pytest.raises(InputError, match=match):
        check_mesh(verts, faces)


def test_check_mesh_returns_float64_and_int64():
    verts, faces = check_mesh(TET_VERTS, TET_FACES.astype(np.int32))
    assert verts.dtype == np.float64 and faces.dtype == np.int64
    np.testing.assert_array_equal(verts, TET_VERTS)
    np.testing.assert_array_equal(faces, TET_FACES)


def test_vertex_normals_are_radial_and_shared_across_split_vertices():
    v, f = sphere(3)
    n = vertex_normals(v, f)
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", n, radial).min() > 0.999
    # Split vertex 0 into a copy used by its first face: the copy gets the same normal.
    v2 = np.concatenate([v, v[:1]])
    f2 = f.copy()
    first = np.flatnonzero((f2 == 0).any(axis=1))[0]
    f2[first][f2[first] == 0] = len(v)
    n2 = vertex_normals(v2, f2)
    np.testing.assert_allclose(n2[-1], n2[0], atol=1e-7)
    np.testing.assert_allclose(n2[0], n[0], atol=1e-6)


def test_part_arrays_converts_dtypes_clips_colours_and_keeps_the_texture():
    texture = np.full((2, 2, 4), 0.5)  # float64, RGBA
    colors = np.array([[2.0, -1.0, 0.5]] * 4)
    part = MeshPart(TET_VERTS.astype(np.float64), TET_FACES.astype(np.int32), Material(texture=texture), TET_UV,
                    colors)  # fmt: skip
    arrays = part_arrays(part)
    assert arrays.verts.dtype == arrays.normals.dtype == arrays.uv.dtype == arrays.texture.dtype == np.float32
    assert arrays.faces.dtype == np.int64 and arrays.texture.shape == (2, 2, 4)
    np.testing.assert_array_equal(arrays.vertex_colors, np.float32([[1.0, 0.0, 0.5]] * 4))
    np.testing.assert_allclose(np.linalg.norm(arrays.normals, axis=1), 1.0, atol=1e-6)
    assert arrays.untextured_colors is None  # a texture gives the colour
    assert part_arrays(MeshPart(TET_VERTS, TET_FACES, vertex_colors=colors)).untextured_colors is not None


@pytest.mark.parametrize(
    "part,match",
    [
        (MeshPart(TET_VERTS, TET_FACES, Material(texture=np.zeros((4, 4, 3)))), "needs UV"),
        (MeshPart(TET_VERTS, TET_FACES, Material(texture=np.zeros((4, 4))), TET_UV), r"texture must be \[H, W, 3\]"),
        (MeshPart(TET_VERTS, TET_FACES, uv=np.full((4, 2), np.inf, np.float32)), "uv has non-finite"),
        (MeshPart(TET_VERTS, TET_FACES.astype(np.float32)), "integers"),
    ],
)
def test_malformed_parts_are_input_errors(part, match):
    with pytest.raises(InputError, match=match):
        part_arrays(part)


def test_a_mesh_without_parts_is_an_input_error():
    with pytest.raises(InputError, match="has no parts"):
        mesh_part_arrays(MeshAsset("empty", ()))
    with pytest.raises(TypeError, match="MeshAsset"):
        mesh_part_arrays(MeshPart(TET_VERTS, TET_FACES))


def test_encode_png_round_trips_8_bit_values_with_row_0_at_the_top():
    texture = np.random.default_rng(0).integers(0, 256, (5, 7, 4)) / 255.0
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(texture))))
    assert decoded.shape == (5, 7, 4) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, np.round(texture * 255))
