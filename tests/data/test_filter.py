"""Scoring (tiny random-weight CLIP, aesthetic head, quality SVM) and the manifest filters."""

from __future__ import annotations

import json
import math
import os
import re
import stat
import warnings

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.svm import SVC

from fourview.data.filter import (
    AESTHETIC_MISSING,
    CLIP_MISSING,
    NO_CAPTION,
    SVM_MISSING,
    AestheticConfig,
    AestheticScorer,
    Availability,
    ClipScorer,
    QualitySVM,
    Scorers,
    SVMConfig,
    build_manifest,
    clip_score,
    curriculum_pass,
    drop_low_aesthetic,
    load_scorers,
    object_feature,
    score_record,
    top_count,
    train_quality_svm,
)
from fourview.data.manifest import ObjectRecord, load_rig_views, read_manifest, rig_view_paths, write_manifest
from fourview.errors import InputError

# A CLIP small enough to build in milliseconds; the vocabulary is the real 49408-token BPE one.
TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
D = TINY_CLIP_CFG["embed_dim"]


def _tiny_clip_model() -> open_clip.model.CLIP:
    torch.manual_seed(0)
    return open_clip.model.CLIP(
        embed_dim=D,
        vision_cfg=open_clip.model.CLIPVisionCfg(**TINY_CLIP_CFG["vision_cfg"]),
        text_cfg=open_clip.model.CLIPTextCfg(**TINY_CLIP_CFG["text_cfg"]),
    )


@pytest.fixture(scope="module")
def tiny_clip() -> ClipScorer:
    model = _tiny_clip_model()
    preprocess = open_clip.image_transform(32, is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    return ClipScorer(model, preprocess, tokenizer, name="tiny")


def _views(seed: int = 0, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 4), dtype=np.uint8), "RGBA") for _ in range(4)]


_UNPICKLED = []  # filled only if a loader ever unpickled a _Trap


def _mark_unpickled():
    _UNPICKLED.append(1)
    return torch.zeros(1)


class _Trap:
    def __reduce__(self):
        return (_mark_unpickled, ())


# ---------------------------------------------------------------------------------------------- CLIP


def test_tokenizer_is_clips_real_bpe_offline():
    tokens = open_clip.tokenize(["a red mug"])  # [1, 77]
    assert tokens.shape == (1, 77)
    # <start_of_text>=49406, "a</w>"=320, "red</w>"=736, "mug</w>"=9722, <end_of_text>=49407 in CLIP's vocabulary
    assert tokens[0, :6].tolist() == [49406, 320, 736, 9722, 49407, 0]


def test_clip_score_hand_example():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [2.0, 2.0]])  # cos with [1, 0]: 1, 0, -1, 1/sqrt2
    expected = 100.0 * (1.0 + 0.0 + 0.0 + 1.0 / math.sqrt(2.0)) / 4.0
    assert clip_score(img, torch.tensor([3.0, 0.0])) == pytest.approx(expected, abs=1e-9)
    assert clip_score(img, torch.tensor([[-1.0, 0.0]])) == pytest.approx(100.0 / 4.0, abs=1e-9)  # only view 3
    assert clip_score(-img.abs() - 0.1, torch.tensor([1.0, 1.0])) == 0.0  # all negative -> clamped to 0
    with pytest.raises(ValueError, match=re.escape("image features (4, 2) and text features (1, 3) differ in D")):
        clip_score(img, torch.ones(3))


def test_clip_features_shapes_norms_determinism(tiny_clip):
    views = _views()
    f1 = tiny_clip.image_features(views)
    f2 = tiny_clip.image_features(views)
    assert f1.shape == (4, D) and f1.dtype == torch.float32
    torch.testing.assert_close(f1.norm(dim=-1), torch.ones(4))
    assert torch.equal(f1, f2)
    t = tiny_clip.text_features(["a red mug", "a blue chair", "a red mug"])
    assert t.shape == (3, D)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    assert torch.equal(t[0], t[2]) and not torch.equal(t[0], t[1])
    assert tiny_clip.embed_dim == D
    with pytest.raises(InputError, match="text_features needs a non-empty list of strings"):
        tiny_clip.text_features("a red mug")
    with pytest.raises(InputError, match="no views to embed"):
        tiny_clip.image_features([])


