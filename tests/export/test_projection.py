import numpy as np
import pytest
import torch
import trimesh

from fourview.cameras import Camera, orthogonal_rig, pixel_rays
from fourview.errors import InputError
from fourview.export.projection import (
    ProjectionConfig,
    project_colours,
    propagate_colours,
    vertex_normals,
)
from fourview.views import PosedViews

RED = np.array([0.9, 0.1, 0.1], np.float32)
BLUE = np.array([0.1, 0.2, 0.9], np.float32)


def render_spheres(cameras, res, spheres):
    """Ray-cast views of spheres [(centre, radius, colour_fn)] on white: [V, res, res, 4] RGBA (hard edges)."""
    images = []
    for cam in cameras:
        o, d = pixel_rays(cam, res)  # [H, W, 3]
        best = np.full((res, res), np.inf)
        img = np.ones((res, res, 4), np.float32)
        img[..., 3] = 0.0
        for centre, radius, colour_fn in spheres:
            oc = o - np.asarray(centre)
            b = (oc * d).sum(-1)
            disc = b**2 - ((oc**2).sum(-1) - radius**2)
            t = -b - np.sqrt(np.maximum(disc, 0.0))
            hit = (disc > 0) & (t > 0) & (t < best)
            p = o + t[..., None] * d
            img[hit, :3] = colour_fn(p[hit])
            img[hit, 3] = 1.0
            best = np.where(hit, t, best)
        images.append(img)
    return np.stack(images)


def affine_colour(p):
    return np.clip(0.5 + 0.4 * p / 0.6, 0.0, 1.0)


def sphere_mesh(radius=0.6, centre=(0.0, 0.0, 0.0), subdivisions=4):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(m.vertices + np.asarray(centre), np.float32), np.asarray(m.faces, np.int64)


def test_projected_colours_match_the_views_where_seen_and_the_bottom_is_unseen():
    verts, faces = sphere_mesh()
    cams = orthogonal_rig(20.0)
    views = PosedViews.from_cameras(render_spheres(cams, 128, [((0, 0, 0), 0.6, affine_colour)]), cams)
    out = project_colours(verts, faces, verts, vertex_normals(verts, faces), views)
    seen = out.weight > 0
    assert seen.mean() > 0.6
    err = np.abs(out.color[seen] - affine_colour(verts[seen])).max()
    assert err < 0.03, err
    # Straight below the object, no rig view (elevation 20) sees the surface.
    assert not seen[verts[:, 1] < -0.55].any()


def test_occluded_points_take_no_colour_and_the_background_never_bleeds_in():
    front, back = ((0.0, 0.0, 0.45), 0.35), ((0.0, 0.0, -0.45), 0.35)
    v1, f1 = sphere_mesh(0.35, front[0])
    v2, f2 = sphere_mesh(0.35, back[0])
    verts, faces = np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)])
    cam = [Camera(0.0, 0.0)]
    img = render_spheres(cam, 96, [(front[0], front[1], lambda p: RED), (back[0], back[1], lambda p: BLUE)])
    out = project_colours(verts, faces, verts, vertex_normals(verts, faces), PosedViews.from_cameras(img, cam))
    seen = out.weight > 0
    on_back = np.arange(len(verts)) >= len(v1)
    # The back sphere's front cap faces the camera but hides behind the front sphere.
    hidden = on_back & (verts[:, 2] > -0.45 + 0.3)
    assert hidden.any() and not seen[hidden].any()
    assert seen[~on_back].sum() > 50
    np.testing.assert_allclose(out.color[seen & ~on_back], np.broadcast_to(RED, out.color[seen & ~on_back].shape),
                               atol=1e-5)  # fmt: skip
    # Whatever is seen of the back sphere (its rim around the front one) is blue, not white or red.
    if (seen & on_back).any():
        np.testing.assert_allclose(out.color[seen & on_back], np.broadcast_to(BLUE, out.color[seen & on_back].shape),
                                   atol=1e-5)  # fmt: skip


