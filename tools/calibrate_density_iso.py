"""Choose the density level at which a volume-trained reconstructor's surface is extracted.

A stage-A model has a soft density: its renders' silhouettes are where the accumulated opacity
reaches about 0.5, which is not a fixed density. This tool exports each calibration object's
mesh (the `fourview reconstruct` chain, vertex colours) at several iso-densities, renders it
from the four rig cameras and scores the silhouette IoU against the input views; it prints the
table and, with ``--write``, stores the best level as ``decoder.density_iso`` in the model's
``config.json``. Use objects that are not in the evaluation set.

    python tools/calibrate_density_iso.py --recon runs/x/final --data data/render_val --prefix synth_train_ --write
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from fourview.cameras import orthogonal_rig
from fourview.data.assets import load_asset
from fourview.export.exporter import export_field
from fourview.export.presets import export_preset
from fourview.meshio import write_mesh_files
from fourview.recon.model import Reconstructor
from fourview.render.mesh_renderer import Lighting, MeshRenderer
from fourview.views import PosedViews


def silhouette_iou(model: Reconstructor, folder: Path, tmp: Path) -> float:
    views = PosedViews.read([folder / "rig" / f"{az:03d}.png" for az in (0, 90, 180, 270)], 20.0)
    with torch.no_grad():
        field = model.reconstruct(views)
        exported = export_field(field, dataclasses.replace(export_preset("demo"), vertex_colors=True))
    write_mesh_files(exported.mesh, [tmp])
    renderer = MeshRenderer(load_asset(tmp, normalize=False))
    res = views.resolution[0]
    ious = []
    for view, cam in zip(views.images, orthogonal_rig()):
        ours = renderer.render(cam, res, Lighting(albedo=True), 3).rgba[..., 3] >= 0.5
        truth = view[..., 3] >= 0.5
        ious.append((ours & truth).sum() / max((ours | truth).sum(), 1))
    return float(np.mean(ious))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recon", required=True, help="folder written by save_pretrained")
    ap.add_argument("--data", required=True, help="rendered objects (fourview data render --albedo)")
    ap.add_argument("--prefix", default="", help="use only object folders whose name starts with this")
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--levels", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0, 10.0])
    ap.add_argument("--write", action="store_true", help="store the best level in the model's config.json")
    args = ap.parse_args()

    model = Reconstructor.from_pretrained(args.recon).eval()
    folders = sorted(p for p in Path(args.data).iterdir() if p.name.startswith(args.prefix) and (p / "rig").is_dir())
    folders = folders[:: max(1, len(folders) // args.objects)][: args.objects]
    tmp = Path(args.recon) / ".calibration.glb"
    scores = {}
    for level in args.levels:
        model.decoder.config = dataclasses.replace(model.decoder.config, density_iso=level)
        scores[level] = float(np.mean([silhouette_iou(model, f, tmp) for f in folders]))
        print(
            f"density_iso {level:6.2f}: mean silhouette IoU {scores[level]:.4f} over {len(folders)} objects",
            flush=True,
        )
    tmp.unlink(missing_ok=True)
    best = max(scores, key=scores.get)
    print(json.dumps({"best_density_iso": best, "scores": scores, "objects": [f.name for f in folders]}))
    if args.write:
        config_path = Path(args.recon) / "config.json"
        config = json.loads(config_path.read_text())
        config["decoder"]["density_iso"] = best
        config_path.write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    main()
