"""The GSO benchmark on a GSO-layout fixture of its own: every mode, both alignments, resuming, shards, the lists."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from fourview.cli import main
from fourview.data.splits import is_evaluation_object
from fourview.errors import InputError
from fourview.evaluation import gso_benchmark
from fourview.evaluation.gso import evaluation_objects, find_gso_objects, load_gso_object, read_object_list
from fourview.evaluation.gso_benchmark import (
    GsoBenchConfig,
    as_files_hold_it,
    object_list_path,
    render_ground_truth,
    run_gso_benchmark,
    score_mesh,
)
from fourview.pipeline import ExportSettings, FourViewPipeline, SamplingSettings
from fourview.recon.model import Reconstructor
from fourview.recon.optimize import OptimizeConfig
from fourview.recon.refine import RefineConfig
from tests.mvgen.test_pipeline import tiny_pipeline
from tests.test_pipeline import sphere_forward, tiny_recon  # noqa: F401 (fixtures: a tiny reconstructor of a sphere)

NAMES = ("Blue_Box", "Red_Cylinder")
SMALL = {"subset": "all", "input_resolution": 32, "image_resolutions": (24, 32), "surface_points": 400,
         "volume_resolution": 16, "hull_resolution": 24}  # fmt: skip
EXPORT = ExportSettings(grid_resolution=24, texture_size=64, face_budget=2000)
TABLES = ("results.jsonl", "results.csv", "results.md", "summary.json", "settings.json")


def _write_gso_object(root: Path, name: str, mesh: trimesh.Trimesh, uv: np.ndarray, colours: np.ndarray) -> None:
    """``root/NAME`` in the original release's layout: meshes/model.obj + model.mtl, materials/textures/texture.png."""
    meshes = root / name / "meshes"
    textures = root / name / "materials" / "textures"
    meshes.mkdir(parents=True)
    textures.mkdir(parents=True)
    lines = ["mtllib model.mtl", "usemtl material_0"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in mesh.faces + 1]
    (meshes / "model.obj").write_text("\n".join(lines) + "\n")
    (meshes / "model.mtl").write_text("newmtl material_0\nKd 1 1 1\nmap_Kd texture.png\n")
    Image.fromarray(colours).save(textures / "texture.png")


@pytest.fixture(scope="module")
def gso_root(tmp_path_factory) -> Path:
    """Two Z-up textured scans: a box (blue and white halves along z) and a cylinder (red and yellow halves)."""
    root = tmp_path_factory.mktemp("gso")
    halves = lambda a, b: np.repeat(np.array([[a], [b]], dtype=np.uint8), 4, axis=0).repeat(8, axis=1)  # noqa: E731
    box = trimesh.creation.box((0.6, 0.4, 1.0))
    _write_gso_object(root, "Blue_Box", box, np.c_[box.vertices[:, 0] / 0.6 + 0.5, box.vertices[:, 2] + 0.5],
                      halves((30, 60, 200), (240, 240, 240)))  # fmt: skip
    cyl = trimesh.creation.cylinder(radius=0.3, height=0.8, sections=24)
    u = np.arctan2(cyl.vertices[:, 1], cyl.vertices[:, 0]) / (2 * np.pi) + 0.5
    _write_gso_object(root, "Red_Cylinder", cyl, np.c_[u, cyl.vertices[:, 2] / 0.8 + 0.5],
                      halves((200, 30, 30), (240, 200, 40)))  # fmt: skip
    return root


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _check_record(record: dict, config: GsoBenchConfig) -> None:
    assert record["error"] is None, record["error"]
    metrics = record["metrics"]
    assert list(metrics) == config.metric_keys()
    for key, value in metrics.items():
        assert (value is None) if key.startswith("lpips") and value is None else np.isfinite(value), key
    for prefix in ("", "aligned_"):  # both alignments, F-scores growing with the threshold
        f = [metrics[f"{prefix}fscore@{t}"] for t in ("0.05", "0.1", "0.2")]
        assert 0.0 <= f[0] <= f[1] <= f[2] <= 1.0 and metrics[f"{prefix}chamfer"] > 0.0
    assert 0.0 <= metrics["volume_iou"] <= 1.0 and record["faces"] > 0
    assert set(record["alignment"]) == {"scale", "rotation_deg"}
    assert record["timings_s"]["total_s"] >= record["timings_s"]["ground_truth_s"] > 0.0
    assert record["peak_memory_mb"] > 0.0


