"""The CPU rasteriser behind `fourview.render.raster`: numba kernels and the threads that run them.

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
replaces the stored one when its (float64) z/w is smaller than the stored float32 value, so
equal depths keep the lower triangle index where float32 holds the depth exactly (elsewhere the
rounding of the stored value decides, the same way on every run).

Threads: an image is drawn in three passes, each cut into tasks that run on a few Python threads
(the kernels release the GIL; `run_tasks`):

1. `project_vertices`, over ranges of vertices;
2. `triangle_bounds`, over ranges of triangles: the rows and columns of pixels each triangle can
   cover (its clipped bounding box; empty when it cannot draw anything), and per row an estimate
   of the work of the triangles there;
3. `draw_rows`, over bands of rows cut where the estimates give the bands equal work: each task
   draws, in index order, the triangles whose rows meet its band, clipped to the band.

A pixel lies in one band, where it meets the same fragments in the same order as in one serial
pass over the triangles: coverage, triangle ids, barycentrics and depth ties are bit for bit the
same whatever the number of threads. A minibatch of two images per thread or more, or of small
images, is drawn one image per thread instead (the same passes, serially). (numba's
``parallel=True`` over bands of rows was slower, not faster, on the 2-core machine, its OpenMP
workers spinning against torch's; it also compiles several times longer.)

Conventions are nvdiffrast's: image row 0 is clip-space y = -1, pixel (row, col) has its centre
at ``((col + 0.5) / W * 2 - 1, (row + 0.5) / H * 2 - 1)``.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

_BBOX_EPS_PX = 1e-6
"""Slack added to bounding boxes, pixels; the edge test decides, the box only has to contain."""
_NDC_CLAMP = 4.0
"""Projected coordinates are clamped to [-4, 4] before conversion to pixel indices."""
_SETUP_COST_PX = 8
"""Work estimate of setting a triangle up, in tested pixels (balances the bands of rows)."""
_WORK_SAMPLE = 8
"""Every how many triangles one counts towards the work estimate of the rows (it only balances
the bands of rows, which do not change the output)."""
_MIN_TASK_VERTICES = 16384
"""Fewest vertices per projection task (smaller meshes are projected by one thread)."""
_MIN_TASK_TRIANGLES = 8192
"""Fewest triangles per bounding-box task."""
_MIN_PARALLEL_WORK = 16384
"""Fewest triangles plus pixels / 8 for which one image is drawn by several threads, unless the
minibatch has two images per thread or more: then each image is drawn by one thread."""
_TASKS_PER_THREAD = 2
"""Vertex and triangle ranges per thread."""
_BANDS_PER_THREAD = 2
"""Bands of rows per thread: a thread slowed by other load leaves its second band to the rest."""
_MIN_TASK_PIXELS = 16384
"""Fewest pixels per `interpolate` task."""


# ----------------------------------------------------------------------------------------------
# Threads.


@functools.cache
def _helper_pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """Threads that help the calling thread; one pool per size and process (a forked child,
    whose copy of a parent's pool has no threads, makes its own)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fourview-raster")


def run_tasks(threads: int, task: Callable[..., None], args: list[tuple]) -> None:
    """``task(*a)`` for every ``a`` in ``args``, on up to ``threads`` threads, the caller's among them.

    Threads take the next task as they free up, so a thread slowed by other load does less. The
    tasks must write disjoint outputs. A task's exception is raised here, after the others stop.
    """
    helpers = min(threads, len(args)) - 1
    if helpers <= 0:
        for a in args:
            task(*a)
        return
    pending = iter(args)
    lock = threading.Lock()
    failed = False

    def work() -> None:
        nonlocal failed
        try:
            while not failed:
                with lock:
                    a = next(pending, None)
                if a is None:
                    return
                task(*a)
        except BaseException:
            failed = True  # the other threads take no further task
            raise

    futures = [_helper_pool(threads - 1, os.getpid()).submit(work) for _ in range(helpers)]
    try:
        work()
    finally:
        for f in futures:
            if not f.cancel():  # started: wait for it (and raise its exception)
                f.result()


def split_range(n: int, parts: int, min_size: int) -> list[tuple[int, int]]:
    """``range(n)`` as at most ``parts`` contiguous ``(start, stop)`` ranges of at least
    ``min_size`` (a single range when ``n`` is smaller; none when ``n == 0``)."""
    parts = max(1, min(parts, n // max(1, min_size)))
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts) if n > 0]


# ----------------------------------------------------------------------------------------------
# Kernels.


@njit(cache=True, nogil=True)
def pixel_centres(n: int) -> np.ndarray:
    """[n] NDC coordinates ``(i + 0.5) / n * 2 - 1`` of pixel centres along one axis, float64."""
    out = np.empty(n)
    for i in range(n):
        out[i] = (i + 0.5) / n * 2.0 - 1.0
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def project_vertices(pos: np.ndarray, v_start: int, v_stop: int, vdata: np.ndarray) -> None:
    """Per-vertex screen data: ``vdata[i] = (x/w, y/w, z/w, 1/w)`` for vertices between the near
    and far planes (``w > 0``, ``-w <= z <= w``), ``(0, 0, 0, 0)`` otherwise.

    Args:
        pos: [V, 4] float32 clip-space positions.
        v_start, v_stop: the vertices to project.
        vdata: [V, 4] float64 output.
    """
    for i in range(v_start, v_stop):
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


@njit(cache=True, nogil=True, error_model="numpy")
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
def _screen_vertices(vdata: np.ndarray, i0: int, i1: int, i2: int):
    """``(x0, y0, z0, x1, y1, z1, x2, y2, z2)``: the projected vertices from `project_vertices`."""
    return (
        vdata[i0, 0], vdata[i0, 1], vdata[i0, 2],
        vdata[i1, 0], vdata[i1, 1], vdata[i1, 2],
        vdata[i2, 0], vdata[i2, 1], vdata[i2, 2],
    )  # fmt: skip


@njit(cache=True, nogil=True)
def _clip_vertices(pos: np.ndarray, i0: int, i1: int, i2: int):
    """``(x0, y0, z0, w0, x1, ..., w2)``: the clip-space vertices in float64."""
    return (
        np.float64(pos[i0, 0]), np.float64(pos[i0, 1]), np.float64(pos[i0, 2]), np.float64(pos[i0, 3]),
        np.float64(pos[i1, 0]), np.float64(pos[i1, 1]), np.float64(pos[i1, 2]), np.float64(pos[i1, 3]),
        np.float64(pos[i2, 0]), np.float64(pos[i2, 1]), np.float64(pos[i2, 2]), np.float64(pos[i2, 3]),
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def triangle_bounds(
    pos: np.ndarray,
    vdata: np.ndarray,
    tri: np.ndarray,
    f_first: int,
    f_start: int,
    f_stop: int,
    width: int,
    bounds: np.ndarray,
    row_work: np.ndarray,
) -> None:
    """The pixels triangles ``f_start..f_stop-1`` can cover, and an estimate of the work per row.

    Args:
        pos: [V, 4] float32 clip-space positions.  vdata: [V, 4] from `project_vertices`.
        tri: [F, 3] vertex indices (validated by the caller).
        f_first: the image's first triangle; ``bounds`` column ``f - f_first`` is triangle ``f``.
        width: image width, pixels; the height is ``len(row_work) - 1``.
        bounds: [4, >= f_stop - f_first] int32 output: rows ``r_lo..r_hi`` and columns
            ``c_lo..c_hi`` of the triangle's clipped bounding box; ``r_lo > r_hi`` when the
            triangle draws nothing (off screen, beyond the near or far plane, between pixel centres).
        row_work: [H + 1] int64, accumulated as a difference array: its cumulative sum over rows
            estimates the work of drawing the triangles row by row (tested pixels, plus
            `_SETUP_COST_PX` per triangle on its first row), from every `_WORK_SAMPLE`-th triangle.
    """
    height = row_work.shape[0] - 1
    # Triangles between the near and far planes, in a loop without branches (the tests become
    # selects); the others are marked r_lo = -2 and boxed in the loop below.
    for f in range(f_start, f_stop):
        k = f - f_first
        i0 = tri[f, 0]
        i1 = tri[f, 1]
        i2 = tri[f, 2]
        x0, y0, _, x1, y1, _, x2, y2, _ = _screen_vertices(vdata, i0, i1, i2)
        fast = (vdata[i0, 3] != 0.0) & (vdata[i1, 3] != 0.0) & (vdata[i2, 3] != 0.0)
        xmin = min(min(x0, x1), x2)
        xmax = max(max(x0, x1), x2)
        ymin = min(min(y0, y1), y2)
        ymax = max(max(y0, y1), y2)
        on_screen = (xmax >= -1.0) & (xmin <= 1.0) & (ymax >= -1.0) & (ymin <= 1.0)  # False for NaN
        # Off-screen boxes (NaN among them) become 0 before their conversion to pixel indices.
        c_lo, c_hi = _pixel_range(xmin if on_screen else 0.0, xmax if on_screen else 0.0, width, 0, width - 1)
        r_lo, r_hi = _pixel_range(ymin if on_screen else 0.0, ymax if on_screen else 0.0, height, 0, height - 1)
        draw = fast & on_screen & (c_lo <= c_hi) & (r_lo <= r_hi)
        bounds[0, k] = r_lo if draw else (height if fast else -2)
        bounds[1, k] = r_hi if draw else -1
        bounds[2, k] = c_lo
        bounds[3, k] = c_hi

    poly = np.empty((8, 4))
    clipped = np.empty((8, 4))
    for f in range(f_start, f_stop):
        k = f - f_first
        if bounds[0, k] != -2:
            continue
        bounds[0, k] = height  # empty until proven otherwise
        x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2 = _clip_vertices(pos, tri[f, 0], tri[f, 1], tri[f, 2])
        # Entirely outside the near or the far plane: culled.
        if (z0 < -w0 and z1 < -w1 and z2 < -w2) or (z0 > w0 and z1 > w1 and z2 > w2):
            continue
        for j in range(3):
            for c in range(4):
                poly[j, c] = pos[tri[f, j], c]
        n = _clip_near_far(poly, 3, clipped)
        if n == 0:
            continue
        xmin = math.inf
        xmax = -math.inf
        ymin = math.inf
        ymax = -math.inf
        for j in range(n):
            wj = clipped[j, 3]
            if not wj > 1e-300:  # on the camera plane: the box is the whole screen
                xmin = -math.inf
                xmax = math.inf
                ymin = -math.inf
                ymax = math.inf
                break
            xmin = min(xmin, clipped[j, 0] / wj)
            xmax = max(xmax, clipped[j, 0] / wj)
            ymin = min(ymin, clipped[j, 1] / wj)
            ymax = max(ymax, clipped[j, 1] / wj)
        if not (xmax >= -1.0 and xmin <= 1.0 and ymax >= -1.0 and ymin <= 1.0):
            continue  # off screen (also catches NaN)
        c_lo, c_hi = _pixel_range(xmin, xmax, width, 0, width - 1)
        r_lo, r_hi = _pixel_range(ymin, ymax, height, 0, height - 1)
        if c_lo > c_hi or r_lo > r_hi:
            continue
        bounds[0, k] = r_lo
        bounds[1, k] = r_hi
        bounds[2, k] = c_lo
        bounds[3, k] = c_hi

    k_start = f_start - f_first
    for k in range(k_start + (-k_start) % _WORK_SAMPLE, f_stop - f_first, _WORK_SAMPLE):
        r_lo = bounds[0, k]
        r_hi = bounds[1, k]
        if r_lo <= r_hi:
            cols = bounds[3, k] - bounds[2, k] + 1
            row_work[r_lo] += _SETUP_COST_PX + cols
            row_work[r_lo + 1] -= _SETUP_COST_PX
            row_work[r_hi + 1] -= cols


@njit(cache=True, nogil=True, error_model="numpy")
def draw_rows(
    pos: np.ndarray,
    vdata: np.ndarray,
    tri: np.ndarray,
    f_first: int,
    bounds: np.ndarray,
    row_lo: int,
    row_hi: int,
    px_ndc: np.ndarray,
    py_ndc: np.ndarray,
    out: np.ndarray,
) -> None:
    """Draw, in index order, the image's triangles clipped to rows ``row_lo..row_hi``.

    Args:
        pos: [V, 4] float32 clip-space positions.  vdata: [V, 4] from `project_vertices`.
        tri: [F, 3] vertex indices.
        f_first: the image's first triangle (column 0 of ``bounds``).
        bounds: [4, F_image] from `triangle_bounds`.
        px_ndc: [W] pixel-centre x in NDC.  py_ndc: [H] pixel-centre y in NDC (row 0 = y -1).
        out: [H, W, 4] float32, zero where nothing is drawn yet; receives (u, v, z/w, id + 1) of
            the nearest fragment, and serves as the depth buffer.
    """
    # Flat, unsigned indices into the output (uint64 throughout: numba turns uint64 + int into a
    # float): numba then skips its negative-index handling.
    flat = out.reshape(-1)  # [H * W * 4]
    row_stride = np.uint64(4 * out.shape[1])
    for k in range(bounds.shape[1]):
        r_lo = bounds[0, k]
        r_hi = bounds[1, k]
        if r_lo > row_hi or r_hi < row_lo:
            continue  # outside the band, or draws nothing
        r_lo = max(r_lo, row_lo)
        r_hi = min(r_hi, row_hi)
        c_lo = bounds[2, k]
        c_hi = bounds[3, k]
        f = f_first + k
        i0 = tri[f, 0]
        i1 = tri[f, 1]
        i2 = tri[f, 2]
        iw0 = vdata[i0, 3]
        iw1 = vdata[i1, 3]
        iw2 = vdata[i2, 3]
        if iw0 != 0.0 and iw1 != 0.0 and iw2 != 0.0:
            # Edge functions of the projected triangle (w = 1).
            x0, y0, z0, x1, y1, z1, x2, y2, z2 = _screen_vertices(vdata, i0, i1, i2)
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
            x0, y0, z0, w0, x1, y1, z1, w1, x2, y2, z2, w2 = _clip_vertices(pos, i0, i1, i2)
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
            i = np.uint64(r) * row_stride + np.uint64(4 * c_lo)  # flat index of (r, c, 0)
            for c in range(np.uint64(c_lo), np.uint64(c_hi + 1)):
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
                    & ((flat[i + np.uint64(3)] == 0.0) | (zw < flat[i + np.uint64(2)]))
                ):
                    q0 = e0 * iw0  # perspective-correct barycentrics, unnormalised
                    q1 = e1 * iw1
                    inv_q = 1.0 / (q0 + q1 + e2 * iw2)
                    flat[i] = q0 * inv_q
                    flat[i + np.uint64(1)] = q1 * inv_q
                    flat[i + np.uint64(2)] = zw
                    flat[i + np.uint64(3)] = tid
                i += np.uint64(4)


@njit(cache=True, nogil=True, error_model="numpy")
def interpolate_rows(
    attr: np.ndarray, rast: np.ndarray, tri: np.ndarray, out: np.ndarray, b: int, row_start: int, row_stop: int
) -> None:
    """``out = u * a0 + v * a1 + (1 - u - v) * a2`` at the drawn pixels of rows ``row_start..row_stop-1``
    of image ``b``.

    Args:
        attr: [P, V, C] float32 attributes; P is 1 (shared) or B.
        rast: [B, H, W, 4] float32 rasteriser output.
        tri: [F, 3] int32.
        out: [B, H, W, C] float32, zero-filled.
    """
    a = attr[b if attr.shape[0] > 1 else 0]
    for r in range(row_start, row_stop):
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


# ----------------------------------------------------------------------------------------------
# Drivers.


def _row_bands(row_work: np.ndarray, n_bands: int) -> list[tuple[int, int]]:
    """Rows ``0..H-1`` cut into at most ``n_bands`` ``(row_lo, row_hi)`` bands (inclusive) of about
    equal estimated work; together they hold every row (the estimate is from a sample).

    Args:
        row_work: [H + 1] difference array from `triangle_bounds`.
    """
    height = len(row_work) - 1
    total = np.cumsum(np.cumsum(row_work[:-1]))  # [H] work of rows 0..r
    if n_bands <= 1 or total[-1] <= 0:
        return [(0, height - 1)]
    cuts = np.searchsorted(total, total[-1] * np.arange(1, n_bands) / n_bands, side="right")
    edges = np.unique(np.concatenate([[0], cuts, [height]]).clip(0, height))
    return [(int(lo), int(hi) - 1) for lo, hi in zip(edges[:-1], edges[1:])]


def _draw_image(
    pos: np.ndarray,
    vdata: np.ndarray,
    tri: np.ndarray,
    f_first: int,
    f_count: int,
    px_ndc: np.ndarray,
    py_ndc: np.ndarray,
    out: np.ndarray,
    threads: int,
) -> None:
    """Draw triangles ``f_first..f_first+f_count-1`` into ``out`` [H, W, 4] (``vdata`` projected)."""
    height, width = out.shape[:2]
    chunks = split_range(f_count, threads * _TASKS_PER_THREAD, _MIN_TASK_TRIANGLES)
    bounds = np.empty((4, f_count), dtype=np.int32)
    row_work = np.zeros((len(chunks), height + 1), dtype=np.int64)
    run_tasks(
        threads,
        lambda i, f0, f1: triangle_bounds(
            pos, vdata, tri, f_first, f_first + f0, f_first + f1, width, bounds, row_work[i]
        ),
        [(i, f0, f1) for i, (f0, f1) in enumerate(chunks)],
    )
    bands = _row_bands(row_work.sum(axis=0), _BANDS_PER_THREAD * threads if threads > 1 else 1)
    run_tasks(
        threads,
        lambda row_lo, row_hi: draw_rows(pos, vdata, tri, f_first, bounds, row_lo, row_hi, px_ndc, py_ndc, out),
        bands,
    )


def _project(pos: np.ndarray, threads: int) -> np.ndarray:
    """[V, 4] `project_vertices` of ``pos`` [V, 4]."""
    vdata = np.empty((pos.shape[0], 4))
    run_tasks(
        threads,
        lambda v0, v1: project_vertices(pos, v0, v1, vdata),
        split_range(pos.shape[0], threads * _TASKS_PER_THREAD, _MIN_TASK_VERTICES),
    )
    return vdata


def rasterize_images(
    pos: np.ndarray,
    tri: np.ndarray,
    pos_index: np.ndarray,
    tri_start: np.ndarray,
    tri_count: np.ndarray,
    out: np.ndarray,
    threads: int,
) -> None:
    """Rasterise a minibatch; image ``b`` draws ``tri[tri_start[b]:+tri_count[b]]`` with ``pos[pos_index[b]]``.

    Args:
        pos: [P, V, 4] float32 clip-space positions.
        tri: [F, 3] int32 vertex indices, all in [0, V).
        pos_index, tri_start, tri_count: [B] int64.
        out: [B, H, W, 4] float32, zero-filled; receives (u, v, z/w, triangle index + 1).
        threads: threads to use; the result does not depend on it.
    """
    n_img, height, width = out.shape[:3]
    px_ndc = pixel_centres(width)
    py_ndc = pixel_centres(height)
    work = tri_count + height * width // 8  # [B]
    whole_images = threads > 1 and n_img > 1 and (n_img >= 2 * threads or int(work.max()) < _MIN_PARALLEL_WORK)
    if whole_images:  # one image per thread: no bands, no waiting between passes
        shared = _project(pos[0], threads) if (pos_index == pos_index[0]).all() else None

        def draw(b: int) -> None:
            p = pos_index[b]
            vdata = shared if shared is not None else _project(pos[p], 1)
            _draw_image(pos[p], vdata, tri, tri_start[b], tri_count[b], px_ndc, py_ndc, out[b], 1)

        run_tasks(threads, draw, [(b,) for b in range(n_img)])
        return
    projected, vdata = -1, None
    for b in range(n_img):
        p = pos_index[b]
        if p != projected:
            vdata = _project(pos[p], threads)
            projected = p
        _draw_image(pos[p], vdata, tri, tri_start[b], tri_count[b], px_ndc, py_ndc, out[b], threads)


def interpolate_images(attr: np.ndarray, rast: np.ndarray, tri: np.ndarray, out: np.ndarray, threads: int) -> None:
    """``out = u * a0 + v * a1 + (1 - u - v) * a2`` at drawn pixels (forward only, no autograd).

    Args:
        attr: [P, V, C] float32 attributes; P is 1 (shared) or B.
        rast: [B, H, W, 4] float32 rasteriser output.
        tri: [F, 3] int32.
        out: [B, H, W, C] float32, zero-filled.
        threads: threads to use; the result does not depend on it.
    """
    n_img, height, width = rast.shape[:3]
    rows = split_range(height, threads * _BANDS_PER_THREAD, max(1, _MIN_TASK_PIXELS // width))
    run_tasks(
        threads,
        lambda b, r0, r1: interpolate_rows(attr, rast, tri, out, b, r0, r1),
        [(b, r0, r1) for b in range(n_img) for r0, r1 in rows],
    )
