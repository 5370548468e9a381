"""Tests of the geometry metrics: surface points, Chamfer distance, F-score, occupancy and volume IoU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from fourview.errors import InputError
from fourview.evaluation.geometry import (
    cell_centres,
    chamfer_distance,
    geometry_scores,
    occupancy_grid,
    surface_points,
    volume_iou,
    voxel_iou,
)
from fourview.mesh import Material, MeshAsset, MeshPart


def _asset(mesh: trimesh.Trimesh, name: str = "mesh") -> MeshAsset:
    part = MeshPart(mesh.vertices.astype(np.float32), mesh.faces.astype(np.int64), Material(name))
    return MeshAsset(name, (part,))


def _sphere_points(radius: float, n: int = 4000) -> np.ndarray:
    directions = np.random.default_rng(0).normal(size=(n, 3))
    return radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)


def test_chamfer_between_concentric_spheres_is_the_radius_difference():
    # Points on two concentric spheres along the same directions: each point's nearest
    # neighbour on the other sphere is its radial partner, 0.08 away.
    inner, outer = _sphere_points(0.5), _sphere_points(0.58)
    assert chamfer_distance(inner, outer) == pytest.approx(0.08, abs=1e-9)
    scores = geometry_scores(outer, inner, thresholds=(0.05, 0.1, 0.2))
    assert scores.chamfer == pytest.approx(0.08, abs=1e-9)
    assert scores.fscore == {0.05: 0.0, 0.1: 1.0, 0.2: 1.0}  # 1 above the offset, 0 below
    assert scores.precision[0.05] == 0.0 and scores.recall[0.1] == 1.0


def test_fscore_counts_the_share_of_points_within_the_threshold():
    gt = np.zeros((4, 3))
    gt[:, 0] = [0.0, 1.0, 2.0, 3.0]
    pred = gt.copy()
    pred[3, 1] = 0.5  # one of four points 0.5 off: precision 3/4 and recall 3/4 at 0.1
    scores = geometry_scores(pred, gt, thresholds=(0.1, 1.0))
    assert scores.precision[0.1] == scores.recall[0.1] == 0.75
    assert scores.fscore[0.1] == pytest.approx(0.75) and scores.fscore[1.0] == 1.0
    assert scores.chamfer == pytest.approx(0.5 * (0.5 / 4 + 0.5 / 4))


def test_geometry_scores_refuse_empty_sets_and_bad_thresholds():
    points = np.zeros((3, 3))
    with pytest.raises(InputError, match="points on both sides"):
        geometry_scores(points[:0], points)
    with pytest.raises(InputError, match="thresholds must be positive"):
        geometry_scores(points, points, thresholds=(0.1, 0.0))


def test_surface_points_are_seeded_on_the_surface_and_spread_by_area():
    small = trimesh.creation.box((1.0, 1.0, 1.0))
    big = trimesh.creation.box((math.sqrt(3.0),) * 3)  # three times the area
    big.apply_translation((5.0, 0.0, 0.0))
    asset = _asset(trimesh.util.concatenate([small, big]))
    points = surface_points(asset, 10_000, seed=3)
    assert points.shape == (10_000, 3) and points.dtype == np.float64
    np.testing.assert_array_equal(points, surface_points(asset, 10_000, seed=3))
    assert not np.array_equal(points, surface_points(asset, 10_000, seed=4))
    on_big = points[:, 0] > 2.5
    assert on_big.mean() == pytest.approx(0.75, abs=0.02)  # binomial standard deviation 0.004
    on_face = np.abs(points[~on_big]).max(axis=1)
    np.testing.assert_allclose(on_face, 0.5, atol=1e-6)


def test_surface_points_refuse_an_asset_without_area():
    flat = MeshPart(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]]), Material("m"))
    with pytest.raises(InputError, match="no surface area"):
        surface_points(MeshAsset("flat", (flat,)), 10)


def test_occupancy_of_a_box_and_a_sphere_matches_their_volumes():
    box = trimesh.creation.box((1.0, 1.0, 1.0))  # faces on cell boundaries at 64^3 over [-1, 1]^3
    occ = occupancy_grid(box.vertices, box.faces, 64)
    assert occ.shape == (64, 64, 64) and occ.dtype == bool
    assert occ.sum() == 32**3 and occ[16:48, 16:48, 16:48].all()
    ball = trimesh.creation.icosphere(subdivisions=5, radius=0.7)
    cell = (2.0 / 64) ** 3
    assert occupancy_grid(ball.vertices, ball.faces, 64).sum() * cell == pytest.approx(ball.volume, rel=0.01)


def test_occupancy_is_indexed_x_y_z():
    box = trimesh.creation.box((0.5, 1.0, 1.5))
    box.apply_translation((0.3, -0.2, 0.1))
    c = cell_centres(64)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    expected = (np.abs(x - 0.3) < 0.25) & (np.abs(y + 0.2) < 0.5) & (np.abs(z - 0.1) < 0.75)
    np.testing.assert_array_equal(occupancy_grid(box.vertices, box.faces, 64), expected)


def test_occupancy_survives_a_hole_in_the_surface():
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    closed = occupancy_grid(box.vertices, box.faces, 32)
    open_top = box.faces[box.face_normals[:, 1] < 0.5]  # the whole +Y face removed: not watertight
    np.testing.assert_array_equal(occupancy_grid(box.vertices, open_top, 32), closed)
    ball = trimesh.creation.icosphere(subdivisions=4, radius=0.7)
    full = occupancy_grid(ball.vertices, ball.faces, 32)
    keep = np.ones(len(ball.faces), bool)
    keep[np.random.default_rng(0).choice(len(keep), 100, replace=False)] = False  # 100 scattered holes
    assert voxel_iou(occupancy_grid(ball.vertices, ball.faces[keep], 32), full) > 0.99


def test_volume_iou_of_two_offset_cubes_is_the_analytic_value():
    a = trimesh.creation.box((1.0, 1.0, 1.0))
    b = trimesh.creation.box((1.0, 1.0, 1.0))
    b.apply_translation((0.25, 0.0, 0.0))  # 8 cells of 1/32: overlap 0.75, union 1.25
    assert volume_iou(_asset(a), _asset(b), resolution=64) == pytest.approx(0.75 / 1.25, abs=1e-12)
    assert volume_iou(_asset(a), _asset(a)) == 1.0
    assert voxel_iou(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool)) == 0.0
