"""Per-asset wall time and peak memory of `fourview generate`: a fresh command (cold) and a loaded pipeline (warm).

Cold: each prompt runs the real command in a fresh process (``python -m fourview.cli generate``),
as a user would: the command's wall time includes starting Python, importing torch/diffusers and
loading the models; the per-stage seconds and the peak resident memory come from the asset's
``meta.json`` (the process measures them itself); the process's own peak RSS comes from
``wait4``. Goals (issue 22): a median wall time of at most 10 s over the prompts (4 by default)
and at most 3 GB per asset, with the demo weights on this two-core CPU, quiet.

Warm, in the same run: one more fresh process (this script with ``--warm-worker``, the same
threads) loads the models once (`FourViewPipeline.from_pretrained`), then makes every prompt's
asset (``text_to_3d`` with the command's default settings, then ``Asset.save``: text -> GLB),
timing each call; the turntable the command renders by default is rendered after the GLB and
timed apart. Goal: text -> GLB in at most 4 s once the models are loaded (the median of the calls
after the first); the ratio to a fresh command is printed too. The load averages (1, 5, 15 min)
and the threads are printed beside every number (the machine is shared: on a busy machine use
``--threads 1``, since two OpenMP threads sharing their cores with other work wait for each other).

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
from typing import NamedTuple

import torch

from fourview.asset import SaveSettings
from fourview.export.preview import write_turntable
from fourview.pipeline import ExportSettings, FourViewPipeline, SamplingSettings

PROMPTS = ("a red mug", "a blue car", "a green tree", "a yellow striped vase")
STAGES = ("load_models_s", "mvgen_s", "reconstruct_s", "export_s", "write_s", "turntable_s")
"""The command's stages in ``meta.json`` (``total_s`` there is the load and text -> asset, before the files)."""
WARM_STAGES = ("mvgen_s", "reconstruct_s", "export_s")
COLD_GOAL_S = 10.0
"""Median wall time of a fresh `fourview generate` (issue 22)."""
WARM_GOAL_S = 4.0
"""Text -> GLB with the models loaded (issue 22)."""
MEMORY_GOAL_MB = 3072.0


def load_avg() -> str:
    """The load averages over 1, 5 and 15 minutes, as ``uptime`` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


class ChildRun(NamedTuple):
    """A child process's wall and CPU seconds (user + system: less sensitive to a busy machine), peak RSS, output."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str


def run_child(cmd: list[str], threads: int, what: str, env: dict | None = None) -> ChildRun:
    """Run ``cmd`` with ``threads`` OMP/MKL/NUMBA threads (and ``env`` added); exits if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "NUMBA_NUM_THREADS": str(threads), **(env or {})}  # fmt: skip
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fout, stderr=ferr)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0), ferr.seek(0)
        stdout, stderr = fout.read().decode(), ferr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {stderr.strip()}")
    return ChildRun(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, stdout, stderr)


def run_cold(prompt: str, out: Path, options: list[str], threads: int) -> dict:
    """Run the command once; returns wall time, child peak RSS and the asset's meta.json."""
    cmd = [sys.executable, "-m", "fourview.cli", "generate", prompt, "-o", str(out), *options]
    child = run_child(cmd, threads, "fourview generate")
    wall = child.wall_s
    meta = json.loads((out / "meta.json").read_text())
    timings = {k: meta["timings_s"].get(k) for k in STAGES}
    return {
        "prompt": prompt,
        "wall_s": wall,
        # the fresh command to its GLB and files, its turntable left out (what the warm path times)
        "wall_without_turntable_s": wall - (timings["turntable_s"] or 0.0),
        "cpu_s": child.cpu_s,
        "child_peak_rss_mb": child.peak_rss_mb,
        "in_process_total_s": sum(v or 0.0 for v in timings.values()),
        "timings_s": timings,
        "peak_memory_mb": meta["peak_memory_mb"],
        "peak_memory_after_mvgen_mb": meta.get("peak_memory_after_mvgen_mb"),
        "load_avg": load_avg(),
        "stdout": child.stdout.strip(),
    }


