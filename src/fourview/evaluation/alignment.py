"""The SF3D/SPAR3D alignment protocol: normalise both shapes, search rotations, refine by ICP.

Geometry metrics in the fixed object frame measure a reconstruction where our contract puts it.
Other systems output meshes in frames of their own (another up axis, another front, another
scale), so papers align before they score. This module does it on surface points:

1. Normalise each point set on its own (`unit_box_normaliser`): centre its axis-aligned bounding
   box at the origin and scale it uniformly so that the box's longest side is 1. Scores computed
   after alignment are in this frame of the ground truth (thresholds are fractions of its
   longest side).
2. Rotation search. The candidates are the rotations of `candidate_rotations` (the 24 rotations
   that map axes onto axes, each followed by yaw steps about +Y: 24 x 6 = 144 at the default 15
   degrees), which catch a reconstruction in another axis convention, and the 24 rotations that
   take the prediction's principal axes onto the ground truth's in any order and sign
   (`principal_axis_rotations`), which catch an arbitrary rotation of a shape whose principal
   axes are distinct. Each turns the prediction about its centroid onto the ground truth's
   centroid, scaled so that both have the same RMS distance from the centroid (a rotated
   shape's bounding box is not the same shape's), and is scored by the Chamfer distance on a
   seeded subsample of both sets.
3. ICP. From each of the best few candidates, point-to-point ICP on the subsamples refines a
   similarity (rotation, translation and, by default, a uniform scale): each step pairs every
   point of either set with its nearest neighbour in the other (both directions, like the
   Chamfer distance) and solves the least-squares similarity of the pairs in closed form
   (Umeyama 1991). The best result is refined again by ICP on all the points.

`align_points` returns the similarity from the prediction's input frame to the ground truth's
and both point sets in the normalised frame.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from fourview.errors import InputError
from fourview.evaluation.geometry import chamfer_distance


@dataclass(frozen=True)
class AlignmentConfig:
    """Settings of `align_points`.

    Attributes:
        yaw_steps: yaw rotations about +Y after each axis-aligned rotation, 90 / ``yaw_steps`` degrees apart.
        search_points: points of each set (a seeded subsample) that score the rotation candidates.
        refine_candidates: how many of the best-scoring candidates ICP refines.
        icp_iterations: most ICP steps per candidate.
        icp_tolerance: ICP stops when the Chamfer distance improves by less than this (normalised units).
        scale: whether ICP also fits a uniform scale.
        seed: seed of the subsampling.
    """

    yaw_steps: int = 6
    search_points: int = 1000
    refine_candidates: int = 8
    icp_iterations: int = 40
    icp_tolerance: float = 1e-6
    scale: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("yaw_steps", "search_points", "refine_candidates", "icp_iterations"):
            if getattr(self, name) < 1:
                raise InputError(f"alignment {name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Alignment:
    """The result of `align_points`.

    Attributes:
        transform: [4, 4] similarity taking the prediction's input points onto the ground truth's input frame.
        normaliser: [4, 4] the ground truth's normalisation (input frame -> the frame scores are computed in).
        pred_points: [N, 3] the prediction's points aligned, in the normalised frame.
        gt_points: [M, 3] the ground truth's points in the normalised frame.
        chamfer: Chamfer distance between the two, normalised frame.
        scale: the similarity's scale (normalised frames: ground truth over prediction after normalising).
    """

    transform: np.ndarray
    normaliser: np.ndarray
    pred_points: np.ndarray
    gt_points: np.ndarray
    chamfer: float
    scale: float


def unit_box_normaliser(points: np.ndarray) -> np.ndarray:
    """[4, 4] similarity that centres the points' bounding box at the origin and makes its longest side 1.

    Raises:
        InputError: no points, or all points coincide.
    """
    if len(points) == 0:
        raise InputError("cannot normalise an empty point set")
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = float((hi - lo).max())
    if not side > 0 or not math.isfinite(side):
        raise InputError("cannot normalise a point set whose points coincide")
    matrix = np.eye(4)
    matrix[:3, :3] /= side
    matrix[:3, 3] = -0.5 * (lo + hi) / side
    return matrix


def axis_rotations() -> np.ndarray:
    """[24, 3, 3] the rotations that map the coordinate axes onto coordinate axes (signed permutations, det +1)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return np.stack(out)


def candidate_rotations(yaw_steps: int = 6) -> np.ndarray:
    """[24 * yaw_steps, 3, 3] each axis-aligned rotation followed by yaws about +Y of 0, 90/yaw_steps, ... degrees."""
    yaws = []
    for k in range(yaw_steps):
        a = math.radians(90.0 * k / yaw_steps)
        c, s = math.cos(a), math.sin(a)
        yaws.append(np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]))
    return np.stack([y @ r for r in axis_rotations() for y in yaws])


