"""`fourview.recon.triplane`: parity with F.grid_sample, gradients, hand-checked values, axes."""

from __future__ import annotations

import pytest
import torch

from fourview.errors import InputError
from fourview.recon.triplane import PLANE_AXES, sample_triplane, sample_triplane_reference

BACKENDS = ["numba", "torch"]


def _fast(backend: str):
    return lambda planes, xyz: sample_triplane(planes, xyz, backend=backend)


IMPLS = {"numba": _fast("numba"), "torch": _fast("torch"), "reference": sample_triplane_reference}


def _inputs(b, c, h, w, n, dtype=torch.float64, span=1.3, seed=0):
    """Random planes [B, 3, C, H, W] and points [B, N, 3] in [-span, span] (some outside)."""
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(b, 3, c, h, w, generator=g, dtype=dtype)
    xyz = (torch.rand(b, n, 3, generator=g, dtype=dtype) * 2 - 1) * span
    return planes, xyz


def _grads(fn, planes, xyz, cot):
    planes = planes.clone().requires_grad_()
    xyz = xyz.clone().requires_grad_()
    out = fn(planes, xyz)
    return (out, *torch.autograd.grad(out, (planes, xyz), cot))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "shape",
    [
        (2, 5, 7, 9, 300),
        (1, 3, 4, 11, 1),
        (3, 2, 1, 1, 17),
        (1, 8, 16, 16, 500),
        (2, 1, 6, 3, 64),
        (2, 4, 48, 40, 200),
    ],
    ids=["B2-7x9", "N1-4x11", "1x1", "16x16", "6x3", "few-points-48x40"],
)
def test_float64_parity_with_grid_sample(backend, shape):
    b, c, h, w, n = shape
    planes, xyz = _inputs(b, c, h, w, n)
    cot = torch.randn(b, n, 3, c, dtype=torch.float64)
    out, gp, gx = _grads(_fast(backend), planes, xyz, cot)
    ref, gp_ref, gx_ref = _grads(sample_triplane_reference, planes, xyz, cot)
    assert out.shape == (b, n, 3, c) and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gp, gp_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_parity_with_grid_sample(backend):
    planes, xyz = _inputs(2, 16, 32, 24, 2000, dtype=torch.float32)
    cot = torch.randn(2, 2000, 3, 16)
    out, gp, gx = _grads(_fast(backend), planes, xyz, cot)
    ref, gp_ref, gx_ref = _grads(sample_triplane_reference, planes, xyz, cot)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gp, gp_ref, rtol=1e-5, atol=1e-5)
    # d/dxyz is scaled by W/2 and sums C channels of 4 corners: compare relative to its size.
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5 * gx_ref.abs().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    planes, xyz = _inputs(2, 2, 3, 4, 6, span=1.2, seed=1)
    planes.requires_grad_()
    xyz.requires_grad_()
    assert torch.autograd.gradcheck(_fast(backend), (planes, xyz), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_2x2_plane_at_texel_centres_gives_texel_values(impl, dtype):
    # One 2x2 plane per axis pair, texel (row r, col q) = 10 * p + 2 * r + q + 1; texel centres at -0.5, 0.5.
    planes = torch.zeros(1, 3, 1, 2, 2, dtype=dtype)
    for p in range(3):
        planes[0, p, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dtype) + 10 * p
    # Each plane is read at each of its texel centres (u, v in {-0.5, 0.5}), third coordinate arbitrary.
    pts, expected = [], []
    for p, (ui, vi) in enumerate(PLANE_AXES):
        for r in range(2):
            for q in range(2):
                xyz = [0.3, -0.7, 0.1]
                xyz[ui] = q - 0.5
                xyz[vi] = r - 0.5
                pts.append(xyz)
                expected.append((p, 10 * p + 2 * r + q + 1.0))
    out = IMPLS[impl](planes, torch.tensor([pts], dtype=dtype))  # [1, 12, 3, 1]
    for n, (p, value) in enumerate(expected):
        assert out[0, n, p, 0].item() == value
    # The centre of the plane is the mean of its 4 texels, exactly.
    centre = IMPLS[impl](planes, torch.zeros(1, 1, 3, dtype=dtype))
    assert centre[0, 0, :, 0].tolist() == [2.5, 12.5, 22.5]


@pytest.mark.parametrize("impl", list(IMPLS))
def test_zero_padding_fades_over_half_a_texel(impl):
    # Plane XY of width W = 4 filled with ones; y at a texel centre. The edge texel's centre is
    # at x = 1 - 1/W; the plane's edge at x = 1 reads half of it (the other corner is zero
    # padding), x = 1 + 1/(2W) a quarter, and x = 1 + 1/W (the next texel's centre) nothing.
    w = 4
    planes = torch.zeros(1, 3, 1, 2, w, dtype=torch.float64)
    planes[0, 0] = 1.0
    xs = [1 - 1 / w, 1.0, 1 + 1 / (2 * w), 1 + 1 / w, 3.0, -1.0, -1 - 1 / (2 * w), -1 - 1 / w, -7.0]
    expected = [1.0, 0.5, 0.25, 0.0, 0.0, 0.5, 0.25, 0.0, 0.0]
    xyz = torch.tensor([[[x, -0.5, 0.0] for x in xs]], dtype=torch.float64)
    out = IMPLS[impl](planes, xyz)[0, :, 0, 0]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("p", [0, 1, 2])
def test_plane_order_and_axes(impl, p):
    # A feature only in plane p at (row r, col q) of an H=4 x W=6 plane is read by every point whose
    # width coordinate is at column q's centre and height coordinate at row r's centre, whatever the
    # third coordinate; the other planes read nothing there.
    h, w, r, q = 4, 6, 1, 4
    planes = torch.zeros(1, 3, 2, h, w, dtype=torch.float64)
    planes[0, p, :, r, q] = torch.tensor([5.0, -3.0])
    ui, vi = PLANE_AXES[p]
    third = 3 - ui - vi
    n = 5
    xyz = torch.zeros(1, n, 3, dtype=torch.float64)
    xyz[0, :, ui] = (2 * q + 1) / w - 1
    xyz[0, :, vi] = (2 * r + 1) / h - 1
    xyz[0, :, third] = torch.linspace(-0.95, 0.95, n, dtype=torch.float64)
    out = IMPLS[impl](planes, xyz)  # [1, n, 3, 2]
    expected = torch.zeros(1, n, 3, 2, dtype=torch.float64)
    expected[0, :, p] = torch.tensor([5.0, -3.0])
    assert torch.equal(out, expected)
    # Swapping the two plane coordinates moves the read off the feature (r != q).
    swapped = xyz.clone()
    swapped[0, :, ui], swapped[0, :, vi] = xyz[0, :, vi], xyz[0, :, ui]
    assert IMPLS[impl](planes, swapped)[0, :, p].abs().max().item() < 5.0


def test_plane_axes_constant():
    # XY: (x, y); ZY: (z, y); XZ: (x, z), as (width, height) coordinate indices.
    assert PLANE_AXES == ((0, 1), (2, 1), (0, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_points_without_grad_get_none_and_planes_without_grad_work(backend):
    planes, xyz = _inputs(1, 3, 5, 5, 40)
    planes.requires_grad_()
    out = sample_triplane(planes, xyz, backend=backend)
    out.sum().backward()
    assert xyz.grad is None and planes.grad is not None

    planes2, xyz2 = _inputs(1, 3, 5, 5, 40)
    xyz2.requires_grad_()
    cot = torch.randn(1, 40, 3, 3, dtype=torch.float64)
    (gx,) = torch.autograd.grad(sample_triplane(planes2, xyz2, backend=backend), xyz2, cot)
    (gx_ref,) = torch.autograd.grad(sample_triplane_reference(planes2, xyz2), xyz2, cot)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    base, xyz_base = _inputs(2, 4, 9, 8, 30)
    planes = base.transpose(3, 4)  # [2, 3, 4, 8, 9], not contiguous
    xyz = xyz_base.flip(1)
    cot = torch.randn(2, 3, 30, 4, dtype=torch.float64).transpose(1, 2)  # non-contiguous too
    out, gp, gx = _grads(_fast(backend), planes, xyz, cot)
    ref, gp_ref, gx_ref = _grads(sample_triplane_reference, planes, xyz, cot)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gp, gp_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_points(backend):
    planes, xyz = _inputs(2, 3, 4, 4, 0)
    planes.requires_grad_()
    out = sample_triplane(planes, xyz, backend=backend)
    assert out.shape == (2, 0, 3, 3)
    out.sum().backward()
    assert torch.equal(planes.grad, torch.zeros_like(planes))


def test_double_backward_raises():
    planes, xyz = _inputs(1, 2, 3, 3, 5)
    planes.requires_grad_()
    xyz.requires_grad_()
    out = sample_triplane(planes, xyz)
    (gx,) = torch.autograd.grad(out.square().sum(), xyz, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()


def test_auto_uses_torch_path_for_half_precision():
    planes, xyz = _inputs(1, 4, 8, 8, 50, dtype=torch.float32)
    planes, xyz = planes.bfloat16().requires_grad_(), xyz.bfloat16()
    out = sample_triplane(planes, xyz)
    assert out.dtype == torch.bfloat16
    # Computed in float32 from the same (bf16-rounded) inputs, then rounded to bf16 (8-bit mantissa).
    ref = sample_triplane_reference(planes.detach().float(), xyz.float())
    torch.testing.assert_close(out.float(), ref, rtol=2**-8, atol=1e-6)
    (grad,) = torch.autograd.grad(out, planes, torch.ones_like(out))
    planes32 = planes.detach().float().requires_grad_()
    (grad_ref,) = torch.autograd.grad(sample_triplane_reference(planes32, xyz.float()).sum(), planes32)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad.float(), grad_ref, rtol=2**-8, atol=1e-6)


@pytest.mark.parametrize(
    ("planes_shape", "xyz_shape", "match"),
    [
        ((1, 2, 4, 5, 5), (1, 10, 3), r"planes must be \[B, 3, C, H, W\]"),
        ((1, 3, 4, 5), (1, 10, 3), r"planes must be \[B, 3, C, H, W\]"),
        ((1, 3, 4, 0, 5), (1, 10, 3), "H >= 1"),
        ((1, 3, 4, 5, 5), (10, 3), r"xyz must be \[B, N, 3\]"),
        ((1, 3, 4, 5, 5), (1, 10, 2), r"xyz must be \[B, N, 3\]"),
        ((2, 3, 4, 5, 5), (1, 10, 3), "batch"),
    ],
)
def test_bad_shapes_raise_input_error(planes_shape, xyz_shape, match):
    with pytest.raises(InputError, match=match):
        sample_triplane(torch.zeros(planes_shape), torch.zeros(xyz_shape))
    with pytest.raises(InputError, match=match):
        sample_triplane_reference(torch.zeros(planes_shape), torch.zeros(xyz_shape))


def test_bad_dtype_and_backend_raise_input_error():
    planes, xyz = torch.zeros(1, 3, 2, 4, 4), torch.zeros(1, 5, 3)
    with pytest.raises(InputError, match="dtype"):
        sample_triplane(planes, xyz.double())
    with pytest.raises(InputError, match="dtype"):
        sample_triplane(planes.long(), xyz.long())
    with pytest.raises(InputError, match="unknown triplane sampling backend"):
        sample_triplane(planes, xyz, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="backend 'numba'"):
        sample_triplane(planes.half(), xyz.half(), backend="numba")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_threads_split_work(dtype):
    # Enough points for several point ranges (and plane-gradient copies) per call.
    planes, xyz = _inputs(2, 32, 16, 12, 20_000, dtype=dtype)
    cot = torch.randn(2, 20_000, 3, 32, dtype=dtype)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _grads(_fast("numba"), planes, xyz, cot)
        torch.set_num_threads(3)
        multi = _grads(_fast("numba"), planes, xyz, cot)
        again = _grads(_fast("numba"), planes, xyz, cot)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(multi, again):
        assert torch.equal(a, b)  # deterministic for a given thread count
    # Samples and point gradients: disjoint point ranges, bitwise the same for any thread count.
    assert torch.equal(single[0], multi[0]) and torch.equal(single[2], multi[2])
    ref = _grads(sample_triplane_reference, planes, xyz, cot)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for ours in (single, multi):
        for x, y in zip(ours, ref):
            torch.testing.assert_close(x, y, rtol=tol, atol=tol * max(1.0, y.abs().max().item()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plane_gradient_of_few_points_is_one_copy_s(dtype):
    """Few points on large planes scatter straight into the channel-first gradient: the numbers of
    the channel-last copy, transposed."""
    from fourview.recon import _triplane_numba as kernels

    planes, xyz = _inputs(1, 5, 40, 48, 300, dtype=dtype)
    cot = torch.randn(1, 300, 3, 5, dtype=dtype)
    copy = torch.zeros(1, 3, 40 * 48, 5, dtype=dtype)
    kernels.backward_planes(cot.numpy(), 40, 48, xyz.numpy(), 0, 0, 300, kernels._scratch(copy.numpy().dtype),
                            copy[0].numpy())  # fmt: skip
    expected = torch.empty(3, 5, 40 * 48, dtype=dtype)
    kernels.to_channel_first(copy.numpy(), 0, 40 * 48, expected.numpy())
    planes.requires_grad_()
    (grad,) = torch.autograd.grad(sample_triplane(planes, xyz, backend="numba"), planes, cot)
    assert torch.equal(grad[0].reshape(3, 5, -1), expected)


def test_auto_backend_choice():
    from types import SimpleNamespace

    from fourview.recon.triplane import _pick_backend

    def on(device, dtype=torch.float32):
        return SimpleNamespace(device=torch.device(device), dtype=dtype)

    assert _pick_backend(on("cpu"), "auto") == "numba"
    assert _pick_backend(on("cpu", torch.bfloat16), "auto") == "torch"
    assert _pick_backend(on("cuda"), "auto") == "grid_sample"  # grid_sample's fused kernels win on GPUs
    assert _pick_backend(on("cuda", torch.float16), "auto") == "grid_sample"
    planes, xyz = _inputs(2, 3, 5, 6, 40)
    torch.testing.assert_close(
        sample_triplane(planes, xyz, backend="grid_sample"), sample_triplane_reference(planes, xyz)
    )


@pytest.mark.gpu
def test_cuda_backends_match_cpu():
    planes, xyz = _inputs(2, 8, 64, 64, 5000, dtype=torch.float32, span=1.1)
    cot = torch.randn(2, 5000, 3, 8, generator=torch.Generator().manual_seed(1))
    want = _grads(_fast("numba"), planes, xyz, cot)
    for backend in ("auto", "torch", "grid_sample"):
        got = _grads(_fast(backend), planes.cuda(), xyz.cuda(), cot.cuda())
        for g, w in zip(got, want):  # float32 rounding, relative to the largest value (point grads reach ~1e3)
            g, w = g.detach().cpu(), w.detach()
            assert float((g - w).abs().max()) <= 1e-6 * max(1.0, float(w.abs().max()))
