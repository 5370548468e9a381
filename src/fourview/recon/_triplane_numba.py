"""numba CPU kernels behind `fourview.recon.triplane.sample_triplane` (private).

Every kernel works on the 3 planes of ONE batch item stored channel-last as ``[3, H * W, C]``,
so that the 4 corners of a sample are 4 contiguous rows of C values (a few cache lines) instead
of 4 * C scattered reads. The caller copies the planes into that layout in a reused buffer, which
keeps the extra memory at ``3 * H * W * C`` values whatever the batch.

The kernels are serial over a range of points (or texels) and release the GIL; the caller runs
disjoint ranges on a few Python threads. (numba's ``parallel=True`` would do the
same but takes about four times as long to compile, which every fresh install and every test
run after a change pays.)

Coordinates follow ``F.grid_sample(..., mode="bilinear", padding_mode="zeros",
align_corners=False)``: the sample at normalised ``u`` in [-1, 1] lies at texel coordinate
``ix = ((u + 1) * W - 1) / 2``, texel ``i`` has its centre at ``ix = i``, and corners outside
the plane read as zero. ``ix`` is rounded the way PyTorch's CPU kernel rounds it (one fused
multiply-add in the input dtype), so that the corner choice near texel centres, where the
gradient with respect to the coordinates jumps, agrees with the reference.

Out-of-plane corners get weight 0 and row index 0 (a valid row), which keeps the inner channel
loops branch-free. A consequence: a non-finite value in texel (0, 0) can leak into samples whose
corners fall outside the plane (0 * inf is NaN); ``F.grid_sample`` skips those corners instead.
"""

from __future__ import annotations

import numba
import numpy as np

_U = (0, 2, 0)
"""Coordinate of xyz along the width W of planes XY, ZY, XZ (as `triplane.PLANE_AXES`)."""
_V = (1, 1, 2)
"""Coordinate of xyz along the height H of planes XY, ZY, XZ."""


@numba.njit(nogil=True, cache=True)
def _axis(coord, size, scratch, k):
    """Texel coordinate of a normalised coordinate along one axis, in the input dtype.

    Args:
        coord: normalised coordinate (dtype of ``scratch``), -1 and 1 are the outer plane edges.
        size: number of texels along the axis.
        scratch: [8] array of the input dtype with ``scratch[6] == 0`` and ``scratch[7] == 1``;
            storing into it rounds a float64 to the input dtype.
        k: slot of ``scratch`` to round through (0..5).

    Returns:
        (t, m0, m1, i0): ``t = ix - floor(ix)`` in the input dtype, whether the lower
        (``i0 = floor(ix)``) and the upper (``i0 + 1``) texel lie inside the plane, and ``i0`` as
        an integer (0 when neither does, so NaN and huge values never reach ``int``).
    """
    scratch[k] = coord + scratch[7]  # coord + 1, rounded to the input dtype
    # PyTorch computes (coord + 1) * (size / 2) - 0.5 with one FMA; the float64 product of a
    # float32 value and size / 2 is exact, so one rounding to the dtype reproduces it.
    scratch[k] = np.float64(scratch[k]) * (0.5 * size) - 0.5
    ix = scratch[k]
    f = np.floor(ix)
    t = ix - f
    m0 = (f >= 0) and (f <= size - 1)
    m1 = (f >= -1) and (f <= size - 2)
    i0 = int(f) if (m0 or m1) else 0
    return t, m0, m1, i0


@numba.njit(nogil=True, cache=True)
def _corners(u, v, height, width, scratch):
    """Flat row indices and bilinear weights of the 4 corners of one sample.

    Returns:
        (i00, i10, i01, i11, w00, w10, w01, w11): rows of ``[H * W, C]`` and weights in the
        input dtype; corner ``ab`` is texel (x0 + a, y0 + b). Corners outside the plane have row
        0 and weight 0.
    """
    zero = scratch[6]
    one = scratch[7]
    tx, mx0, mx1, x0 = _axis(u, width, scratch, 0)
    ty, my0, my1, y0 = _axis(v, height, scratch, 1)
    wx0 = one - tx
    wy0 = one - ty
    r0 = y0 * width + x0
    r1 = r0 + width
    i00 = r0 if (my0 and mx0) else 0
    i10 = r0 + 1 if (my0 and mx1) else 0
    i01 = r1 if (my1 and mx0) else 0
    i11 = r1 + 1 if (my1 and mx1) else 0
    w00 = wy0 * wx0 if (my0 and mx0) else zero
    w10 = wy0 * tx if (my0 and mx1) else zero
    w01 = ty * wx0 if (my1 and mx0) else zero
    w11 = ty * tx if (my1 and mx1) else zero
    return i00, i10, i01, i11, w00, w10, w01, w11


def _scratch(dtype):
    """Rounding slots for `_axis`: zeros, with slot 7 set to 1."""
    scratch = np.zeros(8, dtype=dtype)
    scratch[7] = 1
    return scratch


