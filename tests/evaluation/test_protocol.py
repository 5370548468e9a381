"""Tests of the GSO protocol's cameras."""

from __future__ import annotations

import numpy as np

from fourview.cameras import orthogonal_rig
from fourview.evaluation.protocol import input_cameras, novel_cameras


def test_inputs_are_the_rig_at_elevation_20():
    cams = input_cameras()
    assert cams == orthogonal_rig(20.0)
    assert [c.azimuth_deg for c in cams] == [0.0, 90.0, 180.0, 270.0]


def test_novel_views_are_24_offset_from_the_inputs_at_the_rigs_radius_and_fov():
    rig, cams = input_cameras()[0], novel_cameras()
    assert len(cams) == 24 and len({(c.azimuth_deg, c.elevation_deg) for c in cams}) == 24
    assert sorted({c.elevation_deg for c in cams}) == [0.0, 15.0, 30.0]
    assert sorted({c.azimuth_deg for c in cams}) == [22.5 + 45.0 * k for k in range(8)]
    offsets = [min(abs((c.azimuth_deg - a + 180.0) % 360.0 - 180.0) for a in (0, 90, 180, 270)) for c in cams]
    np.testing.assert_allclose(offsets, 22.5)  # halfway between inputs and beside them
    assert all(c.radius == rig.radius and c.fov_deg == rig.fov_deg for c in cams)
