"""Benchmark: triplane sampling backends on a CUDA GPU, against ``F.grid_sample`` in the same run.

The CPU benchmark (`bench_grid_sample.py`) compares our numba kernels with the reference; on a GPU
the question is which backend ``sample_triplane(..., backend="auto")`` should pick. Same inputs
for every backend (defaults: B=4, C=32, 256x256 planes, 2^18 points per batch item, uniform in
[-1, 1]^3, float32; planes require grad, and with ``--with-xyz-grad`` the points too):

- forward: ``sample_triplane(planes, xyz, backend=...)`` under ``torch.no_grad``;
- forward + backward: the forward with autograd, then ``torch.autograd.grad`` with a fixed
  [B, N, 3, C] cotangent;
- peak memory: growth of ``torch.cuda.max_memory_allocated`` over the inputs during one
  forward + backward.

Times are medians of ``--repeats`` runs after ``--warmup`` runs, each bracketed by
``torch.cuda.synchronize``. Ratios are against ``sample_triplane_reference`` (grid_sample) in the
same run.

Run: ``python benchmarks/bench_grid_sample_cuda.py [--with-xyz-grad] [--json out.json]``.
Prints one JSON object at the end. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from bench_grid_sample import add_shape_arguments

from fourview.recon.triplane import sample_triplane, sample_triplane_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shape_arguments(ap)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--with-xyz-grad", action="store_true", help="points require grad too")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_grid_sample_cuda.py needs a CUDA GPU")

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    planes = torch.randn(args.batch, 3, args.channels, args.res, args.res, device=dev, generator=g)
    xyz = torch.rand(args.batch, args.points, 3, device=dev, generator=g) * 2 - 1
    cot = torch.randn(args.batch, args.points, 3, args.channels, device=dev, generator=g)
    planes.requires_grad_(True)
    xyz.requires_grad_(args.with_xyz_grad)
    wrt = [planes, xyz] if args.with_xyz_grad else [planes]
    impls = {
        "reference": sample_triplane_reference,
        "grid_sample": lambda p, x: sample_triplane(p, x, backend="grid_sample"),
        "torch": lambda p, x: sample_triplane(p, x, backend="torch"),
        "auto": sample_triplane,
    }

    def median_ms(fn) -> float:
        times = []
        for k in range(args.warmup + args.repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            if k >= args.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    results = {}
    for name, fn in impls.items():
        with torch.no_grad():
            fwd = median_ms(lambda fn=fn: fn(planes, xyz))
        both = median_ms(lambda fn=fn: torch.autograd.grad(fn(planes, xyz), wrt, cot))
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        torch.autograd.grad(fn(planes, xyz), wrt, cot)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        results[name] = {"forward_ms": fwd, "forward_backward_ms": both, "forward_backward_peak_mib": peak}
    ref = results["reference"]
    for r in results.values():
        r["forward_ratio_to_reference"] = r["forward_ms"] / ref["forward_ms"]
        r["forward_backward_ratio_to_reference"] = r["forward_backward_ms"] / ref["forward_backward_ms"]
    summary = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "shape": {"batch": args.batch, "channels": args.channels, "res": args.res, "points": args.points},
        "xyz_requires_grad": args.with_xyz_grad,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "results": results,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
