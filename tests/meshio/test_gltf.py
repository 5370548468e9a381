import io
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

import fourview
from fourview import atomic
from fourview.data.assets import load_asset
from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, MeshPart, linear_to_srgb
from fourview.meshio import gltf as gltf_module
from fourview.meshio.gltf import glb_bytes, read_glb_json, write_glb
from tests.gltf_validation import issues, validate_glb

validate = validate_glb
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "meshio"


def one_part(verts, faces, uv=None, texture=None, vertex_colors=None, material=Material()):
    """A one-part mesh, ``texture`` put into the material."""
    material = material if texture is None else replace(material, texture=texture)
    return MeshAsset("m", (MeshPart(verts, faces, material, uv, vertex_colors),))


def textured_sphere(subdivisions=2):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.6)
    verts = mesh.vertices.astype(np.float32)
    # Spherical UVs are fine for a writer test (no atlas needed); v grows upwards with y.
    uv = np.stack([np.arctan2(verts[:, 0], verts[:, 2]) / (2 * np.pi) + 0.5, verts[:, 1] / 1.2 + 0.5], 1)
    texture = np.random.default_rng(0).random((32, 64, 3)).astype(np.float32)
    return verts, mesh.faces.astype(np.int64), uv.astype(np.float32), texture


def grid_mesh(n):
    """An n x n vertex grid in the plane z = 0 (2 (n-1)^2 faces)."""
    g = np.linspace(-1, 1, n, dtype=np.float32)
    x, y = np.meshgrid(g, g)
    verts = np.stack([x.ravel(), y.ravel(), np.zeros(n * n, np.float32)], 1)
    i = np.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).ravel()
    faces = np.concatenate([np.stack([a, a + 1, a + n + 1], 1), np.stack([a, a + n + 1, a + n], 1)])
    return verts, faces


