import math
import re

import numpy as np
import pytest
import torch

from fourview import cameras as C
from fourview.errors import InputError


def test_rig_centres_azimuth_elevation_radius():
    rig = C.orthogonal_rig(elevation_deg=20.0)
    assert [c.azimuth_deg for c in rig] == [0.0, 90.0, 180.0, 270.0]
    el = math.radians(20.0)
    expected = 4.0 * np.array(
        [
            [0.0, math.sin(el), math.cos(el)],  # az 0: in front, on +Z
            [math.cos(el), math.sin(el), 0.0],  # az 90: on +X
            [0.0, math.sin(el), -math.cos(el)],  # az 180: behind
            [-math.cos(el), math.sin(el), 0.0],  # az 270: on -X
        ]
    )
    for cam, e in zip(rig, expected):
        np.testing.assert_allclose(cam.c2w()[:3, 3], e, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(cam.position), 4.0)


@pytest.mark.parametrize("az,el", [(0, 0), (37, 20), (200, -45), (90, 89.9), (10, 90), (10, -90)])
def test_c2w_is_rigid_and_looks_at_origin(az, el):
    c2w = C.Camera(az, el).c2w()
    r = c2w[:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    forward = -r[:, 2]  # OpenGL: the camera looks down its -Z axis
    np.testing.assert_allclose(forward, -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]), atol=1e-12)
    if abs(el) < 90:
        assert r[1, 1] > 0  # image up has a positive world-Y component: right way up


def test_known_point_lands_on_known_pixel():
    res = 256
    cam = C.Camera(0.0, 0.0)  # on +Z looking at the origin, axes aligned with the world
    # The origin projects to the image centre.
    col, row, depth = C.project_points(np.zeros((1, 3)), cam, res)[0]
    assert (col, row, depth) == pytest.approx((128.0, 128.0, 4.0))
    # A point on the top edge of the view frustum at the origin's depth lands on row 0.
    top = 4.0 * math.tan(math.radians(15.0))
    col, row, _ = C.project_points(np.array([[0.0, top, 0.0]]), cam, res)[0]
    assert (col, row) == pytest.approx((128.0, 0.0), abs=1e-9)
    # +X is to the right from the front camera; from az 90 (on +X), +Z (the front) is on the left.
    col, _, _ = C.project_points(np.array([[0.5, 0.0, 0.0]]), cam, res)[0]
    assert col > 128
    col, _, _ = C.project_points(np.array([[0.0, 0.0, 0.5]]), C.Camera(90.0, 0.0), res)[0]
    assert col < 128
    # A point above the origin is nearer the top of the image (smaller row) from an elevated camera too.
    _, row, _ = C.project_points(np.array([[0.0, 0.5, 0.0]]), C.Camera(45.0, 20.0), res)[0]
    assert row < 128


def test_pixel_rays_hit_their_pixel():
    cam = C.Camera(123.0, 31.0)
    o, d = C.pixel_rays(cam, (12, 16))
    pts = o + 3.0 * d  # [H, W, 3]
    proj = C.project_points(pts.reshape(-1, 3), cam, (12, 16)).reshape(12, 16, 3)
    rows, cols = np.meshgrid(np.arange(12) + 0.5, np.arange(16) + 0.5, indexing="ij")
    np.testing.assert_allclose(proj[..., 0], cols, atol=1e-9)
    np.testing.assert_allclose(proj[..., 1], rows, atol=1e-9)


def test_random_cameras_uniform_on_sphere_and_deterministic():
    cams = C.random_cameras(4000, seed=1)
    assert cams == C.random_cameras(4000, seed=1)
    assert cams != C.random_cameras(4000, seed=2)
    y = np.array([c.position[1] for c in cams]) / 4.0
    # Uniform over the sphere <=> height uniform in [-1, 1] (Archimedes): mean 0, variance 1/3.
    assert abs(y.mean()) < 0.03 and abs(y.var() - 1 / 3) < 0.02
    band = C.random_cameras(500, seed=3, elevation_range_deg=(-10.0, 40.0))
    assert all(-10.0 <= c.elevation_deg <= 40.0 for c in band)
    assert all(np.linalg.norm(c.position) == pytest.approx(4.0) for c in band)
    with pytest.raises(ValueError, match=re.escape("elevation range must satisfy -90 <= lo <= hi <= 90")):
        C.random_cameras(3, elevation_range_deg=(50.0, 10.0))


def test_grid_round_trip_and_layout():
    views = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 8, 8)
    grid = C.views_to_grid(views)
    assert grid.shape == (3, 16, 16)
    assert grid[0, 0, 0] == 0 and grid[0, 0, 15] == 1 and grid[0, 15, 0] == 2 and grid[0, 15, 15] == 3
    torch.testing.assert_close(C.grid_to_views(grid), views)
    with pytest.raises(ValueError, match="a 2x2 grid must be square with an even side, got 16x18"):
        C.grid_to_views(torch.zeros(3, 16, 18))


def test_camera_rejects_bad_settings():
    with pytest.raises(ValueError, match=re.escape("elevation must be in [-90, 90] degrees, got 95.0")):
        C.Camera(0.0, 95.0)
    with pytest.raises(ValueError, match="camera radius must be positive, got -1.0"):
        C.Camera(0.0, 0.0, radius=-1.0)


def test_camera_from_c2w_round_trip_and_rejection():
    for cam in C.random_cameras(5, seed=3) + [C.Camera(0.0, 90.0), C.Camera(45.0, -90.0)]:
        back = C.Camera.from_c2w(cam.c2w(), cam.fov_deg)
        np.testing.assert_allclose(back.c2w(), cam.c2w(), atol=1e-9)
    tilted = C.Camera(30.0, 10.0).c2w()
    tilted[:3, :3] = tilted[:3, :3] @ np.array(
        [[math.cos(0.3), -math.sin(0.3), 0], [math.sin(0.3), math.cos(0.3), 0], [0, 0, 1]]
    )  # rolled about its viewing axis
    with pytest.raises(InputError, match="look-at"):
        C.Camera.from_c2w(tilted, 30.0)
