"""Per-object optimisation (`fourview reconstruct --optimize`) against a plain visual hull, on real objects.

Protocol (issue 6): for each object of ``shared/data/objects`` (normalised, up axes from
``objects.json``), the inputs are the four rig views at elevation 20 rendered as ``fourview data
render --albedo`` renders them (unlit albedo, 3x3 supersampled, ``--input-res`` pixels). The
reconstruction is exported as ``fourview reconstruct`` exports it (GLB through the export stage)
and rendered by the same renderer at the novel views azimuth 45/135/225/315 x elevation 0/20/40;
against the ground truth's renders on white: PSNR and SSIM at 128 and 512 pixels; Chamfer
distance (mean of both directions of the nearest-neighbour distance) and F-score at 0.1 on 10k
surface points, object frame. The reference baseline, computed in the same run, is the visual
hull (128^3 grid) with colours projected from the views. "ours" is the fit exported as
`fourview reconstruct --optimize` exports it (the views' colours projected onto the texture);
"ours_field" the same fit with the field's own colours (``--no-project-views``). Timings are per object, with the load
average beside them (the machine is shared).

    python benchmarks/bench_optimize.py --objects ../shared/data/objects --json /tmp/bench_optimize.json

``--methods refine`` (and ``feedforward``) scores ``reconstruct --optimize --recon demo`` the same way
on the same objects: the demo reconstructor's prediction refined on the four views at
``--refine-res`` pixels (128, as the GSO protocol gives them), exported as the pipeline exports it.

``--baseline REV`` compares two versions of the code in one run: each object's methods run once with
the working tree's code and once with git revision REV's (``git archive``), each in a fresh process,
the two alternating which goes first, so that both see the same load on a shared machine
(``--candidate REV``: REV's code instead of the working tree's). It prints both versions' scores, fit
times (wall and CPU) and the load average side by side:

    python benchmarks/bench_optimize.py --baseline HEAD~3 --methods ours --only ycb_025_mug keenan_spot

With ``--refine-data data/render_val`` it measures refinement instead (``reconstruct --optimize
--recon demo``): the demo reconstructor's exported mesh before and after refinement on its four
input views, on held-out synthetic objects, scored on their random frames as `bench_recon.py` does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fourview.cameras import Camera, orthogonal_rig
from fourview.data.assets import load_asset
from fourview.data.dataset_renderer import resolve_inputs
from fourview.evaluation.geometry import geometry_scores, surface_points
from fourview.evaluation.metrics import image_scores
from fourview.export.exporter import export_field
from fourview.export.presets import optimize_export_config, recon_export_config, sized_export_config
from fourview.mesh import MeshAsset
from fourview.meshio import write_mesh_files
from fourview.pretrained import resolve_weights
from fourview.recon.model import Reconstructor
from fourview.recon.optimize import OptimizeConfig, optimize_field
from fourview.recon.refine import RefineConfig, refine_reconstruction
from fourview.recon.visual_hull import HullField
from fourview.render.mesh_renderer import Lighting, MeshRenderer
from fourview.views import PosedViews

NOVEL = [Camera(az, el) for el in (0.0, 20.0, 40.0) for az in (45.0, 135.0, 225.0, 315.0)]
SCORE_RES = (128, 512)


def render(asset: MeshAsset, cams: list[Camera], res: int) -> np.ndarray:
    """[V, res, res, 4] albedo renders, 3x3 supersampled (as `fourview data render --albedo`)."""
    r = MeshRenderer(asset)
    return np.stack([r.render(c, res, Lighting(albedo=True), supersample=3).rgba for c in cams])


def score_field(field, export_cfg, gt: dict, tmp: Path, name: str, views: PosedViews | None = None) -> dict:
    path = tmp / f"{name}.glb"
    t0 = time.perf_counter()
    with torch.no_grad():
        write_mesh_files(export_field(field, export_cfg, views=views).mesh, [path])
    row = {"export_s": time.perf_counter() - t0}
    asset = load_asset(path, normalize=False)
    for res in SCORE_RES:
        scores = image_scores(render(asset, NOVEL, res), gt[res])
        row[f"psnr{res}"], row[f"ssim{res}"] = scores.psnr, scores.ssim
    geometry = geometry_scores(surface_points(asset, seed=1), gt["points"], thresholds=(0.1,))
    row.update(chamfer=geometry.chamfer, fscore=geometry.fscore[0.1])
    return row


def prepare(source, input_res: int, cache: Path | None) -> dict:
    """Inputs, ground-truth novel views and surface points of one object (cached as .npz)."""
    file = None if cache is None else cache / f"{source.name}_{input_res}.npz"
    if file is not None and file.is_file():
        d = np.load(file)
        return {"views": d["views"], 128: d["gt128"], 512: d["gt512"], "points": d["points"]}
    asset = load_asset(source.path, up_axis=source.up_axis, normalize=True, name=source.name)
    data = {
        "views": render(asset, orthogonal_rig(20.0), input_res),
        128: render(asset, NOVEL, 128),
        512: render(asset, NOVEL, 512),
        "points": surface_points(asset),
    }
    if file is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(file, views=data["views"], gt128=data[128], gt512=data[512], points=data["points"])
    return data


def refine_benchmark(data: Path, recon: str, count: int, frames: int, steps: int | None) -> dict:
    """Mesh-render PSNR/SSIM of the reconstructor's export before and after refinement on its views.

    Objects: the first ``count`` ``synth_heldout_*`` folders of ``data`` (as `bench_recon.py`
    reads them: rig views in, ``frames`` random frames as novel views, albedo, on white).
    """
    from PIL import Image

    model = Reconstructor.from_pretrained(resolve_weights(recon, "recon").location).eval()
    # As `fourview reconstruct` extracts them: the prediction as the model's trained surface, the
    # refined field by marching cubes (see `fourview.pipeline.FourViewPipeline.views_to_3d`).
    before_cfg = recon_export_config(model.config, {}, "cpu")
    after_cfg = sized_export_config(model.config, {}, "cpu")
    refine_cfg = RefineConfig() if steps is None else RefineConfig(steps=steps)
    folders = sorted(
        p for p in data.iterdir() if p.name.startswith("synth_heldout_") and (p / "cameras.json").is_file()
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        for folder in folders[:count]:
            meta = json.loads((folder / "cameras.json").read_text())
            novel = [f for f in meta["frames"] if f["kind"] == "random"][:frames]
            res = novel[0]["resolution"][0]
            cams = [Camera(f["azimuth_deg"], f["elevation_deg"], f["radius"], f["fov_deg"]) for f in novel]
            gt = np.stack(
                [np.asarray(Image.open(folder / f["image"]).convert("RGBA"), np.float32) / 255 for f in novel]
            )
            rig = PosedViews.read([folder / "rig" / f"{az:03d}.png" for az in (0, 90, 180, 270)], 20.0)
            with torch.no_grad():
                before = model.reconstruct(rig)
            t0 = time.perf_counter()
            after = refine_reconstruction(model, rig, refine_cfg)
            row = {"name": folder.name, "refine_s": time.perf_counter() - t0}
            for kind, fld, export_cfg in (("before", before, before_cfg), ("after", after.field, after_cfg)):
                path = tmp / f"{folder.name}_{kind}.glb"
                with torch.no_grad():
                    write_mesh_files(export_field(fld, export_cfg).mesh, [path])
                scores = image_scores(render(load_asset(path, normalize=False), cams, res), gt)
                row[f"{kind}_psnr"], row[f"{kind}_ssim"] = scores.psnr, scores.ssim
            rows.append(row)
            before = f"before {row['before_psnr']:.2f} dB {row['before_ssim']:.3f}"
            after = f"after {row['after_psnr']:.2f} dB {row['after_ssim']:.3f}"
            print(f"{folder.name:28s} {before}  {after}  {row['refine_s']:.0f}s", flush=True)
    keys = ("before_psnr", "before_ssim", "after_psnr", "after_ssim", "refine_s")
    summary = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    print(json.dumps({"refine": str(refine_cfg), "objects": len(rows), "load_avg": os.getloadavg()[0],
                      "summary": summary}, indent=1))  # fmt: skip
    return {"rows": rows, "summary": summary}


def downsample_views(views: PosedViews, res: int) -> PosedViews:
    """The views at ``res`` pixels (area filter of premultiplied RGBA), same cameras."""
    img = torch.from_numpy(np.ascontiguousarray(views.images, dtype=np.float32)).permute(0, 3, 1, 2)  # [V, 4, H, W]
    if img.shape[-1] == res:
        return views
    premult = torch.cat([img[:, :3] * img[:, 3:], img[:, 3:]], dim=1)
    small = F.interpolate(premult, size=(res, res), mode="area")
    rgb = small[:, :3] / small[:, 3:].clamp(min=1e-6)
    rgba = torch.cat([rgb.clamp(0.0, 1.0), small[:, 3:]], dim=1).permute(0, 2, 3, 1).numpy()
    return PosedViews(rgba, views.c2w, views.fov_deg, views.names)


def timed(fn, *args):
    """``fn(*args)``, its wall-clock and process CPU seconds (CPU time: comparable under a varying load)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def run_objects(args, sources) -> list[dict]:
    """Every method of ``args.methods`` on every object: one row per object."""
    cfg = OptimizeConfig()
    cfg = replace(cfg, **{k: v for k, v in (("steps", args.steps), ("resolution", args.res)) if v is not None})
    export_cfg = optimize_export_config()
    model = None
    if "refine" in args.methods or "feedforward" in args.methods:
        model = Reconstructor.from_pretrained(resolve_weights(args.recon, "recon").location).eval()
    refine_cfg = RefineConfig() if args.steps is None else RefineConfig(steps=args.steps)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        for source in sources:
            data = prepare(source, args.input_res, Path(args.cache) if args.cache else None)
            views = PosedViews.from_rig(data["views"], 20.0)
            row = {"name": source.name}
            if "hull" in args.methods:
                t0 = time.perf_counter()
                hull = HullField.from_views(views.images, views.c2w, views.fov_deg, resolution=128)
                row["hull"] = score_field(hull, export_cfg, data, tmp, f"{source.name}_hull")
                row["hull"]["time_s"] = time.perf_counter() - t0
            if "ours" in args.methods:
                load = os.getloadavg()[0]
                result, fit_s, fit_cpu = timed(optimize_field, views, cfg)
                t0 = time.perf_counter()
                row["ours"] = score_field(result.field, export_cfg, data, tmp, f"{source.name}_ours", views)
                export_s = time.perf_counter() - t0  # export + scoring renders
                row["ours"].update(time_s=fit_s + export_s, optimize_s=fit_s, optimize_cpu_s=fit_cpu, load=load)
                # The same fit with the field's own colours (--no-project-views), for comparison.
                row["ours_field"] = score_field(result.field, export_cfg, data, tmp, f"{source.name}_ours_field")
                row["ours_field"]["time_s"] = row["ours"]["time_s"]
            if model is not None:
                small = downsample_views(views, args.refine_res)
            if "feedforward" in args.methods:
                with torch.no_grad():
                    field, fit_s, fit_cpu = timed(model.reconstruct, small)
                ff_cfg = recon_export_config(model.config, {}, "cpu")
                row["feedforward"] = score_field(field, ff_cfg, data, tmp, f"{source.name}_ff", small)
                row["feedforward"].update(time_s=fit_s, optimize_s=fit_s, optimize_cpu_s=fit_cpu)
            if "refine" in args.methods:
                load = os.getloadavg()[0]
                result, fit_s, fit_cpu = timed(refine_reconstruction, model, small, refine_cfg)
                # As `fourview reconstruct --optimize --recon` exports it (marching cubes, views projected).
                refine_export = sized_export_config(model.config, {}, "cpu")
                row["refine"] = score_field(result.field, refine_export, data, tmp, f"{source.name}_refine", small)
                row["refine"].update(time_s=fit_s, optimize_s=fit_s, optimize_cpu_s=fit_cpu, load=load)
            rows.append(row)
            line = f"{source.name:32s}"
            for m in row_methods(args.methods):
                r = row[m]
                line += (f" | {m} {r['psnr128']:.2f} dB {r['ssim128']:.3f} / {r['psnr512']:.2f} dB {r['ssim512']:.3f}"
                         f" CD {r['chamfer']:.4f} F {r['fscore']:.3f} {r['time_s']:.0f}s")  # fmt: skip
            print(line + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    return rows


def row_methods(methods: list[str]) -> list[str]:
    return [m for m in methods] + (["ours_field"] if "ours" in methods else [])


def summarize(rows: list[dict], methods: list[str]) -> dict:
    return {m: {k: float(np.mean([r[m][k] for r in rows])) for k in rows[0][m]} for m in methods if rows}


def compare_versions(args, sources) -> dict:
    """Each object with ``args.candidate``'s code or the working tree's ("new") and with
    ``args.baseline``'s ("old"), each in a fresh process of this script, alternating which goes first;
    both versions' rows and summaries."""
    root = Path(__file__).resolve().parents[1]

    def resolve(name: str) -> str:
        return subprocess.run(
            ["git", "rev-parse", name], cwd=root, check=True, capture_output=True, text=True
        ).stdout.strip()

    revs = {"old": resolve(args.baseline), "new": None if args.candidate is None else resolve(args.candidate)}
    passed = ["--input-res", str(args.input_res), "--cache", args.cache, "--recon", args.recon,
              "--refine-res", str(args.refine_res), "--methods", *args.methods]  # fmt: skip
    for flag, value in (("--steps", args.steps), ("--res", args.res), ("--threads", args.threads)):
        if value is not None:
            passed += [flag, str(value)]
    rows: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        srcs = {"new": str(root / "src")}
        for version, rev in revs.items():
            if rev is not None:
                archive = subprocess.run(["git", "archive", rev, "src"], cwd=root, check=True, capture_output=True)
                (tmp / version).mkdir()
                subprocess.run(["tar", "-x", "-C", str(tmp / version)], input=archive.stdout, check=True)
                srcs[version] = str(tmp / version / "src")
        for i, source in enumerate(sources):
            for version in ("new", "old") if i % 2 == 0 else ("old", "new"):
                out = tmp / f"{source.name}_{version}.json"
                env = {**os.environ, "PYTHONPATH": srcs[version]}
                cmd = [sys.executable, __file__, "--objects", args.objects, "--only", source.name, "--json", str(out)]
                print(f"{version} ({srcs[version]}), load {os.getloadavg()[0]:.1f}:", flush=True)
                subprocess.run(cmd + passed, env=env, check=True)
                rows[version].append(json.loads(out.read_text())["rows"][0])
    methods = row_methods(args.methods)
    summary = {v: summarize(rows[v], methods) for v in rows}
    new = "the working tree" if revs["new"] is None else f"{args.candidate} ({revs['new'][:10]})"
    print(f"\nold = {args.baseline} ({revs['old'][:10]}), new = {new}; {len(sources)} objects")
    for m in methods:
        for key in ("psnr128", "ssim128", "psnr512", "ssim512", "chamfer", "optimize_s", "optimize_cpu_s"):
            if key in summary["old"].get(m, {}):
                o, n = summary["old"][m][key], summary["new"][m][key]
                ratio = f"  (old / new {o / n:.2f})" if key.startswith("optimize") else ""
                print(f"{m:12s} {key:15s} old {o:9.4f}  new {n:9.4f}  new - old {n - o:+.4f}{ratio}")
    print(f"load average at the end: {os.getloadavg()}", flush=True)
    return {"baseline": args.baseline, "revisions": revs, "rows": rows, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "objects"))
    ap.add_argument("--only", nargs="*", help="object names to run (default: all)")
    ap.add_argument("--input-res", type=int, default=512, help="side of the rendered input views")
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the configs')")
    ap.add_argument("--res", type=int, default=None, help="loss resolution (default: OptimizeConfig's)")
    ap.add_argument(
        "--methods", nargs="*", default=["hull", "ours"], choices=["hull", "ours", "feedforward", "refine"]
    )
    ap.add_argument("--cache", default="/tmp/fourview_bench_optimize", help="cache of inputs and ground truth")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", help="write per-object rows and the summary here")
    ap.add_argument("--baseline", help="git revision whose code runs beside the working tree's (see above)")
    ap.add_argument("--candidate", help="with --baseline: a git revision instead of the working tree")
    ap.add_argument("--refine-res", type=int, default=128, help="side of the views refinement sees, pixels")
    ap.add_argument("--refine-data", help="instead: refinement before/after on synth_heldout_* folders of this")
    ap.add_argument("--recon", default="demo", help="reconstructor of the refinement")
    ap.add_argument("--count", type=int, default=12, help="objects of --refine-data")
    ap.add_argument("--frames", type=int, default=8, help="novel frames per object of --refine-data")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}", flush=True)
    if args.refine_data:
        out = refine_benchmark(Path(args.refine_data), args.recon, args.count, args.frames, args.steps)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
        return

    sources = resolve_inputs([], objects_json=str(Path(args.objects) / "objects.json"))
    if args.only:
        sources = [s for s in sources if s.name in args.only]
    if args.baseline:
        out = compare_versions(args, sources)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
        return
    rows = run_objects(args, sources)
    summary = summarize(rows, row_methods(args.methods))
    print(json.dumps({"objects": len(rows), "input_res": args.input_res, "summary": summary}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
