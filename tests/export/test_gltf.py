import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from fourview.data.assets import load_asset
from fourview.errors import InputError
from fourview.export import obj as obj_module
from fourview.export.gltf import glb_bytes, read_glb_json, write_glb
from fourview.mesh import Material, linear_to_srgb
from tests.gltf_validation import issues, validate_glb

validate = validate_glb


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
    assert write_glb(path, verts, faces, uv=uv, texture=texture) == [path]
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
    write_glb(path, verts, faces)
    gltf, blob = bin_chunk(path)
    prim = gltf["meshes"][0]["primitives"][0]
    assert gltf["accessors"][prim["indices"]]["componentType"] == 5125
    np.testing.assert_array_equal(accessor_array(gltf, blob, prim["indices"]).reshape(-1, 3), faces)
    report = validate(path)
    assert report["issues"]["numErrors"] == 0, issues(report, 0)


def test_glb_reads_back_with_trimesh(tmp_path):
    verts, faces, uv, texture = textured_sphere()
    path = tmp_path / "s.glb"
    write_glb(path, verts, faces, uv=uv, texture=texture, material=Material(name="m", roughness=0.5))
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
    write_glb(path, verts, faces, uv=uv, texture=texture)
    part = load_asset(path, normalize=False).parts[0]
    np.testing.assert_array_equal(part.verts, verts)
    np.testing.assert_array_equal(part.faces, faces)
    np.testing.assert_allclose(part.uv, uv, atol=1e-6)
    np.testing.assert_allclose(part.material.texture, np.round(texture * 255) / 255, atol=1e-6)


def test_vertex_colors_are_stored_linear_and_come_back_srgb(tmp_path):
    verts, faces, _, _ = textured_sphere()
    colors = np.random.default_rng(1).random((len(verts), 3)).astype(np.float32)
    path = tmp_path / "c.glb"
    write_glb(path, verts, faces, vertex_colors=colors)
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
    write_glb(path, verts, faces, uv=uv, texture=texture)
    report = validate(path)
    print("validator warnings:", issues(report, 1), "infos:", issues(report, 2))
    assert report["issues"]["numErrors"] == 0, issues(report, 0)
    assert report["info"]["totalTriangleCount"] == len(faces)
    assert report["info"]["hasTextures"] is True


def test_the_validator_check_can_fail(tmp_path):
    """A GLB without the POSITION bounds the specification requires is reported as an error."""
    verts, faces, uv, _ = textured_sphere(1)
    good = glb_bytes(
        verts, faces, uv, None, None, np.tile([[0, 1, 0]], (len(verts), 1)).astype(np.float32), Material()
    )
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
        ({"faces": np.array([[0, 1, 99]])}, "face indices"),
        ({"uv": np.zeros((3, 2), np.float32)}, "uv must be"),
        ({"texture": np.zeros((4, 4, 3), np.float32)}, "needs UV"),
        ({"vertex_colors": np.zeros((5, 3), np.float32)}, "vertex_colors must be"),
        ({"verts": np.zeros((4, 2), np.float32)}, "verts must be"),
    ],
)
def test_bad_arrays_are_input_errors_and_write_nothing(tmp_path, kwargs, match):
    verts, faces, _, _ = textured_sphere(0)
    args = {"verts": verts, "faces": faces, **kwargs}
    path = tmp_path / "x.glb"
    with pytest.raises(InputError, match=match):
        write_glb(path, **args)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    verts, faces, uv, texture = textured_sphere(0)
    path = tmp_path / "s.glb"
    write_glb(path, verts, faces)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(obj_module.os, "fsync", broken_fsync)
    with pytest.raises(InputError, match="No space left"):
        write_glb(path, verts, faces, uv=uv, texture=texture)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.glb"]  # no temporary left behind
    with pytest.raises(InputError):
        write_glb(tmp_path / "new.glb", verts, faces)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.glb"]


def test_missing_folder_is_an_input_error(tmp_path):
    verts, faces, _, _ = textured_sphere(0)
    with pytest.raises(InputError, match="does not exist"):
        write_glb(tmp_path / "nope" / "x.glb", verts, faces)
