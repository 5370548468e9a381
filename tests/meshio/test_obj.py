from dataclasses import replace

import numpy as np
import pytest
import trimesh
from PIL import Image

from fourview import atomic
from fourview.data.assets import load_asset
from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, MeshPart
from fourview.meshio.obj import write_obj

# A unit right tetrahedron, faces counter-clockwise seen from outside.
TET_VERTS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
TET_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
TET_UV = np.array([[0, 0], [1, 0], [0, 1], [0.5, 0.5]], np.float32)

# Smooth normals by hand: the origin touches the three axis-plane faces (-1, -1, -1) / sqrt(3);
# each other corner touches two axis-plane faces and the slanted face, whose area-weighted normals
# (0, -1, 0) + (0, 0, -1) + (1, 1, 1) sum to an axis. float32(1 / sqrt(3)) = 0.577350259.
TET_NORMALS = """\
vn -0.577350259 -0.577350259 -0.577350259
vn 1 0 0
vn 0 1 0
vn 0 0 1
"""

# The tetrahedron with its UVs, as positions, texture coordinates and normals.
TET_V_VT_VN = (
    """\
v 0 0 0
v 1 0 0
v 0 1 0
v 0 0 1
vt 0 0
vt 1 0
vt 0 1
vt 0.5 0.5
"""
    + TET_NORMALS
)

EXPECTED_OBJ_UV = (
    "# fourview OBJ\nmtllib tet.mtl\no tet\n"
    + TET_V_VT_VN
    + """\
usemtl stone
f 1/1/1 3/3/3 2/2/2
f 1/1/1 2/2/2 4/4/4
f 1/1/1 4/4/4 3/3/3
f 2/2/2 3/3/3 4/4/4
"""
)

EXPECTED_MTL_TEXTURED = """\
# fourview MTL
newmtl stone
Kd 1 1 1
Ka 0 0 0
Ks 0 0 0
d 1
illum 1
Pm 0
Pr 0.8
map_Kd tet.png
"""

EXPECTED_OBJ_PLAIN = (
    """\
# fourview OBJ
mtllib tet.mtl
o tet
v 0 0 0 1 0 0
v 1 0 0 0 1 0
v 0 1 0 0 0 1
v 0 0 1 0.25 0.5 0.75
"""
    + TET_NORMALS
    + """\
usemtl default
f 1//1 3//3 2//2
f 1//1 2//2 4//4
f 1//1 4//4 3//3
f 2//2 3//3 4//4
"""
)

EXPECTED_MTL_PLAIN = """\
# fourview MTL
newmtl default
Kd 0.5 0.25 0.125
Ka 0 0 0
Ks 0 0 0
d 1
illum 1
Pm 0.25
Pr 0.5
"""


def tet(uv=None, texture=None, vertex_colors=None, material=Material(), verts=TET_VERTS, faces=TET_FACES):
    material = material if texture is None else replace(material, texture=texture)
    return MeshAsset("tet", (MeshPart(verts, faces, material, uv, vertex_colors),))


def test_tetrahedron_with_uvs_and_texture_exact_text(tmp_path):
    texture = np.zeros((8, 4, 3), np.float32)
    texture[0] = 1.0  # top row white
    colors = np.zeros((4, 3), np.float32)  # not written: the texture gives the colour
    paths = write_obj(tmp_path / "tet.obj", tet(TET_UV, texture, colors, material=Material(name="stone")))
    assert [p.name for p in paths] == ["tet.obj", "tet.mtl", "tet.png"]
    assert (tmp_path / "tet.obj").read_text() == EXPECTED_OBJ_UV
    assert (tmp_path / "tet.mtl").read_text() == EXPECTED_MTL_TEXTURED
    png = np.asarray(Image.open(tmp_path / "tet.png"))
    assert png.shape == (8, 4, 3) and (png[0] == 255).all() and (png[1:] == 0).all()  # row 0 stays the top


def test_tetrahedron_without_uvs_exact_text(tmp_path):
    colors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.25, 0.5, 0.75]], np.float32)
    material = Material(base_color=(0.5, 0.25, 0.125, 1.0), metallic=0.25, roughness=0.5)
    paths = write_obj(tmp_path / "tet.obj", tet(vertex_colors=colors, material=material))
    assert [p.name for p in paths] == ["tet.obj", "tet.mtl"]
    assert (tmp_path / "tet.obj").read_text() == EXPECTED_OBJ_PLAIN
    assert (tmp_path / "tet.mtl").read_text() == EXPECTED_MTL_PLAIN


