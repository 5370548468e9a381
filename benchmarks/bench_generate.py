"""Per-asset wall time and peak memory of `fourview generate`, per stage.

Each prompt runs the real command in a fresh process (``python -m fourview.cli generate``), as a
user would: the command's wall time includes starting Python and importing torch/diffusers;
the per-stage seconds and the peak resident memory come from the asset's ``meta.json`` (the
process measures them itself); the process's own peak RSS comes from ``wait4``. Goal: at most
20 s and 3 GB per asset with the demo weights on a CPU.

    python benchmarks/bench_generate.py                       # demo weights, 4 prompts
    python benchmarks/bench_generate.py --mvgen DIR --steps 4 --json out/bench_generate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = ("a red mug", "a blue car", "a green tree", "a yellow striped vase")
STAGES = ("load_mvgen_s", "mvgen_s", "load_recon_s", "reconstruct_s", "export_s", "turntable_s")


def run_one(prompt: str, out: Path, extra: list[str], threads: int) -> dict:
    """Run the command once; returns wall time, child peak RSS and the asset's meta.json."""
    cmd = [sys.executable, "-m", "fourview.cli", "generate", prompt, "-o", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "NUMBA_NUM_THREADS": str(threads)}  # fmt: skip
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fout, stderr=ferr)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0), ferr.seek(0)
        stdout, stderr = fout.read().decode(), ferr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"fourview generate failed ({proc.returncode}): {stderr.strip()}")
    meta = json.loads((out / "meta.json").read_text())
    return {
        "prompt": prompt,
        "wall_s": wall,
        "child_peak_rss_mb": usage.ru_maxrss / 1024.0,
        "in_process_total_s": sum(meta["timings_s"].get(k, 0.0) for k in STAGES),
        "timings_s": {k: meta["timings_s"].get(k) for k in STAGES},
        "peak_memory_mb": meta["peak_memory_mb"],
        "peak_memory_after_mvgen_mb": meta.get("peak_memory_after_mvgen_mb"),
        "stdout": stdout.strip(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    ap.add_argument("--mvgen", default="demo")
    ap.add_argument("--recon", default="demo")
    ap.add_argument("--steps", type=int, help="sampler steps (default: the command's)")
    ap.add_argument(
        "--threads", type=int, default=2, help="threads of the command (OMP/MKL/NUMBA): 1 on a busy machine"
    )
    ap.add_argument("--extra", default="", help="more options for the command, one string")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    extra = ["--mvgen", args.mvgen, "--recon", args.recon, *args.extra.split()]
    if args.steps is not None:
        extra += ["--steps", str(args.steps)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, prompt in enumerate(args.prompts):
            row = run_one(prompt, Path(tmp) / f"asset{i}", extra, args.threads)
            rows.append(row)
            stages = " ".join(f"{k[:-2]}={v:.2f}" for k, v in row["timings_s"].items() if v is not None)
            print(
                f"{prompt!r}: wall {row['wall_s']:.1f} s (in process {row['in_process_total_s']:.1f} s: {stages}); "
                f"peak RSS {row['child_peak_rss_mb']:.0f} MB",
                flush=True,
            )
    med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_avg": os.getloadavg()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "command_options": extra,
        "threads": args.threads,
        "median_wall_s": med("wall_s"),
        "max_wall_s": max(r["wall_s"] for r in rows),
        "median_in_process_s": med("in_process_total_s"),
        "median_stage_s": {k: statistics.median(r["timings_s"][k] or 0.0 for r in rows) for k in STAGES},
        "max_peak_rss_mb": max(r["child_peak_rss_mb"] for r in rows),
        "goal_time_met": max(r["wall_s"] for r in rows) <= 20.0,
        "goal_memory_met": max(r["child_peak_rss_mb"] for r in rows) <= 3072.0,
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    st = summary["median_stage_s"]
    print(
        f"| {summary['date']} | {summary['load_avg']:.1f} | {len(rows)} | {summary['median_wall_s']:.1f} s "
        f"(max {summary['max_wall_s']:.1f}) | {summary['median_in_process_s']:.1f} s | "
        + " | ".join(f"{st[k]:.2f}" for k in STAGES)
        + f" | {summary['max_peak_rss_mb']:.0f} MB |"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
