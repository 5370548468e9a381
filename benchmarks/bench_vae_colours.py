"""How far apart the generator's VAE keeps the synthetic world's colours in latent space.

A diffusion model can only draw colours its latent space tells apart by more than its own
errors. For each rendered object (a folder with ``grid.png`` and ``caption.txt``, as
`fourview data render` writes them) whose caption names one `COLOURS` word, the grid is
encoded (posterior mean, times the VAE's ``scaling_factor``), and the latent vectors of the
cells that lie wholly on the object (every pixel of the cell's ``f x f`` block darker than the
background, ``f`` the VAE's downsampling) are reduced to their median: one vector per object.
Reported, in units of the latent's standard deviation over all grids:

- ``spread``: mean distance of an object's vector to its colour's centroid;
- ``closest_pairs``: the colour centroids nearest each other (the pairs a sampler confuses);
- ``round_trip``: encoded and decoded, how many grids keep the `COLOURS` word nearest to their
  median foreground pixel (pixels with a channel below 0.9), out of those whose original grid
  gives a word at all.

    python benchmarks/bench_vae_colours.py --vae src/fourview/weights/mvgen-demo/vae --data data/render_train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fourview.data.synthetic import COLOURS
from fourview.evaluation.adherence import nearest_colour
from fourview.mvgen.dataset import load_image


def median_colour(grid: np.ndarray) -> str | None:
    """The `COLOURS` word nearest the median foreground pixel of an [S, S, 3] image in [0, 1]."""
    fg = grid[grid.min(-1) < 0.9]
    return nearest_colour(np.median(fg, 0)) if len(fg) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", required=True, help="an AutoencoderKL folder (a pipeline's vae/)")
    ap.add_argument("--data", required=True, help="rendered objects (grid.png + caption.txt per folder)")
    ap.add_argument("--objects", type=int, default=300, help="first N object folders, sorted by name")
    ap.add_argument("--resolution", type=int, default=None, help="grid side (default: the VAE's sample_size)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(args.vae).float().eval()
    res = args.resolution or vae.config.sample_size
    folders = sorted(p.parent for p in Path(args.data).glob("*/caption.txt"))[: args.objects]
    vectors: dict[str, list[np.ndarray]] = {}
    latents, kept, judged = [], 0, 0
    for folder in folders:
        words = [w.strip(",.") for w in (folder / "caption.txt").read_text().split()]
        colour = next((w for w in words if w in COLOURS), None)
        x = load_image(folder / "grid.png", res)[None]  # [1, 3, R, R] in [-1, 1]
        with torch.no_grad():
            mean = vae.encode(x).latent_dist.mean  # [1, C, r, r]
            rec = vae.decode(mean).sample.clamp(-1, 1)
        z = mean[0] * vae.config.scaling_factor
        latents.append(z.flatten(1))
        factor = res // z.shape[-1]
        on_object = F.avg_pool2d((x[0].min(0).values < 0.8).float()[None, None], factor)[0, 0] > 0.99  # [r, r]
        if colour is not None and bool(on_object.any()):
            vectors.setdefault(colour, []).append(z[:, on_object].median(dim=1).values.numpy())
        before = median_colour((x[0].permute(1, 2, 0).numpy() + 1) / 2)
        if before is not None:
            judged += 1
            kept += median_colour((rec[0].permute(1, 2, 0).numpy() + 1) / 2) == before
    std = float(torch.cat(latents, 1).std())
    centroids = {c: np.mean(v, 0) / std for c, v in vectors.items()}
    spread = float(
        np.mean([np.linalg.norm(np.asarray(v) / std - centroids[c], axis=1).mean() for c, v in vectors.items()])
    )
    pairs = sorted(
        (float(np.linalg.norm(centroids[a] - centroids[b])), a, b) for a in centroids for b in centroids if a < b
    )
    summary = {
        "vae": args.vae,
        "objects": len(folders),
        "latent_channels": vae.config.latent_channels,
        "latent_std": std,
        "spread": spread,
        "closest_pairs": [[a, b, round(d, 3)] for d, a, b in pairs[:6]],
        "round_trip": {"kept": kept, "of": judged},
        "per_colour_objects": {c: len(v) for c, v in sorted(vectors.items())},
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
