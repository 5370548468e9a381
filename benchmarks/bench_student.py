"""Quality against sampler steps: the teacher generator (Euler + guidance) and its LCM-LoRA student.

For N held-out specs of the synthetic world (`sample_spec(seed, "heldout")`: shape-colour pairs
never drawn for training; prompt = `caption(spec)`), the same seed per prompt, one grid at a
time, this draws grids with the teacher at a few step counts (classifier-free guidance, two UNet
passes per step) and with the student (`fourview.mvgen.distill.load_student`: LoRA +
``LCMScheduler``, guidance 1, one pass per step), through `MultiViewPipeline` (the views' alpha
comes from its `white_to_alpha`). Scores per grid:

- colour: every view pixel with alpha >= 0.5 votes for its nearest `COLOURS` word
  (`nearest_colour`: CIELAB distance, sRGB in [0, 1] - the views are sRGB); the most voted word is
  the grid's colour; a hit when it is the prompt's colour;
- shape proxy: the IoU of each view's mask (alpha >= 0.5) with the mask of the ground-truth
  render of the same spec from the same rig camera (`build_asset` + `MeshRenderer`, unlit albedo
  like the training data, at the views' resolution), averaged over the four views;
- time: wall seconds per grid (text encoding, sampling, VAE decoding, alpha), and UNet passes.

The ground-truth renders scored the same way give the colour metric's ceiling. Ratios are
against the 25-step teacher measured in the same run (or the largest teacher step count).

    python benchmarks/bench_student.py --count 24 --json out/student.json
    python benchmarks/bench_student.py --teacher /path/to/pipeline --student /path/to/run/lora

Not collected by pytest. Compare times only within one run (the CPU here is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from fourview.data.synthetic import COLOURS, build_asset, caption, sample_spec
from fourview.evaluation.adherence import nearest_colour


def dominant_colour(views: np.ndarray, quant: int = 32) -> str:
    """The `COLOURS` word most foreground pixels are nearest to.

    Args:
        views: [4, H, W, 4] RGBA (straight alpha) in [0, 1], sRGB.
        quant: colour quantisation levels per channel (pixels are classified per quantised colour).

    Returns:
        a `COLOURS` key ("none" when no pixel has alpha >= 0.5).
    """
    rgb = views[..., :3][views[..., 3] >= 0.5]  # [P, 3]
    if len(rgb) == 0:
        return "none"
    q = np.clip((rgb * (quant - 1)).round().astype(np.int64), 0, quant - 1)
    keys, counts = np.unique(q[:, 0] * quant * quant + q[:, 1] * quant + q[:, 2], return_counts=True)
    votes: Counter = Counter()
    for k, n in zip(keys, counts):
        c = np.array([k // (quant * quant), (k // quant) % quant, k % quant], np.float64) / (quant - 1)
        votes[nearest_colour(c)] += int(n)
    return votes.most_common(1)[0][0]


def mask_iou(views: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the four views of the IoU of the alpha >= 0.5 masks ([4, H, W, 4] each)."""
    a, b = views[..., 3] >= 0.5, truth[..., 3] >= 0.5
    inter = (a & b).sum(axis=(1, 2))
    union = (a | b).sum(axis=(1, 2))
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def render_truth(spec, resolution: int) -> np.ndarray:
    """[4, R, R, 4] RGBA unlit (albedo) renders of a spec from the rig cameras (the training data's look)."""
    from fourview.cameras import orthogonal_rig
    from fourview.render.mesh_renderer import Lighting, MeshRenderer

    renderer = MeshRenderer(build_asset(spec))
    return np.stack([renderer.render(cam, resolution, Lighting(albedo=True), 2).rgba for cam in orthogonal_rig()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="demo", help='teacher pipeline: "demo", a diffusers folder or a hub id')
    ap.add_argument(
        "--student", default="demo", help='student LoRA folder, or "demo" (fourview/weights/mvgen-demo-lcm)'
    )
    ap.add_argument("--count", type=int, default=24, help="held-out specs (seeds first-seed .. first-seed+count-1)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="sampler seed of every prompt")
    ap.add_argument("--teacher-steps", default="4,8,25")
    ap.add_argument("--student-steps", default="1,2,4")
    ap.add_argument("--guidance", type=float, default=5.0, help="teacher guidance scale")
    ap.add_argument("--student-guidance", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--mosaic", help="write a PNG: one row per prompt, one column per setting (+ ground truth)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    from fourview.mvgen.pipeline import MultiViewPipeline
    from fourview.mvgen.student import load_student

    teacher = MultiViewPipeline.from_pretrained(args.teacher)
    student = MultiViewPipeline.from_pretrained(args.teacher)
    load_student(student.sdxl, args.student)
    view_res = teacher.resolution // 2
    settings = [("teacher", int(s), args.guidance) for s in args.teacher_steps.split(",")]
    settings += [("student", int(s), args.student_guidance) for s in args.student_steps.split(",")]
    specs = [sample_spec(args.first_seed + i, "heldout") for i in range(args.count)]
    prompts = [caption(s) for s in specs]

    # warm-up (first-call overheads out of the timings)
    for pipe in (teacher, student):
        pipe(prompts[0], num_inference_steps=2, guidance_scale=1.0, seed=args.seed)

    truth = [render_truth(s, view_res) for s in specs]
    rows = {"ground truth": {"colour_hits": [dominant_colour(t) == s.colour for t, s in zip(truth, specs)]}}
    tiles: dict[str, list[np.ndarray]] = {"ground truth": [_truth_grid(t) for t in truth]}
    for kind, steps, guidance in settings:
        pipe = teacher if kind == "teacher" else student
        name = f"{kind} {steps}"
        hits, ious, times, colours, tiles[name] = [], [], [], [], []
        for spec, prompt, t in zip(specs, prompts, truth):
            t0 = time.perf_counter()
            out = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, seed=args.seed)
            times.append(time.perf_counter() - t0)
            colour = dominant_colour(out.views[0])
            colours.append(colour)
            hits.append(colour == spec.colour)
            ious.append(mask_iou(out.views[0], t))
            tiles[name].append(out.grids[0])
        passes = steps * (2 if guidance > 1.0 else 1)
        rows[name] = {"kind": kind, "steps": steps, "guidance": guidance, "unet_passes": passes, "colour_hits": hits,
                      "ious": ious, "times": times, "colours": colours}  # fmt: skip
        print(f"{name}: colour {np.mean(hits):.2f} IoU {np.mean(ious):.3f} {np.mean(times):.3f} s/grid", flush=True)

    ref_name = max((n for n in rows if n.startswith("teacher")), key=lambda n: rows[n]["steps"])
    ref = rows[ref_name]
    print(
        f"\n{len(specs)} held-out prompts (seeds {args.first_seed}..), sampler seed {args.seed}; ratios vs {ref_name}"
    )
    header = ["sampler", "steps", "guidance", "UNet passes", "colour acc", "mask IoU", "s / grid", "time ratio",
              "colour ratio", "IoU ratio"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    summary = {}
    for name, r in rows.items():
        acc = float(np.mean(r["colour_hits"]))
        if name == "ground truth":
            print(f"| ground truth (renders) | - | - | - | {acc:.2f} | 1.000 | - | - | - | - |")
            summary[name] = {"colour_acc": acc}
            continue
        iou, sec = float(np.mean(r["ious"])), float(np.mean(r["times"]))
        c_ratio = acc / max(np.mean(ref["colour_hits"]), 1e-9)
        i_ratio = iou / max(np.mean(ref["ious"]), 1e-9)
        t_ratio = sec / np.mean(ref["times"])
        cells = [r["kind"], r["steps"], f"{r['guidance']:g}", r["unet_passes"], f"{acc:.2f}", f"{iou:.3f}",
                 f"{sec:.3f}", f"{t_ratio:.2f}", f"{c_ratio:.2f}", f"{i_ratio:.2f}"]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
        confusions = Counter(f"{s.colour}->{c}" for s, c in zip(specs, r["colours"]) if s.colour != c)
        summary[name] = {"kind": r["kind"], "steps": r["steps"], "guidance": r["guidance"],
                         "unet_passes": r["unet_passes"], "colour_acc": acc, "mask_iou": iou, "s_per_grid": sec,
                         "time_ratio": t_ratio, "colour_ratio": c_ratio, "iou_ratio": i_ratio,
                         "colour_confusions": confusions.most_common(6)}  # fmt: skip
    record = {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "load_avg": os.getloadavg()[0],
              "teacher": args.teacher, "student": args.student, "count": len(specs), "first_seed": args.first_seed,
              "seed": args.seed, "threads": args.threads, "colours": list(COLOURS), "reference": ref_name,
              "results": summary, "prompts": prompts}  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    if args.mosaic:
        from PIL import Image

        cols = [np.concatenate(v, axis=0) for v in tiles.values()]  # each [N * S, S, 3]
        Image.fromarray((np.clip(np.concatenate(cols, axis=1), 0, 1) * 255).round().astype(np.uint8)).save(args.mosaic)


def _truth_grid(views: np.ndarray) -> np.ndarray:
    """[2R, 2R, 3] the ground-truth rig views composited on white in grid layout."""
    rgb = views[..., :3] * views[..., 3:] + (1 - views[..., 3:])
    return np.concatenate([np.concatenate([rgb[0], rgb[1]], 1), np.concatenate([rgb[2], rgb[3]], 1)], 0)


if __name__ == "__main__":
    main()
