import re

import numpy as np
import pytest
import trimesh

from fourview.errors import InputError

pytest.importorskip("xatlas")

from fourview.export.uv import UVConfig, unwrap_uv  # noqa: E402


def uv_areas(uv, faces):
    a, b, c = (uv[faces[:, k]].astype(np.float64) for k in range(3))
    return 0.5 * ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])


@pytest.mark.parametrize("chart_faces", [0, 40])
def test_unwrap_keeps_faces_and_positions_and_fits_the_unit_square(chart_faces):
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    out = unwrap_uv(mesh.vertices, mesh.faces, UVConfig(resolution=256, max_chart_faces=chart_faces))
    assert out.faces.shape == mesh.faces.shape
    # Same triangles in the same order: positions through the new indices equal the input's.
    np.testing.assert_array_equal(out.verts[out.faces], mesh.vertices.astype(np.float32)[mesh.faces])
    np.testing.assert_array_equal(out.verts, mesh.vertices.astype(np.float32)[out.vmapping])
    assert out.uv.shape == (len(out.verts), 2) and out.uv.dtype == np.float32
    assert out.uv.min() >= 0.0 and out.uv.max() <= 1.0
    areas = uv_areas(out.uv, out.faces)
    assert np.count_nonzero(np.abs(areas) < 1e-9) == 0  # no collapsed UV triangle
    assert np.abs(areas).sum() < 1.0  # charts are packed without overlapping the whole square twice
    assert len(out.verts) >= len(mesh.vertices)  # seams split vertices, never merge them
    assert out.num_charts >= 1


def test_smaller_charts_make_more_charts():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    few = unwrap_uv(mesh.vertices, mesh.faces, UVConfig(resolution=256, max_chart_faces=0))
    many = unwrap_uv(mesh.vertices, mesh.faces, UVConfig(resolution=256, max_chart_faces=20))
    assert many.num_charts > few.num_charts


def test_charts_do_not_overlap():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    out = unwrap_uv(mesh.vertices, mesh.faces, UVConfig(resolution=128, padding_px=2))
    # Sample a fine grid of UV points: each lies inside at most one triangle.
    g = (np.arange(256) + 0.5) / 256
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    a, b, c = (out.uv[out.faces[:, k]].astype(np.float64) for k in range(3))
    hits = np.zeros(len(pts), dtype=np.int64)
    for i in range(0, len(out.faces), 64):
        sl = slice(i, i + 64)
        e1, e2 = (b - a)[sl], (c - a)[sl]
        d = pts[:, None, :] - a[sl][None]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        s = (d[..., 0] * e2[:, 1] - d[..., 1] * e2[:, 0]) / det
        t = (e1[:, 0] * d[..., 1] - e1[:, 1] * d[..., 0]) / det
        inside = (s > 1e-6) & (t > 1e-6) & (s + t < 1 - 1e-6)
        hits += inside.sum(axis=1)
    assert hits.max() == 1
    assert (hits > 0).mean() > 0.3


def test_bad_input_is_an_input_error():
    with pytest.raises(InputError, match=re.escape("face indices must lie in [0, 3), got [0, 5]")):
        unwrap_uv(np.zeros((3, 3)), np.array([[0, 1, 5]]))
    with pytest.raises(InputError, match="max_chart_faces must be >= 0"):
        UVConfig(max_chart_faces=-1)
    with pytest.raises(InputError, match="UV padding must be >= 0 texels, got -1"):
        UVConfig(padding_px=-1)
