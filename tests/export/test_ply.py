import numpy as np
import pytest
import trimesh

from fourview.data.assets import load_asset
from fourview.errors import InputError
from fourview.export import obj as obj_module
from fourview.export.ply import write_ply


def sphere_with_colors():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    colors = np.random.default_rng(0).random((len(mesh.vertices), 3)).astype(np.float32)
    return mesh.vertices.astype(np.float32), mesh.faces.astype(np.int64), colors


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    verts, faces, colors = sphere_with_colors()
    path = tmp_path / "s.ply"
    assert write_ply(path, verts, faces, vertex_colors=colors, binary=binary) == [path]
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
    write_ply(path, verts, faces, write_normals=False)
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "red" not in header and "nx" not in header
    assert len(path.read_bytes()) == len(header) + len("end_header\n") + 12 * len(verts) + 13 * len(faces)
    back = trimesh.load(path, process=False)
    np.testing.assert_array_equal(back.faces, faces)


def test_failed_ply_write_leaves_nothing(tmp_path, monkeypatch):
    verts, faces, colors = sphere_with_colors()
    monkeypatch.setattr(obj_module.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(InputError):
        write_ply(tmp_path / "s.ply", verts, faces, vertex_colors=colors)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="vertex_colors"):
        write_ply(tmp_path / "s.ply", verts, faces, vertex_colors=colors[:3])
