"""The shipped demo reconstructor: loads, and reconstructs a held-out synthetic object sensibly.

The red mug is a held-out (shape, colour) combination: the demo model never saw a red mug.
"""

import json

import pytest

from fourview.cameras import orthogonal_rig
from fourview.data.assets import load_asset
from fourview.data.dataset_renderer import RenderSettings, render_dataset, resolve_inputs
from fourview.data.synthetic import is_heldout
from fourview.evaluation.adherence import nearest_colour, surface_albedo
from fourview.pipeline import FourViewPipeline
from fourview.pretrained import demo_folder, resolve_weights
from fourview.recon.model import Reconstructor
from fourview.render.mesh_renderer import Lighting, MeshRenderer
from fourview.views import PosedViews
from tests.gltf_validation import validate_glb


def test_demo_weights_are_shipped_and_small():
    files = {p.name: p.stat().st_size for p in demo_folder("recon").iterdir()}
    assert set(files) == {"config.json", "model.safetensors"}
    assert files["model.safetensors"] < 10 * 2**20
    model = Reconstructor.from_pretrained(resolve_weights("demo", "recon").location)
    assert model.config.unet.view_resolution == 64


@pytest.fixture(scope="module")
def red_mug(tmp_path_factory):
    assert is_heldout("mug", "red")
    out = tmp_path_factory.mktemp("render")
    settings = RenderSettings(resolution=64, num_random=0, lighting=Lighting(albedo=True), write_depth=False,
                              write_normal=False)  # fmt: skip
    (folder,) = render_dataset(resolve_inputs(["example:red_mug"]), out, settings, progress=False)
    views = PosedViews.read([folder / "rig" / f"{az:03d}.png" for az in (0, 90, 180, 270)])
    asset_dir = tmp_path_factory.mktemp("asset") / "mug"
    FourViewPipeline.from_pretrained(mvgen=None).views_to_3d(views).save(asset_dir)
    return views.images, asset_dir


def test_demo_reconstruction_matches_its_inputs(red_mug):
    views, asset_dir = red_mug
    assert validate_glb(asset_dir / "model.glb")["issues"]["numErrors"] == 0
    meta = json.loads((asset_dir / "meta.json").read_text())
    assert meta["recon"] == "demo" and meta["mesh"]["faces"] > 100
    asset = load_asset(asset_dir / "model.glb", normalize=False)
    renderer = MeshRenderer(asset)
    for view, cam in zip(views, orthogonal_rig()):
        alpha = renderer.render(cam, 64, Lighting(albedo=True), supersample=3).rgba[..., 3] >= 0.5
        truth = view[..., 3] >= 0.5
        iou = (alpha & truth).sum() / (alpha | truth).sum()
        assert iou > 0.75, (cam.azimuth_deg, iou)  # the same silhouette, the right way up and round
    assert nearest_colour(surface_albedo(asset)) == "red", surface_albedo(asset)
