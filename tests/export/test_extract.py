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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resolution": 1}, "extraction resolution must be an integer >= 2, got 1"),
        ({"resolution": 2.5}, "extraction resolution must be an integer >= 2, got 2.5"),
        ({"method": "voxels"}, "unknown extraction method 'voxels'"),
        ({"chunk": 0}, "chunk must be >= 1, got 0"),
    ],
)
def test_bad_settings_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        extract_mesh(SphereField(), **{"resolution": 8, **kwargs})


# ---------------------------------------------------------------------------------------------
# Coarse-to-fine evaluation gives the dense grid's mesh


class CountingField:
    """Wraps a field and counts the points its SDF is queried at."""

    def __init__(self, field):
        self.field, self.points = field, 0

    def sdf(self, xyz):
        self.points += len(xyz)
        return self.field.sdf(xyz)

    def color(self, xyz):
        return self.field.color(xyz)


class BoxField(ConstantField):
    """An axis-aligned box (exact SDF) with half sizes ``half`` centred at ``center``."""

    def __init__(self, half, center=(0.0, 0.0, 0.0)):
        self.half, self.center = torch.tensor(half), torch.tensor(center)

    def sdf(self, xyz):
        q = (xyz - self.center).abs() - self.half
        return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


class UnionField(ConstantField):
    def __init__(self, *fields):
        self.fields = fields

    def sdf(self, xyz):
        return torch.stack([f.sdf(xyz) for f in self.fields]).min(dim=0).values


def assert_same_mesh(a, b):
    assert a.faces.shape == b.faces.shape and len(a.faces) > 0
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_array_equal(a.verts, b.verts)


BAND_FIELDS = {
    "sphere": SphereField(radius=0.6),
    "off-centre sphere": SphereField(radius=0.3, center=(0.4, -0.2, 0.1)),
    "torus": TorusField(),
    "cut by the cube": SphereField(radius=1.2),
    "box": BoxField((0.5, 0.3, 0.7), center=(0.05, -0.1, 0.0)),
    # A plate about one grid cell thick, a rod 1.4 cells thick, a small sphere off to the side.
    "thin parts": UnionField(
        BoxField((0.7, 0.022, 0.6), center=(0.0, 0.013, 0.0)),
        BoxField((0.03, 0.8, 0.03), center=(0.51, 0.0, -0.37)),
        SphereField(radius=0.12, center=(-0.6, 0.6, 0.6)),
    ),
}


@pytest.mark.parametrize("coarse_factor", [2, 4])
@pytest.mark.parametrize("name", list(BAND_FIELDS))
def test_coarse_to_fine_gives_the_dense_mesh(name, coarse_factor):
    field = BAND_FIELDS[name]
    dense = extract_mesh(field, resolution=49, coarse_factor=1)
    counted = CountingField(field)
    band = extract_mesh(counted, resolution=49, coarse_factor=coarse_factor)
    assert_same_mesh(band, dense)
    assert counted.points < 0.6 * 49**3  # the band pass ran (not the dense fallback)


def test_coarse_to_fine_with_a_level_and_an_uneven_last_coarse_cell():
    field = SphereField(radius=0.5)
    dense = extract_mesh(field, resolution=46, level=0.1, coarse_factor=1)  # 45 cells: 4 does not divide it
    assert_same_mesh(extract_mesh(field, resolution=46, level=0.1, coarse_factor=4), dense)


def test_coarse_to_fine_on_a_random_triplane_field():
    from fourview.recon.decoder import DecoderConfig, TriplaneDecoder, TriplaneField

    torch.manual_seed(3)
    decoder = TriplaneDecoder(DecoderConfig(hidden_channels=16, hidden_layers=2, geometry="sdf"), plane_channels=4)
    field = TriplaneField(decoder.eval(), torch.randn(3, 4, 6, 6))
    with torch.no_grad():
        grid = sample_sdf_grid(field, 41)
        field = _Offset(field, float(np.median(grid)))  # about half the cube inside: a large surface
        dense = extract_mesh(field, resolution=41, coarse_factor=1)
        counted = CountingField(field)
        band = extract_mesh(counted, resolution=41, coarse_factor=2)
    assert len(dense.faces) > 1000
    assert band.faces.shape == dense.faces.shape
    np.testing.assert_array_equal(band.faces, dense.faces)
    np.testing.assert_allclose(band.verts, dense.verts, atol=1e-6)  # batch-size-dependent rounding at most
    assert counted.points < 41**3


class _Offset(ConstantField):
    def __init__(self, field, offset):
        self.field, self.offset = field, offset

    def sdf(self, xyz):
        return self.field.sdf(xyz) - self.offset


def test_surface_between_the_coarse_points_falls_back_to_the_dense_grid():
    # A sphere of radius 1.2 cells centred inside one coarse cell: no coarse point is inside it.
    cell = 2.0 / 32
    field = SphereField(radius=1.2 * cell, center=(-1 + 9.9 * cell, -1 + 10.1 * cell, -1 + 10.0 * cell))
    dense = extract_mesh(field, resolution=33, coarse_factor=1)
    assert_same_mesh(extract_mesh(field, resolution=33, coarse_factor=8), dense)


def test_coarse_to_fine_checks_values_and_settings():
    class NanOutside(ConstantField):
        def sdf(self, xyz):
            s = xyz.norm(dim=-1) - 0.5
            return torch.where(xyz.norm(dim=-1) > 1.6, float("nan"), s)  # NaN at the cube's corners

    with pytest.raises(InputError, match="non-finite"):
        extract_mesh(NanOutside(0.0), resolution=17, coarse_factor=2)
    with pytest.raises(InputError, match="field has no surface.*positive"):
        extract_mesh(ConstantField(1.0), resolution=17, coarse_factor=2)
    for bad in (0, 1.5):
        with pytest.raises(InputError, match="coarse factor"):
            extract_mesh(SphereField(), resolution=17, coarse_factor=bad)
