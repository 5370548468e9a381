"""Prompt adherence of `fourview generate` on held-out synthetic prompts: colour and shape rates.

For N held-out specs of the synthetic world (`sample_spec(seed, "heldout")`: shape-colour
combinations never drawn for training), the prompt is the spec's caption. Each prompt goes
through the whole chain (`fourview.pipeline.FourViewPipeline.text_to_3d`: views -> reconstruction -> GLB), and
the exported mesh is scored the way `fourview.data.synthetic` defines the test
(`fourview.evaluation.adherence.match_synthetic`):

- colour: the `COLOURS` word nearest (`nearest_colour`, CIELAB distance) to the mesh's mean
  surface albedo (`surface_albedo`: area-weighted, averaged in linear RGB, returned as sRGB in
  [0, 1], which is what `nearest_colour` takes); a hit when it is the prompt's colour;
- shape: the GLB is loaded normalised like `canonical_mesh` (`load_asset(normalize=True)`:
  bounding-box centre at the origin, farthest vertex at distance 1, +Y up), voxelised on the same
  grid (`voxelize`, 32^3 over [-1, 1]^3), and compared by `voxel_iou` with the canonical mesh of
  every shape; a hit when the best match is the prompt's shape.

The same scores for the ground-truth meshes of the same specs (`build_asset`) are reported in
the same run: the metric's ceiling (proportions vary within a class, so even ground truth can
miss its canonical shape). Goals: colour >= 80%, shape >= 60%.

    python benchmarks/bench_prompt_adherence.py --count 34 --json out/adherence.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from fourview.data.assets import load_asset
from fourview.data.synthetic import build_asset, caption, sample_spec
from fourview.evaluation.adherence import canonical_grids, match_synthetic
from fourview.mesh import MeshAsset


def score(asset: MeshAsset, canon: dict[str, np.ndarray], resolution: int, dilation: int) -> dict:
    """Nearest colour word, best-matching shape and the IoUs of a normalised asset (`match_synthetic`), rounded."""
    found = match_synthetic(asset, canon, resolution, dilation)
    return {
        "albedo_srgb": [round(float(x), 4) for x in found.albedo_srgb],
        "colour": found.colour,
        "shape": found.shape,
        "best_iou": round(found.ious[found.shape], 4),
        "ious": {k: round(v, 4) for k, v in found.ious.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=34, help="held-out specs (seeds first-seed .. first-seed+count-1)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument(
        "--split", choices=("heldout", "train"), default="heldout",
        help="heldout (the goal) or train: combinations seen in training, to tell memorisation from composition",
    )  # fmt: skip
    ap.add_argument("--mvgen", default="demo")
    ap.add_argument("--recon", default="demo")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: SamplingSettings)")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--blob-strength", type=float, default=None)
    ap.add_argument("--blob-sigma", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0, help="sampler seed of every prompt")
    ap.add_argument("--candidates", type=int, default=None, help="best-of-K sampling (default: SamplingSettings)")
    ap.add_argument("--resolution", type=int, default=32, help="voxel grid")
    ap.add_argument("--dilation", type=int, default=0, help="voxel dilation (both sides)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gt-only", action="store_true", help="only the ground-truth ceiling")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    from dataclasses import fields

    from fourview.pipeline import FourViewPipeline, SamplingSettings

    given = {"steps": args.steps, "guidance_scale": args.guidance, "blob_strength": args.blob_strength,
             "blob_sigma": args.blob_sigma, "candidates": args.candidates}  # fmt: skip
    settings = SamplingSettings(seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    canon = canonical_grids(args.resolution, args.dilation)
    specs = [sample_spec(args.first_seed + i, args.split) for i in range(args.count)]
    pipe = None
    if not args.gt_only:
        pipe = FourViewPipeline.from_pretrained(args.mvgen, args.recon)
    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs):
            prompt = caption(spec)
            row = {"seed": spec.seed, "prompt": prompt, "shape": spec.shape, "colour": spec.colour}
            row["gt"] = score(build_asset(spec), canon, args.resolution, args.dilation)
            if pipe is not None:
                t0 = time.perf_counter()
                pipe.text_to_3d(prompt, settings).save(Path(tmp) / f"a{i}")
                row["time_s"] = time.perf_counter() - t0
                mesh = load_asset(Path(tmp) / f"a{i}" / "model.glb")  # normalised like canonical_mesh
                row["gen"] = score(mesh, canon, args.resolution, args.dilation)
                row["faces"] = int(sum(len(p.faces) for p in mesh.parts))
            rows.append(row)
            g = row.get("gen", {})
            print(
                f"[{i + 1}/{len(specs)}] {prompt!r}: gt {row['gt']['colour']}/{row['gt']['shape']}"
                + (f"; generated {g['colour']}/{g['shape']} (IoU {g['best_iou']:.2f})" if g else ""),
                flush=True,
            )

    def rates(key: str) -> dict:
        if not all(key in r for r in rows):
            return {}
        return {
            "colour_rate": float(np.mean([r[key]["colour"] == r["colour"] for r in rows])),
            "shape_rate": float(np.mean([r[key]["shape"] == r["shape"] for r in rows])),
            "mean_iou_of_true_shape": float(np.mean([r[key]["ious"][r["shape"]] for r in rows])),
            "colour_confusions": Counter(
                f"{r['colour']}->{r[key]['colour']}" for r in rows if r[key]["colour"] != r["colour"]
            ).most_common(8),  # fmt: skip
            "shape_confusions": Counter(
                f"{r['shape']}->{r[key]['shape']}" for r in rows if r[key]["shape"] != r["shape"]
            ).most_common(8),  # fmt: skip
        }

    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_avg": os.getloadavg()[0],
        "count": len(rows),
        "split": args.split,
        "mvgen": None if args.gt_only else args.mvgen,
        "recon": args.recon,
        "settings": {k: getattr(settings, k) for k in (f.name for f in fields(settings)) if k != "export_overrides"},
        "voxels": {"resolution": args.resolution, "dilation": args.dilation},
        "generated": rates("gen"),
        "ground_truth": rates("gt"),
        "time_s": time.perf_counter() - t_start,
        "goals": {"colour_rate": 0.8, "shape_rate": 0.6},
        "rows": rows,
    }
    report(summary, args.json)


def report(summary: dict, path: str | None) -> None:
    """Print a summary without its per-object rows; write all of it as JSON to ``path`` if given."""
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