def test_obj_reads_back_with_trimesh_and_load_asset(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    verts = (mesh.vertices * np.float32(1.0)).astype(np.float32) + np.float32(1e-3)  # not-round numbers
    uv = np.random.default_rng(0).random((len(verts), 2)).astype(np.float32)
    texture = np.random.default_rng(1).random((16, 32, 3)).astype(np.float32)
    write_obj(tmp_path / "s.obj", MeshAsset("s", (MeshPart(verts, mesh.faces, Material(texture=texture), uv),)))
    back = trimesh.load(tmp_path / "s.obj", process=False, maintain_order=True)
    np.testing.assert_array_equal(np.asarray(back.vertices, np.float32), verts)  # %.9g round-trips float32
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_allclose(back.visual.uv, uv, atol=1e-7)
    assert back.visual.material.image.size == (32, 16)
    part = load_asset(tmp_path / "s.obj", normalize=False).parts[0]
    np.testing.assert_array_equal(part.verts, verts)
    np.testing.assert_array_equal(part.faces, mesh.faces)
    np.testing.assert_allclose(part.material.texture, np.round(texture * 255) / 255, atol=1e-6)
    assert part.material.roughness == pytest.approx(0.8) and part.material.metallic == 0.0


def test_a_failed_write_leaves_none_of_the_three_files(tmp_path, monkeypatch):
    calls = []

    def fsync_fails_on_the_png(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", fsync_fails_on_the_png)
    texture = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(InputError, match="Input/output error"):
        write_obj(tmp_path / "tet.obj", tet(TET_UV, texture))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_files(tmp_path, monkeypatch):
    write_obj(tmp_path / "tet.obj", tet(TET_UV, np.ones((4, 4, 3), np.float32)))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "Input/output error")))
    with pytest.raises(InputError, match="cannot write .*Input/output error"):
        write_obj(tmp_path / "tet.obj", tet(TET_UV * 0.5, np.zeros((4, 4, 3), np.float32)))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bad_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="needs UV"):
        write_obj(tmp_path / "t.obj", tet(texture=np.zeros((4, 4, 3), np.float32)))
    with pytest.raises(InputError, match="non-finite"):
        write_obj(tmp_path / "t.obj", tet(verts=np.full((4, 3), np.nan, np.float32)))
    assert list(tmp_path.iterdir()) == []


EXPECTED_OBJ_TWO_PARTS = "# fourview OBJ\nmtllib pair.mtl\no pair_0\n" + TET_V_VT_VN + """\
usemtl stone_0
f 1/1/1 3/3/3 2/2/2
f 1/1/1 2/2/2 4/4/4
f 1/1/1 4/4/4 3/3/3
f 2/2/2 3/3/3 4/4/4
o pair_1
v 2 0 0 1 0 0
v 3 0 0 0 1 0
v 2 1 0 0 0 1
v 2 0 1 0.25 0.5 0.75
""" + TET_NORMALS + """\
usemtl stone_1
f 5//5 7//7 6//6
f 5//5 6//6 8//8
f 5//5 8//8 7//7
f 6//6 7//7 8//8
o pair_2
""" + TET_V_VT_VN + """\
usemtl glass
f 9/5/9 11/7/11 10/6/10
f 9/5/9 10/6/10 12/8/12
f 9/5/9 12/8/12 11/7/11
f 10/6/10 11/7/11 12/8/12
"""  # fmt: skip


def test_parts_are_objects_with_their_own_materials_and_textures(tmp_path):
    colors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.25, 0.5, 0.75]], np.float32)
    red, blue = np.zeros((2, 2, 3), np.float32), np.zeros((4, 2, 3), np.float32)
    red[..., 0], blue[..., 2] = 1.0, 1.0
    mesh = MeshAsset(
        "pair",
        (
            MeshPart(TET_VERTS, TET_FACES, Material(name="stone", texture=red), TET_UV),
            MeshPart(TET_VERTS + np.float32([2, 0, 0]), TET_FACES, Material(name="stone"), vertex_colors=colors),
            MeshPart(TET_VERTS, TET_FACES, Material(name="glass", texture=blue, roughness=0.1), TET_UV),
        ),
    )
    paths = write_obj(tmp_path / "pair.obj", mesh)
    assert [p.name for p in paths] == ["pair.obj", "pair.mtl", "pair_0.png", "pair_2.png"]
    assert (tmp_path / "pair.obj").read_text() == EXPECTED_OBJ_TWO_PARTS
    mtl = (tmp_path / "pair.mtl").read_text()
    assert mtl.startswith("# fourview MTL\nnewmtl stone_0\n") and mtl.count("# fourview MTL") == 1
    assert [line for line in mtl.splitlines() if line.startswith(("newmtl", "map_Kd", "Pr"))] == [
        "newmtl stone_0", "Pr 0.8", "map_Kd pair_0.png",
        "newmtl stone_1", "Pr 0.8",
        "newmtl glass", "Pr 0.1", "map_Kd pair_2.png",
    ]  # fmt: skip
    loaded = {p.material.name: p for p in load_asset(tmp_path / "pair.obj", normalize=False).parts}
    assert sorted(loaded) == ["glass", "stone_0", "stone_1"]
    for name, want in zip(["stone_0", "stone_1", "glass"], mesh.parts):
        np.testing.assert_array_equal(loaded[name].verts[loaded[name].faces], want.verts[want.faces])
    np.testing.assert_array_equal(loaded["stone_0"].material.texture, red)
    np.testing.assert_array_equal(loaded["glass"].material.texture, blue)
