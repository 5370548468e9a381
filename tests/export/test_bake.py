import numpy as np
import pytest
import torch
import trimesh

from fourview.errors import InputError
from fourview.export.bake import bake_texture, bake_vertex_colors, check_texture_size
from fourview.recon.fields import SphereField

pytest.importorskip("xatlas")

from fourview.export.uv import UVConfig, unwrap_uv  # noqa: E402


class AffineColorField:
    """Colour affine in position, so bilinear filtering of correct texels reproduces it exactly."""

    def sdf(self, xyz):
        return xyz.norm(dim=-1) - 0.6

    def color(self, xyz):
        return 0.5 + 0.4 * torch.stack([xyz[:, 0], xyz[:, 1], -xyz[:, 2]], dim=-1) / 0.6


def bilinear(texture, uv):
    """Sample a row-0-at-top texture at OBJ-convention uv (texel centres at (i + 0.5) / size), clamped."""
    h, w, _ = texture.shape
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]

    def at(r, c):
        return texture[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]

    return (
        at(y0, x0) * (1 - fx) * (1 - fy)
        + at(y0, x0 + 1) * fx * (1 - fy)
        + at(y0 + 1, x0) * (1 - fx) * fy
        + at(y0 + 1, x0 + 1) * fx * fy
    )


@pytest.fixture(scope="module")
def unwrapped_sphere():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    return unwrap_uv(mesh.vertices, mesh.faces, UVConfig(resolution=256))


@pytest.mark.parametrize("size", [0, -4, 3, 100, 1000, 2.0**40, True])
def test_texture_size_must_be_a_power_of_two(size):
    with pytest.raises(InputError, match="texture size"):
        check_texture_size(size)


def test_texture_size_accepts_powers_of_two():
    assert [check_texture_size(s) for s in (1, 256, 1024, 4096)] == [1, 256, 1024, 4096]


def test_bake_rejects_a_bad_size_and_mismatched_uv(unwrapped_sphere):
    u = unwrapped_sphere
    with pytest.raises(InputError, match="power of two"):
        bake_texture(SphereField(), u.verts, u.faces, u.uv, texture_size=300)
    with pytest.raises(InputError, match="uv must be"):
        bake_texture(SphereField(), u.verts, u.faces, u.uv[:-1], texture_size=64)


def test_texture_rows_run_from_top_v1_to_bottom_v0():
    # A square in the plane z = 0 whose UVs are its (x, y) scaled to [0, 1]; red = (y + 1) / 2 = v.
    verts = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = (verts[:, :2] + 1) / 2

    class VField(AffineColorField):
        def color(self, xyz):
            v = (xyz[:, 1] + 1) / 2
            return torch.stack([v, 1 - v, torch.zeros_like(v)], dim=-1)

    out = bake_texture(VField(), verts, faces, uv, texture_size=16, extrapolate_px=0, dilation_px=0)
    expected_v = 1.0 - (np.arange(16) + 0.5) / 16  # row 0 is the top, v = 1
    np.testing.assert_allclose(out.texture[:, :, 0], np.repeat(expected_v[:, None], 16, axis=1), atol=1e-6)
    assert out.coverage.all()


def test_baked_texels_hold_the_field_colour_at_their_surface_point(unwrapped_sphere):
    u = unwrapped_sphere
    size = 128
    out = bake_texture(AffineColorField(), u.verts, u.faces, u.uv, texture_size=size)
    assert out.texture.shape == (size, size, 3) and out.texture.dtype == np.float32
    assert 0.3 < out.coverage.mean() < 1.0
    # Recompute covered texels independently: the texel centre's barycentrics in its UV triangle.
    rows, cols = np.nonzero(out.coverage)
    centres = np.stack([(cols + 0.5) / size, 1.0 - (rows + 0.5) / size], axis=1)
    a, b, c = (u.uv[u.faces[:, k]].astype(np.float64) for k in range(3))
    found = np.zeros(len(centres), dtype=bool)
    points = np.zeros((len(centres), 3))
    for i in range(0, len(u.faces), 128):
        sl = slice(i, i + 128)
        e1, e2 = (b - a)[sl], (c - a)[sl]
        d = centres[:, None] - a[sl][None]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        s = (d[..., 0] * e2[:, 1] - d[..., 1] * e2[:, 0]) / det  # [N, 128] weight of corner 1
        t = (e1[:, 0] * d[..., 1] - e1[:, 1] * d[..., 0]) / det  # weight of corner 2
        inside = (s >= -1e-6) & (t >= -1e-6) & (s + t <= 1 + 1e-6)
        new = inside.any(axis=1) & ~found
        k = np.argmax(inside[new], axis=1)
        f = u.faces[i + k]  # [M, 3]
        p0, p1, p2 = (u.verts[f[:, j]].astype(np.float64) for j in range(3))
        sk, tk = s[new, k][:, None], t[new, k][:, None]
        points[new] = p0 + sk * (p1 - p0) + tk * (p2 - p0)
        found |= new
    expected = AffineColorField().color(torch.from_numpy(points[found].astype(np.float32))).numpy()
    np.testing.assert_allclose(out.texture[rows[found], cols[found]], expected, atol=2e-5)
    assert found.mean() > 0.99


def test_seam_padding_makes_bilinear_lookups_exact_at_chart_edges(unwrapped_sphere):
    u = unwrapped_sphere
    field = AffineColorField()
    expected = field.color(torch.from_numpy(u.verts)).numpy()  # vertices sit on chart edges and corners
    padded = bake_texture(field, u.verts, u.faces, u.uv, texture_size=256)
    err = np.abs(bilinear(padded.texture, u.uv) - expected).max(axis=1)
    assert err.max() < 0.01 and np.median(err) < 1e-3
    # Without padding, the background bleeds in at the seams: the same check fails.
    bare = bake_texture(field, u.verts, u.faces, u.uv, texture_size=256, dilation_px=0, extrapolate_px=0)
    bare_tex = np.where(bare.coverage[..., None], bare.texture, 0.0)
    assert np.abs(bilinear(bare_tex, u.uv) - expected).max() > 0.2


def test_every_texel_is_filled_after_dilation(unwrapped_sphere):
    u = unwrapped_sphere
    out = bake_texture(AffineColorField(), u.verts, u.faces, u.uv, texture_size=64)
    # The field's colours lie in [0.1, 0.9] per channel; an unfilled texel would be 0.
    assert out.texture.min() > 0.05
    assert not out.coverage.all()


def test_vertex_colors_are_the_field_colour_at_vertices():
    verts = np.random.default_rng(0).uniform(-1, 1, (1000, 3)).astype(np.float32)
    colors = bake_vertex_colors(SphereField(), verts, chunk=77)
    np.testing.assert_allclose(colors, SphereField().color(torch.from_numpy(verts)).numpy(), atol=1e-7)
    assert colors.dtype == np.float32 and colors.shape == (1000, 3)
