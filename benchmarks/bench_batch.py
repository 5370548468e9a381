"""Items per minute of `fourview batch` against one `fourview generate` process per item, in one run.

Both paths run the real command in fresh processes on the same prompts with the same settings
(demo weights and the commands' defaults unless told otherwise): ``fourview generate PROMPT
--seed i`` once per prompt ``i``, then one ``fourview batch`` over a text manifest of the prompts
(item ``i`` is seeded ``--seed + i`` = ``i``, so both make the same assets; the script checks that
their views are identical). Wall time counts everything a user waits for: starting Python,
imports, loading the models (once for the batch, once per prompt for generate), making and
writing the assets. Goal: batch at least 3x the items per minute (issue 18). The load averages
(1, 5, 15 min) and threads are printed beside the numbers (the machine is shared: on a busy machine
use ``--threads 1``, since two OpenMP threads sharing their cores with other work wait for each other).

With ``--write-behind-ab R`` a fresh process also loads the models once and runs the batch of
the prompts R times each way, alternating: each item's folder written while the next item is made
(``run_batch(write_behind=True)``) against one item after the other (the default), in the same run; the
files must be the same.

    python benchmarks/bench_batch.py                           # demo weights, 6 prompts
    python benchmarks/bench_batch.py --prompts "a red mug" "a blue car" "a green tree" --steps 2
    python benchmarks/bench_batch.py --prompts P1 ... P24       # a longer batch (docs/benchmarks.md)

The batch's own start-up (imports, model loading) counts once in its wall time, so the ratio grows
with the number of prompts towards the per-item ratio; both are printed.
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
from bench_generate import ChildRun, load_avg, run_child

STAGES = ("mvgen_s", "reconstruct_s", "export_s", "save_s", "item_s")
"""Stages of a batch item's result line (``save_s``: the files and the turntable, written while the next item
is made; ``item_s``: making and saving the item, so the items' sum exceeds the batch's wall time)."""
PROMPTS = ("a red mug", "a blue car", "a green tree", "a yellow striped vase", "a white chair", "a brown table")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    ap.add_argument("--mvgen", default="demo")
    ap.add_argument("--recon", default="demo")
    ap.add_argument("--steps", type=int, help="sampler steps (default: the commands')")
    ap.add_argument("--turntable", type=int, help="turntable frames (default: the commands', 24)")
    ap.add_argument("--threads", type=int, default=2, help="OMP/MKL/NUMBA threads of every process")
    ap.add_argument(
        "--write-behind-ab",
        type=int,
        default=0,
        metavar="R",
        help="also time run_batch with and without write_behind, R times each, in one process",
    )
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--ab-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ab_worker:
        write_behind_worker(json.loads(args.ab_worker))
        return

    options = ["--mvgen", args.mvgen, "--recon", args.recon, "--quiet"]
    options += [] if args.steps is None else ["--steps", str(args.steps)]
    options += [] if args.turntable is None else ["--turntable", str(args.turntable)]
    n = len(args.prompts)
    load_before = load_avg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generates: list[ChildRun] = []
        for i, prompt in enumerate(args.prompts):
            cmd = [sys.executable, "-m", "fourview.cli", "generate", prompt, "-o", str(root / "generate" / str(i)),
                   "--seed", str(i), *options]  # fmt: skip
            generates.append(run_child(cmd, args.threads, "fourview generate"))
            print(f"generate {prompt!r}: {generates[-1].wall_s:.1f} s, CPU {generates[-1].cpu_s:.1f} s "
                  f"(load {load_avg()}, {args.threads} threads)", flush=True)  # fmt: skip
        manifest = root / "prompts.txt"
        manifest.write_text("".join(p + "\n" for p in args.prompts))
        cmd = [sys.executable, "-m", "fourview.cli", "batch", str(manifest), "-o", str(root / "batch"), *options]
        batch = run_child(cmd, args.threads, "fourview batch")
        print(f"batch of {n}: {batch.wall_s:.1f} s, CPU {batch.cpu_s:.1f} s; {batch.stdout.strip()} "
              f"(load {load_avg()}, {args.threads} threads)", flush=True)  # fmt: skip
        results = [json.loads(line) for line in (root / "batch" / "results.jsonl").read_text().splitlines()]
        same = sum(
            (root / "batch" / r["name"] / "views.png").read_bytes()
            == (root / "generate" / str(r["index"]) / "views.png").read_bytes()
            for r in results
        )
        ab = None
        if args.write_behind_ab > 0:
            spec = {"manifest": str(manifest), "out": str(root / "ab"), "result": str(root / "ab.json"),
                    "reps": args.write_behind_ab, "mvgen": args.mvgen, "recon": args.recon, "steps": args.steps,
                    "turntable": 24 if args.turntable is None else args.turntable}  # fmt: skip
            run_child([sys.executable, str(Path(__file__).resolve()), "--ab-worker", json.dumps(spec)], args.threads,
                      "the write-behind worker")  # fmt: skip
            ab = json.loads(Path(spec["result"]).read_text())
    generate_walls = [g.wall_s for g in generates]
    generate_ipm = n / (sum(generate_walls) / 60.0)
    batch_ipm = n / (batch.wall_s / 60.0)
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "threads": args.threads,
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
        "options": options,
        "items": n,
        "generate_walls_s": generate_walls,
        "generate_total_s": sum(generate_walls),
        "generate_cpu_s": [g.cpu_s for g in generates],
        "batch_wall_s": batch.wall_s,
        "batch_cpu_s": batch.cpu_s,
        "batch_peak_rss_mb": batch.peak_rss_mb,
        "batch_item_s": [r["timings_s"].get("item_s") for r in results],
        "batch_stage_median_s": {k: statistics.median(r["timings_s"].get(k) or 0.0 for r in results) for k in STAGES},
        "generate_items_per_min": generate_ipm,
        "batch_items_per_min": batch_ipm,
        "ratio": batch_ipm / generate_ipm,
        # CPU seconds per item, generate over batch: the ratio one thread would give on an idle machine
        "cpu_ratio": sum(g.cpu_s for g in generates) / batch.cpu_s,
        "goal_met": batch_ipm >= 3.0 * generate_ipm,
        # without the batch's one start-up: a fresh generate's median wall over a batch item's median
        "per_item_ratio": statistics.median(g.wall_s for g in generates)
        / statistics.median(r["timings_s"].get("item_s") or 0.0 for r in results),
        "same_views": f"{same}/{n}",
        "write_behind_ab": ab,
    }
    print(json.dumps(summary, indent=1))
    print(
        f"batch {batch_ipm:.2f} items/min vs generate per item {generate_ipm:.2f} items/min: "
        f"{summary['ratio']:.2f}x (goal >= 3x: {'met' if summary['goal_met'] else 'not met'}); {n} prompts, "
        f"same views {same}/{n}; per item (the batch's start-up left out) {summary['per_item_ratio']:.2f}x; "
        f"CPU seconds generate/batch {summary['cpu_ratio']:.2f}x; load {load_before} -> "
        f"{summary['load_avg_after']}, {args.threads} threads"
    )
    if ab is not None:
        print(
            f"run_batch of {n} in one process, median of {ab['reps']}: write-behind {ab['median_s']['True']:.1f} s "
            f"(CPU {ab['median_cpu_s']['True']:.1f}) against one item after the other "
            f"{ab['median_s']['False']:.1f} s (CPU {ab['median_cpu_s']['False']:.1f}); same files: "
            f"{ab['same_files']}; load {ab['load_avg']}, {args.threads} threads"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


def same_file(a: Path, b: Path) -> bool:
    """The same bytes; safetensors the same tensors and metadata (its header orders the metadata at random);
    meta.json and the results hold times: not compared."""
    if a.name in ("meta.json", "results.jsonl"):
        return True
    if a.suffix != ".safetensors":
        return a.read_bytes() == b.read_bytes()
    from safetensors import safe_open

    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
        return fa.metadata() == fb.metadata() and sorted(fa.keys()) == sorted(fb.keys()) and all(
            torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys()
        )  # fmt: skip


def write_behind_worker(spec: dict) -> None:
    """Load the models once, then run the manifest's batch with and without write_behind, alternating."""
    import diffusers
    import transformers

    from fourview.asset import SaveSettings
    from fourview.batch import read_manifest, run_batch
    from fourview.pipeline import FourViewPipeline, SamplingSettings

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    pipe = FourViewPipeline.from_pretrained(spec["mvgen"], spec["recon"])
    items = read_manifest(spec["manifest"], SamplingSettings(steps=spec["steps"]))
    save = SaveSettings(turntable_frames=spec["turntable"], preview_resolution=192)  # the commands' defaults
    run_batch(items[:1], Path(spec["out"]) / "warm-up", save=save, pipeline=pipe)  # first-call costs
    times: dict[str, list[float]] = {"True": [], "False": []}
    cpus: dict[str, list[float]] = {"True": [], "False": []}
    for rep in range(spec["reps"]):
        for write_behind in (True, False) if rep % 2 == 0 else (False, True):
            out = Path(spec["out"]) / f"{write_behind}-{rep}"
            t0, c0 = time.perf_counter(), time.process_time()
            run_batch(items, out, save=save, pipeline=pipe, write_behind=write_behind)
            times[str(write_behind)].append(time.perf_counter() - t0)
            cpus[str(write_behind)].append(time.process_time() - c0)
    a, b = Path(spec["out"]) / "True-0", Path(spec["out"]) / "False-0"
    same = all(same_file(f, b / f.relative_to(a)) for f in a.rglob("*") if f.is_file())
    result = {"reps": spec["reps"], "times_s": times, "cpu_s": cpus, "same_files": same, "load_avg": load_avg(),
              "median_s": {k: statistics.median(v) for k, v in times.items()},
              "median_cpu_s": {k: statistics.median(v) for k, v in cpus.items()}}  # fmt: skip
    Path(spec["result"]).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
