import numpy as np
import pytest
import trimesh

from fourview.cameras import Camera
from fourview.mesh import Material, MeshAsset, MeshPart
from fourview.render.mesh_renderer import Lighting, MeshRenderer, crease_normals


def asset_from(mesh: trimesh.Trimesh, color=(0.2, 0.6, 0.4), texture=None, uv=None) -> MeshAsset:
    part = MeshPart(
        verts=mesh.vertices.astype(np.float32),
        faces=mesh.faces.astype(np.int64),
        material=Material(texture=texture),
        uv=uv,
        vertex_colors=np.tile(np.array(color, np.float32), (len(mesh.vertices), 1)),
    )
    return MeshAsset("t", (part,))


def test_crease_normals_flat_on_box_smooth_on_sphere():
    box = trimesh.creation.box()
    n = crease_normals(box.vertices, box.faces)
    np.testing.assert_allclose(n, np.repeat(box.face_normals[:, None], 3, axis=1), atol=1e-6)
    sphere = trimesh.creation.icosphere(subdivisions=3)
    n = crease_normals(sphere.vertices, sphere.faces)
    radial = sphere.vertices[sphere.faces] / np.linalg.norm(sphere.vertices[sphere.faces], axis=-1, keepdims=True)
    assert np.min(np.sum(n * radial, axis=-1)) > 0.995


def test_albedo_render_is_exact_colour_and_alpha_is_coverage():
    box = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    r = MeshRenderer(asset_from(box, color=(0.2, 0.6, 0.4))).render(Camera(30, 20), 32, Lighting(albedo=True))
    inner = r.rgba[..., 3] == 1.0
    assert inner.sum() > 100
    np.testing.assert_allclose(r.rgba[inner][:, :3], np.tile([0.2, 0.6, 0.4], (inner.sum(), 1)), atol=2e-6)
    edge = (r.rgba[..., 3] > 0) & (r.rgba[..., 3] < 1)
    assert edge.any()  # supersampled silhouettes have fractional coverage
    assert set(np.unique(r.rgba[..., 3] * 4)) <= {0.0, 1.0, 2.0, 3.0, 4.0}  # 2x2 samples per pixel
    assert np.all(r.rgba[~(r.rgba[..., 3] > 0)] == 0)
    np.testing.assert_allclose(np.linalg.norm(r.normal[inner], axis=-1), 1.0, atol=1e-5)


def test_texture_lookup_follows_obj_uv_convention():
    # A quad facing +Z, textured with 2x2 blocks of 4x4 texels: top row red/green, bottom row blue/white
    # (blocks, so that bilinear filtering inside a quadrant returns the block's colour exactly).
    verts = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)  # (0, 0) is the image's bottom-left
    tex = np.array([[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]]], np.float32).repeat(4, 0).repeat(4, 1)
    part = MeshPart(verts, faces, Material(texture=tex), uv=uv)
    r = MeshRenderer(MeshAsset("q", (part,))).render(Camera(0, 0), 64, Lighting(albedo=True), supersample=1)
    rgb = r.rgba[..., :3]
    c = 32  # the quad spans about +-0.5 around the centre; sample well inside each quadrant
    q = 8
    # Seen from the front: top-left red, top-right green, bottom-left blue, bottom-right white.
    np.testing.assert_allclose(rgb[c - q, c - q], [1, 0, 0], atol=1e-5)
    np.testing.assert_allclose(rgb[c - q, c + q], [0, 1, 0], atol=1e-5)
    np.testing.assert_allclose(rgb[c + q, c - q], [0, 0, 1], atol=1e-5)
    np.testing.assert_allclose(rgb[c + q, c + q], [1, 1, 1], atol=1e-5)


def test_lighting_brightens_lit_side_and_is_a_setting():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    r = MeshRenderer(asset_from(sphere, color=(0.5, 0.5, 0.5)))
    lit = r.render(Camera(0, 0), 48, Lighting(direction=(0.0, 1.0, 0.0), ambient=0.1, directional=0.9, specular=0.0))
    lum = lit.rgba[..., :3].mean(-1)
    assert lum[12, 24] > lum[36, 24] + 0.2  # the top (towards the light) is brighter than the bottom
    dark = r.render(Camera(0, 0), 48, Lighting(ambient=0.0, directional=0.0, specular=0.0))
    assert dark.rgba[..., :3].max() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="lighting ambient must be >= 0, got -1.0"):
        Lighting(ambient=-1.0)


def _two_part_asset() -> MeshAsset:
    """A textured sphere (UVs running past [0, 1] to exercise wrapping) and a metallic vertex-coloured box."""
    rng = np.random.default_rng(0)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.55)
    v = sphere.vertices
    uv = np.stack([np.arctan2(v[:, 0], v[:, 2]) / np.pi * 1.5, v[:, 1] * 1.2 + 0.5], axis=1).astype(np.float32)
    textured = MeshPart(
        verts=(v + [0.0, 0.25, 0.0]).astype(np.float32),
        faces=sphere.faces.astype(np.int64),
        material=Material(texture=rng.random((24, 40, 4)).astype(np.float32), roughness=0.6),
        uv=uv,
    )
    box = trimesh.creation.box(extents=(0.9, 0.3, 0.7))
    metal = MeshPart(
        verts=(box.vertices + [0.1, -0.45, 0.0]).astype(np.float32),
        faces=box.faces.astype(np.int64),
        material=Material(base_color=(0.9, 0.5, 0.3, 1.0), metallic=0.7, roughness=0.3),
        vertex_colors=rng.random((len(box.vertices), 3)).astype(np.float32),
    )
    return MeshAsset("two", (textured, metal))


@pytest.mark.parametrize(
    "lighting,supersample",
    [
        (Lighting(), 2),
        (Lighting(albedo=True), 1),
        (Lighting(environment=0.6, specular=0.8, direction=(-0.3, 0.5, -1.0)), 3),
    ],
)
def test_cpu_kernel_matches_the_torch_reference(lighting, supersample):
    from fourview.images import composite_on_white, to_uint8

    renderer = MeshRenderer(_two_part_asset())
    for cam in (Camera(30, 20), Camera(200, -35)):
        fast = renderer.render(cam, 40, lighting, supersample)
        ref = renderer.render_torch(cam, 40, lighting, supersample)
        assert (ref.rgba[..., 3] > 0).sum() > 300
        np.testing.assert_array_equal(fast.rgba[..., 3], ref.rgba[..., 3])  # coverage
        np.testing.assert_allclose(fast.rgba, ref.rgba, atol=2e-6)  # float32 rounding only
        np.testing.assert_allclose(fast.depth, ref.depth, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(fast.normal, ref.normal, atol=1e-4)
        a, b = to_uint8(composite_on_white(fast.rgba)), to_uint8(composite_on_white(ref.rgba))
        assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 1e-3
