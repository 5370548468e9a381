"""Tests of the nvdiffrast-style ops in `fourview.render.raster` (CPU path; GPU parity marked gpu)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fourview.cameras import Camera, pixel_rays
from fourview.errors import InputError
from fourview.render import (
    TopologyHash,
    antialias,
    antialias_construct_topology_hash,
    interpolate,
    rasterize,
    texture,
)
from fourview.render._raster_reference import rasterize_reference


def clip(xy_z_w) -> torch.Tensor:
    """[N, 4] clip-space rows from a nested list, as a [1, N, 4] float32 batch."""
    return torch.tensor(xy_z_w, dtype=torch.float32)[None]


def mask_from_art(art: str) -> torch.Tensor:
    """'#' = covered. Lines are written top row first; returned with row 0 = bottom (nvdiffrast)."""
    rows = [line.strip() for line in art.strip().splitlines()]
    return torch.tensor([[ch == "#" for ch in row] for row in rows]).flip(0)


# ------------------------------------------------------------------------------------------
# rasterize: coverage, depth, layout


def test_single_triangle_coverage_8x8_hand_checked():
    # Right triangle with legs on the left and bottom image borders and hypotenuse x + y = 0.1.
    # Pixel centres are at -0.875 + 0.25 k, so (col, row) is covered iff col + row <= 7.
    pos = clip([[-1, -1, 0, 1], [1.1, -1, 0, 1], [-1, 1.1, 0, 1]])
    rast, rast_db = rasterize(pos, torch.tensor([[0, 1, 2]]), (8, 8))
    expected = mask_from_art(
        """
        #.......
        ##......
        ###.....
        ####....
        #####...
        ######..
        #######.
        ########
        """
    )
    assert rast.shape == (1, 8, 8, 4) and rast.dtype == torch.float32 and rast_db is None
    assert torch.equal(rast[0, ..., 3] > 0, expected)
    assert torch.all(rast[0, ..., 3][expected] == 1.0) and torch.all(rast[0][~expected] == 0)
    # Bottom-left pixel, centre (-0.875, -0.875) = 0.88095 v0 + 0.05952 v1 + 0.05952 v2.
    torch.testing.assert_close(rast[0, 0, 0, :3], torch.tensor([1 - 0.25 / 2.1, 0.125 / 2.1, 0.0]))


@pytest.mark.parametrize("rot_a,rot_b", [(0, 0), (1, 2), (2, 1)])
def test_shared_edge_pixels_drawn_exactly_once(rot_a, rot_b):
    # A square split along its diagonal, which passes exactly through pixel centres (ties); the
    # vertex order is rotated so that the shared edge takes each edge slot of the triangles.
    pos = clip([[-0.5, -0.5, 0, 1], [0.5, -0.5, 0, 1], [0.5, 0.5, 0, 1], [-0.5, 0.5, 0, 1]])
    a, b = [0, 1, 2], [0, 2, 3]
    tri = torch.tensor([a[rot_a:] + a[:rot_a], b[rot_b:] + b[:rot_b]], dtype=torch.int32)
    both, _ = rasterize(pos, tri, (8, 8))
    alone, _ = rasterize(pos[0], tri, (8, 8), ranges=torch.tensor([[0, 1], [1, 1]]))  # range mode
    a, b = alone[0, ..., 3] > 0, alone[1, ..., 3] > 0
    assert not torch.any(a & b)  # no pixel twice
    assert torch.equal(a | b, both[0, ..., 3] > 0)
    # Centres inside the square's open interior: cols/rows 2..5 -> 16 pixels; the boundary
    # x, y = +-0.5 lies between pixel centres, so the union is exactly the 4x4 block.
    assert int((a | b).sum()) == 16 and bool((both[0, 2:6, 2:6, 3] > 0).all())
    assert torch.equal(alone[1, ..., 3][b], torch.full((int(b.sum()),), 2.0))  # ids stay global in range mode


@pytest.mark.parametrize("rot", [0, 1, 2])
@pytest.mark.parametrize("axis", ["horizontal", "vertical"])
def test_axis_aligned_shared_edge_through_pixel_centres(axis, rot):
    # Two triangles on either side of the line y = -0.125 (x = -0.125), which holds a row
    # (column) of pixel centres of an 8x8 image.
    a, b = [[-0.6, -0.125], [0.6, -0.125], [0.1, 0.7]], [[0.6, -0.125], [-0.6, -0.125], [-0.1, -0.8]]
    if axis == "vertical":
        a, b = [p[::-1] for p in a], [p[::-1] for p in b]
    pos = clip([[x, y, 0, 1] for x, y in a + b])
    ia, ib = [0, 1, 2], [3, 4, 5]
    tri = torch.tensor([ia[rot:] + ia[:rot], ib[rot:] + ib[:rot]])
    alone, _ = rasterize(pos[0], tri, (8, 8), ranges=torch.tensor([[0, 1], [1, 1]]))
    in_a, in_b = alone[0, ..., 3] > 0, alone[1, ..., 3] > 0
    line = in_a[3] | in_b[3] if axis == "horizontal" else in_a[:, 3] | in_b[:, 3]
    assert not torch.any(in_a & in_b) and int(line.sum()) == 4  # centres at +-0.125 and +-0.375


@pytest.mark.parametrize("near_first", [True, False])
def test_depth_test_keeps_nearest_in_either_order(near_first):
    near = [[-0.9, -0.9, -0.5, 1], [0.9, -0.9, -0.5, 1], [0.0, 0.9, -0.5, 1]]
    far = [[-0.9, 0.9, 0.5, 1], [0.9, 0.9, 0.5, 1], [0.0, -0.9, 0.5, 1]]
    pos = clip(near + far if near_first else far + near)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    rast, _ = rasterize(pos, tri, (16, 16))
    near_id = 1.0 if near_first else 2.0
    near_only, _ = rasterize(clip(near), torch.tensor([[0, 1, 2]]), (16, 16))
    covered = near_only[0, ..., 3] > 0
    assert torch.all(rast[0, ..., 3][covered] == near_id)
    torch.testing.assert_close(rast[0, ..., 2][covered], torch.full((int(covered.sum()),), -0.5))
    far_only = (rast[0, ..., 3] > 0) & ~covered
    assert far_only.any() and torch.all(rast[0, ..., 2][far_only] == 0.5)


def test_both_faces_are_drawn_and_row_zero_is_the_bottom():
    ccw = clip([[-1, -1, 0, 1], [1, -1, 0, 1], [0, -0.2, 0, 1]])  # lower half only
    for tri in (torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])):
        rast, _ = rasterize(ccw, tri, (8, 8))
        covered = rast[0, ..., 3] > 0
        assert covered[:4].any() and not covered[4:].any()


def test_perspective_correct_barycentrics_depth_and_interpolation():
    cam = Camera(30.0, 20.0)
    world = np.array([[-0.6, -0.4, 0.3], [0.7, -0.3, -0.5], [0.0, 0.8, 0.1]])
    mvp = cam.mvp()
    pos = torch.from_numpy(np.c_[world, np.ones(3)] @ mvp.T).float()[None]  # [1, 3, 4]
    assert float(pos[0, :, 3].max() / pos[0, :, 3].min()) > 1.1  # really perspective
    tri = torch.tensor([[0, 1, 2]])
    res = 32
    rast, _ = rasterize(pos, tri, (res, res))
    attr = torch.from_numpy(world @ np.array([2.0, -3.0, 0.5]) + 1.0).float()[None, :, None]  # affine in space
    out, _ = interpolate(attr, rast, tri)
    covered = (rast[0, ..., 3] > 0).flip(0).numpy()  # row 0 = top, as pixel_rays
    assert covered.sum() > 50
    o, d = pixel_rays(cam, res)
    o, d = o[covered], d[covered]  # [N, 3]
    nrm = np.cross(world[1] - world[0], world[2] - world[0])
    t = ((world[0] - o) @ nrm) / (d @ nrm)
    hit = o + t[:, None] * d  # [N, 3] the surface point seen through each pixel centre
    # Barycentrics of the hit point: solve hit = u A + v B + (1 - u - v) C.
    m = np.stack([world[0] - world[2], world[1] - world[2]], axis=1)  # [3, 2]
    uv = np.linalg.lstsq(m, (hit - world[2]).T, rcond=None)[0].T  # [N, 2]
    got = rast[0].flip(0).numpy()[covered]  # [N, 4]
    np.testing.assert_allclose(got[:, :2], uv, atol=2e-5)
    clip_hit = np.c_[hit, np.ones(len(hit))] @ mvp.T
    np.testing.assert_allclose(got[:, 2], clip_hit[:, 2] / clip_hit[:, 3], atol=2e-6)
    np.testing.assert_allclose(out[0, ..., 0].flip(0).numpy()[covered], hit @ [2.0, -3.0, 0.5] + 1.0, atol=1e-4)
    assert torch.all(out[0, ..., 0][rast[0, ..., 3] == 0] == 0)


def _random_soup(seed: int, n_tri: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangles in clip space: some behind the camera, some crossing the near or far plane."""
    g = torch.Generator().manual_seed(seed)
    n = 3 * n_tri
    w = torch.rand(n, generator=g) * 1.7 + 0.3
    w = torch.where(torch.rand(n, generator=g) < 0.15, -w, w)  # ~15% of vertices behind the camera
    xy = (torch.rand(n, 2, generator=g) * 2.4 - 1.2) * w[:, None]
    z = (torch.rand(n, generator=g) * 2.3 - 1.15) * w
    pos = torch.cat([xy, z[:, None], w[:, None]], dim=1)[None].float()  # [1, 3T, 4]
    return pos, torch.arange(n).view(n_tri, 3)


