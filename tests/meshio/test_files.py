import os
import stat

import numpy as np
import pytest
import trimesh

from fourview import atomic
from fourview.data.assets import load_asset
from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, MeshPart
from fourview.meshio.files import mesh_files, write_mesh_files


def textured_sphere() -> MeshAsset:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    verts = sphere.vertices.astype(np.float32)
    uv = np.stack([np.arctan2(verts[:, 0], verts[:, 2]) / (2 * np.pi) + 0.5, verts[:, 1] / 1.2 + 0.5], 1)
    rng = np.random.default_rng(0)
    texture = rng.random((8, 16, 3)).astype(np.float32)
    colors = rng.random((len(verts), 3)).astype(np.float32)
    part = MeshPart(verts, sphere.faces.astype(np.int64), Material(texture=texture), uv.astype(np.float32), colors)
    return MeshAsset("sphere", (part,))


def test_every_format_holds_the_same_mesh(tmp_path):
    mesh = textured_sphere()
    (part,) = mesh.parts
    paths = write_mesh_files(mesh, [tmp_path / "m.glb", tmp_path / "m.obj", tmp_path / "m.PLY"])
    assert [p.name for p in paths] == ["m.glb", "m.obj", "m.mtl", "m.png", "m.PLY"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    for name in ("m.glb", "m.obj", "m.PLY"):
        (loaded,) = load_asset(tmp_path / name, normalize=False).parts
        np.testing.assert_array_equal(loaded.verts[loaded.faces], part.verts[part.faces], err_msg=name)
        has_texture = loaded.material.texture is not None
        assert has_texture == (name != "m.PLY"), name
        if name == "m.PLY":  # no textures in a PLY: the vertex colours stand in
            np.testing.assert_allclose(loaded.vertex_colors, part.vertex_colors, atol=0.5 / 255 + 1e-6)


def test_unknown_formats_and_empty_lists_write_nothing(tmp_path):
    with pytest.raises(InputError, match="unknown output format '.fbx'"):
        write_mesh_files(textured_sphere(), [tmp_path / "m.glb", tmp_path / "m.fbx"])
    with pytest.raises(InputError, match="no output files"):
        write_mesh_files(textured_sphere(), [])
    with pytest.raises(TypeError, match="sequence of paths"):
        mesh_files(textured_sphere(), str(tmp_path / "m.glb"))
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_writes_none_of_the_files_and_keeps_the_old_ones(tmp_path):
    mesh = textured_sphere()
    write_mesh_files(mesh, [tmp_path / "m.glb"])
    before = (tmp_path / "m.glb").read_bytes()
    smaller = MeshAsset("s", (MeshPart(mesh.parts[0].verts * 0.5, mesh.parts[0].faces),))
    with pytest.raises(InputError, match="does not exist"):
        write_mesh_files(smaller, [tmp_path / "m.glb", tmp_path / "m.obj", tmp_path / "nope" / "m.ply"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.glb"]  # no temporaries, no OBJ
    assert (tmp_path / "m.glb").read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_writes_none_of_the_files(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(InputError, match="Permission denied"):
            write_mesh_files(textured_sphere(), [tmp_path / "m.glb", locked / "m.obj"])
    finally:
        locked.chmod(0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]
    assert list(locked.iterdir()) == []


def test_a_failure_after_some_files_are_complete_writes_none_of_them(tmp_path, monkeypatch):
    calls = []

    def fsync_fails_on_the_png(fd):
        calls.append(fd)
        if len(calls) == 4:  # glb, obj, mtl synced; the png fails
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", fsync_fails_on_the_png)
    with pytest.raises(InputError, match="No space left"):
        write_mesh_files(textured_sphere(), [tmp_path / "m.glb", tmp_path / "m.obj"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_get_the_mode_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = write_mesh_files(textured_sphere(), [tmp_path / "m.glb", tmp_path / "m.obj", tmp_path / "m.ply"])
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths} == {p.name: mode for p in paths}