def principal_axis_rotations(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[24, 3, 3] the rotations taking the principal axes of ``src`` [N, 3] onto those of ``dst`` [M, 3].

    The axes are matched in every order and sign that makes a proper rotation.
    """
    axes = []
    for points in (src, dst):
        centred = points - points.mean(axis=0)
        axes.append(np.linalg.eigh(centred.T @ centred)[1])  # [3, 3] columns: the principal axes
    v_src, v_dst = axes
    if np.linalg.det(v_src) * np.linalg.det(v_dst) < 0:
        v_dst = v_dst * np.array([1.0, 1.0, -1.0])  # keep every product a proper rotation
    return np.stack([v_dst @ r @ v_src.T for r in axis_rotations()])


def similarity_fit(src: np.ndarray, dst: np.ndarray, scale: bool = True) -> np.ndarray:
    """[4, 4] least-squares similarity (or rigid motion) taking paired points ``src`` [K, 3] onto ``dst`` [K, 3].

    Umeyama's closed form: the rotation from the SVD of the cross-covariance, with a reflection
    excluded; the scale (when fitted) from the singular values over the source's variance.
    """
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(xd.T @ xs / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rot = u @ np.diag(d) @ vt
    var = float((xs**2).sum() / len(src))
    s = float((sigma * d).sum() / var) if scale and var > 0 else 1.0
    matrix = np.eye(4)
    matrix[:3, :3] = s * rot
    matrix[:3, 3] = mu_d - s * rot @ mu_s
    return matrix


def icp(
    src: np.ndarray,
    dst: np.ndarray,
    start: np.ndarray,
    iterations: int = 40,
    tolerance: float = 1e-6,
    scale: bool = True,
    dst_tree: cKDTree | None = None,
) -> tuple[np.ndarray, float]:
    """Point-to-point ICP with pairs in both directions; returns ([4, 4] transform of ``src``, its Chamfer distance).

    Args:
        src: [N, 3] points to move.
        dst: [M, 3] points to move them onto.
        start: [4, 4] initial transform of ``src``.
        iterations: most steps.
        tolerance: stop when the Chamfer distance improves by less than this.
        scale: fit a uniform scale too.
        dst_tree: a KD-tree of ``dst``, when the caller has one.
    """
    tree = cKDTree(dst) if dst_tree is None else dst_tree
    matrix, best_matrix, best = start, start, math.inf
    for _ in range(iterations):
        moved = _apply(matrix, src)
        d_sd, i_sd = tree.query(moved)  # [N] each moved source point's nearest destination point
        d_ds, i_ds = cKDTree(moved).query(dst)  # [M] each destination point's nearest moved source point
        error = 0.5 * float(d_sd.mean() + d_ds.mean())
        improved = error < best - tolerance
        if error < best:
            best_matrix, best = matrix, error
        if not improved:
            break
        pairs_src = np.concatenate([src, src[i_ds]])
        pairs_dst = np.concatenate([dst[i_sd], dst])
        matrix = similarity_fit(pairs_src, pairs_dst, scale)
    return best_matrix, best


def align_points(pred: np.ndarray, gt: np.ndarray, config: AlignmentConfig | None = None) -> Alignment:
    """Align predicted surface points onto the ground truth's by the protocol of the module docstring.

    Args:
        pred: [N, 3] points on the prediction, its own frame.
        gt: [M, 3] points on the ground truth, its own frame.
        config: settings (defaults: `AlignmentConfig()`).

    Raises:
        InputError: an empty or degenerate point set.
    """
    cfg = AlignmentConfig() if config is None else config
    norm_p, norm_g = unit_box_normaliser(pred), unit_box_normaliser(gt)
    p, g = _apply(norm_p, pred), _apply(norm_g, gt)
    rng = np.random.default_rng(cfg.seed)
    p_few = p[rng.permutation(len(p))[: cfg.search_points]]
    g_few = g[rng.permutation(len(g))[: cfg.search_points]]
    g_few_tree = cKDTree(g_few)
    c_p, c_g = p.mean(axis=0), g.mean(axis=0)
    # A rotated shape's bounding box is not the same shape's: start from matching RMS radii instead.
    size = _rms_radius(g, c_g) / _rms_radius(p, c_p) if cfg.scale else 1.0
    scores, starts = [], []
    rotations = np.concatenate([candidate_rotations(cfg.yaw_steps), principal_axis_rotations(p, g)])
    for rot in rotations:
        start = np.eye(4)
        start[:3, :3] = size * rot
        start[:3, 3] = c_g - size * rot @ c_p  # about the prediction's centroid, onto the ground truth's
        scores.append(chamfer_distance(_apply(start, p_few), g_few))
        starts.append(start)
    best_start, best_chamfer = starts[0], math.inf
    for k in np.argsort(scores, kind="stable")[: cfg.refine_candidates]:
        matrix, error = icp(p_few, g_few, starts[k], cfg.icp_iterations, cfg.icp_tolerance, cfg.scale, g_few_tree)
        if error < best_chamfer:
            best_start, best_chamfer = matrix, error
    best_matrix, best_chamfer = icp(p, g, best_start, cfg.icp_iterations, cfg.icp_tolerance, cfg.scale)
    transform = np.linalg.inv(norm_g) @ best_matrix @ norm_p
    scale = float(np.cbrt(np.linalg.det(best_matrix[:3, :3])))
    return Alignment(transform, norm_g, _apply(best_matrix, p), g, best_chamfer, scale)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[N, 3] ``points`` mapped by the [4, 4] affine ``matrix``."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _rms_radius(points: np.ndarray, centre: np.ndarray) -> float:
    return float(np.sqrt(((points - centre) ** 2).sum(axis=1).mean()))