def _near_tie(pos: torch.Tensor, tri: torch.Tensor, res, row: int, col: int, ids: tuple[int, int]) -> bool:
    """Whether pixel (row, col) is within rounding of an edge or of equal depth for these triangles."""
    h, w = res
    p = torch.tensor([(col + 0.5) / w * 2 - 1, (row + 0.5) / h * 2 - 1, 1.0], dtype=torch.float64)
    depths = []
    for tid in ids:
        if tid < 0:
            continue
        v = pos[0, tri[tid]].double()  # [3, 4]
        n = torch.stack([torch.linalg.cross(v[(i + 1) % 3, [0, 1, 3]], v[(i + 2) % 3, [0, 1, 3]]) for i in range(3)])
        e = n @ p  # [3]
        if (e.abs() / n[:, :2].norm(dim=1).clamp(min=1e-30)).min() < 1e-5:  # within 1e-5 NDC of an edge
            return True
        det = float(v[0, [0, 1, 3]] @ n[0])
        zw = float((e * v[:, 2]).sum() / det)
        if abs(abs(zw) - 1.0) < 1e-5:
            return True
        depths.append(zw)
    return len(depths) == 2 and abs(depths[0] - depths[1]) < 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_kernel_matches_torch_reference_on_random_soups(seed):
    pos, tri = _random_soup(seed)
    res = (24, 32)  # not square: catches swapped axes
    fast, _ = rasterize(pos, tri, res)
    ref = rasterize_reference(pos, tri, res)
    fid, rid = fast[0, ..., 3].long() - 1, ref[0, ..., 3].long() - 1
    assert (rid >= 0).float().mean() > 0.3  # the soup covers a good part of the image
    mismatch = torch.nonzero(fid != rid).tolist()
    assert len(mismatch) <= 3
    for r, c in mismatch:
        assert _near_tie(pos, tri, res, r, c, (int(fid[r, c]), int(rid[r, c]))), (r, c)
    same = (fid == rid) & (rid >= 0)
    torch.testing.assert_close(fast[0][same][:, :3].double(), ref[0][same][:, :3], atol=2e-5, rtol=0)


