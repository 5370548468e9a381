"""A game-ready export end to end: every file it writes, opened with trimesh and the Khronos validator.

One small export of the analytic torus with every option of issue 21 (face budget, normal map,
occlusion, three levels of detail, a height and a pivot) is written once; the tests read the files
back as a user's tools would.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import trimesh

from fourview.export.exporter import ExportConfig, export_field
from fourview.export.normal_map import FLAT_NORMAL
from fourview.meshio import lod_glb_paths, write_mesh_files
from fourview.recon.fields import TorusField
from tests.gltf_validation import issues, validate_glb

BUDGET, HEIGHT, LEVELS, TEXTURE = 2000, 1.5, 3, 256


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    config = ExportConfig(
        resolution=96, face_budget=BUDGET, texture_size=TEXTURE, normal_map=True, occlusion=True, lods=LEVELS,
        height=HEIGHT, pivot="bottom", target="game",
    )  # fmt: skip
    result = export_field(TorusField(), config)
    out = tmp_path_factory.mktemp("game") / "torus.glb"
    paths = write_mesh_files(result.mesh, [out])
    return result, out, paths


def glb_parts(path):
    """(JSON, BIN chunk) of a GLB."""
    data = path.read_bytes()
    json_len = struct.unpack("<I", data[12:16])[0]
    gltf = json.loads(data[20 : 20 + json_len])
    bin_len = struct.unpack("<I", data[20 + json_len : 24 + json_len])[0]
    return gltf, data[28 + json_len : 28 + json_len + bin_len]


def accessor(gltf, blob, index):
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    dtype = {5126: np.float32, 5123: np.uint16, 5125: np.uint32}[acc["componentType"]]
    return np.frombuffer(blob, dtype, acc["count"] * width, view["byteOffset"]).reshape(acc["count"], width)


def images(gltf, blob):
    """The PNG bytes of every image, in order."""
    out = []
    for image in gltf["images"]:
        view = gltf["bufferViews"][image["bufferView"]]
        out.append(blob[view["byteOffset"] : view["byteOffset"] + view["byteLength"]])
    return out


def test_files_of_a_chain(written):
    result, out, paths = written
    lod_paths = lod_glb_paths(out, LEVELS)
    assert paths == [*lod_paths.levels, lod_paths.chain]
    assert [p.name for p in paths] == ["torus.glb", "torus_lod1.glb", "torus_lod2.glb", "torus_lods.glb"]
    assert [m.num_faces for m in result.mesh.levels] == [BUDGET, BUDGET // 2, BUDGET // 4]


@pytest.mark.parametrize("name", ["torus.glb", "torus_lod1.glb", "torus_lod2.glb", "torus_lods.glb"])
def test_every_file_is_valid_and_opens_in_trimesh(written, name):
    result, out, _ = written
    path = out.with_name(name)
    report = validate_glb(path)
    assert report["issues"]["numErrors"] == 0, issues(report, 0)
    assert report["issues"]["numWarnings"] == 0, issues(report, 1)
    scene = trimesh.load(path, force="scene")
    level = {"torus.glb": 0, "torus_lod1.glb": 1, "torus_lod2.glb": 2, "torus_lods.glb": 0}[name]
    assert len(scene.geometry) == (LEVELS if name == "torus_lods.glb" else 1)
    (mesh,) = scene.dump()  # the scene shows one level: MSFT_lod's coarser ones are nodes off the scene
    assert len(mesh.faces) == result.mesh.levels[level].num_faces
    # Real-world size and pivot: the bounding box is HEIGHT metres tall and stands on y = 0, centred.
    lo, hi = mesh.bounds
    assert hi[1] - lo[1] == pytest.approx(HEIGHT, abs=0.02 * HEIGHT)
    assert lo[1] == pytest.approx(0.0, abs=0.02 * HEIGHT)
    if level == 0:
        assert (lo[0] + hi[0]) / 2 == pytest.approx(0.0, abs=1e-5) and (lo[2] + hi[2]) / 2 == pytest.approx(
            0.0, abs=1e-5
        )
        assert hi[1] - lo[1] == pytest.approx(HEIGHT, rel=1e-5)


def test_materials_tangents_and_one_texture_set(written):
    _, out, paths = written
    texture_sets = []
    for path in paths:
        gltf, blob = glb_parts(path)
        (material,) = gltf["materials"]
        pbr = material["pbrMetallicRoughness"]
        # base colour, tangent-space normals, and one occlusion-roughness-metallic image used twice
        assert {"baseColorTexture", "metallicRoughnessTexture"} <= set(pbr)
        assert material["occlusionTexture"]["index"] == pbr["metallicRoughnessTexture"]["index"]
        assert pbr["metallicFactor"] == 1.0 and pbr["roughnessFactor"] == 1.0
        assert len(gltf["images"]) == 3 and "normalTexture" in material
        texture_sets.append(images(gltf, blob))
        for mesh in gltf["meshes"]:
            (prim,) = mesh["primitives"]
            attrs = prim["attributes"]
            assert {"POSITION", "NORMAL", "TANGENT", "TEXCOORD_0"} <= set(attrs)
            normals = accessor(gltf, blob, attrs["NORMAL"])
            tangents = accessor(gltf, blob, attrs["TANGENT"])
            assert len(tangents) == gltf["accessors"][attrs["POSITION"]]["count"]
            np.testing.assert_allclose(np.linalg.norm(tangents[:, :3], axis=1), 1.0, atol=1e-4)
            assert np.all(np.abs(tangents[:, 3]) == 1.0)
            assert np.abs((normals * tangents[:, :3]).sum(1)).max() < 1e-3  # orthogonal to the written normals
    assert all(s == texture_sets[0] for s in texture_sets[1:])  # every level carries the same texture set


def test_msft_lod_chain_and_extras(written):
    _, out, _ = written
    gltf, _ = glb_parts(out.with_name("torus_lods.glb"))
    assert gltf["extensionsUsed"] == ["MSFT_lod"]
    (root,) = gltf["scenes"][0]["nodes"]
    ids = gltf["nodes"][root]["extensions"]["MSFT_lod"]["ids"]
    assert len(ids) == LEVELS - 1 and root not in ids
    counts = [gltf["accessors"][gltf["meshes"][gltf["nodes"][n]["mesh"]]["primitives"][0]["indices"]]["count"] // 3
              for n in [root, *ids]]  # fmt: skip
    assert counts == [BUDGET, BUDGET // 2, BUDGET // 4]
    assert len({gltf["meshes"][gltf["nodes"][n]["mesh"]]["primitives"][0]["material"] for n in [root, *ids]}) == 1
    extras = gltf["scenes"][0]["extras"]
    assert extras == {"up": "+Y", "front": "+Z", "units": "metres", "height_m": HEIGHT, "pivot": "bottom",
                      "scale": pytest.approx(extras["scale"]), "target": "game"}  # fmt: skip
    single, _ = glb_parts(out)
    assert single["scenes"][0]["extras"] == extras and "extensionsUsed" not in single


def test_summary_lists_each_level(written):
    result, _, _ = written
    summary = result.mesh.summary()
    assert [level["faces"] for level in summary["lods"]] == [BUDGET, BUDGET // 2, BUDGET // 4]
    assert summary["placement"]["height_m"] == HEIGHT and summary["placement"]["pivot"] == "bottom"


def test_normal_map_and_occlusion_are_plausible(written):
    result, _, _ = written
    material = result.mesh.parts[0].material
    normals = material.normal_map * 2.0 - 1.0
    # tangent-space normals of a smooth surface stay near the vertex normal: z dominates, unit length
    assert np.median(normals[..., 2]) > 0.95
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=0.02)
    assert np.abs(normals - (np.array(FLAT_NORMAL) * 2 - 1)).max() > 0.02  # not just the flat normal
    assert 0.0 <= material.occlusion.min() < material.occlusion.max() <= 1.0