def test_clip_score_matches_hand_computation(tiny_clip):
    views, caption = _views(1), "a small wooden stool"
    model, pre = tiny_clip.model, tiny_clip.preprocess
    with torch.no_grad():
        bg = Image.new("RGBA", views[0].size, (255, 255, 255, 255))
        white = [Image.alpha_composite(bg, v).convert("RGB") for v in views]
        img = model.encode_image(torch.stack([pre(v) for v in white])).double().numpy()  # [4, D]
        txt = model.encode_text(open_clip.SimpleTokenizer(context_length=16)([caption])).double().numpy()[0]  # [D]
    cos = img @ txt / (np.linalg.norm(img, axis=1) * np.linalg.norm(txt))
    expected = float(np.mean(100.0 * np.maximum(cos, 0.0)))
    got = tiny_clip.score(views, caption)
    assert 0.0 <= got <= 100.0
    assert got == pytest.approx(expected, abs=1e-4)


def test_transparent_views_are_seen_on_white(tiny_clip):
    clear = [Image.new("RGBA", (32, 32), (0, 0, 0, 0))] * 4
    white = [Image.new("RGB", (32, 32), (255, 255, 255))] * 4
    black = [Image.new("RGB", (32, 32), (0, 0, 0))] * 4
    torch.testing.assert_close(tiny_clip.image_features(clear), tiny_clip.image_features(white))
    assert not torch.allclose(tiny_clip.image_features(clear), tiny_clip.image_features(black))


def test_clip_from_pretrained_local_dir_and_file(tmp_path, tiny_clip):
    model = _tiny_clip_model()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    save_file(state, str(folder / "open_clip_model.safetensors"))
    views, caption = _views(2), "a green tree"
    loaded = ClipScorer.from_pretrained(folder)
    torch.testing.assert_close(loaded.image_features(views), tiny_clip.image_features(views), rtol=0, atol=1e-6)
    torch.testing.assert_close(loaded.text_features([caption]), tiny_clip.text_features([caption]), rtol=0, atol=1e-6)
    assert loaded.embed_dim == D

    # a checkpoint file for a named architecture (registered here the way a user adds a config)
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "fourview-test-tiny.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(configs)
    torch.save(state, tmp_path / "tiny.bin")
    by_name = ClipScorer.from_pretrained(tmp_path / "tiny.bin", model_name="fourview-test-tiny")
    assert by_name.name == "fourview-test-tiny"
    torch.testing.assert_close(by_name.image_features(views), tiny_clip.image_features(views), rtol=0, atol=1e-6)