def test_near_plane_clipping_and_triangles_behind_the_camera():
    behind = clip([[-1, -1, 0.5, -1], [1, -1, 0.5, -1], [0, 1, 0.5, -1]])
    rast, _ = rasterize(behind, torch.tensor([[0, 1, 2]]), (16, 16))
    assert torch.all(rast == 0)
    # One vertex far behind the camera: drawn only where the surface is in front of the near plane.
    crossing = clip([[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 3.0, -6.0, -2.0]])
    tri = torch.tensor([[0, 1, 2]])
    rast, _ = rasterize(crossing, tri, (16, 16))
    ref = rasterize_reference(crossing, tri, (16, 16))
    drawn = rast[0, ..., 3] > 0
    assert drawn.any() and not drawn.all()
    assert torch.equal(drawn, ref[0, ..., 3] > 0)
    assert torch.all(rast[0, ..., 2][drawn] >= -1.0)


def test_batch_of_two_equals_single_images():
    pos0, tri = _random_soup(5, 10)
    pos1, _ = _random_soup(6, 10)
    batch, _ = rasterize(torch.cat([pos0, pos1]), tri, (16, 20))
    single0, _ = rasterize(pos0, tri, (16, 20))
    single1, _ = rasterize(pos1, tri, (16, 20))
    assert batch.shape == (2, 16, 20, 4)
    assert torch.equal(batch[0], single0[0]) and torch.equal(batch[1], single1[0])
    assert not torch.equal(batch[0], batch[1])


