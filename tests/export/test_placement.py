import numpy as np
import pytest

from fourview.errors import InputError
from fourview.export.placement import place_mesh
from fourview.mesh import MeshAsset, MeshPart


def box(lo, hi):
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], np.float32)
    faces = np.array([[0, 1, 2], [1, 3, 2], [4, 6, 5], [5, 6, 7]])
    return MeshPart(corners, faces)


def test_height_and_pivots_move_every_level_together():
    mesh = MeshAsset(
        "m",
        (box((-0.2, -0.5, 0.1), (0.4, 0.3, 0.5)),),
        lods=(MeshAsset("m1", (box((-0.2, -0.5, 0.1), (0.4, 0.3, 0.5)),)),),
    )
    bottom = place_mesh(mesh, height=2.0, pivot="bottom", target="game")
    lo, hi = bottom.bounds()
    np.testing.assert_allclose(hi[1] - lo[1], 2.0, rtol=1e-6)
    np.testing.assert_allclose([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(bottom.lods[0].bounds(), bottom.bounds(), atol=1e-6)
    assert bottom.placement.scale == pytest.approx(2.5) and bottom.lods[0].placement == bottom.placement
    assert bottom.placement.extras()["target"] == "game" and bottom.placement.extras()["units"] == "metres"
    center = place_mesh(mesh, pivot="center")
    np.testing.assert_allclose(center.bounds().mean(axis=0), 0.0, atol=1e-6)
    assert center.placement.height == pytest.approx(0.8) and center.placement.scale == 1.0
    np.testing.assert_allclose(place_mesh(mesh).bounds(), mesh.bounds())  # "object": as it was


@pytest.mark.parametrize("height", [-1.0, 0.0, float("nan"), float("inf")])
def test_bad_heights(height):
    with pytest.raises(InputError, match="height must be a positive number of metres"):
        place_mesh(MeshAsset("m", (box((0, 0, 0), (1, 1, 1)),)), height=height)