@numba.njit(nogil=True, cache=True)
def forward(planes, height, width, xyz, b, n0, n1, scratch, out):
    """Sample the 3 planes of batch item ``b`` at points ``n0 .. n1 - 1``; writes ``out[b, n0:n1]``.

    Each point's 3 * C outputs are written together (one contiguous row), so the output is
    streamed through memory once.

    Args:
        planes: [3, H * W, C] channel-last planes XY, ZY, XZ of batch item ``b``.
        height: H.
        width: W.
        xyz: [B, N, 3] normalised points.
        b: batch item.
        n0, n1: range of points.
        scratch: `_scratch` of the planes' dtype (one per thread).
        out: [B, N, 3, C] output, same dtype as ``planes``.
    """
    channels = planes.shape[2]
    for n in range(n0, n1):
        for p in range(3):
            plane = planes[p]
            i00, i10, i01, i11, w00, w10, w01, w11 = _corners(
                xyz[b, n, _U[p]], xyz[b, n, _V[p]], height, width, scratch
            )
            for c in range(channels):
                out[b, n, p, c] = plane[i00, c] * w00 + plane[i10, c] * w10 + plane[i01, c] * w01 + plane[i11, c] * w11


@numba.njit(nogil=True, cache=True)
def backward_planes(grad_out, height, width, xyz, b, n0, n1, scratch, grad_planes):
    """Gradient of the 3 planes of batch item ``b`` from its points ``n0 .. n1 - 1``.

    Threads split the points and each scatters into its own ``grad_planes`` (no atomics); the
    caller sums the partial gradients (`to_channel_first`). For few points, a transposed view of
    channel-first planes takes the scatter directly (no whole copy to zero and transpose).

    Args:
        grad_out: [B, N, 3, C] gradient of the samples.
        height, width, xyz, b, n0, n1, scratch: as in `forward`.
        grad_planes: [3, H * W, C], zeroed by the caller; accumulated into.
    """
    channels = grad_planes.shape[2]
    for n in range(n0, n1):
        for p in range(3):
            grad = grad_planes[p]
            i00, i10, i01, i11, w00, w10, w01, w11 = _corners(
                xyz[b, n, _U[p]], xyz[b, n, _V[p]], height, width, scratch
            )
            for c in range(channels):
                go = grad_out[b, n, p, c]
                grad[i00, c] += w00 * go
                grad[i10, c] += w10 * go
                grad[i01, c] += w01 * go
                grad[i11, c] += w11 * go


@numba.njit(nogil=True, cache=True)
def backward_xyz(planes, grad_out, height, width, xyz, b, n0, n1, scratch, grad_xyz):
    """Gradient of the samples of batch item ``b`` with respect to points ``n0 .. n1 - 1``.

    Args:
        planes: [3, H * W, C] channel-last planes of batch item ``b``.
        grad_out: [B, N, 3, C] gradient of the samples.
        height, width, xyz, b, n0, n1, scratch: as in `forward`.
        grad_xyz: [B, N, 3]; ``grad_xyz[b, n0:n1]`` is overwritten.
    """
    channels = planes.shape[2]
    # d ix / d u for align_corners=False: ix = ((u + 1) * W - 1) / 2.
    du = 0.5 * width
    dv = 0.5 * height
    g = np.zeros(3)  # gradient of one point, float64
    for n in range(n0, n1):
        g[:] = 0.0
        for p in range(3):
            plane = planes[p]
            tx, mx0, mx1, x0 = _axis(xyz[b, n, _U[p]], width, scratch, 0)
            ty, my0, my1, y0 = _axis(xyz[b, n, _V[p]], height, scratch, 1)
            r0 = y0 * width + x0
            r1 = r0 + width
            # Out-of-plane corners read as zero: mask their values.
            m00 = 1.0 if (my0 and mx0) else 0.0
            m10 = 1.0 if (my0 and mx1) else 0.0
            m01 = 1.0 if (my1 and mx0) else 0.0
            m11 = 1.0 if (my1 and mx1) else 0.0
            i00 = r0 if m00 else 0
            i10 = r0 + 1 if m10 else 0
            i01 = r1 if m01 else 0
            i11 = r1 + 1 if m11 else 0
            # Per-corner dot products <grad_out, value> over channels, in float64.
            s00 = 0.0
            s10 = 0.0
            s01 = 0.0
            s11 = 0.0
            for c in range(channels):
                go = np.float64(grad_out[b, n, p, c])
                s00 += go * plane[i00, c]
                s10 += go * plane[i10, c]
                s01 += go * plane[i01, c]
                s11 += go * plane[i11, c]
            s00 *= m00
            s10 *= m10
            s01 *= m01
            s11 *= m11
            wx1 = np.float64(tx)
            wy1 = np.float64(ty)
            # d/d ix of sum_ab w_ab v_ab, with wx0 = 1 - tx, wx1 = tx (and likewise in y).
            g[_U[p]] += ((s10 - s00) * (1.0 - wy1) + (s11 - s01) * wy1) * du
            g[_V[p]] += ((s01 - s00) * (1.0 - wx1) + (s11 - s10) * wx1) * dv
        for a in range(3):
            grad_xyz[b, n, a] = g[a]


@numba.njit(nogil=True, cache=True)
def to_channel_first(src, t0, t1, dst):
    """``dst[p, c, t] = sum_k src[k, p, t, c]`` for texels ``t0 .. t1 - 1``: sum and transpose.

    Args:
        src: [K, P, H * W, C] K channel-last partial gradients.
        t0, t1: range of texels.
        dst: [P, C, H * W] channel-first; overwritten in that range.

    Tiles of 64 texels keep both sides in cache (``torch.Tensor.copy_`` of a permuted view is
    several times slower on CPU).
    """
    n_parts, n_planes, _, channels = src.shape
    for p in range(n_planes):
        for s0 in range(t0, t1, 64):
            s1 = min(t1, s0 + 64)
            for c in range(channels):
                for i in range(s0, s1):
                    acc = src[0, p, i, c]
                    for k in range(1, n_parts):
                        acc += src[k, p, i, c]
                    dst[p, c, i] = acc
