"""Items per minute of `fourview batch` against one `fourview generate` process per item, in one run.

Both paths run the real command in fresh processes on the same prompts with the same settings
(demo weights and the commands' defaults unless told otherwise): ``fourview generate PROMPT
--seed i`` once per prompt ``i``, then one ``fourview batch`` over a text manifest of the prompts
(item ``i`` is seeded ``--seed + i`` = ``i``, so both make the same assets; the script checks that
their views are identical). Wall time counts everything a user waits for: starting Python,
imports, loading the models (once for the batch, once per prompt for generate), making and
writing the assets. Goal: batch at least 3x the items per minute. Load average and threads are
printed beside the numbers (the machine is shared).

    python benchmarks/bench_batch.py                           # demo weights, 6 prompts
    python benchmarks/bench_batch.py --prompts "a red mug" "a blue car" "a green tree" --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_generate import run_child

STAGES = ("mvgen_s", "reconstruct_s", "export_s", "save_s", "item_s")
"""Stages of a batch item's result line (``save_s`` holds the files and the turntable)."""
PROMPTS = ("a red mug", "a blue car", "a green tree", "a yellow striped vase", "a white chair", "a brown table")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    ap.add_argument("--mvgen", default="demo")
    ap.add_argument("--recon", default="demo")
    ap.add_argument("--steps", type=int, help="sampler steps (default: the commands')")
    ap.add_argument("--turntable", type=int, help="turntable frames (default: the commands', 24)")
    ap.add_argument("--threads", type=int, default=2, help="OMP/MKL/NUMBA threads of every process")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    options = ["--mvgen", args.mvgen, "--recon", args.recon, "--quiet"]
    options += [] if args.steps is None else ["--steps", str(args.steps)]
    options += [] if args.turntable is None else ["--turntable", str(args.turntable)]
    n = len(args.prompts)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_walls = []
        for i, prompt in enumerate(args.prompts):
            cmd = [sys.executable, "-m", "fourview.cli", "generate", prompt, "-o", str(root / "generate" / str(i)),
                   "--seed", str(i), *options]  # fmt: skip
            wall, _, _, _ = run_child(cmd, args.threads, "fourview generate")
            generate_walls.append(wall)
            print(f"generate {prompt!r}: {wall:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        manifest = root / "prompts.txt"
        manifest.write_text("".join(p + "\n" for p in args.prompts))
        cmd = [sys.executable, "-m", "fourview.cli", "batch", str(manifest), "-o", str(root / "batch"), *options]
        batch_wall, batch_rss, stdout, _ = run_child(cmd, args.threads, "fourview batch")
        print(f"batch of {n}: {batch_wall:.1f} s; {stdout.strip()} (load {os.getloadavg()[0]:.1f})", flush=True)
        results = [json.loads(line) for line in (root / "batch" / "results.jsonl").read_text().splitlines()]
        same = sum(
            (root / "batch" / r["name"] / "views.png").read_bytes()
            == (root / "generate" / str(r["index"]) / "views.png").read_bytes()
            for r in results
        )
    generate_ipm = n / (sum(generate_walls) / 60.0)
    batch_ipm = n / (batch_wall / 60.0)
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "threads": args.threads,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg()[0],
        "options": options,
        "items": n,
        "generate_walls_s": generate_walls,
        "generate_total_s": sum(generate_walls),
        "batch_wall_s": batch_wall,
        "batch_peak_rss_mb": batch_rss,
        "batch_item_s": [r["timings_s"].get("item_s") for r in results],
        "batch_stage_median_s": {k: statistics.median(r["timings_s"].get(k) or 0.0 for r in results) for k in STAGES},
        "generate_items_per_min": generate_ipm,
        "batch_items_per_min": batch_ipm,
        "ratio": batch_ipm / generate_ipm,
        "goal_met": batch_ipm >= 3.0 * generate_ipm,
        "same_views": f"{same}/{n}",
    }
    print(json.dumps(summary, indent=1))
    print(
        f"batch {batch_ipm:.2f} items/min vs generate per item {generate_ipm:.2f} items/min: "
        f"{summary['ratio']:.2f}x (goal >= 3x: {'met' if summary['goal_met'] else 'not met'}); {n} prompts, "
        f"same views {same}/{n}; load {load_before:.1f} -> {summary['load_avg_after']:.1f}, {args.threads} threads"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