def bin_chunk(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    json_len = struct.unpack("<I", data[12:16])[0]
    gltf = json.loads(data[20 : 20 + json_len])
    bin_len, bin_type = struct.unpack("<II", data[20 + json_len : 28 + json_len])
    assert bin_type == 0x004E4942
    return gltf, data[28 + json_len : 28 + json_len + bin_len]


def accessor_array(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = {5126: np.float32, 5123: np.uint16, 5125: np.uint32}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[acc["type"]]
    arr = np.frombuffer(blob, dtype=dtype, count=acc["count"] * width, offset=view["byteOffset"])
    return arr.reshape(acc["count"], width)


def test_glb_layout_header_chunks_alignment_and_bounds(tmp_path):
    verts, faces, uv, texture = textured_sphere()
    path = tmp_path / "s.glb"
    assert write_glb(path, one_part(verts, faces, uv, texture)) == [path]
    data = path.read_bytes()
    magic, version, length = struct.unpack("<III", data[:12])
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_len, json_type = struct.unpack("<II", data[12:20])
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    gltf, blob = bin_chunk(path)
    assert len(blob) % 4 == 0 and gltf["buffers"][0]["byteLength"] == len(blob)
    assert all(v["byteOffset"] % 4 == 0 for v in gltf["bufferViews"])
    prim = gltf["meshes"][0]["primitives"][0]
    pos = gltf["accessors"][prim["attributes"]["POSITION"]]
    np.testing.assert_allclose(pos["min"], verts.min(0), rtol=0, atol=0)
    np.testing.assert_allclose(pos["max"], verts.max(0), rtol=0, atol=0)
    assert set(prim["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0"}
    assert gltf["accessors"][prim["indices"]]["componentType"] == 5123  # uint16 for a small mesh
    pbr = gltf["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 0.8
    assert pbr["baseColorTexture"] == {"index": 0, "texCoord": 0}
    assert gltf["images"][0]["mimeType"] == "image/png"
    # Stored values: positions as given, v flipped to glTF's top-left origin, unit normals.
    np.testing.assert_array_equal(accessor_array(gltf, blob, prim["attributes"]["POSITION"]), verts)
    np.testing.assert_array_equal(accessor_array(gltf, blob, prim["indices"]).reshape(-1, 3), faces)
    stored_uv = accessor_array(gltf, blob, prim["attributes"]["TEXCOORD_0"])
    np.testing.assert_allclose(stored_uv, np.stack([uv[:, 0], 1 - uv[:, 1]], 1), atol=1e-7)
    normals = accessor_array(gltf, blob, prim["attributes"]["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    assert (np.einsum("ij,ij->i", normals, verts) > 0).all()  # outward
    assert read_glb_json(path) == gltf


def test_glb_switches_to_uint32_indices_for_large_meshes(tmp_path):
    verts, faces = grid_mesh(260)  # 67600 vertices
    path = tmp_path / "big.glb"
    write_glb(path, one_part(verts, faces))
    gltf, blob = bin_chunk(path)
    prim = gltf["meshes"][0]["primitives"][0]
    assert gltf["accessors"][prim["indices"]]["componentType"] == 5125
    np.testing.assert_array_equal(accessor_array(gltf, blob, prim["indices"]).reshape(-1, 3), faces)
    report = validate(path)
    assert report["issues"]["numErrors"] == 0, issues(report, 0)


def test_glb_reads_back_with_trimesh(tmp_path):
    verts, faces, uv, texture = textured_sphere()
    path = tmp_path / "s.glb"
    write_glb(path, one_part(verts, faces, uv, texture, material=Material(name="m", roughness=0.5)))
    scene = trimesh.load(path, process=False)
    (mesh,) = scene.geometry.values()
    np.testing.assert_array_equal(np.asarray(mesh.vertices, np.float32), verts)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_allclose(mesh.visual.uv, uv, atol=1e-6)  # trimesh flips glTF's v back
    assert mesh.visual.material.baseColorTexture.size == (64, 32)  # PIL: (width, height)
    assert mesh.visual.material.roughnessFactor == pytest.approx(0.5)
    assert mesh.visual.material.metallicFactor == pytest.approx(0.0)


def test_glb_round_trips_through_load_asset(tmp_path):
    verts, faces, uv, texture = textured_sphere()
    path = tmp_path / "s.glb"
    write_glb(path, one_part(verts, faces, uv, texture))
    part = load_asset(path, normalize=False).parts[0]
    np.testing.assert_array_equal(part.verts, verts)
    np.testing.assert_array_equal(part.faces, faces)
    np.testing.assert_allclose(part.uv, uv, atol=1e-6)
    np.testing.assert_allclose(part.material.texture, np.round(texture * 255) / 255, atol=1e-6)


def test_vertex_colors_are_stored_linear_and_come_back_srgb(tmp_path):
    verts, faces, _, _ = textured_sphere()
    colors = np.random.default_rng(1).random((len(verts), 3)).astype(np.float32)
    path = tmp_path / "c.glb"
    write_glb(path, one_part(verts, faces, vertex_colors=colors))
    gltf, blob = bin_chunk(path)
    stored = accessor_array(gltf, blob, gltf["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"])
    np.testing.assert_allclose(linear_to_srgb(stored), colors, atol=1e-5)
    part = load_asset(path, normalize=False).parts[0]
    np.testing.assert_allclose(part.vertex_colors, colors, atol=1e-5)
    report = validate(path)
    assert report["issues"]["numErrors"] == 0, issues(report, 0)


def test_khronos_validator_reports_no_errors_on_a_textured_glb(tmp_path):
    verts, faces, uv, texture = textured_sphere()
    path = tmp_path / "s.glb"
    write_glb(path, one_part(verts, faces, uv, texture))
    report = validate(path)
    print("validator warnings:", issues(report, 1), "infos:", issues(report, 2))
    assert report["issues"]["numErrors"] == 0, issues(report, 0)
    assert report["info"]["totalTriangleCount"] == len(faces)
    assert report["info"]["hasTextures"] is True


def test_the_validator_check_can_fail(tmp_path):
    """A GLB without the POSITION bounds the specification requires is reported as an error."""
    verts, faces, uv, _ = textured_sphere(1)
    good = glb_bytes(one_part(verts, faces, uv))
    json_len = struct.unpack("<I", good[12:16])[0]
    gltf = json.loads(good[20 : 20 + json_len])
    for acc in gltf["accessors"]:
        acc.pop("min", None), acc.pop("max", None)
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    rest = good[20 + json_len :]
    bad = struct.pack("<III", 0x46546C67, 2, 20 + len(text) + len(rest)) + struct.pack("<II", len(text), 0x4E4F534A)
    path = tmp_path / "bad.glb"
    path.write_bytes(bad + text + rest)
    report = validate(path)
    assert report["issues"]["numErrors"] > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"faces": np.array([[0, 1, 2], [0, 1, 2.5]])}, "integers"),
        ({"uv": np.full((12, 2), np.nan, np.float32)}, "uv has non-finite"),
        ({"texture": np.zeros((4, 4, 3), np.float32)}, "needs UV"),
        ({"verts": np.full((12, 3), np.inf, np.float32)}, "non-finite vertex positions"),
    ],
)
def test_bad_arrays_are_input_errors_and_write_nothing(tmp_path, kwargs, match):
    verts, faces, _, _ = textured_sphere(0)
    args = {"verts": verts, "faces": faces, **kwargs}
    path = tmp_path / "x.glb"
    with pytest.raises(InputError, match=match):
        write_glb(path, one_part(**args))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    verts, faces, uv, texture = textured_sphere(0)
    path = tmp_path / "s.glb"
    write_glb(path, one_part(verts, faces))
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(InputError, match="No space left"):
        write_glb(path, one_part(verts, faces, uv, texture))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.glb"]  # no temporary left behind
    with pytest.raises(InputError, match="cannot write .*new.glb: No space left"):
        write_glb(tmp_path / "new.glb", one_part(verts, faces))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.glb"]


def test_missing_folder_is_an_input_error(tmp_path):
    verts, faces, _, _ = textured_sphere(0)
    with pytest.raises(InputError, match="does not exist"):
        write_glb(tmp_path / "nope" / "x.glb", one_part(verts, faces))


# The small mesh of tests/fixtures/meshio/*.glb, written there by the writer before it took a MeshAsset.
TET_VERTS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
TET_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
TET_UV = np.array([[0, 0], [1, 0], [0, 1], [0.5, 0.5]], np.float32)
TET_TEXTURE = (np.arange(4 * 4 * 3).reshape(4, 4, 3) * 5 % 256 / 255.0).astype(np.float32)
TET_COLORS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.25, 0.5, 0.75]], np.float32)


