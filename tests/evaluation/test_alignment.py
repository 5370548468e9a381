"""Tests of the SF3D/SPAR3D alignment: normalisation, rotation candidates, similarity fits, a known pose recovered."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from fourview.errors import InputError
from fourview.evaluation.alignment import (
    AlignmentConfig,
    align_points,
    axis_rotations,
    candidate_rotations,
    similarity_fit,
    unit_box_normaliser,
)
from fourview.evaluation.geometry import chamfer_distance


def _asymmetric_mesh() -> trimesh.Trimesh:
    """A bar, a post at one end, a ball and a peg: no rotation maps it onto itself."""
    bar = trimesh.creation.box((1.0, 0.3, 0.4))
    post = trimesh.creation.box((0.25, 0.8, 0.4))
    post.apply_translation((0.375, 0.55, 0.0))
    ball = trimesh.creation.icosphere(2, 0.18)
    ball.apply_translation((-0.3, 0.3, 0.15))
    peg = trimesh.creation.cylinder(0.08, 0.5)
    peg.apply_translation((-0.4, -0.1, 0.35))
    return trimesh.util.concatenate([bar, post, ball, peg])


def _sample(mesh: trimesh.Trimesh, seed: int) -> np.ndarray:
    return trimesh.sample.sample_surface(mesh, 10_000, seed=seed)[0]


def test_unit_box_normaliser_centres_the_box_and_makes_its_longest_side_one():
    points = np.array([[0.0, 1.5, 2.75], [2.0, 2.5, 3.25], [1.0, 2.0, 3.0]])  # box 2 x 1 x 0.5 about (1, 2, 3)
    m = unit_box_normaliser(points)
    moved = points @ m[:3, :3].T + m[:3, 3]
    np.testing.assert_allclose(moved.min(axis=0), [-0.5, -0.25, -0.125])
    np.testing.assert_allclose(moved.max(axis=0), [0.5, 0.25, 0.125])
    with pytest.raises(InputError, match="points coincide"):
        unit_box_normaliser(np.ones((4, 3)))


def test_candidates_are_distinct_proper_rotations():
    axes = axis_rotations()
    candidates = candidate_rotations(6)
    assert axes.shape == (24, 3, 3) and candidates.shape == (144, 3, 3)
    for rotations in (axes, candidates):
        np.testing.assert_allclose(
            rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-12
        )
        np.testing.assert_allclose(np.linalg.det(rotations), 1.0)
        assert len(np.unique(np.round(rotations.reshape(len(rotations), -1), 6), axis=0)) == len(rotations)


def test_similarity_fit_recovers_an_exact_similarity():
    src = np.random.default_rng(1).normal(size=(50, 3))
    rot = Rotation.random(random_state=2).as_matrix()
    dst = 0.7 * src @ rot.T + np.array([1.0, -2.0, 0.5])
    m = similarity_fit(src, dst)
    np.testing.assert_allclose(m[:3, :3], 0.7 * rot, atol=1e-10)
    np.testing.assert_allclose(m[:3, 3], [1.0, -2.0, 0.5], atol=1e-10)
    np.testing.assert_allclose(similarity_fit(src, dst, scale=False)[:3, :3], rot, atol=1e-10)


def test_alignment_recovers_a_known_rotation_and_scale():
    mesh = _asymmetric_mesh()
    known = np.eye(4)
    known[:3, :3] = 1.3 * Rotation.random(random_state=5).as_matrix()
    known[:3, 3] = [0.2, -0.1, 0.3]
    moved = mesh.copy()
    moved.apply_transform(known)
    gt, pred = _sample(mesh, 1), _sample(moved, 2)  # independent samples: no point pairs to exploit
    result = align_points(pred, gt)
    residual = result.transform @ known  # the identity when the alignment undoes the known pose
    scale = float(np.cbrt(np.linalg.det(residual[:3, :3])))
    angle = np.degrees(np.arccos(np.clip((np.trace(residual[:3, :3] / scale) - 1) / 2, -1, 1)))
    assert angle < 0.5 and scale == pytest.approx(1.0, abs=0.005)
    np.testing.assert_allclose(residual[:3, 3], 0.0, atol=0.005)
    # Near 0: no further than two independent samples of the same surface are from each other.
    noise = chamfer_distance(_sample(mesh, 3), gt) * result.normaliser[0, 0]
    assert chamfer_distance(result.pred_points, result.gt_points) == pytest.approx(result.chamfer)
    assert result.chamfer < 1.05 * noise
    np.testing.assert_allclose(result.gt_points, gt @ result.normaliser[:3, :3].T + result.normaliser[:3, 3])


def test_alignment_without_scale_keeps_the_normalised_size():
    mesh = _asymmetric_mesh()
    result = align_points(_sample(mesh, 1), _sample(mesh, 2), AlignmentConfig(scale=False))
    assert result.scale == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(InputError, match="yaw_steps must be >= 1"):
        AlignmentConfig(yaw_steps=0)
