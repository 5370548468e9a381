"""Benchmark of the export stage: an analytic field to a game-ready GLB (and OBJ), step by step.

Runs `fourview.export.exporter.export_field` on `SphereField` / `TorusField` at the full size
(256^3 marching cubes or a 256 tet grid, 50k-face budget, 1024^2 baked texture) and writes the
mesh as a GLB (`fourview.meshio.write_mesh_files`), prints the per-step timings (extract,
cleanup, simplify, uv, bake, write) as JSON, checks the face budget,
and measures how faithful the export is: the GLB and the OBJ are loaded back
(`fourview.data.assets.load_asset`), rendered unlit from the four rig cameras
(`fourview.render.mesh_renderer.MeshRenderer`, albedo) and compared by PSNR with a sphere-traced
render of the analytic field itself (colour = ``field.color`` at the hit point, white background),
both 2x2 supersampled.

    python benchmarks/bench_export.py                       # torus, full size
    python benchmarks/bench_export.py --field sphere --method dmtet --repeats 3
    python benchmarks/bench_export.py --game                # the game target (issue 21), see below

``--game`` exports the analytic torus (256^3 grid) and a demo reconstruction (the shipped demo
reconstructor on the held-out red mug's four 64-px rig views, re-exported from its saved folder as
``fourview export --target game`` does: 128^3 grid, projected views) with the game target (10k
triangles, 1024^2 base colour + normal + occlusion-roughness-metallic textures, three levels of
detail), writes the GLBs, and reports the time per step and the shading the normal map gives back:
grey, lit renders (`fourview.export.normal_map.shaded_render`) from the four rig cameras of the
dense extracted mesh (the reference), the 10k-triangle mesh with its interpolated vertex normals,
and the same mesh with its normal map; PSNR against the reference over the pixels both meshes
cover (the surface: a normal map cannot move a silhouette) and over the whole image.

Not collected by pytest. Compare numbers only within one kind of machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fourview.cameras import Camera, orthogonal_rig, pixel_rays
from fourview.export.exporter import ExportConfig, export_field
from fourview.meshio import write_mesh_files
from fourview.recon.fields import SphereField, SurfaceField, TorusField


@torch.no_grad()
def sphere_trace(
    field: SurfaceField, camera: Camera, resolution: int, supersample: int = 2, steps: int = 160
) -> np.ndarray:
    """[H, W, 3] sRGB render of an SDF field on white (``field.color`` at the hit), box-filtered supersamples."""
    res = resolution * supersample
    o, d = pixel_rays(camera, res)
    o = torch.from_numpy(o.reshape(-1, 3)).float()  # [R, 3]
    d = torch.from_numpy(d.reshape(-1, 3)).float()
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - 3.0)  # rays meeting the sphere of radius sqrt(3) around the cube
    t = (-b - disc.clamp(min=0.0).sqrt()).clamp(min=0.0)
    alive, hit = disc > 0, torch.zeros(len(o), dtype=torch.bool)
    for _ in range(steps):
        s = field.sdf(o + t[:, None] * d)
        hit |= alive & (s.abs() < 1e-5)
        alive &= ~hit & (t < 2.0 * camera.radius)
        t = torch.where(alive, t + s, t)
    color = torch.where(hit[:, None], field.color(o + t[:, None] * d), torch.ones(len(o), 3))
    color = color.reshape(resolution, supersample, resolution, supersample, 3).mean(dim=(1, 3))
    return color.numpy()


def render_export(path: Path, cameras: list[Camera], resolution: int) -> list[np.ndarray]:
    """Albedo renders [H, W, 3] of an exported file on white, one per camera."""
    from fourview.data.assets import load_asset
    from fourview.render.mesh_renderer import Lighting, MeshRenderer

    renderer = MeshRenderer(load_asset(path, normalize=False))
    out = []
    for camera in cameras:
        rgba = renderer.render(camera, resolution, Lighting(albedo=True), supersample=2).rgba
        out.append(rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def normal_map_report(field: SurfaceField, config: ExportConfig, views=None, resolution: int = 256) -> dict:
    """One game export of ``field``: time per step (write included, wall and CPU) and the normal map's PSNR."""
    from fourview.export.extract import extract_mesh
    from fourview.export.mesh_cleanup import CleanupConfig, clean_mesh
    from fourview.export.normal_map import shaded_render, surface_psnr
    from fourview.mesh import MeshAsset, MeshPart

    folder = Path(tempfile.mkdtemp(prefix="bench_export_game_"))
    cpu0, start = time.process_time(), time.perf_counter()
    result = export_field(field, config, views=views)
    t0 = time.perf_counter()
    written = write_mesh_files(result.mesh, [folder / "model.glb"])
    timings = {**result.timings, "write": time.perf_counter() - t0}
    timings["total"] = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    # The reference: the dense surface the normal map was baked from (the same extraction and clean-up).
    extracted = extract_mesh(field, config.resolution, config.method, config.chunk, coarse_factor=config.coarse_factor)
    cleaned = clean_mesh(extracted.verts, extracted.faces, CleanupConfig(config.min_component_area_fraction))
    dense = MeshAsset("dense", (MeshPart(cleaned.verts, cleaned.faces),))
    budget = result.mesh.levels[0]
    if budget.placement is not None and (budget.placement.scale != 1.0 or budget.placement.pivot != "object"):
        raise SystemExit("the normal-map comparison renders in the object frame: export without --height/--pivot")
    rows = {"surface_plain": [], "surface_mapped": [], "full_plain": [], "full_mapped": []}
    for camera in orthogonal_rig():
        reference, ref_alpha = shaded_render(dense, camera, resolution)
        plain, alpha = shaded_render(budget, camera, resolution, normal_map=False)
        mapped, _ = shaded_render(budget, camera, resolution, normal_map=True)
        surface = (ref_alpha == 1.0) & (alpha == 1.0)
        everything = np.ones_like(surface)
        rows["surface_plain"].append(surface_psnr(plain, reference, surface))
        rows["surface_mapped"].append(surface_psnr(mapped, reference, surface))
        rows["full_plain"].append(surface_psnr(plain, reference, everything))
        rows["full_mapped"].append(surface_psnr(mapped, reference, everything))
    report = {
        "dense_faces": len(cleaned.faces),
        "faces": result.num_faces,
        "lods_faces": [m.num_faces for m in result.mesh.levels],
        "texture_size": result.texture_size,
        "files": [p.name for p in written],
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "cpu_time_s": round(cpu, 3),
        "under_10s": timings["total"] < 10.0,
    }
    for key, values in rows.items():
        report[f"psnr_{key}_db"] = [round(v, 2) for v in values]
        report[f"psnr_{key}_mean_db"] = round(float(np.mean(values)), 2)
    report["normal_map_gain_surface_db"] = round(
        report["psnr_surface_mapped_mean_db"] - report["psnr_surface_plain_mean_db"], 2
    )
    report["normal_map_gain_full_db"] = round(
        report["psnr_full_mapped_mean_db"] - report["psnr_full_plain_mean_db"], 2
    )
    report["gain_at_least_3db"] = report["normal_map_gain_surface_db"] >= 3.0
    return report