def test_interpolate_batched_shared_and_range_mode_attributes():
    pos0, tri = _random_soup(7, 12)
    pos1, _ = _random_soup(8, 12)
    pos = torch.cat([pos0, pos1])  # [2, V, 4]
    rast, _ = rasterize(pos, tri, (12, 16))
    attr = torch.randn(2, pos.shape[1], 3)
    fast, _ = interpolate(attr, rast, tri)  # numba forward
    diff, _ = interpolate(attr.clone().requires_grad_(), rast, tri)  # torch, differentiable
    torch.testing.assert_close(diff.detach(), fast, atol=1e-6, rtol=0)
    for b in range(2):
        torch.testing.assert_close(interpolate(attr[b : b + 1], rast[b : b + 1], tri)[0][0], fast[b])
    shared, _ = interpolate(attr[:1], rast, tri)  # minibatch 1 broadcasts
    torch.testing.assert_close(shared[1], interpolate(attr[0], rast[1:], tri)[0][0])  # [V, C] (range mode)
    assert not torch.equal(shared[1], fast[1])


def test_empty_inputs_give_empty_images():
    pos, _ = _random_soup(0, 4)
    rast, _ = rasterize(pos, torch.zeros(0, 3, dtype=torch.int64), (8, 8))
    assert rast.shape == (1, 8, 8, 4) and torch.all(rast == 0)
    out, _ = interpolate(torch.ones(1, 12, 2), rast, torch.zeros(0, 3, dtype=torch.int64))
    assert torch.all(out == 0)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), (4, 4)),  # pos not [.., 4]
            "pos must be clip-space [B, V, 4]",
        ),
        (
            lambda: rasterize(torch.zeros(3, 4), torch.tensor([[0, 1, 2]]), (4, 4)),  # [V, 4] without ranges
            "pos of shape [V, 4] (range mode) needs ranges [N, 2]",
        ),
        (
            lambda: rasterize(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 3]]), (4, 4)),  # index out of range
            "tri indices must lie in [0, 3), got [0, 3]",
        ),
        (
            lambda: rasterize(torch.zeros(1, 3, 4), torch.tensor([[0, 1]]), (4, 4)),  # tri not [F, 3]
            "tri must be an integer tensor [F, 3], got tensor of shape (1, 2)",
        ),
        (
            lambda: rasterize(torch.zeros(1, 3, 4), torch.tensor([[0.0, 1.0, 2.0]]), (4, 4)),  # float tri
            "tri must hold integer vertex indices, got dtype torch.float32",
        ),
        (
            lambda: rasterize(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]), (0, 4)),  # empty resolution
            "resolution must be positive, got (0, 4)",
        ),
        (
            lambda: rasterize(torch.zeros(3, 4), torch.tensor([[0, 1, 2]]), (4, 4), ranges=torch.tensor([[0, 2]])),
            "ranges must select triangles within [0, 1)",
        ),
        (
            lambda: texture(torch.zeros(1, 4, 4, 3), torch.zeros(1, 2, 2, 2), filter_mode="cubic"),
            "texture filter_mode must be one of",
        ),
        (
            lambda: texture(torch.zeros(1, 4, 4, 3), torch.zeros(1, 2, 2, 2), filter_mode="linear-mipmap-linear"),
            "filter_mode 'linear-mipmap-linear' needs nvdiffrast on CUDA",
        ),
        (
            lambda: interpolate(
                torch.zeros(1, 3, 2), torch.zeros(1, 4, 4, 4), torch.tensor([[0, 1, 2]]), diff_attrs=[0]
            ),
            "diff_attrs needs rast_db",
        ),
    ],
)
def test_bad_inputs_raise_input_error(call, message):
    with pytest.raises(InputError, match=re.escape(message)):
        call()


