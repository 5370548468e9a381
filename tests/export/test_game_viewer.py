"""A game-ready GLB in a real glTF viewer: three.js's GLTFLoader and MeshStandardMaterial in headless Chromium.

A small field with known up and surface detail (a ribbed hat: a wide torus brim under a narrow
sphere crown) is exported with the game target's maps and three levels of detail (as
`fourview generate --target game --lods 3 --height H` writes them), and a dense reference mesh
without maps from the same field. three.js must load the files without complaint and build the
maps; its world bounding box must be ``HEIGHT`` metres tall and stand on y = 0, upright; and the
normal map must show in the lighting: switching it off changes the lit pixels (not the
silhouette), and with it the shading is closer to the dense surface's than without.

The viewer is tests/export/gltf_viewer (three.js from npm, `npm ci` there; .ci/run does it); the
browser is `tests.browser.start_chromium`'s. Without either the tests skip, saying so. The Khronos
validator's checks of the same kind of files are in test_game_ready.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from fourview.export.exporter import ExportConfig, export_field
from fourview.meshio import lod_glb_paths, write_mesh_files
from tests.browser import CHROMIUM_MISSING, HAVE_CHROMIUM, SELENIUM_MISSING, start_chromium
from tests.export.gltf_viewer import HAVE_THREE, THREE_MISSING, messages, open_model, render, serve_viewer

pytestmark = [
    pytest.mark.enable_socket,  # the viewer's http server, chromedriver and chromium on 127.0.0.1 only
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=CHROMIUM_MISSING),
    pytest.mark.skipif(not HAVE_THREE, reason=THREE_MISSING),
]
pytest.importorskip("selenium.webdriver", reason=SELENIUM_MISSING)

BUDGET, HEIGHT, LEVELS, TEXTURE, RESOLUTION = 1000, 0.3, 3, 256, 96


@dataclass(frozen=True)
class HatField:
    """A ribbed hat standing up +Y: a torus brim around Y and a sphere crown above it, one plain colour.

    Its up is plain (the crown, narrower than the brim, is above it) and its horizontal ribs are
    detail that a 1000-triangle mesh loses and a normal map keeps.
    """

    brim_major: float = 0.55
    brim_minor: float = 0.2
    crown_y: float = 0.25
    crown_radius: float = 0.35
    rib_depth: float = 0.012
    rib_frequency: float = 40.0  # radians per unit of y: a rib every 0.16

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        ring = torch.sqrt(xyz[..., 0] ** 2 + xyz[..., 2] ** 2) - self.brim_major
        brim = torch.sqrt(ring**2 + xyz[..., 1] ** 2) - self.brim_minor
        centre = torch.tensor([0.0, self.crown_y, 0.0], dtype=xyz.dtype, device=xyz.device)
        crown = (xyz - centre).norm(dim=-1) - self.crown_radius
        return torch.minimum(brim, crown) - self.rib_depth * torch.sin(self.rib_frequency * xyz[..., 1])

    def color(self, xyz: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.75, 0.35, 0.25], dtype=xyz.dtype, device=xyz.device).expand(*xyz.shape[:-1], 3)

    def width_over_height(self) -> float:
        """The bounding box's X (and Z) extent over its Y extent, ribs aside (they move each side by rib_depth)."""
        return 2 * (self.brim_major + self.brim_minor) / (self.crown_y + self.crown_radius + self.brim_minor)


@pytest.fixture(scope="module")
def glbs(tmp_path_factory):
    """The game export's files (hat.glb, hat_lod1.glb, hat_lod2.glb, hat_lods.glb) and a dense reference, dense.glb."""
    out = tmp_path_factory.mktemp("game-viewer")
    common = dict(resolution=RESOLUTION, height=HEIGHT, pivot="bottom")
    game = ExportConfig(
        **common, face_budget=BUDGET, texture_size=TEXTURE, normal_map=True, occlusion=True, lods=LEVELS, target="game"
    )
    paths = write_mesh_files(export_field(HatField(), game).mesh, [out / "hat.glb"])
    assert paths[-1] == lod_glb_paths(out / "hat.glb", LEVELS).chain
    # every face of the extracted surface: what the normal map was baked from
    dense = ExportConfig(**common, face_budget=None, vertex_colors=True)
    write_mesh_files(export_field(HatField(), dense).mesh, [out / "dense.glb"])
    return {p.name: p for p in [*paths, out / "dense.glb"]}


@pytest.fixture(scope="module")
def viewer(glbs, tmp_path_factory):
    """(browser, viewer URL) with every file of `glbs` at /models/NAME."""
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), tmp_path_factory.mktemp("downloads"))
    try:
        with serve_viewer(glbs) as url:
            yield driver, url
    finally:
        driver.quit()


