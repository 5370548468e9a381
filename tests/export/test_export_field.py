"""The export stage end to end: field -> GLB / OBJ -> load -> render, against the field's own render."""

import math

import numpy as np
import pytest
import torch
import trimesh

from fourview.cameras import Camera, orthogonal_rig, pixel_rays
from fourview.errors import InputError
from fourview.export.extract import ExportConfig, ExportResult, export_field
from fourview.recon.fields import SphereField, SurfaceField, TorusField

pytest.importorskip("xatlas")

SMALL = ExportConfig(resolution=128, face_budget=10_000, texture_size=256)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Field queries and sphere tracing are small; one thread avoids oversubscribing a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@torch.no_grad()
def sphere_trace(field: SurfaceField, camera: Camera, resolution: int, supersample: int = 2) -> np.ndarray:
    """[H, W, 3] render of an SDF field on white: ``field.color`` at the hit point, box-filtered supersamples."""
    res = resolution * supersample
    o, d = pixel_rays(camera, res)
    o = torch.from_numpy(o.reshape(-1, 3)).float()
    d = torch.from_numpy(d.reshape(-1, 3)).float()
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - 3.0)  # rays meeting the sphere of radius sqrt(3) around the cube
    t = (-b - disc.clamp(min=0.0).sqrt()).clamp(min=0.0)
    alive, hit = disc > 0, torch.zeros(len(o), dtype=torch.bool)
    for _ in range(160):
        s = field.sdf(o + t[:, None] * d)
        hit |= alive & (s.abs() < 1e-5)
        alive &= ~hit & (t < 8.0)
        t = torch.where(alive, t + s, t)
    color = torch.where(hit[:, None], field.color(o + t[:, None] * d), torch.ones(len(o), 3))
    return color.reshape(resolution, supersample, resolution, supersample, 3).mean(dim=(1, 3)).numpy()


def render_file(path, cameras, resolution):
    from fourview.data.assets import load_asset
    from fourview.render.mesh_renderer import Lighting, MeshRenderer

    renderer = MeshRenderer(load_asset(path, normalize=False))
    out = []
    for camera in cameras:
        rgba = renderer.render(camera, resolution, Lighting(albedo=True), supersample=2).rgba
        out.append(rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]))
    return out


def psnr(a, b):
    return -10.0 * math.log10(float(np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.mark.parametrize("field", [SphereField(), TorusField()], ids=["sphere", "torus"])
def test_exported_glb_and_obj_render_like_the_field(tmp_path, field):
    glb, obj = tmp_path / "a.glb", tmp_path / "a.obj"
    result = export_field(field, [glb, obj], SMALL)
    assert isinstance(result, ExportResult)
    assert result.paths == [glb, obj, tmp_path / "a.mtl", tmp_path / "a.png"]
    assert result.num_faces <= 10_000 and result.texture_size == 256
    assert set(result.timings) == {"extract", "cleanup", "simplify", "uv", "bake", "write", "total"}
    cameras = orthogonal_rig()
    reference = [sphere_trace(field, cam, 128) for cam in cameras]
    assert min(float((r < 0.999).mean()) for r in reference) > 0.05  # the object is in view
    for path in (glb, obj):
        values = [psnr(a, b) for a, b in zip(render_file(path, cameras, 128), reference)]
        assert min(values) >= 30.0, (path.name, values)


def test_a_wrongly_oriented_texture_would_fail_the_comparison(tmp_path):
    """The PSNR check can fail: the same export with its texture flipped upside down is far off."""
    from PIL import Image

    field = TorusField()
    obj = tmp_path / "a.obj"
    export_field(field, obj, SMALL)
    png = tmp_path / "a.png"
    Image.open(png).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(png)
    camera = orthogonal_rig()[0]
    value = psnr(render_file(obj, [camera], 128)[0], sphere_trace(field, camera, 128))
    assert value < 25.0


def test_vertex_colour_export_and_ply(tmp_path):
    field = SphereField()
    config = ExportConfig(resolution=48, face_budget=3000, vertex_colors=True)
    result = export_field(field, [tmp_path / "v.glb", tmp_path / "v.ply", tmp_path / "v.obj"], config)
    assert result.texture_size is None
    assert [p.name for p in result.paths] == ["v.glb", "v.ply", "v.obj", "v.mtl"]
    mesh = trimesh.load(tmp_path / "v.ply", process=False)
    assert len(mesh.faces) == result.num_faces <= 3000
    assert mesh.is_watertight and mesh.volume > 0
    expected = field.color(torch.from_numpy(np.asarray(mesh.vertices, np.float32))).numpy()
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3] / 255.0, expected, atol=0.5 / 255 + 1e-6)


def test_dmtet_export(tmp_path):
    result = export_field(
        SphereField(),
        tmp_path / "d.glb",
        ExportConfig(resolution=24, method="dmtet", face_budget=2000, texture_size=64),
    )
    assert 0 < result.num_faces <= 2000


@pytest.mark.parametrize(
    "kwargs", [{"texture_size": 300}, {"texture_size": 0}, {"face_budget": 0}, {"face_budget": -1}, {"roughness": 2.0}]
)
def test_bad_export_settings_are_input_errors(kwargs):
    with pytest.raises(InputError):
        ExportConfig(**kwargs)


def test_a_failed_export_writes_none_of_its_files(tmp_path, monkeypatch):
    from fourview.export import obj as obj_module

    calls = []

    def fsync_fails_late(fd):
        calls.append(fd)
        if len(calls) == 4:  # glb, obj, mtl written; the png fails
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(obj_module.os, "fsync", fsync_fails_late)
    config = ExportConfig(resolution=32, face_budget=1000, texture_size=64)
    with pytest.raises(InputError, match="No space left"):
        export_field(SphereField(), [tmp_path / "a.glb", tmp_path / "a.obj"], config)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_empty_field_write_nothing(tmp_path):
    with pytest.raises(InputError, match="unknown output format"):
        export_field(SphereField(), tmp_path / "a.fbx", SMALL)
    with pytest.raises(InputError, match="no surface"):
        export_field(SphereField(radius=0.0, center=(5.0, 5.0, 5.0)), tmp_path / "a.glb", SMALL)
    assert list(tmp_path.iterdir()) == []
