"""The export stage end to end: field -> mesh -> GLB / OBJ -> load -> render, against the field's own render."""

import io
import math
import re

import numpy as np
import pytest
import torch
import trimesh

from fourview.cameras import Camera, orthogonal_rig, pixel_rays
from fourview.errors import InputError
from fourview.export.exporter import ExportConfig, ExportedMesh, export_field
from fourview.meshio import ply_bytes, write_mesh_files
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
    result = export_field(field, SMALL)
    assert isinstance(result, ExportedMesh)
    assert result.num_faces <= 10_000 and result.texture_size == 256
    steps = {"extract", "cleanup", "simplify", "lods", "uv", "bake", "normal_map", "occlusion", "place", "total"}
    assert set(result.timings) == steps
    assert write_mesh_files(result.mesh, [glb, obj]) == [glb, obj, tmp_path / "a.mtl", tmp_path / "a.png"]
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
    write_mesh_files(export_field(field, SMALL).mesh, [obj])
    png = tmp_path / "a.png"
    Image.open(png).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(png)
    camera = orthogonal_rig()[0]
    value = psnr(render_file(obj, [camera], 128)[0], sphere_trace(field, camera, 128))
    assert value < 25.0


def test_vertex_colour_export_and_ply(tmp_path):
    field = SphereField()
    config = ExportConfig(resolution=48, face_budget=3000, vertex_colors=True)
    result = export_field(field, config)
    assert result.texture_size is None
    (part,) = result.mesh.parts
    assert part.uv is None and part.material.texture is None and part.vertex_colors is not None
    paths = write_mesh_files(result.mesh, [tmp_path / "v.glb", tmp_path / "v.ply", tmp_path / "v.obj"])
    assert [p.name for p in paths] == ["v.glb", "v.ply", "v.obj", "v.mtl"]
    mesh = trimesh.load(tmp_path / "v.ply", process=False)
    assert len(mesh.faces) == result.num_faces <= 3000
    assert mesh.is_watertight and mesh.volume > 0
    expected = field.color(torch.from_numpy(np.asarray(mesh.vertices, np.float32))).numpy()
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3] / 255.0, expected, atol=0.5 / 255 + 1e-6)


def test_dmtet_export():
    config = ExportConfig(resolution=24, method="dmtet", face_budget=2000, texture_size=64)
    result = export_field(SphereField(), config)
    assert 0 < result.num_faces <= 2000 and result.texture_size == 64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"texture_size": 300}, "texture size must be a power of two"),
        ({"texture_size": 0}, "texture size must be a power of two"),
        ({"face_budget": 0}, "face budget must be positive, got 0"),
        ({"face_budget": -1}, "face budget must be positive, got -1"),
        ({"roughness": 2.0}, re.escape("roughness must be in [0, 1], got 2.0")),
    ],
)
def test_bad_export_settings_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        ExportConfig(**kwargs)


def test_the_textured_mesh_carries_its_colour_in_the_texture_alone_and_its_material():
    field = SphereField()
    config = ExportConfig(resolution=32, face_budget=1000, texture_size=64, metallic=0.25, roughness=0.5)
    result = export_field(field, config)
    (part,) = result.mesh.parts
    assert result.num_verts == len(part.verts) and result.num_faces == len(part.faces) <= 1000
    assert part.material.texture.shape == (64, 64, 3) and result.texture_size == 64
    assert (part.material.metallic, part.material.roughness) == (0.25, 0.5)
    assert part.uv.min() >= 0.0 and part.uv.max() <= 1.0
    assert part.vertex_colors is None  # a renderer would multiply them into the texture
    written = ply_bytes(result.mesh)  # the PLY samples the texture at the vertices: the field's colour
    mesh = trimesh.load(io.BytesIO(written), file_type="ply", process=False)
    expected = field.color(torch.from_numpy(part.verts)).numpy()
    assert np.abs(mesh.visual.vertex_colors[:, :3] / 255.0 - expected).mean() < 0.03
    radius = np.linalg.norm(part.verts - np.asarray(field.center, np.float32), axis=1)
    assert np.abs(radius - field.radius).max() < 2.0 / 31  # within a grid cell of the sphere


def test_an_empty_field_is_an_input_error():
    with pytest.raises(InputError, match="no surface"):
        export_field(SphereField(radius=0.0, center=(5.0, 5.0, 5.0)), SMALL)
