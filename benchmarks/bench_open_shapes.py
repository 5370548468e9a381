"""Open shapes: does a mug's, bowl's or pot's cavity stay open in the reconstruction?

The GSO protocol's scores hardly notice a lid over a cavity (a few novel views look into it). This
benchmark measures it directly, on the real open objects of a GSO-layout folder's object list: the
objects whose caption (`fourview.data.captions.caption_from_name`) names an open container
(`OPEN_WORDS`). Inputs are the GSO protocol's (`fourview.evaluation.gso_benchmark`: four rig
views at elevation 20, ``--input-res`` pixels, ``--albedo``); each ``--method`` reconstructs them
as ``fourview bench gso`` does.

Cavity depth: vertical rays straight down (-Y, the object frame's up axis is +Y) on a 64x64 grid
over the scan's bounding box. On the scan, the cavity is the set of rays whose first hit lies more
than a quarter of the scan's height below its top (and that hit it at all); its depth is the mean
of those first-hit depths. The reconstruction's depth is the mean over the same rays of its
first-hit depth below the scan's top (a miss counts as the scan's full height: the ray went
through; a hit above the scan's top counts as zero). ``open`` is the ratio: 1 when the cavity is
as deep as the scan's, about 0 for a lid at the rim. The output also gives PSNR at 128 and volume
IoU (the protocol's) per object and method.

    python benchmarks/bench_open_shapes.py --root ../shared/data/gso --objects shared_gso_eval \
        --methods hull feedforward --json /tmp/open_shapes.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np
import torch

from fourview.data.captions import caption_from_name
from fourview.evaluation.geometry import asset_trimesh
from fourview.evaluation.gso import find_gso_objects, read_object_list, select_objects
from fourview.evaluation.gso_benchmark import (
    GsoBenchConfig,
    object_list_path,
    reconstruct,
    render_ground_truth,
    score_mesh,
)
from fourview.mesh import MeshAsset
from fourview.pipeline import FourViewPipeline

OPEN_WORDS = frozenset({"mug", "cup", "bowl", "pot", "planter", "pan", "bucket", "basket"})
"""Caption words of open containers (a GSO name is a product name: these say what it is)."""

METHOD_MODES = {"hull": ("views", "hull"), "feedforward": ("views", "pipeline"), "optimize": ("optimize", "pipeline"),
                "refine": ("refine", "pipeline")}  # fmt: skip
"""``--methods`` -> (`GsoBenchConfig.mode`, `GsoBenchConfig.method`)."""

GRID = 64
"""Rays per side of the vertical ray grid."""


def first_hit_depth(mesh: MeshAsset, xz: np.ndarray, top: float) -> np.ndarray:
    """[N] depth below ``top`` of each downward ray's first hit at ``xz`` [N, 2] (inf where it misses)."""
    tm = asset_trimesh(mesh)
    origins = np.stack([xz[:, 0], np.full(len(xz), top + 1.0), xz[:, 1]], axis=1)
    directions = np.tile([0.0, -1.0, 0.0], (len(xz), 1))
    locations, index, _ = tm.ray.intersects_location(origins, directions, multiple_hits=True)
    depth = np.full(len(xz), np.inf)
    np.minimum.at(depth, index, top - locations[:, 1])
    return depth


def cavity(gt: MeshAsset) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The scan's cavity rays: ([K, 2] xz, [K] depths, top, height); K = 0 for a closed object."""
    lo, hi = gt.bounds()
    xs = np.linspace(lo[0], hi[0], GRID)
    zs = np.linspace(lo[2], hi[2], GRID)
    xz = np.stack(np.meshgrid(xs, zs, indexing="ij"), axis=-1).reshape(-1, 2)
    top, height = float(hi[1]), float(hi[1] - lo[1])
    depth = first_hit_depth(gt, xz, top)
    inside = np.isfinite(depth) & (depth > 0.25 * height)
    return xz[inside], depth[inside], top, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="GSO-layout folder")
    parser.add_argument("--objects", default="shared_gso_eval", help="object list file or shipped list")
    parser.add_argument("--methods", nargs="+", default=["hull", "feedforward"], choices=sorted(METHOD_MODES))
    parser.add_argument("--recon", default="demo")
    parser.add_argument("--input-res", type=int, default=128)
    parser.add_argument("--albedo", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    names = read_object_list(object_list_path(args.objects))
    chosen = [n for n in names if OPEN_WORDS & set(caption_from_name(n).split())]
    objects = select_objects(find_gso_objects(args.root), chosen)
    print(f"{len(objects)} open objects of {len(names)} in {args.objects}: {', '.join(o.name for o in objects)}")
    base = GsoBenchConfig(objects=args.objects, input_resolution=args.input_res, albedo=args.albedo, recon=args.recon,
                          image_resolutions=(128,))  # fmt: skip
    pipe = None
    if set(args.methods) - {"hull"}:
        pipe = FourViewPipeline.from_pretrained(mvgen=None, recon=args.recon)
    rows = []
    for obj in objects:
        gt = render_ground_truth(obj, base)
        xz, gt_depth, top, height = cavity(gt.asset)
        row = {"name": obj.name, "cavity_rays": len(xz), "gt_depth": float(gt_depth.mean()) if len(xz) else None}
        for method in args.methods:
            mode, kind = METHOD_MODES[method]
            config = replace(base, mode=mode, method=kind)
            t0 = time.perf_counter()
            mesh, _ = reconstruct(gt, obj.name, config, pipe)
            seconds = time.perf_counter() - t0
            scores = score_mesh(mesh, gt, config)
            depth = np.clip(first_hit_depth(mesh, xz, top), 0.0, height) if len(xz) else np.zeros(0)
            opened = float(depth.mean() / gt_depth.mean()) if len(xz) else None
            row[method] = {"open": opened, "psnr_128": scores.metrics["psnr_128"],
                           "volume_iou": scores.metrics["volume_iou"], "seconds": seconds}  # fmt: skip
            print(f"{obj.name[:40]:40s} {method:12s} open {opened if opened is None else round(opened, 3)} "
                  f"psnr {scores.metrics['psnr_128']:.2f} iou {scores.metrics['volume_iou']:.3f} "
                  f"{seconds:.0f} s  load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        rows.append(row)
    for method in args.methods:
        vals = [r[method]["open"] for r in rows if r[method]["open"] is not None]
        if vals:
            print(f"mean open ratio, {method}: {np.mean(vals):.3f} over {len(vals)} objects")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_average": os.getloadavg(), "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