# ------------------------------------------------------------------------------------------
# Gradients


def _smooth_triangle(dtype=torch.float64) -> torch.Tensor:
    """A perspective triangle whose edges stay > 0.02 NDC away from the pixel centres of an 8x8 image."""
    return torch.tensor([[[-0.83, -0.71, 0.1, 1.0], [1.3, -1.02, 0.3, 1.4], [-0.7, 1.05, -0.2, 0.8]]], dtype=dtype)


def test_rasterize_barycentrics_gradcheck_wrt_pos():
    tri = torch.tensor([[0, 1, 2]])
    pos = _smooth_triangle().requires_grad_()
    rast, _ = rasterize(pos, tri, (8, 8))
    assert rast.dtype == torch.float64 and int((rast[0, ..., 3] > 0).sum()) > 20
    assert torch.autograd.gradcheck(lambda p: rasterize(p, tri, (8, 8))[0][..., :3], (pos,), eps=1e-6, atol=1e-6)


def test_interpolate_gradcheck_wrt_attr_and_rast():
    tri = torch.tensor([[0, 1, 2]])
    rast, _ = rasterize(_smooth_triangle(), tri, (8, 8))
    attr = torch.randn(1, 3, 2, dtype=torch.float64, requires_grad=True)
    uvz = rast[..., :3].clone().requires_grad_()
    ids = rast[..., 3:]

    def f(a, r):
        return interpolate(a, torch.cat([r, ids], dim=-1), tri)[0]

    assert torch.autograd.gradcheck(f, (attr, uvz), eps=1e-6, atol=1e-6)


