"""Manifest records: validation, JSONL round trip, scanning the renderer's folder layout."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
from PIL import Image

from fourview import atomic
from fourview.data.manifest import (
    RIG_VIEW_NAMES,
    ObjectRecord,
    load_rig_views,
    read_manifest,
    rgb_on_white,
    rig_view_paths,
    scan_objects,
    write_manifest,
)
from fourview.errors import InputError


def _records() -> list[ObjectRecord]:
    return [
        ObjectRecord(
            name="mug_01",
            path="renders/mug_01",
            caption="a red mug",
            caption_source="caption.txt",
            clip_score=27.125,
            aesthetic=(4.1, 3.9, 4.0, 4.2),
            svm_score=-0.25,
        ),
        ObjectRecord(
            name="chair",
            path="/abs/chair",
            caption=None,
            clip_score=None,
            aesthetic=None,
            svm_score=None,
            unavailable={
                "clip_score": "no caption",
                "aesthetic": "aesthetic predictor weights not given: pass --aesthetic PATH",
                "svm_score": "quality SVM not given",
            },
        ),
        ObjectRecord(name="ünïcode é", path="x", caption="un vase bleu « ancien »"),
    ]


def test_round_trip(tmp_path):
    path = write_manifest(tmp_path / "sub" / "manifest.jsonl", _records())
    assert read_manifest(path) == _records()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["aesthetic_mean"] == pytest.approx(4.05)
    assert json.loads(lines[1])["clip_score"] is None
    assert json.loads(lines[1])["unavailable"]["clip_score"] == "no caption"
    assert [p.name for p in path.parent.iterdir()] == ["manifest.jsonl"]  # no temp file left behind


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_the_manifest_gets_the_mode_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_manifest(tmp_path / "m.jsonl", _records())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_failed_rewrite_keeps_the_old_manifest(tmp_path, monkeypatch):
    path = write_manifest(tmp_path / "m.jsonl", _records())
    before = path.read_bytes()
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(InputError, match="No space left"):
        write_manifest(path, _records()[:1])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]


def test_blank_lines_skipped_and_empty_manifest(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest(path, _records()[:1])
    path.write_text("\n" + path.read_text() + "\n\n")
    assert read_manifest(path) == _records()[:1]
    write_manifest(path, [])
    assert read_manifest(path) == []


def test_scores_and_mean():
    r = ObjectRecord("a", "a", aesthetic=(3.0, 4.0, 3.25, 3.75), clip_score=10, svm_score=1)
    assert r.aesthetic_mean == 3.5
    assert r.score("aesthetic") == 3.5
    assert r.score("clip_score") == 10.0 and isinstance(r.clip_score, float)
    assert r.score("svm_score") == 1.0
    assert r.missing_reason("aesthetic") == "not computed"
    with pytest.raises(InputError, match="unknown score"):
        r.score("lpips")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": ""}, "name"),
        ({"path": ""}, "path"),
        ({"aesthetic": (1.0, 2.0, 3.0)}, "one score per rig view"),
        ({"aesthetic": (1.0, 2.0, math.nan, 3.0)}, "finite"),
        ({"clip_score": math.inf}, "finite"),
        ({"clip_score": True}, "finite"),
        ({"clip_score": 3.0, "unavailable": {"clip_score": "x"}}, "also listed"),
        ({"unavailable": {"lpips": "x"}}, "unknown score"),
        ({"unavailable": {"svm_score": ""}}, "non-empty"),
        ({"caption": 3}, "caption"),
    ],
)
def test_invalid_records(kwargs, match):
    base = {"name": "a", "path": "p"}
    with pytest.raises(InputError, match=match):
        ObjectRecord(**{**base, **kwargs})


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"name": "a", "path": "p", "colour": "red"}', "unknown keys"),
        ('{"path": "p"}', "missing key 'name'"),
        ('{"name": "a", "path": "p"', "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"name": "a", "path": "p", "aesthetic": [4, 4, 4, 4], "aesthetic_mean": 3.0}', "aesthetic_mean"),
        ('{"name": "a", "path": "p", "aesthetic": [4, 4, 4, 4]}', "aesthetic_mean"),
        ('{"name": "a", "path": "p", "aesthetic": "high"}', "aesthetic"),
        ('{"name": "a", "path": "p", "unavailable": null}', "unavailable"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    path = tmp_path / "m.jsonl"
    path.write_text('{"name": "ok", "path": "p"}\n' + line + "\n")
    with pytest.raises(InputError, match=match) as info:
        read_manifest(path)
    assert f"{path}:2" in str(info.value)
    assert "\n" not in str(info.value)


def test_duplicates_and_missing_file(tmp_path):
    recs = [ObjectRecord("a", "p"), ObjectRecord("a", "q")]
    with pytest.raises(InputError, match="two records are named 'a'"):
        write_manifest(tmp_path / "m.jsonl", recs)
    (tmp_path / "m.jsonl").write_text('{"name": "a", "path": "p"}\n{"name": "a", "path": "q"}\n')
    with pytest.raises(InputError, match="two records"):
        read_manifest(tmp_path / "m.jsonl")
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")


def _write_object(root, name, colours=None):
    """An object folder as the dataset renderer writes it: rig/000.png ... 270.png (RGBA)."""
    colours = colours or [(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255), (10, 20, 30, 128)]
    (root / name / "rig").mkdir(parents=True)
    for view, colour in zip(rig_view_paths(root / name), colours):
        Image.new("RGBA", (8, 8), colour).save(view)
    Image.new("RGBA", (16, 16)).save(root / name / "grid.png")
    return root / name


def test_rig_view_names_follow_rig_azimuths():
    assert RIG_VIEW_NAMES == ("000.png", "090.png", "180.png", "270.png")


def test_scan_and_load(tmp_path):
    _write_object(tmp_path, "b_obj")
    _write_object(tmp_path, "a_obj")
    (tmp_path / "not_an_object").mkdir()
    (tmp_path / ".c_obj.fourview-tmp-123-0a1b2c3d" / "rig").mkdir(parents=True)  # the renderer's object in progress
    (tmp_path / "notes.txt").write_text("x")
    records = scan_objects(tmp_path)
    assert [r.name for r in records] == ["a_obj", "b_obj"]
    assert records[0].path == str(tmp_path / "a_obj")
    assert records[0].clip_score is None and records[0].unavailable == {}
    views = load_rig_views(records[0].path)
    assert [v.mode for v in views] == ["RGBA"] * 4
    expected = [(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255), (10, 20, 30, 128)]
    assert [v.getpixel((0, 0)) for v in views] == expected  # rig order


def test_scan_errors(tmp_path):
    with pytest.raises(InputError, match="render folder not found"):
        scan_objects(tmp_path / "missing")
    with pytest.raises(InputError, match="no rendered objects"):
        scan_objects(tmp_path)
    obj = _write_object(tmp_path, "obj")
    (obj / "rig" / "180.png").unlink()
    with pytest.raises(InputError, match="180.png"):
        scan_objects(tmp_path)
    with pytest.raises(InputError, match="missing rig view"):
        load_rig_views(obj)
    (obj / "rig" / "180.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read rig view"):
        load_rig_views(obj)


def test_rgb_on_white():
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # transparent -> white
    rgba[0, 1] = (200, 10, 20, 255)  # opaque -> itself
    rgba[0, 2] = (0, 0, 0, 128)  # half black over white -> grey
    out = np.asarray(rgb_on_white(Image.fromarray(rgba, "RGBA")))
    assert out.shape == (1, 3, 3)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (200, 10, 20)
    assert np.all(np.abs(out[0, 2].astype(int) - 127) <= 1)
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert rgb_on_white(rgb) is rgb