def same_generator_as(fixture: bytes, monkeypatch) -> None:
    """The fixture names the version that wrote it in ``asset.generator``: write the same name."""
    generator = json.loads(fixture[20 : 20 + struct.unpack("<I", fixture[12:16])[0]])["asset"]["generator"]
    monkeypatch.setattr(fourview, "__version__", generator.removeprefix("fourview "))


def test_a_textured_part_is_written_byte_for_byte_as_before(monkeypatch):
    fixture = (FIXTURES / "tet_textured.glb").read_bytes()
    same_generator_as(fixture, monkeypatch)
    gltf = json.loads(fixture[20 : 20 + struct.unpack("<I", fixture[12:16])[0]])
    view = gltf["bufferViews"][gltf["images"][0]["bufferView"]]
    start = 28 + struct.unpack("<I", fixture[12:16])[0] + view["byteOffset"]
    fixture_png = fixture[start : start + view["byteLength"]]
    # The layout is the writer's; the PNG bytes are Pillow's zlib's: compare its pixels, then use its bytes.
    png = gltf_module.encode_png(TET_TEXTURE)
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(png))), np.asarray(Image.open(io.BytesIO(fixture_png)))
    )
    monkeypatch.setattr(gltf_module, "encode_png", lambda texture: fixture_png)
    material = Material(name="stone", base_color=(0.5, 0.25, 0.125, 1.0), texture=TET_TEXTURE, metallic=0.25,
                        roughness=0.5)  # fmt: skip
    mesh = MeshAsset("tet", (MeshPart(TET_VERTS, TET_FACES, material, TET_UV, vertex_colors=TET_COLORS),))
    assert glb_bytes(mesh) == fixture  # vertex colours of a textured part are not written


def test_a_vertex_coloured_part_is_written_byte_for_byte_as_before(monkeypatch):
    fixture = (FIXTURES / "tet_colored.glb").read_bytes()
    same_generator_as(fixture, monkeypatch)
    mesh = MeshAsset("tet", (MeshPart(TET_VERTS, TET_FACES, Material(name="paint"), vertex_colors=TET_COLORS),))
    assert glb_bytes(mesh) == fixture


