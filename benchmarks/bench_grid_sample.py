"""Benchmark: `fourview.recon.triplane.sample_triplane` vs its ``F.grid_sample`` reference.

Same inputs for both, float32 on the CPU (defaults: B=4, C=32, 256x256 planes, 2^18 points per
batch item, uniform in [-1, 1]^3; planes require grad, points do not, as in reconstruction
training):

- forward: ``sample_triplane(planes, xyz)`` vs ``sample_triplane_reference(planes, xyz)``;
- backward: ``torch.autograd.grad(out, planes, grad_out, retain_graph=True)`` on a graph built
  once (no accumulation into ``.grad``); ``grad_out`` is a contiguous [B, N, 3, C] tensor.

Times are medians over repeats after warm-up calls (numba JIT or cache load excluded, reported
separately), ours and the reference alternating so that both see the same machine load. Wall
time and process CPU time (all threads) are both reported: on a shared machine the wall time
inflates with other load while the CPU time stays closer to the work done.

Memory: each implementation runs forward + backward once in a fresh subprocess, after a tiny
warm-up call and after the inputs (planes, xyz, grad_out) are allocated and touched. The
kernel's peak-RSS mark is reset (``/proc/self/clear_refs``, Linux) just before the forward; we
report the growth of the peak resident set (``VmHWM``) over the resident set at that moment,
for the forward alone and for forward + backward. That counts every byte the calls keep
(output, saved tensors, gradients) or use temporarily, whoever allocates it (torch's allocator,
numba, libc), and nothing of the inputs.

Run: ``python benchmarks/bench_grid_sample.py [--repeats 5] [--with-xyz-grad] [--json out.json]``.
Prints one JSON line at the end. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from fourview.recon.triplane import sample_triplane, sample_triplane_reference

IMPLS = {"ours": sample_triplane, "reference": sample_triplane_reference}


def make_inputs(b: int, c: int, res: int, n: int, xyz_grad: bool, seed: int = 0):
    """planes [B, 3, C, R, R] (requires grad), xyz [B, N, 3] in [-1, 1], grad_out [B, N, 3, C]."""
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(b, 3, c, res, res, generator=g).requires_grad_()
    xyz = (torch.rand(b, n, 3, generator=g) * 2 - 1).requires_grad_(xyz_grad)
    grad_out = torch.randn(b, n, 3, c, generator=g)
    return planes, xyz, grad_out


def timed(fn):
    """(wall seconds, process CPU seconds, result) of one call."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def rss_mb() -> tuple[float, float]:
    """(current, peak since the last `reset_peak`) resident set size of this process, MiB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child_memory(args) -> None:
    """Peak RSS growth of one forward and one backward (subprocess mode); prints one JSON line."""
    fn = IMPLS[args.memory_of]
    small = make_inputs(1, 4, 8, 16, args.with_xyz_grad)  # warm-up: JIT / cache load, small
    out = fn(*small[:2])
    torch.autograd.grad(out, [t for t in small[:2] if t.requires_grad], small[2])
    del out, small
    planes, xyz, grad_out = make_inputs(args.batch, args.channels, args.res, args.points, args.with_xyz_grad)
    wrt = [planes, xyz] if args.with_xyz_grad else [planes]
    reset_peak()
    before, _ = rss_mb()
    out = fn(planes, xyz)
    after_fwd, peak_fwd = rss_mb()
    reset_peak()
    grads = torch.autograd.grad(out, wrt, grad_out)
    _, peak_bwd = rss_mb()
    del out, grads
    print(
        json.dumps(
            dict(
                impl=args.memory_of,
                rss_before_mb=before,
                forward_peak_growth_mb=peak_fwd - before,
                forward_kept_mb=after_fwd - before,
                forward_backward_peak_growth_mb=max(peak_fwd, peak_bwd) - before,
            )
        )
    )


def measure_memory(args, impl: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--memory-of",
        impl,
        "--batch",
        str(args.batch),
        "--channels",
        str(args.channels),
        "--res",
        str(args.res),
        "--points",
        str(args.points),
    ]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.with_xyz_grad:
        cmd.append("--with-xyz-grad")
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def add_shape_arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's input shape (also used by `bench_grid_sample_cuda.py`)."""
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--points", type=int, default=2**18)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shape_arguments(ap)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--with-xyz-grad", action="store_true", help="points require grad too")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--memory-of", choices=sorted(IMPLS), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_of is not None:
        child_memory(args)
        return

    import numba

    planes, xyz, grad_out = make_inputs(args.batch, args.channels, args.res, args.points, args.with_xyz_grad)
    wrt = [planes, xyz] if args.with_xyz_grad else [planes]

    # Warm-up: first call compiles the numba kernels (or loads them from numba's cache).
    first_call_s, _, out = timed(lambda: sample_triplane(planes, xyz))
    first_bwd_s, _, _ = timed(lambda out=out: torch.autograd.grad(out, wrt, grad_out, retain_graph=True))
    # Parity on the benchmark inputs (float32).
    ref = sample_triplane_reference(planes, xyz)
    # Errors relative to the largest reference value (point gradients are large: W/2 * sums over C).
    fwd_err = ((out - ref).abs().max() / ref.abs().max()).item()
    g_ours = torch.autograd.grad(out, wrt, grad_out)
    g_ref = torch.autograd.grad(ref, wrt, grad_out)
    bwd_err = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(g_ours, g_ref))
    del out, ref, g_ours, g_ref

    times = {(impl, phase, kind): [] for impl in IMPLS for phase in ("fwd", "bwd") for kind in ("wall", "cpu")}
    for rep in range(args.repeats + 1):  # repeat 0 is a warm-up for both
        for impl, fn in IMPLS.items():
            fw, fc, out = timed(lambda fn=fn: fn(planes, xyz))
            bw, bc, grads = timed(lambda out=out: torch.autograd.grad(out, wrt, grad_out, retain_graph=True))
            del out, grads
            if rep == 0:
                continue
            times[impl, "fwd", "wall"].append(fw)
            times[impl, "fwd", "cpu"].append(fc)
            times[impl, "bwd", "wall"].append(bw)
            times[impl, "bwd", "cpu"].append(bc)
        print(
            f"repeat {rep}: "
            + ", ".join(
                f"{impl} fwd {times[impl, 'fwd', 'wall'][-1]:.3f} s bwd {times[impl, 'bwd', 'wall'][-1]:.3f} s"
                for impl in IMPLS
            )
            if rep
            else "warm-up repeat done",
            flush=True,
        )

    med = {k: statistics.median(v) for k, v in times.items()}
    summary = dict(
        device=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        load_avg_1min=os.getloadavg()[0],
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        numba=numba.__version__,
        dtype="float32",
        batch=args.batch,
        channels=args.channels,
        res=args.res,
        points=args.points,
        xyz_requires_grad=args.with_xyz_grad,
        repeats=args.repeats,
        first_call_s=first_call_s,
        first_backward_s=first_bwd_s,
        max_rel_err_fwd=fwd_err,
        max_rel_err_bwd=bwd_err,
    )
    for (impl, phase, kind), v in med.items():
        summary[f"{impl}_{phase}_{kind}_s"] = v
        summary[f"{impl}_{phase}_{kind}_range_s"] = [min(times[impl, phase, kind]), max(times[impl, phase, kind])]
    for phase in ("fwd", "bwd"):
        for kind in ("wall", "cpu"):
            summary[f"speedup_{phase}_{kind}"] = med["reference", phase, kind] / med["ours", phase, kind]
    if not args.no_memory:
        for impl in IMPLS:
            mem = measure_memory(args, impl)
            summary[f"{impl}_fwd_peak_mb"] = mem["forward_peak_growth_mb"]
            summary[f"{impl}_fwd_kept_mb"] = mem["forward_kept_mb"]
            summary[f"{impl}_fwd_bwd_peak_mb"] = mem["forward_backward_peak_growth_mb"]

    print(
        f"B={args.batch} C={args.channels} {args.res}x{args.res} N={args.points} float32 CPU; "
        f"threads {summary['torch_threads']} (torch.get_num_threads, used by both); "
        f"load avg {summary['load_avg_1min']:.1f}"
    )
    print(
        f"first call {first_call_s:.2f} s (JIT compile or cache load); "
        f"max |ours - reference| / max |reference|: fwd {fwd_err:.1e}, bwd {bwd_err:.1e}"
    )
    for phase in ("fwd", "bwd"):
        print(
            f"{phase}: ours {med['ours', phase, 'wall']:.3f} s wall / {med['ours', phase, 'cpu']:.3f} s cpu, "
            f"reference {med['reference', phase, 'wall']:.3f} s wall / {med['reference', phase, 'cpu']:.3f} s cpu; "
            f"speedup x{summary[f'speedup_{phase}_wall']:.2f} wall, x{summary[f'speedup_{phase}_cpu']:.2f} cpu"
        )
    if not args.no_memory:
        print(
            f"peak RSS growth, forward + backward: ours {summary['ours_fwd_bwd_peak_mb']:.0f} MB, reference "
            f"{summary['reference_fwd_bwd_peak_mb']:.0f} MB (forward alone: ours {summary['ours_fwd_peak_mb']:.0f}"
            f" MB, reference {summary['reference_fwd_peak_mb']:.0f} MB)"
        )
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
