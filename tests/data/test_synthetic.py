"""Tests of the synthetic world: tables, determinism, geometry, colour dominance, split, files."""

from __future__ import annotations

import itertools
import json
import math
import os
import re

import numpy as np
import pytest
import trimesh

from fourview.data import glb
from fourview.data import primitives as P
from fourview.data import synthetic as S
from fourview.errors import InputError
from fourview.evaluation.adherence import nearest_colour, srgb_to_lab, surface_albedo
from fourview.mesh import MeshPart, linear_to_srgb, srgb_to_linear

REQUIRED_SHAPES = {"mug", "table", "chair", "lamp", "tree", "house", "snowman", "mushroom", "car"}


def _components(part: MeshPart) -> list[trimesh.Trimesh]:
    verts, faces = P.weld(part.verts, part.faces)
    return trimesh.Trimesh(verts, faces, process=False).split(only_watertight=False)


def _spec_at_corner(shape: str, seed: int, colour: str = "red", pattern: str = "plain") -> S.SyntheticSpec:
    """A spec whose proportions sit at the corners of their ranges (the most extreme objects)."""
    rng = np.random.default_rng([seed, 5])
    props = {name: float(rng.choice([lo, hi])) for name, (lo, _, hi) in S.PROPORTIONS[shape].items()}
    return S.SyntheticSpec(shape, colour, pattern, "matte", tuple(props.items()), seed)


# ---- tables -----------------------------------------------------------------------------------


def test_colour_table_is_large_distinct_and_self_nearest():
    assert len(S.COLOURS) >= 12
    values = list(S.COLOURS.values())
    assert len(set(values)) == len(values)
    for rgb in values:
        assert len(rgb) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in rgb)
    lab = srgb_to_lab(np.array(values) / 255.0)
    dist = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(len(values)) * 1e9
    assert dist.min() > 30.0, f"closest colours only {dist.min():.1f} Delta E apart"
    for name, rgb in S.COLOURS.items():
        assert nearest_colour(np.array(rgb) / 255.0) == name


def test_shape_tables_are_consistent():
    assert len(S.SHAPES) >= 16 and len(set(S.SHAPES)) == len(S.SHAPES)
    assert REQUIRED_SHAPES <= set(S.SHAPES)
    assert set(S.PROPORTIONS) == set(S.SHAPES) == set(S.HELDOUT_COLOURS)
    for shape, ranges in S.PROPORTIONS.items():
        assert ranges, shape
        for name, (lo, default, hi) in ranges.items():
            assert 0 < lo <= default <= hi, (shape, name)
    assert set(S.PATTERNS) == {"plain", "striped", "checkered", "dotted"}
    assert set(S.FINISHES) == set(S.FINISH_MATERIAL) == {"matte", "glossy", "metallic"}


# ---- specs and captions -----------------------------------------------------------------------


def test_sample_spec_is_deterministic_and_varied():
    specs = [S.sample_spec(seed) for seed in range(300)]
    assert specs == [S.sample_spec(seed) for seed in range(300)]
    assert len(set(specs)) == len(specs)  # different seeds differ
    assert {s.shape for s in specs} == set(S.SHAPES)
    assert {s.colour for s in specs} == set(S.COLOURS)
    assert {s.pattern for s in specs} == set(S.PATTERNS)
    assert {s.finish for s in specs} == set(S.FINISHES)
    for spec in specs[:40]:
        for name, value in spec.proportions:
            lo, _, hi = S.PROPORTIONS[spec.shape][name]
            assert lo <= value <= hi


def test_spec_validation_and_json_round_trip():
    spec = S.sample_spec(11)
    assert S.SyntheticSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert S.SyntheticSpec("mug", "red").params == {k: v[1] for k, v in S.PROPORTIONS["mug"].items()}
    with pytest.raises(InputError, match="shape"):
        S.SyntheticSpec("spaceship", "red")
    with pytest.raises(InputError, match="colour"):
        S.SyntheticSpec("mug", "ultraviolet")
    with pytest.raises(InputError, match="pattern"):
        S.SyntheticSpec("mug", "red", pattern="paisley")
    with pytest.raises(InputError, match="outside"):
        S.SyntheticSpec("mug", "red", proportions=(("height", 9.0),))
    with pytest.raises(InputError, match="unknown proportion"):
        S.SyntheticSpec("mug", "red", proportions=(("wheels", 1.0),))
    with pytest.raises(InputError, match="seed"):
        S.SyntheticSpec("mug", "red", seed=-1)
    with pytest.raises(InputError, match="keys"):
        S.SyntheticSpec.from_dict({**spec.to_dict(), "extra": 1})
    with pytest.raises(InputError, match="seed"):
        S.sample_spec(-3)