def test_views_with_soft_edges_are_eroded_before_use():
    verts, faces = sphere_mesh()
    cam = [Camera(0.0, 0.0)]
    img = render_spheres(cam, 64, [((0, 0, 0), 0.6, lambda p: RED)])
    # Make the silhouette's ring half transparent and white-ish, as anti-aliasing does.
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(img[0, ..., 3] > 0)
    ring = (img[0, ..., 3] > 0) & ~inner
    img[0, ring, :3], img[0, ring, 3] = 1.0, 0.5
    out = project_colours(verts, faces, verts, vertex_normals(verts, faces), PosedViews.from_cameras(img, cam),
                          ProjectionConfig(min_cos=0.0))  # fmt: skip
    seen = out.weight > 0
    assert seen.sum() > 50
    np.testing.assert_allclose(out.color[seen], np.broadcast_to(RED, out.color[seen].shape), atol=1e-5)


def test_propagation_fills_unknown_vertices_across_seams_and_keeps_default_elsewhere():
    pytest.importorskip("xatlas")
    from fourview.export.uv import UVConfig, unwrap_uv

    v, f = sphere_mesh(0.6, subdivisions=3)
    un = unwrap_uv(v, f, UVConfig(resolution=128))  # seams split vertices
    v2, f2 = sphere_mesh(0.3, (2.0, 0.0, 0.0), subdivisions=2)  # a second component, nothing known
    verts = np.concatenate([un.verts, v2])
    faces = np.concatenate([un.faces, f2 + len(un.verts)])
    colour = np.broadcast_to(RED, (len(verts), 3)).copy()
    known = (np.arange(len(verts)) < len(un.verts)) & (verts[:, 1] > 0.2)
    default = np.broadcast_to(BLUE, (len(verts), 3)).copy()
    out = propagate_colours(verts, faces, colour, known, default)
    first = np.arange(len(verts)) < len(un.verts)
    np.testing.assert_allclose(out[first], np.broadcast_to(RED, out[first].shape), atol=1e-2)
    np.testing.assert_allclose(out[~first], np.broadcast_to(BLUE, out[~first].shape), atol=1e-6)


class ConstantColourSphere:
    def sdf(self, xyz):
        return xyz.norm(dim=-1) - 0.6

    def color(self, xyz):
        return torch.as_tensor(BLUE).expand(xyz.shape[0], 3).clone()


@pytest.mark.parametrize("unseen", ["propagate", "field"])
def test_bake_takes_the_views_colours_and_fills_the_unseen_bottom(unseen):
    pytest.importorskip("xatlas")
    from fourview.export.bake import bake_texture
    from fourview.export.uv import UVConfig, unwrap_uv

    v, f = sphere_mesh(0.6, subdivisions=3)
    un = unwrap_uv(v, f, UVConfig(resolution=128))
    cams = orthogonal_rig(20.0)
    views = PosedViews.from_cameras(render_spheres(cams, 96, [((0, 0, 0), 0.6, lambda p: RED)]), cams)
    tex = bake_texture(ConstantColourSphere(), un.verts, un.faces, un.uv, 128, views=views,
                       projection=ProjectionConfig(unseen=unseen)).texture  # fmt: skip
    uv_c = un.uv[un.faces].mean(1)  # [F, 2] triangle centroids: inside their charts
    xyz_c = un.verts[un.faces].mean(1)  # [F, 3]
    rows = np.clip(((1.0 - uv_c[:, 1]) * 128).astype(int), 0, 127)
    cols = np.clip((uv_c[:, 0] * 128).astype(int), 0, 127)
    at_verts = tex[rows, cols]  # [F, 3] texel containing each centroid
    side = np.abs(xyz_c[:, 1]) < 0.2
    np.testing.assert_allclose(at_verts[side], np.broadcast_to(RED, at_verts[side].shape), atol=0.02)
    bottom = xyz_c[:, 1] < -0.56
    want = RED if unseen == "propagate" else BLUE
    np.testing.assert_allclose(at_verts[bottom], np.broadcast_to(want, at_verts[bottom].shape), atol=0.02)


def test_projection_checks_its_inputs():
    cams = orthogonal_rig(20.0)
    with pytest.raises(InputError, match="unseen"):
        ProjectionConfig(unseen="nearest")
    verts, faces = sphere_mesh()
    views = PosedViews.from_cameras(np.zeros((1, 8, 6, 4), np.float32), cams[:1])
    with pytest.raises(InputError, match="square"):
        project_colours(verts, faces, verts, vertex_normals(verts, faces), views)
