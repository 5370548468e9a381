"""The prompt-adherence scores of the reconstructor alone: ground-truth views in, mesh scored.

`bench_prompt_adherence.py` scores the whole `generate` chain; a miss there can come from the
generator (wrong views) or from the reconstructor (right views, wrong mesh). This benchmark feeds
the reconstructor the 4 rig views of rendered held-out objects (`fourview data render` output,
folders named ``synth_heldout_*`` with ``rig/000.png`` .. ``rig/270.png`` and ``caption.txt``),
downsampled to the generator's view size, and scores the exported GLB exactly as
`bench_prompt_adherence.py` does. Its rates are the ceiling of the whole chain with a perfect
generator.

    python benchmarks/bench_recon_adherence.py --data data/render_val --view-size 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_prompt_adherence import report, score

from fourview.data.assets import load_asset
from fourview.data.synthetic import COLOURS, SHAPES
from fourview.evaluation.adherence import canonical_grids


def _words(caption: str) -> tuple[str, str]:
    """The shape and colour words of a synthetic caption."""
    words = caption.replace(",", " ").split()
    return next(s for s in SHAPES if s in words), next(c for c in COLOURS if c in words)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="rendered objects (dataset renderer output)")
    ap.add_argument("--prefix", default="synth_heldout_", help="object folders to score")
    ap.add_argument("--recon", default="demo")
    ap.add_argument("--view-size", type=int, default=64, help="views are area-downsampled to this side")
    ap.add_argument("--resolution", type=int, default=32, help="voxel grid")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from fourview.pipeline import FourViewPipeline
    from fourview.views import PosedViews

    objects = sorted(p for p in Path(args.data).iterdir() if p.name.startswith(args.prefix))
    if not objects:
        raise SystemExit(f"no {args.prefix}* folders in {args.data}")
    canon = canonical_grids(args.resolution)
    pipe = FourViewPipeline.from_pretrained(None, args.recon)
    rows, t_start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, obj in enumerate(objects):
            text = (obj / "caption.txt").read_text().strip()
            shape, colour = _words(text)
            views = PosedViews.read([obj / "rig" / f"{a:03d}.png" for a in (0, 90, 180, 270)])
            v = F.interpolate(torch.from_numpy(views.images).permute(0, 3, 1, 2), size=args.view_size, mode="area")
            out = Path(tmp) / f"a{i}"
            pipe.views_to_3d(PosedViews.from_rig(v.permute(0, 2, 3, 1).numpy())).save(out)
            s = score(load_asset(out / "model.glb"), canon, args.resolution, 0)
            rows.append({"object": obj.name, "caption": text, "shape": shape, "colour": colour, "recon": s})
            print(
                f"[{i + 1}/{len(objects)}] {text!r}: {s['colour']}/{s['shape']} (IoU {s['best_iou']:.2f})", flush=True
            )
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_avg": os.getloadavg()[0],
        "count": len(rows),
        "recon": args.recon,
        "view_size": args.view_size,
        "colour_rate": float(np.mean([r["recon"]["colour"] == r["colour"] for r in rows])),
        "shape_rate": float(np.mean([r["recon"]["shape"] == r["shape"] for r in rows])),
        "mean_iou_of_true_shape": float(np.mean([r["recon"]["ious"][r["shape"]] for r in rows])),
        "time_s": time.perf_counter() - t_start,
        "rows": rows,
    }
    report(summary, args.json)


if __name__ == "__main__":
    main()
