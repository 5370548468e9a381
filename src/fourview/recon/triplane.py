"""Bilinear triplane sampling with a fast backward for the planes.

Triplane layout (see docs/conventions.md): ``planes [B, 3, C, H, W]`` holds three axis-aligned
feature planes of the object frame, in the order XY, ZY, XZ. A point ``xyz`` (object frame,
normalised to [-1, 1]) reads each plane at two of its coordinates, with ``F.grid_sample``'s
convention for which coordinate indexes which image axis (``grid[..., 0]`` indexes W, the
columns; ``grid[..., 1]`` indexes H, the rows):

============  =============================  =============================
plane ``p``    width W (grid x, columns)      height H (grid y, rows)
============  =============================  =============================
0: XY          x                              y
1: ZY          z                              y
2: XZ          x                              z
============  =============================  =============================

so row 0 of a plane is at coordinate -1 (for XY that is y = -1, the bottom of the object:
planes are feature grids, not images, and are not flipped). Sampling is bilinear with
``align_corners=False`` (texel ``i`` of W has its centre at ``(2 i + 1) / W - 1``; -1 and 1 are
the outer edges of the border texels) and zero padding (outside the plane the features fade
linearly to zero over half a texel).

`sample_triplane` returns exactly the numbers of `sample_triplane_reference` (built on
``F.grid_sample``), to rounding. It exists for speed: its backward computes the gradient of the
planes with a scatter over a channel-last plane, and the gradient of the points only when
``xyz.requires_grad``. Double backward is not supported (``torch.autograd.grad(...,
create_graph=True)`` followed by a second backward raises a ``RuntimeError``); use
`sample_triplane_reference` for that.

Backends (the ``backend`` argument):

* ``"numba"``: CPU kernels (`fourview.recon._triplane_numba`), float32 and float64, on
  ``torch.get_num_threads()`` threads. Extra memory: the 3 planes of one batch item,
  ``3 * H * W * C`` values, in the forward; one such copy per thread (at most 8) in the
  backward, where each thread scatters its points into its own copy. Forward and point
  gradients do not depend on the thread count; the plane gradient sums the copies, so its last
  bits do (it is deterministic for a given thread count). Fewer points than a quarter of a
  plane's texels are scattered straight into the plane gradient on one thread (the numbers of
  one copy). The first call in a fresh install compiles the kernels (seconds; numba caches them
  on disk).
* ``"torch"``: the same algorithm in torch ops (gather and ``index_add_``); runs on any
  device and dtype (float16 and bfloat16 are computed in float32 and rounded at the end).
  Temporary memory: 4 corner rows per sample of one plane, ``B * N * 4 * C`` values. On CUDA
  its ``index_add_`` uses atomics, so the plane gradient is not bitwise deterministic there.
* ``"grid_sample"``: `sample_triplane_reference` (``F.grid_sample``, one call for the three
  planes). On CUDA its fused kernels beat the torch backend's gathers and scatters in time and
  memory (docs/benchmarks.md, `benchmarks/bench_grid_sample_cuda.py`).
* ``"auto"`` (default): numba for float32/float64 CPU tensors, grid_sample for CUDA tensors,
  torch otherwise.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from fourview.errors import InputError

__all__ = ["PLANE_AXES", "sample_triplane", "sample_triplane_reference"]

PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (2, 1), (0, 2))
"""For plane p in order XY, ZY, XZ: (coordinate along its width W, coordinate along its height H),
as indices into xyz (0 = x, 1 = y, 2 = z)."""

Backend = Literal["auto", "numba", "torch", "grid_sample"]

_MIN_POINTS_PER_TASK = 4096
"""Smallest range of points worth a thread of the numba backend."""

_MAX_GRAD_COPIES = 8
"""Most threads (each with its own copy of one item's plane gradient) in the numba backward."""

_SPARSE_POINTS_PER_TEXEL = 0.25
"""Below this many points per texel of a plane, the numba backward scatters the plane gradient
straight into the channel-first result on one thread (zeroing and transposing a channel-last copy
of the planes would cost more than the points)."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)
"""Dtypes that the torch backend computes in float32 (coordinates in bf16 are off by ~1/100 texel)."""


def sample_triplane(planes: torch.Tensor, xyz: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """Sample the three planes of a triplane at points, bilinearly (``F.grid_sample`` semantics).

    Args:
        planes: [B, 3, C, H, W] float features, planes in the order XY, ZY, XZ (see the module
            docstring for which coordinate indexes W and H). Any strides.
        xyz: [B, N, 3] points in the object frame, normalised so that the triplane spans [-1, 1]
            on every axis; same dtype and device as ``planes``. Points outside read zero padding.
        backend: ``"auto"``, ``"numba"`` (CPU float32/float64 only), ``"torch"`` or
            ``"grid_sample"`` (see the module docstring).

    Returns:
        [B, N, 3, C] features, same dtype as ``planes``: ``out[b, n, p]`` is plane p sampled at
        point n. Contiguous, except from the grid_sample backend (a permuted view).

    Raises:
        InputError: on a bad shape, dtype, device or backend.
    """
    _check_inputs(planes, xyz)
    kind = _pick_backend(planes, backend)
    if kind == "grid_sample":
        return _grid_sample_triplane(planes, xyz)
    return _SampleTriplane.apply(planes, xyz, kind == "numba")


def sample_triplane_reference(planes: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    """`sample_triplane` built on ``F.grid_sample`` (the reference; supports double backward).

    Args:
        planes: [B, 3, C, H, W], order XY, ZY, XZ.
        xyz: [B, N, 3] in [-1, 1].

    Returns:
        [B, N, 3, C], a permuted (non-contiguous) view of grid_sample's output.
    """
    _check_inputs(planes, xyz)
    return _grid_sample_triplane(planes, xyz)


def _grid_sample_triplane(planes: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    """`sample_triplane_reference` on checked inputs: one ``F.grid_sample`` call for the three planes."""
    b, _, c, h, w = planes.shape
    n = xyz.shape[1]
    grid = torch.stack([xyz[..., list(axes)] for axes in PLANE_AXES], dim=1)  # [B, 3, N, 2]
    out = F.grid_sample(
        planes.reshape(b * 3, c, h, w),
        grid.reshape(b * 3, 1, n, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # [B * 3, C, 1, N]
    return out.reshape(b, 3, c, n).permute(0, 3, 1, 2)  # [B, N, 3, C]


def _check_inputs(planes: torch.Tensor, xyz: torch.Tensor) -> None:
    if planes.ndim != 5 or planes.shape[1] != 3:
        raise InputError(f"planes must be [B, 3, C, H, W] (planes XY, ZY, XZ), got shape {tuple(planes.shape)}")
    if planes.shape[3] < 1 or planes.shape[4] < 1:
        raise InputError(f"planes must have H >= 1 and W >= 1, got shape {tuple(planes.shape)}")
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise InputError(f"xyz must be [B, N, 3], got shape {tuple(xyz.shape)}")
    if xyz.shape[0] != planes.shape[0]:
        raise InputError(f"xyz has batch {xyz.shape[0]} but planes have batch {planes.shape[0]}")
    if not planes.is_floating_point() or planes.dtype != xyz.dtype:
        raise InputError(f"planes and xyz must share one floating dtype, got {planes.dtype} and {xyz.dtype}")
    if planes.device != xyz.device:
        raise InputError(f"planes and xyz must be on one device, got {planes.device} and {xyz.device}")


def _pick_backend(planes: torch.Tensor, backend: str) -> str:
    """The backend that runs: ``"numba"``, ``"torch"`` or ``"grid_sample"``."""
    numba_ok = planes.device.type == "cpu" and planes.dtype in (torch.float32, torch.float64)
    if backend == "auto":
        if numba_ok:
            return "numba"
        return "grid_sample" if planes.device.type == "cuda" else "torch"
    elif backend == "numba":
        if not numba_ok:
            raise InputError(
                f"backend 'numba' needs float32/float64 CPU tensors, got {planes.dtype} on {planes.device}"
            )
        return "numba"
    elif backend in ("torch", "grid_sample"):
        return backend
    else:
        raise InputError(
            f"unknown triplane sampling backend {backend!r}; use 'auto', 'numba', 'torch' or 'grid_sample'"
        )


class _SampleTriplane(torch.autograd.Function):
    """planes [B, 3, C, H, W], xyz [B, N, 3] -> [B, N, 3, C]; backward once only."""

    @staticmethod
    def forward(ctx, planes: torch.Tensor, xyz: torch.Tensor, use_numba: bool) -> torch.Tensor:
        ctx.use_numba = use_numba
        # Nothing new is saved: both inputs exist anyway, and the corner indices and weights
        # are recomputed in backward (cheaper than storing 4 indices + 4 weights per sample).
        ctx.save_for_backward(planes, xyz)
        planes = planes.detach()
        xyz = xyz.detach().contiguous()
        if use_numba:
            return _forward_numba(planes, xyz)
        elif planes.dtype in _LOW_PRECISION:
            return _forward_torch(planes.float(), xyz.float()).to(planes.dtype)
        else:
            return _forward_torch(planes, xyz)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        planes, xyz = ctx.saved_tensors
        need_planes, need_xyz = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_out = grad_out.contiguous()  # [B, N, 3, C]
        xyz = xyz.contiguous()
        if ctx.use_numba:
            grad_planes, grad_xyz = _backward_numba(planes, xyz, grad_out, need_planes, need_xyz)
        elif planes.dtype in _LOW_PRECISION:
            grad_planes, grad_xyz = _backward_torch(
                planes.float(), xyz.float(), grad_out.float(), need_planes, need_xyz
            )
            grad_planes = grad_planes.to(planes.dtype) if grad_planes is not None else None
            grad_xyz = grad_xyz.to(xyz.dtype) if grad_xyz is not None else None
        else:
            grad_planes, grad_xyz = _backward_torch(planes, xyz, grad_out, need_planes, need_xyz)
        return grad_planes, grad_xyz, None


# --- numba backend: one batch item at a time, channel-last in a reused buffer -------------------


def _ranges(n: int, parts: int, min_size: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``parts`` contiguous ranges of at least ``min_size`` (but one)."""
    parts = max(1, min(parts, n // max(1, min_size)))
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


def _run(pool: ThreadPoolExecutor | None, task, args: list[tuple[int, ...]]) -> None:
    """``task(*a)`` for every ``a`` in ``args``, on the pool's threads when there are several."""
    if pool is None or len(args) == 1:
        for a in args:
            task(*a)
    else:
        for _ in pool.map(lambda a: task(*a), args):  # re-raises a task's exception here
            pass


def _pool(threads: int) -> ThreadPoolExecutor | nullcontext:
    return ThreadPoolExecutor(max_workers=threads) if threads > 1 else nullcontext()


def _forward_numba(planes: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    from fourview.recon import _triplane_numba as kernels

    b_size, _, c, h, w = planes.shape
    n = xyz.shape[1]
    out = torch.empty(b_size, n, 3, c, dtype=planes.dtype)  # [B, N, 3, C]
    buf = torch.empty(3, h, w, c, dtype=planes.dtype)  # the 3 planes of one item, channel-last
    out_np, xyz_np, buf_np = out.numpy(), xyz.numpy(), buf.view(3, h * w, c).numpy()
    threads = torch.get_num_threads()
    # A few ranges per thread, so that a thread slowed by other load does not hold up the rest.
    ranges = _ranges(n, 4 * threads, _MIN_POINTS_PER_TASK)
    dtype = buf_np.dtype
    with _pool(threads) as pool:
        for b in range(b_size):
            buf.copy_(planes[b].permute(0, 2, 3, 1))  # [3, C, H, W] -> [3, H, W, C]
            _run(
                pool,
                lambda n0, n1, b=b: kernels.forward(buf_np, h, w, xyz_np, b, n0, n1, kernels._scratch(dtype), out_np),
                ranges,
            )
    return out


def _backward_numba(
    planes: torch.Tensor, xyz: torch.Tensor, grad_out: torch.Tensor, need_planes: bool, need_xyz: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    from fourview.recon import _triplane_numba as kernels

    b_size, _, c, h, w = planes.shape
    n = xyz.shape[1]
    planes = planes.detach()
    xyz_np, go_np = xyz.detach().numpy(), grad_out.numpy()
    threads = torch.get_num_threads()
    point_ranges = _ranges(n, 4 * threads, _MIN_POINTS_PER_TASK)
    # The plane gradient: each of `parts` threads scatters its points into its own channel-last
    # copy, then the copies are summed while transposing to channel-first.
    part_ranges = _ranges(n, min(threads, _MAX_GRAD_COPIES), _MIN_POINTS_PER_TASK)
    texel_ranges = _ranges(h * w, threads, 4096)
    sparse = need_planes and n < _SPARSE_POINTS_PER_TEXEL * h * w
    parts = len(part_ranges) if need_planes and not sparse else 1
    buf = torch.empty(parts, 3, h * w, c, dtype=planes.dtype)  # [K, 3, H * W, C]
    buf_np = buf.numpy()
    dtype = buf_np.dtype
    grad_planes = None
    if need_planes:
        grad_planes = (torch.zeros if sparse else torch.empty)(planes.shape, dtype=planes.dtype)
    grad_xyz = torch.empty_like(xyz) if need_xyz else None
    with _pool(threads) as pool:
        for b in range(b_size):
            if grad_xyz is not None:
                gx_np = grad_xyz.numpy()
                buf[0].view(3, h, w, c).copy_(planes[b].permute(0, 2, 3, 1))  # [3, C, H, W] -> [3, H, W, C]
                _run(
                    pool,
                    lambda n0, n1, b=b, gx_np=gx_np: kernels.backward_xyz(
                        buf_np[0], go_np, h, w, xyz_np, b, n0, n1, kernels._scratch(dtype), gx_np
                    ),
                    point_ranges,
                )
            if grad_planes is not None and sparse:
                gp_np = grad_planes[b].view(3, c, h * w).numpy().transpose(0, 2, 1)  # [3, H * W, C] view
                kernels.backward_planes(go_np, h, w, xyz_np, b, 0, n, kernels._scratch(dtype), gp_np)
            elif grad_planes is not None:
                gp_np = grad_planes[b].view(3, c, h * w).numpy()
                buf.zero_()  # (buf[0] held the planes for the point gradient)
                _run(
                    pool,
                    lambda n0, n1, k, b=b: kernels.backward_planes(
                        go_np, h, w, xyz_np, b, n0, n1, kernels._scratch(dtype), buf_np[k]
                    ),
                    [(n0, n1, k) for k, (n0, n1) in enumerate(part_ranges)],
                )
                _run(pool, lambda t0, t1, gp_np=gp_np: kernels.to_channel_first(buf_np, t0, t1, gp_np), texel_ranges)
    return grad_planes, grad_xyz


# --- torch backend: the same algorithm in torch ops, any device --------------------------------


def _corners_torch(
    u: torch.Tensor, v: torch.Tensor, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Corner rows and weights of samples at (u, v) on an [H, W] plane.

    Args:
        u: [B, N] coordinate along W, normalised.
        v: [B, N] coordinate along H, normalised.

    Returns:
        rows: [B, N, 4] int64 flat indices into ``H * W`` (0 for out-of-plane corners), corner
            order (x0, y0), (x1, y0), (x0, y1), (x1, y1).
        weights: [B, N, 4] bilinear weights, 0 for out-of-plane corners.
        dw_dx: [B, N, 4] d weight / d u.
        dw_dy: [B, N, 4] d weight / d v.
    """
    ix = ((u + 1) * w - 1) / 2  # texel coordinates, texel i centred at i
    iy = ((v + 1) * h - 1) / 2
    fx, fy = ix.floor(), iy.floor()
    tx, ty = ix - fx, iy - fy
    x0 = torch.stack([fx, fx + 1, fx, fx + 1], dim=-1)  # [B, N, 4]
    y0 = torch.stack([fy, fy, fy + 1, fy + 1], dim=-1)
    inside = (x0 >= 0) & (x0 <= w - 1) & (y0 >= 0) & (y0 <= h - 1)  # [B, N, 4]
    rows = torch.where(inside, y0 * w + x0, torch.zeros_like(x0)).long()
    ax = torch.stack([1 - tx, tx, 1 - tx, tx], dim=-1)
    ay = torch.stack([1 - ty, 1 - ty, ty, ty], dim=-1)
    sx = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=u.dtype, device=u.device)  # d ax / d ix
    sy = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=u.dtype, device=u.device)
    mask = inside.to(u.dtype)
    weights = ax * ay * mask
    dw_dx = sx * ay * mask * (w / 2)
    dw_dy = sy * ax * mask * (h / 2)
    return rows, weights, dw_dx, dw_dy


def _plane_rows(planes: torch.Tensor, p: int) -> torch.Tensor:
    """Plane p of every batch item as channel-last rows [B * H * W, C]."""
    b, _, c, h, w = planes.shape
    return planes[:, p].permute(0, 2, 3, 1).reshape(b * h * w, c)


def _forward_torch(planes: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    b, _, c, h, w = planes.shape
    n = xyz.shape[1]
    offset = (torch.arange(b, device=xyz.device) * (h * w)).view(b, 1, 1)
    out = torch.empty(b, n, 3, c, dtype=planes.dtype, device=planes.device)  # [B, N, 3, C]
    for p, (ui, vi) in enumerate(PLANE_AXES):
        rows, weights, _, _ = _corners_torch(xyz[..., ui], xyz[..., vi], h, w)
        values = _plane_rows(planes, p)[rows + offset]  # [B, N, 4, C]
        out[:, :, p] = torch.einsum("bnkc,bnk->bnc", values, weights)
    return out


def _backward_torch(
    planes: torch.Tensor, xyz: torch.Tensor, grad_out: torch.Tensor, need_planes: bool, need_xyz: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    b, _, c, h, w = planes.shape
    planes = planes.detach()
    offset = (torch.arange(b, device=xyz.device) * (h * w)).view(b, 1, 1)
    grad_planes = torch.empty_like(planes, memory_format=torch.contiguous_format) if need_planes else None
    grad_xyz = torch.zeros_like(xyz) if need_xyz else None
    for p, (ui, vi) in enumerate(PLANE_AXES):
        rows, weights, dw_dx, dw_dy = _corners_torch(xyz[..., ui], xyz[..., vi], h, w)
        rows = rows + offset  # [B, N, 4] rows of [B * H * W, C]
        go = grad_out[:, :, p]  # [B, N, C]
        if grad_planes is not None:
            grad_rows = torch.zeros(b * h * w, c, dtype=planes.dtype, device=planes.device)
            grad_rows.index_add_(0, rows.reshape(-1), (weights[..., None] * go[:, :, None, :]).reshape(-1, c))
            grad_planes[:, p] = grad_rows.view(b, h, w, c).permute(0, 3, 1, 2)
        if grad_xyz is not None:
            dots = torch.einsum("bnkc,bnc->bnk", _plane_rows(planes, p)[rows], go)  # [B, N, 4]
            grad_xyz[..., ui] += (dots * dw_dx).sum(-1)
            grad_xyz[..., vi] += (dots * dw_dy).sum(-1)
    return grad_planes, grad_xyz