def test_clip_from_pretrained_errors(tmp_path):
    with pytest.raises(InputError, match="CLIP weights not found"):
        ClipScorer.from_pretrained(tmp_path / "missing.safetensors")
    with pytest.raises(InputError, match="open_clip_config.json"):
        ClipScorer.from_pretrained(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown open_clip model"):
        ClipScorer.from_pretrained(tmp_path / "w.safetensors", model_name="no-such-model")
    # weights of another shape than the architecture
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    save_file({"logit_scale": torch.ones(())}, str(folder / "open_clip_model.safetensors"))
    with pytest.raises(InputError, match="cannot load CLIP weights"):
        ClipScorer.from_pretrained(folder)
    (folder / "open_clip_model.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot load CLIP weights"):
        ClipScorer.from_pretrained(folder)
    # a pickle with an object in it: refused by weights_only loading, never executed
    (folder / "open_clip_model.safetensors").unlink()
    torch.save({"logit_scale": torch.ones(()), "x": _Trap()}, folder / "open_clip_pytorch_model.bin")
    with pytest.raises(InputError, match="cannot load CLIP weights"):
        ClipScorer.from_pretrained(folder)
    assert _UNPICKLED == []


# ---------------------------------------------------------------------------------------- aesthetic


def test_aesthetic_head_is_the_published_architecture():
    head = AestheticScorer()
    linear = [(k, tuple(v.shape)) for k, v in head.state_dict().items() if k.endswith("weight")]
    assert linear == [
        ("layers.0.weight", (1024, 768)),
        ("layers.2.weight", (128, 1024)),
        ("layers.4.weight", (64, 128)),
        ("layers.6.weight", (16, 64)),
        ("layers.7.weight", (1, 16)),
    ]
    names = [type(m).__name__ for m in head.layers]
    assert names == ["Linear", "Dropout"] * 3 + ["Linear", "Linear"]  # no activations
    assert [m.p for m in head.layers if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2, 0.1]
    sizes = [(768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    assert sum(p.numel() for p in head.parameters()) == sum(i * o + o for i, o in sizes)


def test_aesthetic_normalises_and_is_deterministic():
    head = AestheticScorer(AestheticConfig(embed_dim=D))
    x = torch.randn(5, D)
    s = head(x)
    assert s.shape == (5,)
    torch.testing.assert_close(head(3.0 * x), s)  # L2-normalised input
    torch.testing.assert_close(head(x), s)  # eval mode: dropout off
    # no activation: the head is affine in the normalised input
    n = torch.nn.functional.normalize(x, dim=-1)
    w, b = torch.eye(D), torch.zeros(D)
    for m in head.layers:
        if isinstance(m, torch.nn.Linear):
            w, b = m.weight @ w, m.weight @ b + m.bias
    torch.testing.assert_close(s, (n @ w.T + b).squeeze(-1), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(head(torch.zeros(1, D))).all()
    with pytest.raises(ValueError, match=re.escape(f"expected [N, {D}] features, got (2, {D + 1})")):
        head(torch.randn(2, D + 1))


def test_aesthetic_round_trips(tmp_path):
    head = AestheticScorer(AestheticConfig(embed_dim=D))
    x = torch.randn(4, D)
    old = os.umask(0o077)
    try:
        st = head.save_safetensors(tmp_path / "sub" / "aes.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(st.stat().st_mode) == 0o600 and [p.name for p in st.parent.iterdir()] == [st.name]
    torch.testing.assert_close(AestheticScorer.from_file(st)(x), head(x), rtol=0, atol=0)
    torch.save(head.state_dict(), tmp_path / "aes.pth")
    again = AestheticScorer.from_file(tmp_path / "aes.pth")
    assert again.config == AestheticConfig(embed_dim=D)
    torch.testing.assert_close(again(x), head(x), rtol=0, atol=0)
    torch.save({"state_dict": head.state_dict()}, tmp_path / "wrapped.ckpt")
    torch.testing.assert_close(AestheticScorer.from_file(tmp_path / "wrapped.ckpt")(x), head(x), rtol=0, atol=0)


def test_aesthetic_never_unpickles_objects(tmp_path):
    state = AestheticScorer(AestheticConfig(embed_dim=D)).state_dict()
    torch.save({**state, "extra": _Trap()}, tmp_path / "evil.pth")
    with pytest.raises(InputError, match="plain tensor state dict"):
        AestheticScorer.from_file(tmp_path / "evil.pth")
    assert _UNPICKLED == []


def test_aesthetic_load_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        AestheticScorer.from_file(tmp_path / "missing.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(InputError, match="must be .safetensors"):
        AestheticScorer.from_file(tmp_path / "w.onnx")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read"):
        AestheticScorer.from_file(tmp_path / "junk.safetensors")
    state = AestheticScorer(AestheticConfig(embed_dim=D)).state_dict()
    save_file({k.replace("layers.7", "layers.8"): v for k, v in state.items()}, str(tmp_path / "keys.safetensors"))
    with pytest.raises(InputError, match="not a LAION aesthetic predictor"):
        AestheticScorer.from_file(tmp_path / "keys.safetensors")
    save_file({**state, "layers.2.weight": torch.zeros(128, 7)}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(InputError, match="do not fit"):
        AestheticScorer.from_file(tmp_path / "shape.safetensors")


# --------------------------------------------------------------------------------------------- SVM


def _separable(seed=0, n=12):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=D)
    good = centre + 0.3 * rng.normal(size=(n, D))
    bad = -centre + 0.3 * rng.normal(size=(n + 3, D))
    return good, bad


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_svm_matches_sklearn_and_round_trips(tmp_path, kernel):
    good, bad = _separable()
    svm = QualitySVM.fit(good, bad, SVMConfig(kernel=kernel, C=2.0), feature_model="tiny")
    x = np.concatenate([good, bad])
    dec = svm.decision_function(x)
    assert dec.shape == (len(x),)
    assert np.all(dec[: len(good)] > 0) and np.all(dec[len(good) :] < 0)  # separable: all right

    # the stored model evaluates exactly as scikit-learn's SVC on the same (normalised) features
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = np.r_[np.ones(len(good)), np.zeros(len(bad))]
    gamma = svm.gamma if kernel == "rbf" else "scale"
    ref = SVC(kernel=kernel, C=2.0, gamma=gamma, class_weight="balanced").fit(xn, y)
    np.testing.assert_allclose(dec, ref.decision_function(xn), rtol=1e-9, atol=1e-9)
    if kernel == "rbf":
        assert svm.gamma == pytest.approx(1.0 / (D * xn.var()))

    path = svm.save(tmp_path / "svm.json")
    assert [p.name for p in tmp_path.iterdir()] == ["svm.json"]  # no temporary left behind
    data = json.loads(path.read_text())  # plain JSON
    assert data["format"] == "fourview-quality-svm" and data["kernel"] == kernel
    again = QualitySVM.load(path)
    assert np.array_equal(again.decision_function(x), dec)  # float64 survives JSON exactly
    assert again.feature_model == "tiny" and again.feature_dim == D


def test_svm_errors(tmp_path):
    good, bad = _separable()
    with pytest.raises(InputError, match="at least one good and one bad"):
        QualitySVM.fit(good, np.zeros((0, D)))
    with pytest.raises(InputError, match="differ in size"):
        QualitySVM.fit(good, bad[:, :4])
    svm = QualitySVM.fit(good, bad)
    with pytest.raises(InputError, match="expects 16-d"):
        svm.decision_function(np.ones((1, 8)))
    (tmp_path / "a.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a fourview quality SVM"):
        QualitySVM.load(tmp_path / "a.json")
    data = {**svm.to_json(), "pickle": "x"}
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="unknown keys"):
        QualitySVM.load(tmp_path / "b.json")
    data = {**svm.to_json(), "coef": [1.0, 2.0]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="coef of shape"):
        QualitySVM.load(tmp_path / "c.json")
    with pytest.raises(InputError, match="not found"):
        QualitySVM.load(tmp_path / "missing.json")


def test_object_feature():
    x = np.array([[3.0, 0.0], [0.0, 1.0]])
    f = object_feature(x)
    np.testing.assert_allclose(f, [1 / math.sqrt(2), 1 / math.sqrt(2)])
    np.testing.assert_allclose(object_feature(torch.tensor(x)), f)


def _object(root, name, colour, caption=None):
    (root / name / "rig").mkdir(parents=True)
    for i, view in enumerate(rig_view_paths(root / name)):
        rgba = np.zeros((32, 32, 4), np.uint8)
        rgba[4:28, 4 + i : 24 + i] = (*colour, 255)  # a coloured box, shifted per view
        Image.fromarray(rgba, "RGBA").save(view)
    if caption is not None:
        (root / name / "caption.txt").write_text(caption)
    return root / name


def test_train_svm_from_object_folders(tmp_path, tiny_clip):
    warm = [(230, 40 + 30 * i, 30) for i in range(3)]
    cold = [(30, 60 + 30 * i, 230) for i in range(3)]
    good = [_object(tmp_path, f"good{i}", c) for i, c in enumerate(warm)]
    bad = [_object(tmp_path, f"bad{i}", c) for i, c in enumerate(cold)]
    svm = train_quality_svm(good, bad, tiny_clip, SVMConfig(C=1e4))
    assert svm.feature_model == "tiny" and svm.feature_dim == D
    feats = np.stack([object_feature(tiny_clip.image_features(load_rig_views(d))) for d in good + bad])
    dec = svm.decision_function(feats)
    assert np.all(dec[:3] > 0) and np.all(dec[3:] < 0), dec  # 6 points in 16-d: separable
    with pytest.raises(InputError, match="needs at least one good and one bad object, got 3 / 0"):
        train_quality_svm(good, [], tiny_clip)


# ------------------------------------------------------------------------------------ scoring objects


def test_availability():
    assert Availability(True).reason == ""
    with pytest.raises(ValueError, match="an unavailable score needs a reason"):
        Availability(False)
    with pytest.raises(ValueError, match="an available score has no reason"):
        Availability(True, "why")
    none = Scorers()
    assert none.availability("clip_score") == Availability(False, CLIP_MISSING)
    assert none.availability("aesthetic") == Availability(False, AESTHETIC_MISSING)
    assert none.availability("svm_score") == Availability(False, SVM_MISSING)
    head_only = Scorers(aesthetic=AestheticScorer(AestheticConfig(embed_dim=D)))
    assert not head_only.availability("aesthetic").available
    assert CLIP_MISSING in head_only.availability("aesthetic").reason


def test_scorers_check_dimensions(tiny_clip):
    with pytest.raises(InputError, match="768-d CLIP features but the CLIP model gives 16-d"):
        Scorers(clip=tiny_clip, aesthetic=AestheticScorer())
    svm = QualitySVM.fit(np.ones((2, 8)), -np.ones((2, 8)))
    with pytest.raises(InputError, match="8-d"):
        Scorers(clip=tiny_clip, svm=svm)
    good, bad = _separable()
    with pytest.warns(UserWarning, match="'other-clip'"):
        Scorers(clip=tiny_clip, svm=QualitySVM.fit(good, bad, feature_model="other-clip"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Scorers(clip=tiny_clip, svm=QualitySVM.fit(good, bad, feature_model="tiny"))


def test_load_scorers_with_nothing_given_marks_everything_unavailable(tmp_path):
    scorers = load_scorers()
    record = score_record(ObjectRecord("a", "a", caption="a red mug"), _views(), scorers)
    assert (record.clip_score, record.aesthetic, record.svm_score) == (None, None, None)
    assert record.unavailable == {"clip_score": CLIP_MISSING, "aesthetic": AESTHETIC_MISSING, "svm_score": SVM_MISSING}
    with pytest.raises(InputError, match="aesthetic predictor weights not found: .*missing.safetensors"):
        load_scorers(aesthetic_weights=tmp_path / "missing.safetensors")


def test_score_record_matches_the_parts(tiny_clip):
    head = AestheticScorer(AestheticConfig(embed_dim=D))
    good, bad = _separable()
    svm = QualitySVM.fit(good, bad)
    scorers = Scorers(clip=tiny_clip, aesthetic=head, svm=svm)
    views = _views(3)
    rec = score_record(ObjectRecord("obj", "p", caption="a blue vase"), views, scorers)
    feats = tiny_clip.image_features(views)
    assert rec.unavailable == {}
    assert rec.clip_score == pytest.approx(tiny_clip.score(views, "a blue vase"), abs=1e-9)
    np.testing.assert_allclose(rec.aesthetic, head(feats).detach().numpy(), rtol=1e-6)
    assert rec.svm_score == pytest.approx(float(svm.decision_function(object_feature(feats)[None])[0]))
    uncaptioned = score_record(ObjectRecord("obj", "p"), views, scorers)
    assert uncaptioned.clip_score is None and uncaptioned.unavailable == {"clip_score": NO_CAPTION}
    assert uncaptioned.aesthetic == rec.aesthetic
    with pytest.raises(InputError, match="4 rig views"):
        score_record(ObjectRecord("obj", "p"), views[:3], scorers)


def test_build_manifest_end_to_end(tmp_path, tiny_clip):
    root = tmp_path / "renders"
    _object(root, "b_box", (200, 30, 30), caption="a red box")
    _object(root, "a_box", (30, 30, 200))

    class Fake:
        def caption_views(self, views):
            return ["a blue box", "the back of a blue box", "a blue box", "a blue crate"]

    scorers = Scorers(clip=tiny_clip, aesthetic=AestheticScorer(AestheticConfig(embed_dim=D)))
    records = build_manifest(root, scorers, captioner=Fake())
    assert [r.name for r in records] == ["a_box", "b_box"]
    assert (records[0].caption, records[0].caption_source) == ("a blue box", "captioner")
    assert (records[1].caption, records[1].caption_source) == ("a red box", "caption.txt")
    for r in records:
        assert 0.0 <= r.clip_score <= 100.0
        assert len(r.aesthetic) == 4
        assert r.svm_score is None and r.unavailable == {"svm_score": SVM_MISSING}
    path = write_manifest(tmp_path / "manifest.jsonl", records)
    assert read_manifest(path) == records
    no_captioner = build_manifest(root, scorers)
    assert no_captioner[0].caption is None and no_captioner[0].unavailable["clip_score"] == NO_CAPTION


# ----------------------------------------------------------------------------------------- filters


def _rec(name, aesthetic=None, svm=None, reason=None):
    views = None if aesthetic is None else (aesthetic,) * 4 if isinstance(aesthetic, (int, float)) else aesthetic
    unavailable = {} if reason is None else {"aesthetic": reason}
    return ObjectRecord(name, name, aesthetic=views, svm_score=svm, unavailable=unavailable)


def test_drop_low_aesthetic_uses_the_mean_over_views():
    records = [
        _rec("low", (3.0, 3.25, 3.5, 3.75)),  # mean 3.375 -> dropped
        _rec("edge", (3.0, 4.0, 3.25, 3.75)),  # mean exactly 3.5 -> kept (the rule drops < 3.5)
        _rec("one_bad_view", (6.0, 6.0, 6.0, 0.0)),  # mean 4.5 -> kept despite a low view
        _rec("high", 5.0),
        _rec("just_below", (3.5, 3.5, 3.5, 3.4999)),
    ]
    assert [r.name for r in drop_low_aesthetic(records)] == ["edge", "one_bad_view", "high"]
    assert [r.name for r in drop_low_aesthetic(records, threshold=4.6)] == ["high"]
    assert drop_low_aesthetic([]) == []


def test_missing_scores_policy():
    records = [_rec("a", 5.0), _rec("b", reason="aesthetic predictor weights not given"), _rec("c", 1.0)]
    with pytest.raises(InputError, match=r"1 object\(s\) have no aesthetic score, e.g. 'b' \(aesthetic predictor"):
        drop_low_aesthetic(records)
    with pytest.warns(UserWarning, match="keeping"):
        assert [r.name for r in drop_low_aesthetic(records, on_missing="keep")] == ["a", "b"]
    with pytest.warns(UserWarning, match="dropping"):
        assert [r.name for r in drop_low_aesthetic(records, on_missing="drop")] == ["a"]
    with pytest.raises(InputError, match="on_missing"):
        drop_low_aesthetic(records, on_missing="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing: no warning
        drop_low_aesthetic(records[:1], on_missing="keep")


@pytest.mark.parametrize(
    "n, fraction, expected",
    [
        (10, 0.3, 3),
        (20, 0.3, 6),
        (100, 0.3, 30),
        (7, 0.3, 3),
        (11, 0.3, 4),
        (1, 0.3, 1),
        (3, 0.3, 1),
        (0, 0.3, 0),
        (3, 1 / 3, 1),
        (5, 1.0, 5),
        (100, 0.07, 7),
        (100, 0.55, 55),
    ],
)
def test_top_count_rounds_up_without_float_noise(n, fraction, expected):
    assert 0.07 * 100 > 7 and 0.55 * 100 > 55  # float products the rounding has to see through
    assert top_count(n, fraction) == expected


def test_top_count_rejects_bad_fractions():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(InputError, match=re.escape(f"top fraction must be in (0, 1], got {bad}")):
            top_count(10, bad)


def test_curriculum_passes():
    scores = [4.0, 9.0, 2.0, 7.0, 5.0, 8.0, 3.0, 6.0, 1.0, 4.5]
    records = [_rec(f"o{i}", s) for i, s in enumerate(scores)]
    p1 = curriculum_pass(records, 1, low_threshold=3.0)
    assert [r.name for r in p1] == ["o0", "o1", "o3", "o4", "o5", "o6", "o7", "o9"]  # >= 3.0, input order
    assert curriculum_pass(records, 1, low_threshold=None) == records
    p2 = curriculum_pass(records, 2, low_threshold=3.0)
    # 8 in pass 1 -> ceil(0.3 * 8) = 3 best: 9, 8, 7, in input order
    assert [r.name for r in p2] == ["o1", "o3", "o5"]
    assert {r.name for r in p2} <= {r.name for r in p1}
    p2_all = curriculum_pass(records, 2, low_threshold=None)  # 10 -> exactly 3
    assert [r.name for r in p2_all] == ["o1", "o3", "o5"]
    assert [r.name for r in curriculum_pass(records, 2, None, top_fraction=0.5)] == ["o1", "o3", "o4", "o5", "o7"]
    assert curriculum_pass(records, 2, low_threshold=100.0) == []
    with pytest.raises(InputError, match="1 or 2"):
        curriculum_pass(records, 3, 1.0)
    with pytest.raises(InputError, match="fraction"):
        curriculum_pass(records, 2, 1.0, top_fraction=0.0)


def test_curriculum_ties_are_broken_by_name():
    records = [_rec(n, s) for n, s in [("d", 5.0), ("b", 5.0), ("c", 5.0), ("a", 5.0), ("e", 1.0), ("f", 9.0)]]
    # 6 records -> ceil(1.8) = 2: f (9.0), then the tie at 5.0 goes to "a"
    assert [r.name for r in curriculum_pass(records, 2, None)] == ["a", "f"]
    assert [r.name for r in curriculum_pass(list(reversed(records)), 2, None)] == ["f", "a"]  # order-independent set


def test_curriculum_by_another_score_and_missing():
    records = [
        ObjectRecord("x", "x", svm_score=0.5),
        ObjectRecord("y", "y", svm_score=-1.0),
        ObjectRecord("z", "z", unavailable={"svm_score": SVM_MISSING}),
        ObjectRecord("w", "w", svm_score=2.0),
    ]
    with pytest.raises(InputError, match="quality SVM not given"):
        curriculum_pass(records, 1, 0.0, key="svm_score")
    with pytest.warns(UserWarning):
        assert [r.name for r in curriculum_pass(records, 1, 0.0, key="svm_score", on_missing="drop")] == ["x", "w"]
    with pytest.warns(UserWarning):
        # the unscored record is kept in both passes, unranked; 2 scored >= 0 -> ceil(0.6) = 1 best
        assert [r.name for r in curriculum_pass(records, 2, 0.0, key="svm_score", on_missing="keep")] == ["z", "w"]
