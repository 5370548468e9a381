import math

import numpy as np
import pytest
import torch
import trimesh

from fourview.errors import InputError
from fourview.export.extract import extract_mesh, sample_sdf_grid
from fourview.recon.fields import SphereField, TorusField


class ConstantField:
    """An SDF that is the same everywhere (no surface)."""

    def __init__(self, value: float):
        self.value = value

    def sdf(self, xyz):
        return torch.full(xyz.shape[:-1], self.value)

    def color(self, xyz):
        return torch.full((*xyz.shape[:-1], 3), 0.5)


def as_trimesh(out) -> trimesh.Trimesh:
    return trimesh.Trimesh(out.verts, out.faces, process=False)


def test_grid_layout_is_x_major_over_the_cube():
    class XField(ConstantField):
        def sdf(self, xyz):
            return xyz[:, 0] + 10 * xyz[:, 1] + 100 * xyz[:, 2]

    grid = sample_sdf_grid(XField(0.0), 5, chunk=7)  # chunk smaller than one slice
    lin = np.linspace(-1, 1, 5)
    expected = lin[:, None, None] + 10 * lin[None, :, None] + 100 * lin[None, None, :]
    np.testing.assert_allclose(grid, expected, atol=1e-4)


@pytest.mark.parametrize("method,resolution", [("marching_cubes", 48), ("dmtet", 32)])
def test_sphere_is_closed_outward_and_on_the_surface(method, resolution):
    out = extract_mesh(SphereField(radius=0.6), resolution=resolution, method=method)
    assert out.verts.dtype == np.float32 and out.faces.dtype == np.int64
    mesh = as_trimesh(out)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.euler_number == 2
    assert mesh.volume > 0  # outward normals
    assert mesh.volume == pytest.approx(4.0 / 3.0 * math.pi * 0.6**3, rel=0.02)
    cell = 2.0 / (resolution - 1)
    radii = np.linalg.norm(out.verts, axis=1)
    assert np.abs(radii - 0.6).max() < cell


def test_torus_has_genus_one():
    mesh = as_trimesh(extract_mesh(TorusField(), resolution=48))
    assert mesh.is_watertight and mesh.euler_number == 0 and mesh.volume > 0


def test_off_centre_field_lands_where_the_field_is():
    out = extract_mesh(SphereField(radius=0.3, center=(0.4, -0.2, 0.1)), resolution=40)
    centre = 0.5 * (out.verts.min(axis=0) + out.verts.max(axis=0))
    np.testing.assert_allclose(centre, [0.4, -0.2, 0.1], atol=0.02)


def test_surface_cut_by_the_cube_is_closed_at_its_faces():
    out = extract_mesh(SphereField(radius=1.2), resolution=24)
    mesh = as_trimesh(out)
    assert mesh.is_watertight and mesh.volume > 0
    assert np.abs(out.verts).max() <= 1.0 + 1e-5


def test_level_offsets_the_surface():
    out = extract_mesh(SphereField(radius=0.5), resolution=48, level=0.1)
    assert np.linalg.norm(out.verts, axis=1).mean() == pytest.approx(0.6, abs=0.01)


@pytest.mark.parametrize("value,word", [(1.0, "positive"), (-1.0, "negative")])
def test_field_without_surface_is_an_input_error(value, word):
    with pytest.raises(InputError, match=f"field has no surface.*{word}"):
        extract_mesh(ConstantField(value), resolution=8)


def test_dmtet_without_surface_is_an_input_error():
    with pytest.raises(InputError, match="field has no surface"):
        extract_mesh(ConstantField(1.0), resolution=8, method="dmtet")


def test_non_finite_sdf_is_an_input_error():
    class NanField(ConstantField):
        def sdf(self, xyz):
            s = xyz.norm(dim=-1) - 0.5
            s[0] = float("nan")
            return s

    with pytest.raises(InputError, match="non-finite"):
        extract_mesh(NanField(0.0), resolution=8)


@pytest.mark.parametrize("kwargs", [{"resolution": 1}, {"resolution": 2.5}, {"method": "voxels"}, {"chunk": 0}])
def test_bad_settings_are_input_errors(kwargs):
    with pytest.raises(InputError):
        extract_mesh(SphereField(), **{"resolution": 8, **kwargs})
