"""Captions: view-wording removal, the merge rule, caption files, captioner wrappers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from fourview.data.captions import (
    CaptionOutput,
    HFCaptioner,
    TemplateCaptioner,
    caption_from_name,
    caption_object,
    clean_caption,
    merge_captions,
)
from fourview.data.manifest import rig_view_paths
from fourview.errors import InputError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the back of a red chair", "a red chair"),
        ("a side view of a blue chair", "a blue chair"),
        ("The left side of a green sofa.", "a green sofa."),
        ("rear view of a car", "a car"),
        ("a red car, rear view", "a red car"),
        ("a blue chair seen from the left", "a blue chair"),
        ("a mug from behind", "a mug"),
        ("a lamp viewed from above, on a table", "a lamp, on a table"),
        ("a photo taken from the front of a house", "a photo of a house"),
        ("back view: a teddy bear", "a teddy bear"),
        # not viewpoint wording: kept
        ("a side table", "a side table"),
        ("a chair with a tall back", "a chair with a tall back"),
        ("a front-loading washer", "a front-loading washer"),
        ("a red mug", "a red mug"),
    ],
)
def test_clean_caption(text, expected):
    assert clean_caption(text) == expected


def test_merge_picks_the_most_consistent_caption():
    # content words: {red, mug} x2, {red, mug, handle}, {red, cup}: the first two agree most;
    # the tie between them goes to the earlier view, and the view wording is removed.
    per_view = ["the back of a red mug", "a red mug", "a red mug with a handle", "a red cup"]
    assert merge_captions(per_view) == "a red mug"


def test_merge_rejects_an_outlier_view():
    per_view = ["a dog on the grass", "a green tree", "a tall green tree", "a green tree"]
    assert merge_captions(per_view) == "a green tree"


def test_merge_drops_view_words_everywhere():
    per_view = [
        "a front view of a blue chair",
        "a blue chair seen from the side",
        "the back of a blue chair",
        "a blue chair, side view",
    ]
    assert merge_captions(per_view) == "a blue chair"


def test_merge_ties_go_to_the_more_specific_caption():
    # {mug, red} and {mug, red, handle} and {mug, handle}: mean Jaccard 0.5 for the outer two...
    a, b, c = "a red mug", "a red mug with a handle", "a mug with a handle"
    # a: (2/3 + 1/3)/2 = 0.5; b: (2/3 + 2/3)/2 = 0.667; c: (1/3 + 2/3)/2 = 0.5 -> b
    assert merge_captions([a, b, c]) == b
    # equal consistency and size -> the earlier view
    assert merge_captions(["a red mug", "a blue mug"]) == "a red mug"
    # equal consistency, more content words wins
    assert merge_captions(["a mug", "a red mug"]) == "a red mug"


def test_merge_edge_cases():
    assert merge_captions(["a small vase"]) == "a small vase"
    assert merge_captions(["", "  ", "the back of"]) == ""
    assert merge_captions(["", "a lamp", ""]) == "a lamp"
    with pytest.raises(InputError, match="merge_captions needs a non-empty list of per-view captions"):
        merge_captions([])
    with pytest.raises(InputError, match="merge_captions needs a non-empty list of per-view captions"):
        merge_captions("a red mug")
    with pytest.raises(InputError, match=re.escape("per-view captions must be strings, got ['str', 'int']")):
        merge_captions(["a", 3])


def _rig(obj_dir, colour=(255, 0, 0, 255)):
    (obj_dir / "rig").mkdir(parents=True)
    for view in rig_view_paths(obj_dir):
        Image.new("RGBA", (8, 8), colour).save(view)
    return obj_dir


def test_template_captioner_reads_files(tmp_path):
    cap = TemplateCaptioner()
    assert cap.caption_object(tmp_path) is None
    (tmp_path / "spec.json").write_text(json.dumps({"shape": "mug", "caption": " a red mug "}))
    assert cap.caption_object(tmp_path) == CaptionOutput("a red mug", "spec.json")
    (tmp_path / "caption.txt").write_text("\n  a glossy red mug  \nsecond line\n")
    assert cap.caption_object(tmp_path) == CaptionOutput("a glossy red mug", "caption.txt")
    (tmp_path / "caption.txt").write_text("\n \n")
    with pytest.raises(InputError, match="empty"):
        cap.caption_object(tmp_path)


def test_template_captioner_bad_spec(tmp_path):
    (tmp_path / "spec.json").write_text("{not json")
    with pytest.raises(InputError, match="spec"):
        TemplateCaptioner().caption_object(tmp_path)
    # no caption field: falls back to the synthetic world's template, which cannot build this spec
    (tmp_path / "spec.json").write_text(json.dumps({"no_such_field": 1}))
    with pytest.raises(InputError, match="spec"):
        TemplateCaptioner().caption_object(tmp_path)


def test_template_captioner_on_the_synthetic_world(tmp_path):
    """With caption.txt removed, spec.json must give the synthetic world's own caption."""
    synthetic = pytest.importorskip("fourview.data.synthetic")
    if not hasattr(synthetic, "write_synthetic"):
        pytest.skip("fourview.data.synthetic has no write_synthetic yet")
    (obj,) = synthetic.write_synthetic(tmp_path, 1, 7, "train", progress=False)
    expected = (obj / "caption.txt").read_text().strip()
    assert TemplateCaptioner().caption_object(obj) == CaptionOutput(expected, "caption.txt")
    (obj / "caption.txt").unlink()
    assert TemplateCaptioner().caption_object(obj) == CaptionOutput(expected, "spec.json")


