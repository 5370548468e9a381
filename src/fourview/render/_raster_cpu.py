"""Numba kernels of the CPU rasteriser; `fourview.render.raster` is the public face.

Coverage is decided with 2D homogeneous edge functions (Olano & Greer 1997, "Triangle scan
conversion using 2D homogeneous coordinates"): for clip-space vertices ``v_i = (x_i, y_i, w_i)``
and a pixel centre ``p = (px, py, 1)`` in normalised device coordinates,

    e_i(p) = (v_{i+1} x v_{i+2}) . p,     det = v_0 . (v_1 x v_2) = sum_i e_i(p) w_i,

and ``c_i = e_i / det`` are the perspective-correct barycentrics divided by the clip ``w`` of the
surface point. The pixel sees the triangle in front of the camera iff every ``c_i >= 0``; its
barycentrics are ``b_i = e_i / sum(e)`` and its depth is ``z/w = sum_i c_i z_i``. Nothing is
divided by a vertex ``w``, so vertices behind the camera need no special case, and testing
``-1 <= z/w <= 1`` per pixel is exact near/far clipping. Both triangle orientations are drawn.

Fast path: when all three vertices lie between the near and far planes (so ``w > 0``), the same
formula is applied to the projected vertices ``(x/w, y/w, 1)``; depth ``z/w`` is then affine in
screen space and the perspective-correct barycentrics are ``b_i ∝ e_i / w_i``. Only triangles
that cross the near or far plane take the homogeneous path (with a clipped bounding box).

Pixel centres exactly on an edge belong to the triangle whose interior lies towards +x of the
edge, or towards +y for an edge parallel to x (a left/bottom rule in clip space, y up). The two
triangles on either side of a shared edge compute exactly negated edge functions, so such a
pixel is drawn once. The depth buffer is the float32 z/w channel of the output; a fragment
replaces the stored one when its z/w is smaller, so equal depths keep the lower triangle index.

The kernels run on one thread (``nogil``, so callers may use threads of their own): numba's
``parallel=True`` was slower, not faster, its OpenMP workers spinning against torch's
(docs/benchmarks.md).

Conventions are nvdiffrast's: image row 0 is clip-space y = -1, pixel (row, col) has its centre
at ``((col + 0.5) / W * 2 - 1, (row + 0.5) / H * 2 - 1)``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_BBOX_EPS_PX = 1e-6
"""Slack added to bounding boxes, pixels; the edge test decides, the box only has to contain."""
_NDC_CLAMP = 4.0
"""Projected coordinates are clamped to [-4, 4] before conversion to pixel indices."""


@njit(cache=True, nogil=True)
def pixel_centres(n: int) -> np.ndarray:
    """[n] NDC coordinates ``(i + 0.5) / n * 2 - 1`` of pixel centres along one axis, float64."""
    out = np.empty(n)
    for i in range(n):
        out[i] = (i + 0.5) / n * 2.0 - 1.0
    return out


@njit(cache=True, nogil=True)
def _project_vertices(pos: np.ndarray, vdata: np.ndarray) -> None:
    """Per-vertex screen data: ``vdata[i] = (x/w, y/w, z/w, 1/w)`` for vertices between the near
    and far planes (``w > 0``, ``-w <= z <= w``), ``(0, 0, 0, 0)`` otherwise.

    Args:
        pos: [V, 4] float32 clip-space positions.
        vdata: [V, 4] float64 output.
    """
    for i in range(pos.shape[0]):
        x = np.float64(pos[i, 0])
        y = np.float64(pos[i, 1])
        z = np.float64(pos[i, 2])
        w = np.float64(pos[i, 3])
        if w > 0.0 and z >= -w and z <= w:
            inv_w = 1.0 / w
            vdata[i, 0] = x * inv_w
            vdata[i, 1] = y * inv_w
            vdata[i, 2] = z * inv_w
            vdata[i, 3] = inv_w
        else:
            vdata[i, 0] = 0.0
            vdata[i, 1] = 0.0
            vdata[i, 2] = 0.0
            vdata[i, 3] = 0.0


@njit(cache=True, nogil=True)
def _clip_near_far(verts: np.ndarray, count: int, out: np.ndarray) -> int:
    """Clip a convex polygon against ``z + w >= 0`` and then ``w - z >= 0`` (Sutherland-Hodgman).

    Args:
        verts: [>= count + 2, 4] clip-space polygon (x, y, z, w); overwritten as scratch.
        count: number of vertices.
        out: [>= count + 2, 4] receives the clipped polygon.

    Returns:
        number of vertices written to ``out`` (0 if nothing is left).
    """
    src, dst = verts, out
    n = count
    for plane in range(2):
        sign = 1.0 if plane == 0 else -1.0
        m = 0
        for i in range(n):
            j = (i + 1) % n
            di = src[i, 3] + sign * src[i, 2]
            dj = src[j, 3] + sign * src[j, 2]
            if di >= 0.0:
                for k in range(4):
                    dst[m, k] = src[i, k]
                m += 1
            if (di >= 0.0) != (dj >= 0.0):
                t = di / (di - dj)
                for k in range(4):
                    dst[m, k] = src[i, k] + t * (src[j, k] - src[i, k])
                m += 1
        n = m
        if n == 0:
            return 0
        src, dst = dst, src
    for i in range(n):  # after two passes the polygon is back in `verts`
        for k in range(4):
            out[i, k] = src[i, k]
    return n


@njit(cache=True, nogil=True)
def _pixel_range(lo: float, hi: float, n: int, first: int, last: int):
    """Pixel indices in [first, last] whose centres ``(i + 0.5) / n * 2 - 1`` lie in [lo, hi] (NDC)."""
    lo = max(lo, -_NDC_CLAMP)
    hi = min(hi, _NDC_CLAMP)
    i_lo = max(int(math.ceil((lo + 1.0) * 0.5 * n - 0.5 - _BBOX_EPS_PX)), first)
    i_hi = min(int(math.floor((hi + 1.0) * 0.5 * n - 0.5 + _BBOX_EPS_PX)), last)
    return i_lo, i_hi


@njit(cache=True, nogil=True)
def _raster_image(
    pos: np.ndarray,
    vdata: np.ndarray,
    tri: np.ndarray,
    f_start: int,
    f_end: int,
    px_ndc: np.ndarray,
    py_ndc: np.ndarray,
    out: np.ndarray,
) -> None:
    """Draw triangles ``f_start..f_end-1`` into one image.

    Args:
        pos: [V, 4] float32 clip-space positions.
        vdata: [V, 4] float64 from `_project_vertices`.
        tri: [F, 3] vertex indices (validated by the caller).
        px_ndc: [W] pixel-centre x in NDC.  py_ndc: [H] pixel-centre y in NDC (row 0 = y -1).
        out: [H, W, 4] float32, zero where nothing is drawn yet; receives (u, v, z/w, id + 1) of
            the nearest fragment, and serves as the depth buffer.
    """
    height = py_ndc.shape[0]
    width = px_ndc.shape[0]
    poly = np.empty((8, 4))
    clipped = np.empty((8, 4))
    for f in range(f_start, f_end):
        i0 = tri[f, 0]
        i1 = tri[f, 1]
        i2 = tri[f, 2]
        iw0 = vdata[i0, 3]
        iw1 = vdata[i1, 3]
        iw2 = vdata[i2, 3]
        fast = iw0 != 0.0 and iw1 != 0.0 and iw2 != 0.0
        if fast:
            # Edge functions of the projected triangle (w = 1).
            x0 = vdata[i0, 0]
            y0 = vdata[i0, 1]
            x1 = vdata[i1, 0]
            y1 = vdata[i1, 1]
            x2 = vdata[i2, 0]
            y2 = vdata[i2, 1]
            xmin = min(x0, x1, x2)
            xmax = max(x0, x1, x2)
            ymin = min(y0, y1, y2)
            ymax = max(y0, y1, y2)
            if not (xmax >= -1.0 and xmin <= 1.0 and ymax >= -1.0 and ymin <= 1.0):
                continue  # off screen (also catches NaN)
            c_lo, c_hi = _pixel_range(xmin, xmax, width, 0, width - 1)
            if c_lo > c_hi:
                continue
            r_lo, r_hi = _pixel_range(ymin, ymax, height, 0, height - 1)
            if r_lo > r_hi:
                continue
            z0 = vdata[i0, 2]
            z1 = vdata[i1, 2]
            z2 = vdata[i2, 2]
            n0x = y1 - y2
            n0y = x2 - x1
            n0w = x1 * y2 - y1 * x2
            n1x = y2 - y0
            n1y = x0 - x2
            n1w = x2 * y0 - y2 * x0
            n2x = y0 - y1
            n2y = x1 - x0
            n2w = x0 * y1 - y0 * x1
            det = n0w + n1w + n2w
        else:
            x0 = np.float64(pos[i0, 0])
            y0 = np.float64(pos[i0, 1])
            z0 = np.float64(pos[i0, 2])
            w0 = np.float64(pos[i0, 3])
            x1 = np.float64(pos[i1, 0])
            y1 = np.float64(pos[i1, 1])
            z1 = np.float64(pos[i1, 2])
            w1 = np.float64(pos[i1, 3])
            x2 = np.float64(pos[i2, 0])
            y2 = np.float64(pos[i2, 1])
            z2 = np.float64(pos[i2, 2])
            w2 = np.float64(pos[i2, 3])
            # Entirely outside the near or the far plane: culled.
            if (z0 < -w0 and z1 < -w1 and z2 < -w2) or (z0 > w0 and z1 > w1 and z2 > w2):
                continue
            poly[0, 0] = x0
            poly[0, 1] = y0
            poly[0, 2] = z0
            poly[0, 3] = w0
            poly[1, 0] = x1
            poly[1, 1] = y1
            poly[1, 2] = z1
            poly[1, 3] = w1
            poly[2, 0] = x2
            poly[2, 1] = y2
            poly[2, 2] = z2
            poly[2, 3] = w2
            n = _clip_near_far(poly, 3, clipped)
            if n == 0:
                continue
            xmin = math.inf
            xmax = -math.inf
            ymin = math.inf
            ymax = -math.inf
            for k in range(n):
                wk = clipped[k, 3]
                if not wk > 1e-300:  # on the camera plane: the box is the whole screen
                    xmin = -math.inf
                    xmax = math.inf
                    ymin = -math.inf
                    ymax = math.inf
                    break
                xmin = min(xmin, clipped[k, 0] / wk)
                xmax = max(xmax, clipped[k, 0] / wk)
                ymin = min(ymin, clipped[k, 1] / wk)
                ymax = max(ymax, clipped[k, 1] / wk)
            if not (xmax >= -1.0 and xmin <= 1.0 and ymax >= -1.0 and ymin <= 1.0):
                continue
            c_lo, c_hi = _pixel_range(xmin, xmax, width, 0, width - 1)
            r_lo, r_hi = _pixel_range(ymin, ymax, height, 0, height - 1)
            if c_lo > c_hi or r_lo > r_hi:
                continue
            # Homogeneous edge functions, n_i = v_{i+1} x v_{i+2} over (x, y, w).
            n0x = y1 * w2 - w1 * y2
            n0y = w1 * x2 - x1 * w2
            n0w = x1 * y2 - y1 * x2
            n1x = y2 * w0 - w2 * y0
            n1y = w2 * x0 - x2 * w0
            n1w = x2 * y0 - y2 * x0
            n2x = y0 * w1 - w0 * y1
            n2y = w0 * x1 - x0 * w1
            n2w = x0 * y1 - y0 * x1
            det = x0 * n0x + y0 * n0y + w0 * n0w
            iw0 = 1.0  # barycentrics are e_i / sum(e) directly
            iw1 = 1.0
            iw2 = 1.0

        if not (det != 0.0 and math.isfinite(det)):
            continue  # degenerate, or seen edge-on
        if det < 0.0:  # draw both orientations: flip so that inside means e_i >= 0
            n0x, n0y, n0w = -n0x, -n0y, -n0w
            n1x, n1y, n1w = -n1x, -n1y, -n1w
            n2x, n2y, n2w = -n2x, -n2y, -n2w
            det = -det
        inv_det = 1.0 / det
        # Tie rule for pixel centres exactly on an edge (see the module docstring).
        t0 = n0x > 0.0 or (n0x == 0.0 and n0y > 0.0)
        t1 = n1x > 0.0 or (n1x == 0.0 and n1y > 0.0)
        t2 = n2x > 0.0 or (n2x == 0.0 and n2y > 0.0)
        # z/w = sum_i e_i z_i / det is affine in (px, py): z/w = za px + zb py + zc.
        za = (n0x * z0 + n1x * z1 + n2x * z2) * inv_det
        zb = (n0y * z0 + n1y * z1 + n2y * z2) * inv_det
        zc = (n0w * z0 + n1w * z1 + n2w * z2) * inv_det
        tid = np.float32(f + 1)

        for r in range(r_lo, r_hi + 1):
            py = py_ndc[r]
            b0 = n0y * py + n0w
            b1 = n1y * py + n1w
            b2 = n2y * py + n2w
            zr = zb * py + zc
            for c in range(c_lo, c_hi + 1):
                px = px_ndc[c]
                e0 = n0x * px + b0
                e1 = n1x * px + b1
                e2 = n2x * px + b2
                zw = za * px + zr
                # Non-short-circuit tests: fewer unpredictable branches on tiny triangles.
                if (
                    ((e0 > 0.0) | ((e0 == 0.0) & t0))
                    & ((e1 > 0.0) | ((e1 == 0.0) & t1))
                    & ((e2 > 0.0) | ((e2 == 0.0) & t2))
                    & (zw >= -1.0)
                    & (zw <= 1.0)
                    & ((out[r, c, 3] == 0.0) | (zw < out[r, c, 2]))
                ):
                    q0 = e0 * iw0  # perspective-correct barycentrics, unnormalised
                    q1 = e1 * iw1
                    inv_q = 1.0 / (q0 + q1 + e2 * iw2)
                    out[r, c, 0] = q0 * inv_q
                    out[r, c, 1] = q1 * inv_q
                    out[r, c, 2] = zw
                    out[r, c, 3] = tid


@njit(cache=True, nogil=True)
def rasterize_batch(
    pos: np.ndarray,
    tri: np.ndarray,
    pos_index: np.ndarray,
    tri_start: np.ndarray,
    tri_count: np.ndarray,
    out: np.ndarray,
) -> None:
    """Rasterise a minibatch; image ``b`` draws ``tri[tri_start[b]:+tri_count[b]]`` with ``pos[pos_index[b]]``.

    Args:
        pos: [P, V, 4] float32 clip-space positions.
        tri: [F, 3] int32 vertex indices, all in [0, V).
        pos_index, tri_start, tri_count: [B] int64.
        out: [B, H, W, 4] float32, zero-filled; receives (u, v, z/w, triangle index + 1).
    """
    height, width = out.shape[1], out.shape[2]
    px_ndc = pixel_centres(width)
    py_ndc = pixel_centres(height)
    vdata = np.empty((pos.shape[1], 4))  # [V, 4]
    projected = -1
    for b in range(out.shape[0]):
        p = pos_index[b]
        if p != projected:
            _project_vertices(pos[p], vdata)
            projected = p
        f0 = tri_start[b]
        _raster_image(pos[p], vdata, tri, f0, f0 + tri_count[b], px_ndc, py_ndc, out[b])


@njit(cache=True, nogil=True)
def _interpolate_rows(attr: np.ndarray, rast: np.ndarray, tri: np.ndarray, out: np.ndarray, b: int, r: int) -> None:
    a = attr[b if attr.shape[0] > 1 else 0]
    for c in range(rast.shape[2]):
        tid = int(rast[b, r, c, 3])
        if tid == 0:
            continue
        u = rast[b, r, c, 0]
        v = rast[b, r, c, 1]
        i0 = tri[tid - 1, 0]
        i1 = tri[tid - 1, 1]
        i2 = tri[tid - 1, 2]
        for k in range(attr.shape[2]):
            a2 = a[i2, k]
            out[b, r, c, k] = a2 + u * (a[i0, k] - a2) + v * (a[i1, k] - a2)


@njit(cache=True, nogil=True)
def interpolate_batch(attr: np.ndarray, rast: np.ndarray, tri: np.ndarray, out: np.ndarray) -> None:
    """``out = u * a0 + v * a1 + (1 - u - v) * a2`` at drawn pixels (forward only, no autograd).

    Args:
        attr: [P, V, C] float32 attributes; P is 1 (shared) or B.
        rast: [B, H, W, 4] float32 rasteriser output.
        tri: [F, 3] int32.
        out: [B, H, W, C] float32, zero-filled.
    """
    for b in range(rast.shape[0]):
        for r in range(rast.shape[1]):
            _interpolate_rows(attr, rast, tri, out, b, r)
