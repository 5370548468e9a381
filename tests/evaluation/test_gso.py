"""Tests of GSO-layout objects: finding them, object lists, the evaluation subset, loading with textures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from fourview.data.splits import is_evaluation_object
from fourview.errors import InputError
from fourview.evaluation.gso import (
    GsoObject,
    evaluation_objects,
    find_gso_objects,
    load_gso_object,
    read_object_list,
    select_objects,
)

RED = (200, 30, 35)


def _write_object(root: Path, name: str, texture: str | None = "materials") -> Path:
    """A GSO-layout box 0.2 x 0.4 x 1.0, tallest along Z (the scans' up), its texture where ``texture`` says.

    ``texture``: "materials" (``materials/textures/``, the original release), "beside" (next to
    the OBJ) or None (missing).
    """
    box = trimesh.creation.box((0.2, 0.4, 1.0))
    meshes = root / name / "meshes"
    meshes.mkdir(parents=True)
    uv = (box.vertices[:, :2] / [0.2, 0.4] + 0.5).clip(0, 1)
    lines = ["mtllib model.mtl", "usemtl material_0"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in box.vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in box.faces + 1]
    (meshes / "model.obj").write_text("\n".join(lines) + "\n")
    (meshes / "model.mtl").write_text("newmtl material_0\nKd 1 1 1\nmap_Kd texture.png\n")
    if texture is not None:
        folder = root / name / "materials" / "textures" if texture == "materials" else meshes
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), RED).save(folder / "texture.png")
    return root / name


@pytest.fixture
def gso_root(tmp_path: Path) -> Path:
    root = tmp_path / "gso"
    _write_object(root, "Box_B", texture="beside")
    _write_object(root, "Box_A", texture="materials")
    _write_object(root, ".Hidden_Box")
    (root / "not_an_object" / "meshes").mkdir(parents=True)
    (root / "notes.txt").write_text("not an object\n")
    return root


def test_objects_are_found_sorted_skipping_hidden_folders_and_other_files(gso_root):
    objects = find_gso_objects(gso_root)
    assert [o.name for o in objects] == ["Box_A", "Box_B"]
    assert objects[0].mesh_file == gso_root / "Box_A" / "meshes" / "model.obj"


def test_finding_objects_refuses_a_folder_without_any(tmp_path):
    with pytest.raises(InputError, match="no GSO objects"):
        find_gso_objects(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        find_gso_objects(tmp_path / "missing")


@pytest.mark.parametrize("name", ["Box_A", "Box_B"])
def test_loading_finds_the_texture_in_either_place_and_turns_z_up_into_y_up(gso_root, name):
    asset = load_gso_object(GsoObject(name, gso_root / name))
    assert asset.name == name
    (part,) = asset.parts
    np.testing.assert_allclose(part.material.texture[0, 0], np.array(RED) / 255.0, atol=1e-6)
    extent = part.verts.max(axis=0) - part.verts.min(axis=0)
    assert extent.argmax() == 1  # the scan's Z (its longest side) is now +Y
    assert np.linalg.norm(part.verts, axis=1).max() == pytest.approx(1.0, abs=1e-5)  # normalised
    raw = load_gso_object(GsoObject(name, gso_root / name), normalize=False)
    np.testing.assert_allclose(
        raw.parts[0].verts.max(axis=0) - raw.parts[0].verts.min(axis=0), [0.2, 1.0, 0.4], atol=1e-6
    )


def test_loading_refuses_a_scan_whose_texture_is_missing(tmp_path):
    folder = _write_object(tmp_path, "Bare_Box", texture=None)
    with pytest.warns(UserWarning, match="texture"), pytest.raises(InputError, match="Bare_Box: no texture found"):
        load_gso_object(GsoObject("Bare_Box", folder))


def test_object_lists_skip_comments_and_blank_lines(tmp_path):
    path = tmp_path / "objects.txt"
    path.write_text("# evaluation objects\nBox_B\n\n  Box_A  # trailing comment\n")
    assert read_object_list(path) == ["Box_B", "Box_A"]
    path.write_text("Box_A\nBox_A\n")
    with pytest.raises(InputError, match="names 'Box_A' twice \\(line 2\\)"):
        read_object_list(path)
    with pytest.raises(InputError, match="cannot read object list"):
        read_object_list(tmp_path / "missing.txt")


def test_selecting_objects_keeps_the_list_order_and_names_missing_ones(gso_root):
    objects = find_gso_objects(gso_root)
    assert [o.name for o in select_objects(objects, ["Box_B", "Box_A"])] == ["Box_B", "Box_A"]
    with pytest.raises(InputError, match="1 listed objects are not in the folder: Box_C"):
        select_objects(objects, ["Box_A", "Box_C"])


def test_the_evaluation_subset_is_the_seeded_rule_on_names(tmp_path):
    names = [f"Object_{i:02d}" for i in range(20)]
    objects = [GsoObject(n, tmp_path / n) for n in names]
    chosen = [o.name for o in evaluation_objects(objects)]
    assert chosen == [n for n in names if is_evaluation_object(n)]
    assert 0 < len(chosen) < len(names)  # the rule holds some out and keeps the rest