class _FakeCaptioner:
    def __init__(self, captions):
        self.captions = captions
        self.calls = []

    def caption_views(self, views):
        self.calls.append([v.getpixel((0, 0)) for v in views])
        return list(self.captions)


def test_caption_object_uses_files_first_then_the_captioner(tmp_path):
    obj = _rig(tmp_path / "obj")
    fake = _FakeCaptioner(["a red box", "the back of a red box", "a red box seen from the left", "a red crate"])
    out = caption_object(obj, fake)
    assert out == CaptionOutput("a red box", "captioner", tuple(fake.captions))
    assert fake.calls == [[(255, 0, 0, 255)] * 4]  # the 4 rig views, RGBA as loaded
    assert caption_object(obj, None) is None
    assert caption_object(obj, _FakeCaptioner(["", "", "", ""])) is None
    (obj / "caption.txt").write_text("a red cube")
    fake2 = _FakeCaptioner(["x"] * 4)
    assert caption_object(obj, fake2) == CaptionOutput("a red cube", "caption.txt")
    assert fake2.calls == []


def test_hf_captioner_wraps_a_pipeline():
    seen = {}

    def pipe(images, text=None, **kwargs):
        seen.update(images=images, text=text, kwargs=kwargs)
        # both output shapes transformers pipelines produce
        return [[{"generated_text": " a red mug "}], {"generated_text": "a cup"}]

    views = [Image.new("RGBA", (4, 4), (0, 0, 0, 0)), Image.new("RGB", (4, 4), (1, 2, 3))]
    cap = HFCaptioner(pipe, max_new_tokens=12)
    assert cap.caption_views(views) == ["a red mug", "a cup"]
    assert [im.mode for im in seen["images"]] == ["RGB", "RGB"]
    assert np.all(np.asarray(seen["images"][0]) == 255)  # transparent composited on white
    assert seen["text"] is None and seen["kwargs"] == {"max_new_tokens": 12}

    cap = HFCaptioner(pipe, prompt="Describe the object.")
    cap.caption_views(views)
    assert seen["text"] == ["Describe the object."] * 2
    assert seen["kwargs"]["return_full_text"] is False

    with pytest.raises(RuntimeError, match="2 results for 1 views"):
        cap.caption_views(views[:1])
    with pytest.raises(InputError, match="max_new_tokens must be >= 1, got 0"):
        HFCaptioner(pipe, max_new_tokens=0)


def test_hf_captioner_construction_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        HFCaptioner.from_pretrained(tmp_path / "missing")
    with pytest.raises(InputError, match="no config.json"):
        HFCaptioner.from_pretrained(tmp_path)
    # (a folder with a broken config.json also gives InputError, but checking it imports
    # transformers' pipelines, ~15 s here; not worth the test time)


def test_captions_come_from_scan_names_without_their_random_ids():
    assert caption_from_name("Threshold_Porcelain_Teapot_White") == "threshold porcelain teapot white"
    assert caption_from_name("3D_Dollhouse_Sink") == "3d dollhouse sink"
    assert caption_from_name("CONE_SORTING_kg5fbARBwts") == "cone sorting"
    assert caption_from_name("Asus_Sabertooth_990FX_20_Motherboard") == "asus sabertooth 990fx 20 motherboard"
    assert caption_from_name("Toy_ZJa163wlWp2") == "toy"
    assert caption_from_name("3D_Dollhouse_TablePurple") == "3d dollhouse tablepurple"
    assert caption_from_name("AllergenFree_JarroDophilus") == "allergenfree jarrodophilus"