def demo_reconstruction(folder: Path) -> Path:
    """The shipped demo reconstructor's saved reconstruction of the held-out red mug (64-px rig views)."""
    from fourview.data.dataset_renderer import RenderSettings, render_dataset, resolve_inputs
    from fourview.pipeline import FourViewPipeline
    from fourview.render.mesh_renderer import Lighting
    from fourview.views import PosedViews

    settings = RenderSettings(resolution=64, num_random=0, lighting=Lighting(albedo=True), write_depth=False,
                              write_normal=False)  # fmt: skip
    (rendered,) = render_dataset(resolve_inputs(["example:red_mug"]), folder / "render", settings, progress=False)
    views = PosedViews.read([rendered / "rig" / f"{az:03d}.png" for az in (0, 90, 180, 270)])
    FourViewPipeline.from_pretrained(mvgen=None).views_to_3d(views).save(folder / "mug")
    return folder / "mug"


def game_suite(args) -> dict:
    """``--game``: the torus and a demo reconstruction through the game target (module docstring)."""
    from dataclasses import replace

    from fourview.export.presets import export_preset, reexport_config
    from fourview.pipeline import ExportSettings
    from fourview.recon.saved_field import load_field, load_field_config, load_field_metadata, load_saved_views

    overrides = ExportSettings(target="game", lods=3).overrides()
    overrides["pivot"] = "object"  # rendered from the rig cameras in the object frame
    # Warm-up: numba JIT of the rasteriser, the closest-point kernel and first imports.
    export_field(
        TorusField(), replace(ExportConfig(resolution=32, texture_size=64), **{**overrides, "texture_size": 64})
    )
    report: dict = {
        "bench": "export_game",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }
    torus = replace(ExportConfig(resolution=args.resolution), **overrides)
    report["torus"] = normal_map_report(TorusField(), torus, resolution=args.render)
    saved = args.reconstruction or demo_reconstruction(Path(tempfile.mkdtemp(prefix="bench_export_demo_")))
    base = replace(export_preset("demo"), **overrides)
    config = reexport_config(load_field_config(saved), load_field_metadata(saved), base, overrides)
    report["demo_reconstruction"] = normal_map_report(load_field(saved), config, load_saved_views(saved), args.render)
    report["demo_reconstruction"]["source"] = str(saved)
    report["load_average_1min_after"] = os.getloadavg()[0]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", choices=["torus", "sphere"], default="torus")
    parser.add_argument("--method", choices=["marching_cubes", "dmtet"], default="marching_cubes")
    parser.add_argument("--resolution", type=int, default=256, help="grid samples (MC) or tet cells per axis")
    parser.add_argument("--texture", type=int, default=1024, help="texture side, texels")
    parser.add_argument("--budget", type=int, default=50_000, help="face budget")
    parser.add_argument("--repeats", type=int, default=1, help="timed exports (median reported)")
    parser.add_argument("--render", type=int, default=256, help="PSNR render side, pixels (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="keep the files in this folder")
    parser.add_argument("--game", action="store_true", help="the game target on the torus and a demo reconstruction")
    parser.add_argument("--reconstruction", type=Path, default=None, help="--game: a saved reconstruction to use")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.game:
        print(json.dumps(game_suite(args), indent=2))
        return

    field = TorusField() if args.field == "torus" else SphereField()
    config = ExportConfig(
        resolution=args.resolution, method=args.method, face_budget=args.budget, texture_size=args.texture
    )
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench_export_"))
    folder.mkdir(parents=True, exist_ok=True)
    glb, obj = folder / f"{args.field}.glb", folder / f"{args.field}.obj"

    # Warm-up: numba JIT of the rasteriser and first imports, on a small export.
    warmup = export_field(field, ExportConfig(resolution=32, face_budget=2000, texture_size=64))
    write_mesh_files(warmup.mesh, [folder / "warmup.glb"])
    runs = []
    for _ in range(args.repeats):
        cpu0 = time.process_time()
        result = export_field(field, config)
        start = time.perf_counter()
        write_mesh_files(result.mesh, [glb])
        timings = {**result.timings, "write": time.perf_counter() - start}
        timings["total"] += timings["write"]
        runs.append((result, timings, time.process_time() - cpu0))
    steps = ["extract", "cleanup", "simplify", "uv", "bake", "write", "total"]
    timings = {k: statistics.median(t[k] for _, t, _ in runs) for k in steps}
    result = runs[-1][0]
    report: dict = {
        "bench": "export",
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0],
        "field": args.field,
        "method": args.method,
        "resolution": args.resolution,
        "texture_size": args.texture,
        "face_budget": args.budget,
        "num_faces": result.num_faces,
        "num_verts": result.num_verts,
        "budget_honoured": result.num_faces <= args.budget,
        "repeats": args.repeats,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "cpu_time_s": round(statistics.median(c for _, _, c in runs), 3),
        "under_20s": timings["total"] < 20.0,
    }
    if args.render:
        write_mesh_files(result.mesh, [obj])  # the same mesh as OBJ + MTL + PNG
        cameras = orthogonal_rig()
        reference = [sphere_trace(field, cam, args.render) for cam in cameras]
        for name, path in (("glb", glb), ("obj", obj)):
            values = [psnr(a, b) for a, b in zip(render_export(path, cameras, args.render), reference)]
            report[f"psnr_{name}_db"] = [round(v, 2) for v in values]
            report[f"psnr_{name}_min_db"] = round(min(values), 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
