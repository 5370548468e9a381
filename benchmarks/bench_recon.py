"""Novel-view quality of a reconstructor on rendered objects: volume renders and exported meshes.

For each object folder written by `fourview data render` (albedo renders): the four rig views go
into the reconstructor; its volume render (for a stage-B model, of its SDF read as a log-density,
`fourview.recon.decoder.volume_density`) and its exported GLB (the `fourview reconstruct` chain,
rendered unlit with the project's rasteriser, supersampled like the data) are compared with the
object's random frames (novel views) on white. PSNR and SSIM per object, grouped by the folder
name's split (synthetic ``synth_heldout_*`` = held-out shape-colour combinations, ``synth_train_*``
= training combinations with held-out seeds, anything else = other).

    python benchmarks/bench_recon.py --data data/render_val --recon demo --objects 32 --views 4
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fourview.cameras import Camera
from fourview.data.assets import load_asset
from fourview.images import composite_on_white
from fourview.pipeline import FourViewPipeline
from fourview.pretrained import resolve_weights
from fourview.recon.losses import psnr, ssim
from fourview.recon.model import Reconstructor, VolumeRenderer
from fourview.render.mesh_renderer import Lighting, MeshRenderer
from fourview.views import PosedViews


def group_of(name: str) -> str:
    if name.startswith("synth_heldout_"):
        return "heldout_combination"
    if name.startswith("synth_train_"):
        return "heldout_seed"
    return "other"


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).float().permute(2, 0, 1)[None]  # [1, 3, H, W]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder of rendered objects (fourview data render --albedo)")
    ap.add_argument("--recon", default="demo")
    ap.add_argument("--objects", type=int, default=32)
    ap.add_argument("--views", type=int, default=4, help="novel (random) frames per object")
    ap.add_argument("--elevation", type=float, default=20.0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    model = Reconstructor.from_pretrained(resolve_weights(args.recon, "recon").location).eval()
    folders = sorted(p for p in Path(args.data).iterdir() if (p / "cameras.json").is_file())
    # Spread the objects over the groups: take every k-th folder.
    step = max(1, len(folders) // args.objects)
    folders = folders[::step][: args.objects]
    volume = VolumeRenderer(model.config)  # stage B too: its SDF read as a log-density (volume_density)
    rows = []
    for folder in folders:
        meta = json.loads((folder / "cameras.json").read_text())
        frames = [f for f in meta["frames"] if f["kind"] == "random"][: args.views]
        res = frames[0]["resolution"][0]
        rig = PosedViews.read([folder / "rig" / f"{az:03d}.png" for az in (0, 90, 180, 270)], args.elevation)
        gt = [composite_on_white(np.asarray(Image.open(folder / f["image"]).convert("RGBA"), np.float32) / 255)
              for f in frames]  # fmt: skip
        cams = [Camera(f["azimuth_deg"], f["elevation_deg"], f["radius"], f["fov_deg"]) for f in frames]
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.predict(rig)
            vol = model.render(out, [cams], res, renderer=volume).rgb[0].clamp(0, 1).numpy()  # [V, H, W, 3]
        t_vol = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            # The `fourview reconstruct` chain as a fresh command runs it: load, reconstruct, export, write.
            FourViewPipeline.from_pretrained(None, args.recon).views_to_3d(rig).save(Path(tmp) / "asset")
            t_export = time.perf_counter() - t0
            asset = load_asset(Path(tmp) / "asset" / "model.glb", normalize=False)
        renderer = MeshRenderer(asset)
        mesh = [composite_on_white(renderer.render(c, res, Lighting(albedo=True), supersample=3).rgba) for c in cams]
        row = {"name": folder.name, "group": group_of(folder.name), "time_volume_s": t_vol, "time_export_s": t_export}
        for kind, imgs in (("volume", vol), ("mesh", mesh)):
            p = [float(psnr(to_tensor(a), to_tensor(b))) for a, b in zip(imgs, gt)]
            s = [float(ssim(to_tensor(a), to_tensor(b))) for a, b in zip(imgs, gt)]
            row[f"{kind}_psnr"], row[f"{kind}_ssim"] = float(np.mean(p)), float(np.mean(s))
        rows.append(row)
        print(f"{folder.name:32s} {row['group']:20s} volume {row['volume_psnr']:.2f} dB / {row['volume_ssim']:.3f}"
              f"  mesh {row['mesh_psnr']:.2f} dB / {row['mesh_ssim']:.3f}", flush=True)  # fmt: skip

    summary = {}
    for group in sorted({r["group"] for r in rows}) + ["all"]:
        sel = [r for r in rows if group in ("all", r["group"])]
        summary[group] = {
            "objects": len(sel),
            **{
                k: float(np.mean([r[k] for r in sel]))
                for k in ("volume_psnr", "volume_ssim", "mesh_psnr", "mesh_ssim")
            },
        }
    print(json.dumps({"recon": args.recon, "data": args.data, "views_per_object": args.views,
                      "load_avg": os.getloadavg()[0], "summary": summary}, indent=1))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