def test_captions_name_colour_shape_and_pattern_and_vary():
    captions = []
    for seed in range(400):
        spec = S.sample_spec(seed)
        text = S.caption(spec)
        assert text == S.caption(spec)
        words = re.findall(r"[a-z0-9-]+", text.lower())
        assert spec.colour in words and spec.shape in words, text
        others = set(S.COLOURS) - {spec.colour}
        assert not others & set(words), text  # exactly one colour word
        if spec.pattern != "plain":
            assert {"striped": "stripe", "checkered": "checkered", "dotted": "dot"}[spec.pattern] in text, text
        captions.append(text)
    assert len(set(captions)) > 300
    assert any(c.startswith("a 3D model of") for c in captions)
    assert any(" with " in c for c in captions)
    assert any(c.startswith("an ") for c in captions)  # "an orange ..."
    # The same object with different seeds is worded in several ways.
    same = {S.caption(S.SyntheticSpec("tree", "green", seed=s)) for s in range(30)}
    assert len(same) >= 4


# ---- split ------------------------------------------------------------------------------------


def test_split_is_a_proper_held_out_set_of_combinations():
    pairs = set(itertools.product(S.SHAPES, S.COLOURS))
    held = S.HELDOUT_COMBINATIONS
    assert held <= pairs
    assert 1 / 8 <= len(held) / len(pairs) <= 1 / 6
    train = set(S.combinations("train"))
    assert train == pairs - held and set(S.combinations("heldout")) == held
    for shape in S.SHAPES:
        assert sum((shape, c) in train for c in S.COLOURS) >= len(S.COLOURS) - 3
        assert any((shape, c) in held for c in S.COLOURS)  # every shape can be drawn held out
    for colour in S.COLOURS:
        assert sum((s, colour) in train for s in S.SHAPES) >= len(S.SHAPES) - 4
    assert all(S.is_heldout(s, c) for s, c in held) and not any(S.is_heldout(s, c) for s, c in train)


def test_sample_spec_respects_the_split():
    for seed in range(400):
        spec = S.sample_spec(seed, "train")
        assert not S.is_heldout(spec.shape, spec.colour)
    drawn = set()
    for seed in range(300):
        spec = S.sample_spec(seed, "heldout")
        assert S.is_heldout(spec.shape, spec.colour)
        drawn.add((spec.shape, spec.colour))
    assert len(drawn) > len(S.HELDOUT_COMBINATIONS) // 2
    with pytest.raises(InputError, match="split"):
        S.sample_spec(0, "test")


# ---- geometry ---------------------------------------------------------------------------------


def test_primitives_are_closed_and_have_the_right_volume():
    cases = [
        (P.box(1.0, 2.0, 3.0), 6.0, 1e-9),
        (P.prism(np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), 2.0), 2.0, 1e-9),
        (P.cylinder(0.5, 1.0, 64), math.pi * 0.25, 0.01),
        (P.frustum(0.5, 0.0, 1.0, 64), math.pi * 0.25 / 3, 0.01),
        (P.sphere(1.0, 64, 32), 4 / 3 * math.pi, 0.01),
        (P.capsule(0.3, 1.5, 64, 16), math.pi * 0.09 * 0.9 + 4 / 3 * math.pi * 0.027, 0.01),
        (P.torus(1.0, 0.2, 64, 32), 2 * math.pi**2 * 0.04, 0.01),
        (P.torus(1.0, 0.2, 64, 32, arc_deg=180.0), math.pi**2 * 0.04, 0.01),
    ]
    for piece, volume, rtol in cases:
        verts, faces = P.weld(piece.verts, piece.faces)
        mesh = trimesh.Trimesh(verts, faces, process=False)
        assert mesh.is_watertight and mesh.is_winding_consistent
        assert mesh.volume == pytest.approx(volume, rel=rtol)
        assert piece.uv.shape == (len(piece.verts), 2) and piece.uv.min() >= 0 and piece.uv.max() <= 1


