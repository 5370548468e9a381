"""Tests of the prompt-adherence metrics: CIELAB, surface albedo, voxels, canonical meshes, the synthetic test."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from fourview.data import synthetic as S
from fourview.errors import InputError
from fourview.evaluation.adherence import (
    canonical_grids,
    canonical_mesh,
    match_synthetic,
    srgb_to_lab,
    surface_albedo,
    synthetic_adherence,
    voxelize,
)
from fourview.evaluation.geometry import voxel_iou
from fourview.mesh import Material, MeshAsset, MeshPart, linear_to_srgb

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_lab_conversion_matches_reference_values():
    # D65 reference values: white is L*=100, mid grey 50% sRGB is L*=53.39, pure red (53.24, 80.09, 67.20).
    lab = srgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[1], [53.39, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.1)


def test_surface_albedo_matches_a_hand_computed_mean():
    # A unit square whose texture is red on the left 3/4 and blue on the right 1/4, plus a second
    # part (a square twice the area) with no texture and a linear base colour of grey 0.2.
    tex = np.zeros((8, 8, 3), np.float32)
    tex[:, :6] = [1.0, 0.0, 0.0]
    tex[:, 6:] = [0.0, 0.0, 1.0]
    quad = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    textured = MeshPart(quad, faces, Material("a", texture=tex), uv=quad[:, :2].copy())
    plain = MeshPart(quad * np.float32(math.sqrt(2)), faces, Material("b", base_color=(0.2, 0.2, 0.2, 1.0)))
    asset = MeshAsset("test", (textured, plain))
    expected = linear_to_srgb(np.array([0.75 + 2 * 0.2, 2 * 0.2, 0.25 + 2 * 0.2]) / 3.0)
    np.testing.assert_allclose(surface_albedo(asset, samples=200000), expected, atol=0.01)


def test_voxelize_unites_overlapping_parts_and_matches_analytic_volumes():
    ball = trimesh.creation.icosphere(subdivisions=4, radius=0.8)
    occ = voxelize(ball, 32)
    assert occ.shape == (32, 32, 32) and occ.dtype == bool
    cell = (2.0 / 32) ** 3
    assert occ.sum() * cell == pytest.approx(4 / 3 * math.pi * 0.8**3, rel=0.03)
    a = trimesh.creation.box((1.0, 1.0, 1.0))
    b = trimesh.creation.box((1.0, 1.0, 1.0))
    b.apply_translation((0.25, 0.0, 0.0))
    both = trimesh.util.concatenate([a, b])  # overlapping closed parts: ray parity alone gets this wrong
    assert voxelize(both, 32).sum() * cell == pytest.approx(1.25, rel=0.02)
    assert voxel_iou(voxelize(a, 32), voxelize(both, 32)) == pytest.approx(1 / 1.25, rel=0.02)
    grown = voxelize(a, 32, dilation=1)
    assert grown.sum() == pytest.approx(18**3 - 8 * 1 - 12 * 16, abs=0)  # 16^3 cube + faces, no corners/edges
    assert np.all(grown[voxelize(a, 32)])


def test_canonical_meshes_are_normalised_and_pairwise_different():
    grids = {}
    for shape in S.SHAPES:
        mesh = canonical_mesh(shape)
        assert np.linalg.norm(mesh.vertices, axis=1).max() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-5)
        grids[shape] = voxelize(mesh, 32)
        assert grids[shape].sum() > 100, shape
    ious = {(a, b): voxel_iou(grids[a], grids[b]) for a, b in itertools.combinations(S.SHAPES, 2)}
    worst = max(ious, key=ious.get)
    assert ious[worst] < 0.9, f"{worst} overlap with voxel IoU {ious[worst]:.3f}"
    with pytest.raises(InputError, match="unknown synthetic shape 'spaceship'"):
        canonical_mesh("spaceship")


def test_canonical_mesh_is_the_default_build():
    asset = S.build_asset(S.SyntheticSpec("lamp", "red"))
    verts = np.concatenate([p.verts for p in asset.parts]).astype(np.float64)
    mesh = canonical_mesh("lamp")
    assert np.allclose(
        np.sort(np.unique(np.round(verts, 5), axis=0), axis=0),
        np.sort(np.unique(np.round(mesh.vertices, 5), axis=0), axis=0),
        atol=2e-5,
    )


@pytest.fixture(scope="module")
def canon16() -> dict[str, np.ndarray]:
    return canonical_grids(16)


def test_the_default_builds_match_their_own_colour_and_shape(canon16):
    assert set(canon16) == set(S.SHAPES) and all(g.shape == (16, 16, 16) for g in canon16.values())
    for shape, colour in (("lamp", "red"), ("mug", "blue"), ("bed", "white")):
        found = match_synthetic(S.build_asset(S.SyntheticSpec(shape, colour)), canon16, 16)
        assert (found.colour, found.shape) == (colour, shape)
        assert found.ious[shape] == pytest.approx(1.0)  # the canonical mesh is the default build
        assert max(v for k, v in found.ious.items() if k != shape) < 0.9


def test_synthetic_adherence_tests_the_match_against_the_prompt(canon16):
    mesh = S.build_asset(S.SyntheticSpec("mug", "blue"))
    found = match_synthetic(mesh, canon16, 16)
    hit = synthetic_adherence(mesh, "mug", "blue", canon16, 16)
    assert (hit.colour, hit.shape, hit.colour_hit, hit.shape_hit) == ("blue", "mug", True, True)
    assert hit.best_iou == hit.prompt_shape_iou == found.ious["mug"]
    assert hit.albedo_srgb == tuple(round(float(x), 4) for x in found.albedo_srgb)
    miss = synthetic_adherence(mesh, "lamp", "red", canon16, 16)
    assert (miss.colour, miss.shape, miss.colour_hit, miss.shape_hit) == ("blue", "mug", False, False)
    assert miss.prompt_shape_iou == found.ious["lamp"] < miss.best_iou


def test_the_adherence_benchmarks_rows_are_the_match_rounded(monkeypatch, canon16):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "bench_prompt_adherence", raising=False)
    bench = pytest.importorskip("bench_prompt_adherence")
    spec = S.sample_spec(3, "heldout")
    mesh = S.build_asset(spec)
    found = match_synthetic(mesh, canon16, 16)
    row = bench.score(mesh, canon16, 16, 0)
    assert (row["colour"], row["shape"]) == (found.colour, found.shape)
    assert row["best_iou"] == round(found.ious[found.shape], 4)
    assert row["ious"] == {k: round(v, 4) for k, v in found.ious.items()}
    assert row["albedo_srgb"] == list(synthetic_adherence(mesh, spec.shape, spec.colour, canon16, 16).albedo_srgb)