def test_hull_in_two_shards_writes_every_table_then_a_rerun_recomputes_nothing(gso_root, tmp_path, monkeypatch):
    config = GsoBenchConfig(method="hull", **SMALL)
    out = tmp_path / "out"
    first = run_gso_benchmark(config, gso_root, out, export=EXPORT, rank=0, world_size=2, progress=False)
    assert (first.selected, first.computed, first.skipped) == (2, 1, 0)
    assert [r.name for r in first.results] == ["Blue_Box"]  # shard 0 of 2: objects 0, 2, ...
    second = run_gso_benchmark(config, gso_root, out, export=EXPORT, rank=1, world_size=2, progress=False)
    assert (second.computed, [r.name for r in second.results]) == (1, list(NAMES))  # the tables merge both shards

    for name in TABLES:
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "objects").iterdir()) == [f"{n}.json" for n in NAMES]
    with Image.open(out / "previews" / "Red_Cylinder.png") as im:
        assert im.size == (8 * 24, 2 * 24)  # ground truth over reconstruction, 8 azimuths, the smallest resolution
    records = _records(out)
    assert [r["name"] for r in records] == list(NAMES)
    for record in records:
        _check_record(record, config)
    assert records[0]["metrics"]["volume_iou"] > 0.5  # the hull of a box from four views is close to the box
    rows = list(csv.DictReader(io_lines(out / "results.csv")))
    assert [r["name"] for r in rows] == list(NAMES) and float(rows[1]["chamfer"]) == records[1]["metrics"]["chamfer"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"] == {"selected": 2, "finished": 2, "scored": 2, "failed": {}}
    assert summary["means"]["psnr_24"] == pytest.approx(np.mean([r["metrics"]["psnr_24"] for r in records]))
    assert {"date", "machine", "load_average", "settings", "lpips"} <= set(summary)
    markdown = (out / "results.md").read_text()
    assert "| Blue_Box | " in markdown and "| Red_Cylinder | " in markdown and "| **mean (2)** | " in markdown
    assert "CD al." in markdown and "F@0.1 al." in markdown  # both alignments
    assert "Instant3D" in markdown and "26.54" in markdown and "SPAR3D" in markdown and "0.584" in markdown

    def recompute(*args, **kwargs):
        raise AssertionError("a finished object was computed again")

    monkeypatch.setattr(gso_benchmark, "run_object", recompute)
    again = run_gso_benchmark(config, gso_root, out, export=EXPORT, rank=0, world_size=1, progress=False)
    assert (again.computed, again.skipped, len(again.results)) == (0, 2, 2)
    assert _records(out) == records
    with pytest.raises(InputError, match="other settings .*albedo"):
        run_gso_benchmark(replace(config, albedo=True), gso_root, out, export=EXPORT, progress=False)


def io_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_views_mode_from_the_command_line(gso_root, tiny_recon, sphere_forward, tmp_path, capsys, monkeypatch):  # noqa: F811
    real = gso_benchmark.run_gso_benchmark

    def small(config, *args, **kwargs):  # the protocol's image sizes and point counts, shrunk for the test
        return real(replace(config, **{k: SMALL[k] for k in ("image_resolutions", "surface_points",
                                                             "volume_resolution")}), *args, **kwargs)  # fmt: skip

    monkeypatch.setattr(gso_benchmark, "run_gso_benchmark", small)
    out = tmp_path / "out"
    args = ["bench", "gso", "--root", str(gso_root), "-o", str(out), "--subset", "all", "--recon", str(tiny_recon),
            "--input-res", "32", "--grid", "24", "--texture-size", "64", "--faces", "2000", "--max-objects", "1",
            "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(args)
    captured = capsys.readouterr()
    assert e.value.code == 0, captured.err
    assert "1 scored now, 0 finished before" in captured.out and "results.md" in captured.out
    config = replace(GsoBenchConfig(**SMALL), recon=str(tiny_recon))
    for record in _records(out):
        _check_record(record, config)
        assert record["timings_s"]["reconstruct_s"] > 0.0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["mode"] == "views" and settings["models"]["recon"] == str(tiny_recon)
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0 and "0 scored now, 1 finished before" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["optimize", "refine", "image"])
def test_the_per_object_fits_and_the_image_mode(mode, gso_root, tiny_recon, sphere_forward, tmp_path):  # noqa: F811
    config = GsoBenchConfig(mode=mode, max_objects=1, **SMALL)
    generator = tiny_pipeline() if mode == "image" else None
    pipe = FourViewPipeline(generator, Reconstructor.from_pretrained(str(tiny_recon)).eval())
    fit = {
        "optimize": OptimizeConfig(steps=2, resolution=16, plane_resolution=8, plane_channels=4, texture_resolution=8,
                                   texture_channels=4, hidden_channels=16, rays_per_step=64, samples_per_ray=8,
                                   init_steps=60, texture_steps=2, texture_view_resolution=16),  # enough for a surface
        "refine": RefineConfig(steps=2, rays_per_view=64),
        "image": None,
    }[mode]  # fmt: skip
    sampling = SamplingSettings(steps=2) if mode == "image" else None
    summary = run_gso_benchmark(config, gso_root, tmp_path, pipe, EXPORT, fit, sampling, progress=False)
    (record,) = _records(tmp_path)
    assert record["name"] == "Blue_Box" and summary.computed == 1
    _check_record(record, config)
    stage = {"optimize": "optimize_s", "refine": "optimize_s", "image": "mvgen_s"}[mode]
    assert record["timings_s"][stage] > 0.0
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["mode"] == mode and (settings["fit"] is None) == (mode == "image")


def test_modes_and_pipelines_that_cannot_run_are_refused(gso_root, tmp_path):
    with pytest.raises(InputError, match="--mode text is not applicable"):
        GsoBenchConfig(mode="text")
    with pytest.raises(InputError, match="--method hull .* --mode views"):
        GsoBenchConfig(method="hull", mode="optimize")
    with pytest.raises(InputError, match="runs through a FourViewPipeline .*none was given"):
        run_gso_benchmark(GsoBenchConfig(**SMALL), gso_root, tmp_path / "a", progress=False)
    with pytest.raises(InputError, match="needs a generator and a reconstructor; the pipeline lacks a generator and"):
        run_gso_benchmark(GsoBenchConfig(mode="image", **SMALL), gso_root, tmp_path / "b", FourViewPipeline(),
                          progress=False)  # fmt: skip
    listed = tmp_path / "list.txt"
    listed.write_text("# two names\nBlue_Box\nGreen_Sphere  # not in the folder\n")
    with pytest.raises(InputError, match="not in the folder: Green_Sphere"):
        run_gso_benchmark(GsoBenchConfig(method="hull", objects=str(listed)), gso_root, tmp_path / "c", progress=False)
    assert GsoBenchConfig(method="hull").pipeline_models() is None
    assert GsoBenchConfig(mode="optimize").pipeline_models() == {"mvgen": None, "recon": None}
    assert GsoBenchConfig(mode="image").pipeline_models() == {"mvgen": "demo", "recon": "demo"}


def test_the_scan_itself_scores_perfectly_in_both_frames(gso_root):
    """Unlit (--albedo) the scan drawn as a reconstruction is its own ground truth, pixel for pixel."""
    config = GsoBenchConfig(albedo=True, **{**SMALL, "surface_points": 3000})  # two draws of one surface
    (box, _) = find_gso_objects(gso_root)
    gt = render_ground_truth(box, config)
    scores = score_mesh(gt.asset, gt, config)
    assert all(scores.metrics[f"psnr_{r}"] == np.inf and scores.metrics[f"ssim_{r}"] == pytest.approx(1.0)
               for r in SMALL["image_resolutions"])  # fmt: skip
    for prefix in ("", "aligned_"):
        assert scores.metrics[f"{prefix}chamfer"] < 0.03 and scores.metrics[f"{prefix}fscore@0.1"] == 1.0
    assert scores.metrics["volume_iou"] == 1.0
    angle = scores.alignment["rotation_deg"]  # a symmetry of the box: the identity or a half turn
    assert scores.alignment["scale"] == pytest.approx(1.0, abs=0.02) and min(angle, 180.0 - angle) < 2.0


def test_a_textured_part_is_coloured_by_its_texture_alone_as_in_its_files(gso_root):
    scan = load_gso_object(find_gso_objects(gso_root)[0])
    part = scan.parts[0]
    grey = replace(part, vertex_colors=np.full((len(part.verts), 3), 0.5, np.float32))
    untextured = replace(grey, material=replace(part.material, texture=None), uv=None)
    mesh = as_files_hold_it(replace(scan, parts=(grey, untextured)))
    assert mesh.parts[0].vertex_colors is None and mesh.parts[0].material.texture is not None
    assert mesh.parts[1].vertex_colors is grey.vertex_colors  # the only colour an untextured part has


def test_the_shipped_lists_follow_their_rules():
    everything = read_object_list(object_list_path("gso_all"))
    assert len(everything) == len(set(everything)) == 1033
    subset = read_object_list(object_list_path("gso_300"))
    key = lambda name: hashlib.sha256(f"fourview-gso-300-v1:{name}".encode()).hexdigest()  # noqa: E731
    assert subset == sorted(sorted(everything, key=key)[:300])
    evaluation = read_object_list(object_list_path("shared_gso_eval"))
    assert len(evaluation) == 67 and all(map(is_evaluation_object, evaluation)) and set(evaluation) <= set(everything)
    assert object_list_path("no_such_list") == Path("no_such_list")


def test_the_evaluation_list_is_the_rule_applied_to_shared_gso(shared_data):
    if not (shared_data / "gso").is_dir():
        pytest.skip("no shared/data/gso")
    names = [o.name for o in evaluation_objects(find_gso_objects(shared_data / "gso"))]
    assert read_object_list(object_list_path("shared_gso_eval")) == names