def test_build_asset_is_deterministic_and_seed_dependent():
    spec = S.sample_spec(5)
    a, b = S.build_asset(spec), S.build_asset(spec)
    assert a.name == b.name and len(a.parts) == len(b.parts)
    for pa, pb in zip(a.parts, b.parts):
        tex_a, tex_b = pa.material.texture, pb.material.texture
        for x, y in ((pa.verts, pb.verts), (pa.faces, pb.faces), (pa.uv, pb.uv), (tex_a, tex_b)):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    # Same shape and colour, another seed: the pattern layout or the proportions change.
    for pattern in ("striped", "checkered", "dotted"):
        textures = {
            S.build_asset(S.SyntheticSpec("vase", "blue", pattern, seed=s)).parts[0].material.texture.tobytes()
            for s in range(8)
        }
        assert len(textures) == 8, pattern
    e = S.build_asset(_spec_at_corner("vase", 0, "blue"))
    assert not np.array_equal(e.parts[0].verts, S.build_asset(S.SyntheticSpec("vase", "blue")).parts[0].verts)


@pytest.mark.parametrize("shape", S.SHAPES)
def test_every_shape_builds_a_closed_normalised_textured_mesh(shape):
    for spec in (S.SyntheticSpec(shape, "green", "striped"), _spec_at_corner(shape, 0), _spec_at_corner(shape, 1)):
        asset = S.build_asset(spec)
        assert asset.num_faces > 0 and asset.parts[0].material.name == "body"
        verts = np.concatenate([p.verts for p in asset.parts]).astype(np.float64)
        assert np.linalg.norm(verts, axis=1).max() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(asset.bounds().mean(axis=0), 0.0, atol=1e-5)
        for part in asset.parts:
            assert part.verts.dtype == np.float32 and part.faces.dtype == np.int64
            assert part.uv is not None and part.uv.min() >= 0.0 and part.uv.max() <= 1.0
            tex = part.material.texture
            assert tex is not None and tex.dtype == np.float32 and tex.ndim == 3 and tex.shape[2] == 3
            for comp in _components(part):
                assert comp.is_watertight and comp.is_winding_consistent, (spec, part.material.name)
                assert comp.volume > 0, (spec, part.material.name)  # outward-facing
        assert asset.num_verts < 2000  # keeps the GLB small


def test_fronts_face_plus_z_and_up_is_plus_y():
    def verts(shape, part=None):
        asset = S.build_asset(S.SyntheticSpec(shape, "red"))
        parts = asset.parts if part is None else [p for p in asset.parts if p.material.name == part]
        return np.concatenate([p.verts for p in parts]).astype(np.float64)

    for shape in ("chair", "sofa", "bench", "bed"):  # the back (backrest, headboard) is the top, at -Z
        v = verts(shape)
        top = v[v[:, 1] > v[:, 1].max() - 0.1]
        assert top[:, 2].mean() < -0.1, shape
    car = verts("car")
    roof = car[car[:, 1] > car[:, 1].max() - 0.05]
    assert roof[:, 2].mean() < 0  # the cabin sits back, the bonnet points +Z
    assert verts("house", "accent")[:, 2].min() > 0.3  # door and windows on the front wall
    assert verts("snowman", "accent")[:, 2].max() > 0.2  # the nose points +Z
    mug = verts("mug")
    bottom = mug[mug[:, 1] < mug[:, 1].min() + 0.02]
    assert bottom[:, 0].mean() < -0.05  # the cup sits left of centre: its handle is on the right (+X)
    tree = verts("tree", "accent")
    assert tree[:, 1].min() == pytest.approx(verts("tree")[:, 1].min())  # the trunk stands at the bottom


# ---- colour dominance -------------------------------------------------------------------------


def test_every_shape_and_colour_is_dominated_by_its_primary_colour():
    # Every shape x every colour, patterns cycling, proportions at extreme corners.
    failures = []
    for i, shape in enumerate(S.SHAPES):
        for j, colour in enumerate(S.COLOURS):
            pattern = S.PATTERNS[(i + j) % len(S.PATTERNS)]
            asset = S.build_asset(_spec_at_corner(shape, i * 31 + j, colour, pattern))
            albedo = surface_albedo(asset, samples=4000)
            if nearest_colour(albedo) != colour:
                failures.append((shape, colour, pattern, nearest_colour(albedo), np.round(albedo * 255)))
    assert not failures, failures


