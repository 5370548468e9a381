"""The pipeline object, the asset folder, `fourview reconstruct` and `fourview export` on a tiny model."""

import json
import math

import numpy as np
import pytest
import torch
import trimesh

from fourview.cli import main
from fourview.data.dataset_renderer import RenderSettings, render_dataset, resolve_inputs
from fourview.errors import InputError
from fourview.recon.config import recon_preset
from fourview.recon.model import Reconstructor
from fourview.render.mesh_renderer import Lighting
from tests.gltf_validation import validate_glb

SPHERE_RADIUS = 0.6


def sphere_planes(resolution: int, channels: int) -> torch.Tensor:
    """[1, 3, C, R, R] planes whose channel 0 holds 1 - (u^2 + v^2): summed over the planes, 3 - 2 |xyz|^2."""
    c = (torch.arange(resolution) + 0.5) / resolution * 2 - 1  # texel centres in [-1, 1]
    v, u = torch.meshgrid(c, c, indexing="ij")
    planes = torch.zeros(1, 3, channels, resolution, resolution)
    planes[:, :, 0] = 1 - (u**2 + v**2)
    return planes


@pytest.fixture(scope="module")
def tiny_recon(tmp_path_factory):
    """A tiny reconstructor with a hand-set decoder: with `sphere_planes` its surface is a sphere of radius 0.6.

    The decoder sums channel 0 of the three planes (3 - 2 r^2), passes it through its SiLU layer
    and puts the density's iso-level (10) at r = 0.6.
    """
    torch.manual_seed(0)
    model = Reconstructor(recon_preset("tiny", "volume"))
    c = model.config.unet.plane_channels
    first, last = model.decoder.trunk[0], model.decoder.trunk[-1]
    with torch.no_grad():
        first.weight.zero_(), first.bias.zero_(), last.weight.zero_(), last.bias.zero_()
        first.weight[0, [0, c, 2 * c]] = 1.0  # hidden 0 = sum of the planes' channel 0 (concat merge)
        last.weight[0, 0] = 4.0  # raw density grows with 3 - 2 r^2
        at_radius = torch.nn.functional.silu(torch.tensor(3 - 2 * SPHERE_RADIUS**2))
        last.bias[0] = math.log(10.0) - 4.0 * at_radius
        last.bias[1:] = torch.tensor([2.0, -2.0, -2.0])  # reddish colour
    return model.save_pretrained(tmp_path_factory.mktemp("recon") / "tiny")


@pytest.fixture
def sphere_forward(monkeypatch):
    """The U-Net of random weights has no shape to give: its planes are replaced by `sphere_planes`."""
    from fourview.recon.model import ReconOutput

    def forward(self, views, elevation_deg):
        cfg = self.config.unet
        return ReconOutput(planes=sphere_planes(cfg.resolution, cfg.plane_channels).expand(len(views), -1, -1, -1, -1))

    monkeypatch.setattr(Reconstructor, "forward", forward)


@pytest.fixture(scope="module")
def rig_views(tmp_path_factory):
    out = tmp_path_factory.mktemp("render")
    settings = RenderSettings(resolution=32, num_random=0, lighting=Lighting(albedo=True), write_depth=False,
                              write_normal=False)  # fmt: skip
    (folder,) = render_dataset(resolve_inputs(["example:red_mug"]), out, settings, progress=False)
    return [str(folder / "rig" / f"{az:03d}.png") for az in (0, 90, 180, 270)], str(folder / "grid.png")