def run_warm(spec: dict, threads: int) -> dict:
    """The warm path (`warm_worker`) in one fresh process; adds its wall time and peak RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--warm-worker", json.dumps(spec)]
    child = run_child(cmd, threads, "the warm worker")
    return {**json.loads(Path(spec["result"]).read_text()), "process_wall_s": child.wall_s,
            "child_peak_rss_mb": child.peak_rss_mb}  # fmt: skip


def warm_worker(spec: dict) -> None:
    """Load the models once, then text -> GLB per prompt (the turntable after, timed apart); writes the times."""
    # diffusers is seconds to import: only this process, as the command does, quiets its bars.
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    out = Path(spec["out"])
    t0 = time.perf_counter()
    pipe = FourViewPipeline.from_pretrained(spec["mvgen"], spec["recon"])
    load_s = time.perf_counter() - t0
    sampling = SamplingSettings(steps=spec["steps"])
    calls = []
    for i, prompt in enumerate(spec["prompts"]):
        t0 = time.perf_counter()
        asset = pipe.text_to_3d(prompt, sampling, ExportSettings())
        asset_s = time.perf_counter() - t0
        asset.save(out / f"asset{i}")
        glb_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if spec["turntable_frames"] > 0:
            frames = asset.turntable(spec["turntable_frames"], spec["preview_resolution"])
            write_turntable(out / f"asset{i}_turntable.gif", frames)
        turntable_s = time.perf_counter() - t0
        calls.append({
            "prompt": prompt, "glb_s": glb_s, "text_to_3d_s": asset_s, "save_s": glb_s - asset_s,
            "turntable_s": turntable_s, "timings_s": {k: asset.timings.get(k) for k in WARM_STAGES},
            "load_avg": load_avg(),
        })  # fmt: skip
    result = {"load_models_s": load_s, "torch_threads": torch.get_num_threads(), "calls": calls}
    Path(spec["result"]).write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    ap.add_argument("--mvgen", default="demo")
    ap.add_argument("--recon", default="demo")
    ap.add_argument("--steps", type=int, help="sampler steps (default: the command's)")
    ap.add_argument("--turntable", type=int, default=24, help="turntable frames (the command's default: 24)")
    ap.add_argument(
        "--threads", type=int, default=2, help="threads of both processes (OMP/MKL/NUMBA): 1 on a busy machine"
    )
    ap.add_argument("--extra", default="", help="more options for the cold command only, one string")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--warm-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.warm_worker:
        warm_worker(json.loads(args.warm_worker))
        return

    options = ["--mvgen", args.mvgen, "--recon", args.recon, "--turntable", str(args.turntable), *args.extra.split()]
    if args.steps is not None:
        options += ["--steps", str(args.steps)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, prompt in enumerate(args.prompts):
            row = run_cold(prompt, Path(tmp) / f"asset{i}", options, args.threads)
            rows.append(row)
            stages = " ".join(f"{k[:-2]}={v:.2f}" for k, v in row["timings_s"].items() if v is not None)
            print(
                f"cold {prompt!r}: wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s "
                f"(in process {row['in_process_total_s']:.1f} s: {stages}); "
                f"peak RSS {row['child_peak_rss_mb']:.0f} MB (load {row['load_avg']}, {args.threads} threads)",
                flush=True,
            )
        spec = {
            "prompts": args.prompts, "mvgen": args.mvgen, "recon": args.recon, "steps": args.steps,
            "turntable_frames": args.turntable, "preview_resolution": SaveSettings().preview_resolution,
            "out": str(Path(tmp) / "warm"), "result": str(Path(tmp) / "warm.json"),
        }  # fmt: skip
        warm = run_warm(spec, args.threads)
    calls = warm["calls"]
    print(
        f"warm: load models {warm['load_models_s']:.2f} s once ({warm['torch_threads']} torch threads, load "
        f"{load_avg()})",
        flush=True,
    )
    for i, c in enumerate(calls):
        stages = " ".join(f"{k[:-2]}={v:.2f}" for k, v in c["timings_s"].items() if v is not None)
        print(
            f"warm call {i + 1} {c['prompt']!r}: text->GLB {c['glb_s']:.2f} s ({stages} save={c['save_s']:.2f}); "
            f"turntable {c['turntable_s']:.2f} s (load {c['load_avg']}, {warm['torch_threads']} threads)",
            flush=True,
        )
    med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    later = calls[1:] or calls  # the calls after the first in the process (the first alone if one prompt)
    warm_glb = statistics.median(c["glb_s"] for c in later)
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_avg": load_avg(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "command_options": options,
        "threads": args.threads,
        "median_wall_s": med("wall_s"),
        "median_cpu_s": med("cpu_s"),
        "max_wall_s": max(r["wall_s"] for r in rows),
        "median_wall_without_turntable_s": med("wall_without_turntable_s"),
        "median_in_process_s": med("in_process_total_s"),
        "median_stage_s": {k: statistics.median(r["timings_s"][k] or 0.0 for r in rows) for k in STAGES},
        "max_peak_rss_mb": max(r["child_peak_rss_mb"] for r in rows),
        "goal_time_met": med("wall_s") <= COLD_GOAL_S,
        "goal_memory_met": max(r["child_peak_rss_mb"] for r in rows) <= MEMORY_GOAL_MB,
        "warm": {
            "torch_threads": warm["torch_threads"],
            "load_models_s": warm["load_models_s"],
            "first_call_glb_s": calls[0]["glb_s"],
            "calls_in_median": len(later),
            "median_glb_s": warm_glb,
            "median_stage_s": {k: statistics.median(c["timings_s"][k] or 0.0 for c in later) for k in WARM_STAGES},
            "median_save_s": statistics.median(c["save_s"] for c in later),
            "median_turntable_s": statistics.median(c["turntable_s"] for c in later),
            "process_wall_s": warm["process_wall_s"],
            "peak_rss_mb": warm["child_peak_rss_mb"],
        },
        "warm_over_cold": warm_glb / med("wall_s"),
        "warm_over_cold_without_turntable": warm_glb / med("wall_without_turntable_s"),
        "goal_warm_met": warm_glb <= WARM_GOAL_S,
        "rows": rows,
        "warm_calls": calls,
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("rows", "warm_calls")}, indent=1))
    st, w = summary["median_stage_s"], summary["warm"]
    print(
        f"| {summary['date']} | {summary['load_avg']} | {args.threads} | {len(rows)} | "
        f"{summary['median_wall_s']:.1f} s "
        f"(max {summary['max_wall_s']:.1f}) | {summary['median_in_process_s']:.1f} s | "
        + " | ".join(f"{st[k]:.2f}" for k in STAGES)
        + f" | {summary['max_peak_rss_mb']:.0f} MB |"
    )
    print(
        f"warm text->GLB median {w['median_glb_s']:.2f} s over {w['calls_in_median']} calls after the first "
        f"(first {w['first_call_glb_s']:.2f} s; load models {w['load_models_s']:.2f} s once; turntable "
        f"{w['median_turntable_s']:.2f} s apart; goal <= {WARM_GOAL_S:.0f} s: "
        f"{'met' if summary['goal_warm_met'] else 'not met'}); warm/cold {summary['warm_over_cold']:.2f} against the "
        f"fresh command's wall, {summary['warm_over_cold_without_turntable']:.2f} against it less its turntable; "
        f"cold median {summary['median_wall_s']:.1f} s (goal <= {COLD_GOAL_S:.0f} s: "
        f"{'met' if summary['goal_time_met'] else 'not met'}); load {summary['load_avg']}, {args.threads} threads"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