def test_patterns_keep_the_primary_colour_on_most_of_the_texture():
    for colour, rgb in S.COLOURS.items():
        for pattern in S.PATTERNS:
            tex = S._pattern_texture(pattern, rgb, seed=3, size=64)
            primary = np.all(np.round(tex * 255) == np.array(rgb), axis=-1).mean()
            assert primary >= (0.5 if pattern == "checkered" else 0.65), (colour, pattern, primary)
            assert np.array_equal(np.round(tex * 255) / 255, tex)  # exact in 8-bit PNG
            if pattern != "plain":
                assert primary < 0.95  # the pattern is there
            mean = linear_to_srgb(srgb_to_linear(tex).reshape(-1, 3).mean(axis=0))
            assert nearest_colour(mean) == colour, (colour, pattern)


# ---- files ------------------------------------------------------------------------------------


def test_write_synthetic_writes_loadable_glbs_captions_and_specs(tmp_path):
    paths = S.write_synthetic(tmp_path, count=3, seed=40, split="heldout", progress=False)
    assert [p.name for p in paths] == [f"synth_heldout_{i:06d}" for i in (40, 41, 42)]
    for i, folder in zip((40, 41, 42), paths):
        spec = S.SyntheticSpec.from_dict(json.loads((folder / "spec.json").read_text()))
        assert spec == S.sample_spec(i, "heldout") and S.is_heldout(spec.shape, spec.colour)
        assert (folder / "caption.txt").read_text().strip() == S.caption(spec)
        glb = folder / "model.glb"
        assert glb.read_bytes()[:4] == b"glTF" and glb.stat().st_size < 100_000
        asset = S.build_asset(spec)
        scene = trimesh.load(glb, force="scene", process=False)
        assert sorted(scene.geometry) == sorted(p.material.name for p in asset.parts)
        for part in asset.parts:
            loaded = scene.geometry[part.material.name]
            np.testing.assert_allclose(loaded.vertices, part.verts, atol=1e-6)  # +Y up, no axis change
            np.testing.assert_array_equal(loaded.faces, part.faces)
            np.testing.assert_allclose(loaded.visual.uv, part.uv, atol=1e-6)
            mat = loaded.visual.material
            assert mat.baseColorTexture is not None
            texture = np.asarray(mat.baseColorTexture.convert("RGB"), dtype=np.float32) / 255.0
            np.testing.assert_allclose(texture, part.material.texture, atol=1e-6)
            assert mat.metallicFactor == pytest.approx(part.material.metallic)
            assert mat.roughnessFactor == pytest.approx(part.material.roughness)


def test_write_synthetic_skips_complete_objects_and_redoes_incomplete_ones(tmp_path):
    first = S.write_synthetic(tmp_path, count=2, seed=0, progress=False)
    stamps = {p: (p / "model.glb").stat().st_mtime_ns for p in first}
    again = S.write_synthetic(tmp_path, count=3, seed=0, progress=False)
    assert again[:2] == first and len(again) == 3
    assert {p: (p / "model.glb").stat().st_mtime_ns for p in first} == stamps  # not rewritten
    (first[0] / "caption.txt").unlink()  # e.g. a folder left by an older, non-atomic writer
    S.write_synthetic(tmp_path, count=1, seed=0, progress=False)
    assert (first[0] / "caption.txt").read_text().strip() == S.caption(S.sample_spec(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in again)  # no temp folders


def test_write_synthetic_leaves_nothing_when_an_object_fails(tmp_path, monkeypatch):
    def broken(asset, path):
        path.write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(glb, "export_glb", broken)  # write_synthetic imports it from there when it runs
    with pytest.raises(RuntimeError, match="disk full"):
        S.write_synthetic(tmp_path / "out", count=2, seed=0, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_write_synthetic_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="count"):
        S.write_synthetic(tmp_path, count=0, seed=0, progress=False)
    with pytest.raises(InputError, match="split"):
        S.write_synthetic(tmp_path, count=1, seed=0, split="test", progress=False)
    with pytest.raises(InputError, match="seed"):
        S.write_synthetic(tmp_path, count=1, seed=-1, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="output folder"):
        S.write_synthetic(blocker / "sub", count=1, seed=0, progress=False)
    assert list(tmp_path.iterdir()) == [blocker]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_write_synthetic_rejects_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            S.write_synthetic(locked, count=1, seed=0, progress=False)
    finally:
        locked.chmod(0o700)