def run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def test_reconstruct_writes_a_valid_asset_folder(tiny_recon, rig_views, sphere_forward, tmp_path, capsys):
    views, _ = rig_views
    out = tmp_path / "asset"
    code, stdout, err = run(["reconstruct", *views, "--recon", str(tiny_recon), "--grid", "16", "--format", "obj",
                             "--turntable", "3", "-o", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    for name in ("model.glb", "model.obj", "model.mtl", "model.png", "views.png", "meta.json", "turntable.gif"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["recon"] == str(tiny_recon) and meta["elevation_deg"] == 20.0
    assert meta["mesh"]["faces"] > 0 and meta["export"]["resolution"] == 16
    assert {"reconstruct_s", "export_s", "write_s", "turntable_s"} <= set(meta["timings_s"])
    report = validate_glb(out / "model.glb")
    assert report["issues"]["numErrors"] == 0
    mesh = trimesh.load(out / "model.glb", force="mesh")
    radii = np.linalg.norm(mesh.vertices, axis=1)  # the object frame: a sphere of radius 0.6 at the origin
    assert abs(radii.mean() - SPHERE_RADIUS) < 0.05 and radii.max() - radii.min() < 0.15
    assert not list(tmp_path.glob(".*"))  # no temporary folder left


def test_grid_input_and_reexport(tiny_recon, rig_views, sphere_forward, tmp_path, capsys):
    _, grid = rig_views
    out = tmp_path / "asset"
    code, _, err = run(["reconstruct", grid, "--recon", str(tiny_recon), "--grid", "12", "-o", str(out)], capsys)
    assert code == 0, err
    re = tmp_path / "re" / "re.ply"
    code, stdout, err = run(["export", str(out), "--grid", "12", "--vertex-colors", "--turntable", "gif",
                             "-o", str(re)], capsys)  # fmt: skip
    assert code == 0, err
    assert re.is_file() and (re.parent / "turntable.gif").is_file() and (re.parent / "contact_sheet.png").is_file()
    meta = json.loads((re.parent / "re.ply.meta.json").read_text())
    assert meta["mesh"]["faces"] == len(trimesh.load(re, force="mesh").faces)
    assert meta["export"]["vertex_colors"] is True


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--recon", "{missing}"], "not found"),
        (["--texture-size", "300"], "power of two"),
        (["--faces", "0"], "face budget"),
        (["--elevation", "100"], "elevation"),
    ],
)
def test_reconstruct_errors(extra, needle, tiny_recon, rig_views, tmp_path, capsys):
    views, _ = rig_views
    out = tmp_path / "asset"
    args = ["reconstruct", *views, "--recon", str(tiny_recon), "--grid", "12", "-o", str(out)]
    args += [a.format(missing=tmp_path / "nowhere") for a in extra]
    code, _, err = run(args, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_reconstruct_rejects_wrong_view_counts_and_sizes(tiny_recon, rig_views, tmp_path, capsys):
    views, _ = rig_views
    code, _, err = run(["reconstruct", *views[:3], "--recon", str(tiny_recon), "-o", str(tmp_path / "a")], capsys)
    assert code == 2 and "4 view images" in err
    code, _, err = run(["export", str(tmp_path), "-o", str(tmp_path / "x.glb")], capsys)
    assert code == 2 and "no saved reconstruction" in err


# ------------------------------------------------------------------ the pipeline object and the asset


def test_the_pipeline_reuses_its_model_and_the_asset_saves_once(tiny_recon, rig_views, sphere_forward, tmp_path):
    from fourview.pipeline import ExportSettings, FourViewPipeline
    from fourview.views import PosedViews

    pipe = FourViewPipeline.from_pretrained(mvgen=None, recon=str(tiny_recon))
    model = pipe.reconstructor
    views = PosedViews.read(rig_views[0])
    settings = ExportSettings(grid_resolution=16, texture_size=64)
    first = pipe.views_to_3d(views, export=settings)
    second = pipe.views_to_3d(views, export=settings)
    assert pipe.reconstructor is model  # loaded once
    assert first.num_faces == second.num_faces > 0 and first.texture_size == 64
    radii = np.linalg.norm(first.mesh.parts[0].verts, axis=1)  # in memory, before any file
    assert abs(radii.mean() - SPHERE_RADIUS) < 0.05
    with pytest.raises(InputError, match="needs a generator|has no generator"):
        pipe.text_to_3d("a red mug")
    out = tmp_path / "asset"
    paths = first.save(out, formats=("ply",))
    assert {p.name for p in paths} == {"model.glb", "model.ply", "views.png", "reconstruction", "meta.json"}
    assert trimesh.load(out / "model.glb", force="mesh").faces.shape[0] == first.num_faces


def test_saving_refuses_to_mix_two_runs_and_overwrite_replaces_the_folder(tiny_recon, rig_views, sphere_forward,
                                                                          tmp_path):  # fmt: skip
    from fourview.pipeline import ExportSettings, FourViewPipeline
    from fourview.views import PosedViews

    pipe = FourViewPipeline.from_pretrained(mvgen=None, recon=str(tiny_recon))
    asset = pipe.views_to_3d(PosedViews.read(rig_views[0]), export=ExportSettings(grid_resolution=12))
    out = tmp_path / "asset"
    asset.save(out, turntable_frames=2, preview_resolution=32)
    with pytest.raises(InputError, match="not empty"):
        asset.save(out)
    asset.save(out, overwrite=True)
    assert not (out / "turntable.gif").exists()  # the earlier run's file is gone with its folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_views_to_3d_checks_the_method_and_the_views(tiny_recon, rig_views):
    from fourview.cameras import Camera
    from fourview.pipeline import FourViewPipeline
    from fourview.views import PosedViews

    pipe = FourViewPipeline.from_pretrained(mvgen=None, recon=str(tiny_recon))
    views = PosedViews.read(rig_views[0])
    with pytest.raises(InputError, match="unknown method"):
        pipe.views_to_3d(views, method="magic")
    odd = PosedViews.from_cameras(views.images[:3], [Camera(a, 10.0) for a in (0, 120, 240)])
    with pytest.raises(InputError, match="four rig views"):
        pipe.views_to_3d(odd)
    with pytest.raises(InputError, match="needs a reconstructor"):
        FourViewPipeline.from_pretrained(mvgen=None, recon=None).views_to_3d(views)
    with pytest.raises(InputError, match="unknown device"):
        FourViewPipeline.from_pretrained(mvgen=None, recon=None, device="banana")


def test_every_command_respects_the_umask(tiny_recon, rig_views, sphere_forward, tmp_path, capsys):
    import os
    import stat

    old = os.umask(0o027)
    try:
        asset, reexport = tmp_path / "asset", tmp_path / "re" / "re.glb"
        views = rig_views[0]
        for args in (
            ["reconstruct", *views, "--recon", str(tiny_recon), "--grid", "12", "--turntable", "2", "-o", str(asset)],
            ["export", str(asset), "--grid", "12", "--turntable", "gif", "-o", str(reexport)],
            ["data", "synth", "--count", "1", "--quiet", "-o", str(tmp_path / "synth")],
            [
                "data",
                "render",
                "example:red_mug",
                "--res",
                "16",
                "--random",
                "1",
                "--quiet",
                "-o",
                str(tmp_path / "r"),
            ],
        ):
            code, _, err = run(args, capsys)
            assert code == 0, err
    finally:
        os.umask(old)
    written = list(tmp_path.rglob("*"))
    assert written
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), f"{path}: {oct(mode)}"


def test_refinement_restores_the_parts_the_silhouettes_show_and_the_field_left_out(tiny_recon, sphere_forward):
    from fourview.cameras import orthogonal_rig
    from fourview.export.extract import extract_mesh
    from fourview.export.projection import surface_coverage
    from fourview.mesh import MeshAsset, MeshPart
    from fourview.pipeline import RESTORE_GRID, _restore_missed_parts
    from fourview.recon.carving import SilhouetteBound, missed_silhouettes
    from fourview.render.mesh_renderer import MeshRenderer
    from fourview.views import PosedViews

    box = trimesh.creation.box((1.1, 1.1, 1.1))  # its silhouettes reach past the field's sphere of radius 0.6
    grey = np.full((len(box.vertices), 3), 0.5, np.float32)
    part = MeshPart(box.vertices.astype(np.float32), box.faces, vertex_colors=grey)
    renderer = MeshRenderer(MeshAsset("box", (part,)))
    rgba = np.stack([renderer.render(c, 48, Lighting(albedo=True)).rgba for c in orthogonal_rig(20.0)])
    views = PosedViews.from_rig(rgba, 20.0)
    model = Reconstructor.from_pretrained(tiny_recon).eval()

    def missed(field):
        surface = extract_mesh(field, RESTORE_GRID)
        return missed_silhouettes(views, surface_coverage(surface.verts, surface.faces, views))

    with torch.no_grad():
        sphere = model.field(model.predict(views)).carved(SilhouetteBound.from_views(views), 10.0)
        before = missed(sphere)
        restored, count = _restore_missed_parts(sphere, views, 0.5)
        assert count == before.sum() > 100  # the box's corners
        assert missed(restored).sum() == 0
        inner = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
        torch.testing.assert_close(restored.sdf(inner), sphere.sdf(inner))  # what the field had stays
        same, none = _restore_missed_parts(restored, views, 0.5)
        assert none == 0 and same is restored
        uncarved = model.field(model.predict(views))
        assert _restore_missed_parts(uncarved, views, 0.5) == (uncarved, 0)  # no hull to restore from


def test_views_whose_silhouettes_do_not_meet_give_the_uncarved_prediction(tiny_recon, sphere_forward):
    """Generated views can disagree: a front and a back view both showing the object on their left have an empty
    visual hull. Carving would leave no surface; the prediction is exported uncarved, and the record says so."""
    from dataclasses import replace

    from fourview.cameras import orthogonal_rig
    from fourview.errors import EmptySurfaceError
    from fourview.mesh import MeshAsset, MeshPart
    from fourview.pipeline import CARVING_SKIPPED, ExportSettings, FourViewPipeline
    from fourview.recon.carving import CarveConfig
    from fourview.render.mesh_renderer import MeshRenderer
    from fourview.views import PosedViews

    def renders(x: float) -> np.ndarray:
        box = trimesh.creation.box((0.3, 0.3, 0.3))
        box.apply_translation((x, 0.0, 0.0))
        grey = np.full((len(box.vertices), 3), 0.5, np.float32)
        part = MeshPart(box.vertices.astype(np.float32), box.faces, vertex_colors=grey)
        renderer = MeshRenderer(MeshAsset("box", (part,)))
        return np.stack([renderer.render(c, 32, Lighting(albedo=True)).rgba for c in orthogonal_rig(20.0)])

    model = Reconstructor.from_pretrained(tiny_recon).eval()
    model.config = replace(model.config, carve=CarveConfig(enabled=True, scale=10.0))
    pipe = FourViewPipeline(reconstructor=model)
    export = ExportSettings(face_budget=500, texture_size=64, grid_resolution=48)
    agreeing = PosedViews.from_rig(renders(0.5), 20.0)
    carved = pipe.views_to_3d(agreeing, export=export)
    assert "carving_skipped" not in carved.meta
    assert carved.mesh.levels[0].parts[0].verts[:, 0].min() > 0.2  # the sphere cut down to the box at x = 0.5
    disagreeing = agreeing.images.copy()
    disagreeing[2] = renders(-0.5)[2]  # the back view shows the box on the other side
    views = PosedViews.from_rig(disagreeing, 20.0)
    with torch.no_grad(), pytest.raises(EmptySurfaceError):
        from fourview.export.extract import extract_mesh

        extract_mesh(model.reconstruct(views), 64)
    asset = pipe.views_to_3d(views, export=export)
    assert asset.meta["carving_skipped"] == CARVING_SKIPPED
    verts = asset.mesh.levels[0].parts[0].verts
    np.testing.assert_allclose(np.linalg.norm(verts, axis=1).max(), SPHERE_RADIUS, atol=0.05)  # the whole sphere
