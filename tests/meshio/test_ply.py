import numpy as np
import pytest
import trimesh

from fourview import atomic
from fourview.data.assets import load_asset
from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, MeshPart, srgb_to_linear
from fourview.meshio.ply import write_ply


def sphere_with_colors():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    colors = np.random.default_rng(0).random((len(mesh.vertices), 3)).astype(np.float32)
    return mesh.vertices.astype(np.float32), mesh.faces.astype(np.int64), colors


def one_part(verts, faces, vertex_colors=None, material=Material(), uv=None):
    return MeshAsset("s", (MeshPart(verts, faces, material, uv, vertex_colors),))


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    verts, faces, colors = sphere_with_colors()
    path = tmp_path / "s.ply"
    assert write_ply(path, one_part(verts, faces, colors), binary=binary) == [path]
    head = path.read_bytes()[:80]
    assert head.startswith(b"ply\nformat " + (b"binary_little_endian" if binary else b"ascii") + b" 1.0\n")
    back = trimesh.load(path, process=False)
    np.testing.assert_array_equal(np.asarray(back.vertices, np.float32), verts)
    np.testing.assert_array_equal(back.faces, faces)
    np.testing.assert_array_equal(back.visual.vertex_colors[:, :3], np.round(colors * 255).astype(np.uint8))
    part = load_asset(path, normalize=False).parts[0]
    np.testing.assert_array_equal(part.faces, faces)
    np.testing.assert_allclose(part.vertex_colors, colors, atol=0.5 / 255 + 1e-6)
    normals = np.asarray(back.vertex_normals)
    assert (np.einsum("ij,ij->i", normals, verts) > 0).all()


def test_ply_without_colors_or_normals(tmp_path):
    verts, faces, _ = sphere_with_colors()
    path = tmp_path / "plain.ply"
    write_ply(path, one_part(verts, faces), write_normals=False)
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "red" not in header and "nx" not in header
    assert len(path.read_bytes()) == len(header) + len("end_header\n") + 12 * len(verts) + 13 * len(faces)
    back = trimesh.load(path, process=False)
    np.testing.assert_array_equal(back.faces, faces)


def test_failed_ply_write_leaves_nothing(tmp_path, monkeypatch):
    verts, faces, colors = sphere_with_colors()
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(InputError, match="No space left"):
        write_ply(tmp_path / "s.ply", one_part(verts, faces, colors))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="non-finite"):
        write_ply(tmp_path / "s.ply", one_part(verts * np.float32(np.nan), faces, colors))


def test_parts_are_joined_and_a_textured_part_keeps_its_vertex_colours(tmp_path):
    """PLY has no textures: every part's vertex colours are written, and a part without them gets its base colour."""
    verts, faces, colors = sphere_with_colors()
    uv = np.zeros((len(verts), 2), np.float32)
    textured = Material(name="t", texture=np.zeros((2, 2, 3), np.float32))
    plain = Material(name="p", base_color=(*srgb_to_linear(np.float32([0.2, 0.4, 0.6])), 1.0))
    mesh = MeshAsset(
        "three",
        (
            MeshPart(verts, faces, textured, uv, colors),
            MeshPart(verts + np.float32(2.0), faces, plain),
            MeshPart(verts - np.float32(2.0), faces),
        ),
    )
    path = tmp_path / "three.ply"
    write_ply(path, mesh)
    back = trimesh.load(path, process=False)
    n = len(verts)
    np.testing.assert_array_equal(np.asarray(back.vertices, np.float32), np.concatenate([p.verts for p in mesh.parts]))
    np.testing.assert_array_equal(back.faces, np.concatenate([faces, faces + n, faces + 2 * n]))
    rgb = back.visual.vertex_colors[:, :3]
    np.testing.assert_array_equal(rgb[:n], np.round(colors * 255).astype(np.uint8))
    assert (rgb[n : 2 * n] == [51, 102, 153]).all()  # sRGB 0.2, 0.4, 0.6
    assert (rgb[2 * n :] == 255).all()  # the default white material