def two_part_mesh() -> MeshAsset:
    """A textured sphere and a vertex-coloured box beside it, with different materials."""
    verts, faces, uv, texture = textured_sphere(1)
    box = trimesh.creation.box(extents=(0.4, 0.4, 0.4))
    box_verts = (box.vertices + [1.0, 0.0, 0.0]).astype(np.float32)
    colors = np.random.default_rng(2).random((len(box_verts), 3)).astype(np.float32)
    return MeshAsset(
        "pair",
        (
            MeshPart(verts, faces, Material(name="body", texture=texture, roughness=0.3), uv),
            MeshPart(box_verts, box.faces.astype(np.int64), Material(name="lid", metallic=1.0), vertex_colors=colors),
        ),
    )


def test_each_part_is_a_node_with_its_own_mesh_and_material(tmp_path):
    mesh = two_part_mesh()
    path = tmp_path / "pair.glb"
    write_glb(path, mesh)
    gltf, blob = bin_chunk(path)
    assert gltf["scenes"] == [{"nodes": [0, 1]}]
    assert gltf["nodes"] == [{"mesh": 0, "name": "body"}, {"mesh": 1, "name": "lid"}]
    assert [m["primitives"][0]["material"] for m in gltf["meshes"]] == [0, 1]
    assert [m["name"] for m in gltf["materials"]] == ["body", "lid"]
    assert "baseColorTexture" not in gltf["materials"][1]["pbrMetallicRoughness"]
    assert len(gltf["images"]) == len(gltf["textures"]) == 1
    for node, part in zip(gltf["nodes"], mesh.parts):
        prim = gltf["meshes"][node["mesh"]]["primitives"][0]
        np.testing.assert_array_equal(accessor_array(gltf, blob, prim["attributes"]["POSITION"]), part.verts)
        np.testing.assert_array_equal(accessor_array(gltf, blob, prim["indices"]).reshape(-1, 3), part.faces)
        assert ("COLOR_0" in prim["attributes"]) == (part.vertex_colors is not None)

    loaded = {p.material.name: p for p in load_asset(path, normalize=False).parts}
    assert sorted(loaded) == ["body", "lid"]
    back = [loaded[p.material.name] for p in mesh.parts]
    for got, want in zip(back, mesh.parts):
        np.testing.assert_array_equal(got.verts, want.verts)
        np.testing.assert_array_equal(got.faces, want.faces)
        assert (got.material.metallic, got.material.roughness) == (want.material.metallic, want.material.roughness)
    np.testing.assert_allclose(back[0].material.texture, np.round(mesh.parts[0].material.texture * 255) / 255,
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(back[1].vertex_colors, mesh.parts[1].vertex_colors, atol=1e-5)
    report = validate(path)
    assert report["issues"]["numErrors"] == 0, issues(report, 0)
    assert report["info"]["totalTriangleCount"] == mesh.num_faces


def test_a_synthetic_multi_part_asset_round_trips(tmp_path):
    """What the synthetic world writes (several textured parts) loads back part by part."""
    from fourview.data import synthetic

    asset = synthetic.build_asset(synthetic.sample_spec(9), texture_size=16)
    assert len(asset.parts) > 1
    path = tmp_path / "model.glb"
    write_glb(path, asset)
    loaded = {p.material.name: p for p in load_asset(path, normalize=False).parts}
    assert sorted(loaded) == sorted(p.material.name for p in asset.parts)
    for want in asset.parts:
        got = loaded[want.material.name]  # unreferenced vertices are dropped on loading: compare corners
        np.testing.assert_array_equal(got.verts[got.faces], want.verts[want.faces])
        np.testing.assert_allclose(got.uv[got.faces], want.uv[want.faces], atol=1e-6)
        np.testing.assert_allclose(got.material.texture, np.round(want.material.texture * 255) / 255, atol=1e-6)
        np.testing.assert_allclose(got.material.base_color, want.material.base_color, atol=0.5 / 255)
        assert got.material.metallic == pytest.approx(want.material.metallic)
        assert got.material.roughness == pytest.approx(want.material.roughness)
    report = validate(path)
    assert report["issues"]["numErrors"] == 0, issues(report, 0)