def test_rast_db_and_attribute_derivatives_match_differences():
    tri = torch.tensor([[0, 1, 2]])
    flat = torch.tensor([[[-0.9, -0.9, 0.0, 1.0], [0.95, -0.6, 0.0, 1.0], [-0.4, 0.9, 0.0, 1.0]]])  # w = 1: affine
    rast, rast_db = rasterize(flat, tri, (16, 24), grad_db=True)
    assert rast_db.shape == (1, 16, 24, 4)
    r = rast[0]
    both_x = (r[:, :-1, 3] > 0) & (r[:, 1:, 3] > 0)
    both_y = (r[:-1, :, 3] > 0) & (r[1:, :, 3] > 0)
    du_dx = (r[:, 1:, 0] - r[:, :-1, 0])[both_x]  # u is affine in pixels: differences are exact
    dv_dy = (r[1:, :, 1] - r[:-1, :, 1])[both_y]
    torch.testing.assert_close(rast_db[0, :, :-1, 0][both_x], du_dx, atol=1e-5, rtol=0)
    torch.testing.assert_close(rast_db[0, :-1, :, 3][both_y], dv_dy, atol=1e-5, rtol=0)
    dv_dx = (r[:, 1:, 1] - r[:, :-1, 1])[both_x]
    du_dy = (r[1:, :, 0] - r[:-1, :, 0])[both_y]
    torch.testing.assert_close(rast_db[0, :, :-1, 2][both_x], dv_dx, atol=1e-5, rtol=0)
    torch.testing.assert_close(rast_db[0, :-1, :, 1][both_y], du_dy, atol=1e-5, rtol=0)
    # Attribute derivatives follow by the chain rule.
    attr = torch.tensor([[[1.0, 0.0], [3.0, 1.0], [-2.0, 5.0]]])
    out, out_db = interpolate(attr, rast, tri, rast_db=rast_db, diff_attrs=[1])
    assert out_db.shape == (1, 16, 24, 2)
    da_dx = (out[0, :, 1:, 1] - out[0, :, :-1, 1])[both_x]
    da_dy = (out[0, 1:, :, 1] - out[0, :-1, :, 1])[both_y]
    torch.testing.assert_close(out_db[0, :, :-1, 0][both_x], da_dx, atol=1e-4, rtol=0)
    torch.testing.assert_close(out_db[0, :-1, :, 1][both_y], da_dy, atol=1e-4, rtol=0)
    # Perspective: rast_db is the derivative of the perspective-correct barycentrics.
    pos = _smooth_triangle(torch.float32)
    rast, rast_db = rasterize(pos, tri, (64, 64), grad_db=True)
    r = rast[0]
    inner = (r[:, :-2, 3] > 0) & (r[:, 2:, 3] > 0)
    central = (r[:, 2:, 0] - r[:, :-2, 0]) / 2  # central difference, second order
    torch.testing.assert_close(rast_db[0, :, 1:-1, 0][inner], central[inner], atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------------------
# texture


def test_texture_texel_centres_boundaries_and_filters():
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(1, 4, 8, 3, generator=g)  # Ht = 4 rows, Wt = 8 columns
    i, j = torch.meshgrid(torch.arange(4), torch.arange(8), indexing="ij")
    uv = torch.stack([(j + 0.5) / 8, (i + 0.5) / 4], dim=-1)[None].float()  # texel centres
    for mode in ("linear", "nearest"):
        assert torch.equal(texture(tex, uv, filter_mode=mode), tex)
    assert torch.equal(texture(tex, uv, filter_mode="auto"), tex)  # no mipmaps on CPU: linear
    # Halfway between texels (0, 0) and (0, 1); u = -1/16 lies half a texel left of the left edge.
    uv = torch.tensor([[[[1 / 8, 1 / 8], [-1 / 16, 1 / 8]]]])
    half = texture(tex, uv[:, :, :1], boundary_mode="clamp")
    torch.testing.assert_close(half[0, 0, 0], (tex[0, 0, 0] + tex[0, 0, 1]) / 2)
    out_wrap = texture(tex, uv[:, :, 1:], boundary_mode="wrap")[0, 0, 0]
    out_clamp = texture(tex, uv[:, :, 1:], boundary_mode="clamp")[0, 0, 0]
    out_zero = texture(tex, uv[:, :, 1:], boundary_mode="zero")[0, 0, 0]
    torch.testing.assert_close(out_wrap, tex[0, 0, 7])  # wraps to the last column
    torch.testing.assert_close(out_clamp, tex[0, 0, 0])  # clamped to the first column's centre
    torch.testing.assert_close(out_zero, torch.zeros(3))
    # A quarter texel left of the first column's centre: wrap blends in the last column.
    uv = torch.tensor([[[[1 / 32, 1 / 8]]]])
    torch.testing.assert_close(texture(tex, uv)[0, 0, 0], 0.75 * tex[0, 0, 0] + 0.25 * tex[0, 0, 7])
    torch.testing.assert_close(texture(tex, uv, boundary_mode="clamp")[0, 0, 0], tex[0, 0, 0])
    torch.testing.assert_close(texture(tex, uv, boundary_mode="zero")[0, 0, 0], 0.75 * tex[0, 0, 0])
    # Nearest: the texel that contains uv; broadcast of a single texture over a batch of 2.
    uv = torch.tensor([[[[0.26, 0.74]]], [[[0.99, 0.01]]]])
    near = texture(tex, uv, filter_mode="nearest")
    torch.testing.assert_close(near[:, 0, 0], torch.stack([tex[0, 2, 2], tex[0, 0, 7]]))


def test_texture_gradcheck_linear_and_nearest():
    g = torch.Generator().manual_seed(1)
    tex = torch.rand(2, 5, 6, 2, generator=g, dtype=torch.float64).requires_grad_()
    uv = (torch.rand(2, 3, 4, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3).requires_grad_()
    for boundary in ("wrap", "clamp", "zero"):
        assert torch.autograd.gradcheck(lambda t, u, b=boundary: texture(t, u, boundary_mode=b), (tex, uv), eps=1e-6)
    assert torch.autograd.gradcheck(lambda t: texture(t, uv.detach(), filter_mode="nearest"), (tex,), eps=1e-6)


# ------------------------------------------------------------------------------------------
# antialias


def _edge_quad(x_edge_px: float, right: bool, width: int = 8, height: int = 6) -> torch.Tensor:
    """A quad covering the image except beyond one vertical edge at pixel coordinate ``x_edge_px``."""
    xe = x_edge_px / width * 2 - 1
    x_far = -1.5 if right else 1.5  # the quad extends off screen on the other side
    return torch.tensor(
        [[[x_far, -1.5, 0.0, 1.0], [xe, -1.5, 0.0, 1.0], [xe, 1.5, 0.0, 1.0], [x_far, 1.5, 0.0, 1.0]]],
        dtype=torch.float64,
    )


QUAD = torch.tensor([[0, 1, 2], [0, 2, 3]])


@pytest.mark.parametrize("x_edge,right", [(5.3, True), (4.8, True), (2.3, False), (2.7, False)])
def test_antialias_gives_box_coverage_of_a_vertical_edge(x_edge, right):
    pos = _edge_quad(x_edge, right)
    rast, _ = rasterize(pos, QUAD, (6, 8))
    color = (rast[..., 3:] > 0).double()  # 1 on the quad, 0 behind it
    out = antialias(color, rast, pos, QUAD)
    cols = torch.arange(8, dtype=torch.float64)
    coverage = (x_edge - cols).clamp(0, 1) if right else (cols + 1 - x_edge).clamp(0, 1)
    torch.testing.assert_close(out[0, ..., 0], coverage.expand(6, 8), atol=1e-9, rtol=0)


def test_antialias_uses_the_front_triangle_edge():
    near = _edge_quad(5.3, True)
    near[..., 2] = -0.5
    far = torch.tensor([[[-2.0, -2.0, 0.5, 1], [2.0, -2.0, 0.5, 1], [2.0, 2.0, 0.5, 1], [-2.0, 2.0, 0.5, 1]]])
    cols = torch.arange(8, dtype=torch.float64)
    for order in ((near, far), (far, near)):  # either triangle order in the buffer
        pos = torch.cat(order, dim=1).double()
        tri = torch.cat([QUAD, QUAD + 4])
        rast, _ = rasterize(pos, tri, (6, 8))
        near_ids = (1.0, 2.0) if order[0] is near else (3.0, 4.0)
        is_near = (rast[..., 3:] == near_ids[0]) | (rast[..., 3:] == near_ids[1])
        color = torch.where(is_near, 1.0, 0.25).double()
        out = antialias(color, rast, pos, tri)
        expected = 0.25 + 0.75 * (5.3 - cols).clamp(0, 1)
        torch.testing.assert_close(out[0, ..., 0], expected.expand(6, 8), atol=1e-9, rtol=0)


def test_antialias_position_gradient_matches_moving_the_edge():
    def covered_area(x_edge: float, requires_grad: bool = False):
        pos = _edge_quad(x_edge, True).requires_grad_(requires_grad)
        rast, _ = rasterize(pos, QUAD, (6, 8))
        color = (rast[..., 3:] > 0).double()
        return antialias(color, rast, pos, QUAD).sum(), pos

    area, pos = covered_area(5.3, True)
    assert float(area.detach()) == pytest.approx(6 * 5.3)
    area.backward()
    # d area / d x_ndc of the two edge vertices = rows * (pixels per NDC unit) = 6 * 4.
    assert float(pos.grad[0, 1, 0] + pos.grad[0, 2, 0]) == pytest.approx(24.0, rel=1e-6)
    h = 0.05  # pixels; no pixel centre is crossed, so this re-rasterises the same ids
    fd = (float(covered_area(5.3 + h)[0]) - float(covered_area(5.3 - h)[0])) / (2 * h / 4)
    assert fd == pytest.approx(24.0, rel=1e-6)
    boosted = _edge_quad(5.3, True).requires_grad_()
    rast, _ = rasterize(boosted, QUAD, (6, 8))
    antialias((rast[..., 3:] > 0).double(), rast, boosted, QUAD, pos_gradient_boost=3.0).sum().backward()
    torch.testing.assert_close(boosted.grad, 3.0 * pos.grad)


def test_antialias_gradcheck_wrt_color_and_pos():
    pos = torch.tensor([[[-0.83, -0.71, 0.1, 1.0], [0.9, -0.6, 0.3, 1.4], [-0.5, 0.75, -0.2, 0.8]]]).double()
    tri = torch.tensor([[0, 1, 2]])
    rast, _ = rasterize(pos, tri, (10, 12))
    color = torch.rand(1, 10, 12, 2, dtype=torch.float64)
    topo = antialias_construct_topology_hash(tri)
    assert isinstance(topo, TopologyHash)
    out = antialias(color, rast, pos, tri, topology_hash=topo)
    assert not torch.equal(out, color)  # silhouette pixels were blended
    assert torch.autograd.gradcheck(
        lambda c, p: antialias(c, rast, p, tri, topology_hash=topo),
        (color.requires_grad_(), pos.clone().requires_grad_()),
        eps=1e-7,
        atol=1e-5,
    )


def test_antialias_leaves_interior_edges_alone_but_blends_unconnected_ones():
    # A quad covering the whole image; its two triangles have different colours.
    shared = torch.tensor([[[-2.0, -2.0, 0, 1], [2.0, -2.0, 0, 1], [2.0, 2.0, 0, 1], [-2.0, 2.0, 0, 1]]])
    rast, _ = rasterize(shared, QUAD, (8, 8))
    color = torch.where(rast[..., 3:] == 1, 1.0, 0.0).expand(1, 8, 8, 3).contiguous()
    assert torch.equal(antialias(color, rast, shared, QUAD), color)  # the diagonal is no silhouette
    # Same geometry with unshared vertices: the diagonal is a boundary edge of each triangle.
    split = shared[:, [0, 1, 2, 0, 2, 3]]
    soup = torch.arange(6).view(2, 3)
    rast2, _ = rasterize(split, soup, (8, 8))
    assert torch.equal(rast2, rast)
    assert not torch.equal(antialias(color, rast2, split, soup), color)


def test_topology_hash_pairs_triangles_across_edges():
    # Edge (0, 2) has three triangles: like nvdiffrast's hash, the first two see each other.
    tri = torch.tensor([[0, 1, 2], [0, 2, 3], [2, 0, 4], [5, 5, 6]])
    opposite = antialias_construct_topology_hash(tri).opposite
    assert opposite.tolist() == [[-1, 3, -1], [-1, -1, 1], [-1, -1, -1], [-1, -1, -1]]
    with pytest.raises(InputError, match="topology_hash does not match tri"):
        antialias(
            torch.zeros(1, 4, 4, 1),
            torch.zeros(1, 4, 4, 4),
            torch.zeros(1, 7, 4),
            tri[:2],
            topology_hash=antialias_construct_topology_hash(tri),
        )


# ------------------------------------------------------------------------------------------
# GPU: nvdiffrast (or the CPU fallback) against the CPU path


@pytest.mark.gpu
def test_cuda_matches_cpu():
    pos, tri = _random_soup(3, 40)
    tri = tri.to(torch.int32)
    cpu, _ = rasterize(pos, tri, (64, 48))
    gpu, _ = rasterize(pos.cuda(), tri.cuda(), (64, 48))
    gpu = gpu.cpu()
    same = gpu[..., 3] == cpu[..., 3]
    assert same.float().mean() > 0.99  # ids differ only where rounding decides
    both = same & (cpu[..., 3] > 0)
    torch.testing.assert_close(gpu[both][:, :3], cpu[both][:, :3], atol=1e-4, rtol=0)
    attr = torch.randn(1, pos.shape[1], 3)
    out_cpu, _ = interpolate(attr, cpu, tri)
    out_gpu, _ = interpolate(attr.cuda(), cpu.cuda(), tri.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-5, rtol=0)
    tex = torch.rand(1, 16, 16, 3)
    uv = torch.rand(1, 64, 48, 2) * 1.4 - 0.2
    for mode in ("wrap", "clamp"):
        on_gpu = texture(tex.cuda(), uv.cuda(), boundary_mode=mode).cpu()
        torch.testing.assert_close(on_gpu, texture(tex, uv, boundary_mode=mode), atol=1e-4, rtol=0)
    quad = _edge_quad(5.3, True).float()
    rast, _ = rasterize(quad, QUAD, (6, 8))
    color = (rast[..., 3:] > 0).float()
    aa_cpu = antialias(color, rast, quad, QUAD)
    aa_gpu = antialias(color.cuda(), rast.cuda(), quad.cuda(), QUAD.to(torch.int32).cuda()).cpu()
    torch.testing.assert_close(aa_gpu, aa_cpu, atol=1e-4, rtol=0)