def object_pixels(*renders: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels fully covered by the object in every render (alpha 255; edges blend the background)."""
    return np.logical_and.reduce([r[..., 3] == 255 for r in renders])


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    mse = np.mean((a[where][:, :3].astype(float) - b[where][:, :3].astype(float)) ** 2) / 255.0**2
    return float(10 * np.log10(1.0 / mse))


@pytest.mark.parametrize("name", ["hat_lods.glb", "hat.glb"])
def test_three_loads_the_maps_at_the_right_size_upright(viewer, name):
    driver, url = viewer
    info = open_model(driver, url, name)
    assert messages(driver) == []  # three.js warns about anything it cannot use
    # MSFT_lod's coarser levels are nodes off the scene: a viewer without the extension shows the finest
    (mesh,) = info["meshes"]
    assert mesh["triangles"] == BUDGET and mesh["tangents"]
    material = mesh["material"]
    assert material["type"] == "MeshStandardMaterial"
    assert material["map"] and material["normalMap"] and material["normalScale"] == [1, 1]  # TANGENTs: no flip
    assert material["roughnessMap"] and material["metalnessMap"] and material["aoMap"] and material["ormShared"]
    assert info["extras"]["up"] == "+Y" and info["extras"]["height_m"] == HEIGHT
    # right size: three.js's world bounding box is HEIGHT metres tall, stands on y = 0, centred on the Y axis
    (x0, y0, z0), (x1, y1, z1) = info["min"], info["max"]
    assert y1 - y0 == pytest.approx(HEIGHT, rel=0.01)
    assert y0 == pytest.approx(0.0, abs=0.01 * HEIGHT)
    assert [(x0 + x1) / 2, (z0 + z1) / 2] == pytest.approx([0.0, 0.0], abs=0.01 * HEIGHT)
    # upright: as wide as the hat along X and Z, not along Y (a quarter turn would swap them)
    for width in (x1 - x0, z1 - z0):
        assert width / (y1 - y0) == pytest.approx(HatField().width_over_height(), rel=0.05)
    # and the right way up on the screen: the top of the silhouette is the narrow crown, not the brim
    shot = render(driver)
    rows = np.flatnonzero(shot[..., 3].any(axis=1))
    widths = (shot[..., 3] > 0).sum(axis=1)
    top = widths[rows[0] : rows[0] + len(rows) // 5]
    assert top.max() < 0.6 * widths.max()
    h, w = shot.shape[:2]
    assert (shot[h * 2 // 5 : h * 3 // 5, w * 2 // 5 : w * 3 // 5, 3] == 255).all()  # the centre is the hat


def test_the_normal_map_shows_in_the_lighting(viewer, tmp_path):
    driver, url = viewer
    open_model(driver, url, "hat_lods.glb")
    mapped, flat, again = render(driver), render(driver, normal_map=False), render(driver)
    Image.fromarray(mapped).save(tmp_path / "game_viewer.png")
    np.testing.assert_array_equal(mapped, again)  # rendering is repeatable: any difference below is the map's
    np.testing.assert_array_equal(mapped[..., 3], flat[..., 3])  # the map changes the shading, not the silhouette
    inside = object_pixels(mapped)
    assert inside.sum() > 0.1 * inside.size
    diff = np.abs(mapped[inside][:, :3].astype(int) - flat[inside][:, :3].astype(int))
    # Mean absolute difference in 8-bit levels over the object (6.2 measured: the ribs' light and shade); the
    # same render twice differs by 0, so half the measured value is a margin for other Chromium/three.js builds.
    assert diff.mean() > 3.0
    assert (diff.max(axis=1) > 10).mean() > 0.15  # visibly changed pixels: 30% measured


def test_the_normal_map_brings_the_shading_closer_to_the_dense_surface(viewer):
    driver, url = viewer
    info = open_model(driver, url, "hat_lods.glb")
    shading = {"albedo": False, "occlusion": False}  # white, no occlusion: only the normals differ
    mapped, flat = render(driver, **shading), render(driver, normal_map=False, **shading)
    flipped = render(driver, flip_green=True, **shading)  # a control: the map read the wrong way
    open_model(driver, url, "dense.glb", frame=info["frame"])  # the same camera
    dense = render(driver, **shading)
    inside = object_pixels(mapped, dense)
    with_map, without_map, wrong_way = (psnr(r, dense, inside) for r in (mapped, flat, flipped))
    # the bar for the benchmark: the map wins by 3 dB (measured: 28.6 dB with it, 21.9 without, 18.6 flipped)
    assert with_map > without_map + 3.0, (with_map, without_map)
    # and the comparison sees which way the map is read: with its green channel flipped it shades worse than none
    assert with_map > wrong_way + 3.0, (with_map, wrong_way)
