import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from fourview.cameras import Camera, pixel_rays
from fourview.data.dataset_renderer import (
    DEPTH_SCALE,
    ObjectSource,
    RenderSettings,
    render_dataset,
    resolve_inputs,
    shard_from_env,
)
from fourview.errors import InputError
from fourview.images import write_png
from fourview.mesh import Material, MeshAsset, MeshPart
from fourview.render.mesh_renderer import Lighting


def two_tone_box() -> MeshAsset:
    """A box, red above y=0 and blue below (vertex colours), split so each half has its colour."""
    top = trimesh.creation.box(
        extents=(1.0, 0.8, 0.6), transform=trimesh.transformations.translation_matrix((0, 0.4, 0))
    )
    bottom = trimesh.creation.box(
        extents=(1.0, 0.8, 0.6), transform=trimesh.transformations.translation_matrix((0, -0.4, 0))
    )
    parts = []
    for mesh, color in ((top, (1.0, 0.0, 0.0)), (bottom, (0.0, 0.0, 1.0))):
        parts.append(
            MeshPart(
                verts=mesh.vertices.astype(np.float32),
                faces=mesh.faces.astype(np.int64),
                material=Material(name="m"),
                vertex_colors=np.tile(np.array(color, np.float32), (len(mesh.vertices), 1)),
            )
        )
    return MeshAsset("box", tuple(parts))


@pytest.fixture
def box_glb(tmp_path) -> Path:
    asset = two_tone_box()
    scene = trimesh.Scene()
    for p in asset.parts:
        colors = np.concatenate([p.vertex_colors * 255, np.full((len(p.verts), 1), 255)], 1).astype(np.uint8)
        scene.add_geometry(trimesh.Trimesh(p.verts, p.faces, vertex_colors=colors, process=False))
    folder = tmp_path / "src" / "box"
    folder.mkdir(parents=True)
    scene.export(folder / "model.glb")
    (folder / "caption.txt").write_text("a red and blue box")
    return folder / "model.glb"


def raycast_mask(mesh: trimesh.Trimesh, camera: Camera, res: int) -> np.ndarray:
    """An independent coverage mask: one ray per pixel centre, hit or miss."""
    o, d = pixel_rays(camera, res)
    hit = mesh.ray.intersects_any(o.reshape(-1, 3), d.reshape(-1, 3))
    return hit.reshape(res, res)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


SMALL = RenderSettings(resolution=48, num_random=3, supersample=2, lighting=Lighting(albedo=True))


def test_layout_cameras_and_caption(box_glb, tmp_path):
    out = tmp_path / "out"
    sources = resolve_inputs([str(box_glb.parent)])
    assert sources[0].name == "box" and sources[0].caption_file is not None
    (folder,) = render_dataset(sources, out, SMALL, progress=False)
    assert folder == out / "box"
    for az in ("000", "090", "180", "270"):
        for suffix in ("", "_depth", "_normal"):
            assert (folder / "rig" / f"{az}{suffix}.png").is_file()
    assert sorted(p.name for p in (folder / "random").glob("????.png")) == ["0000.png", "0001.png", "0002.png"]
    meta = json.loads((folder / "cameras.json").read_text())
    assert len(meta["frames"]) == 7
    for rec in meta["frames"]:
        assert (folder / rec["image"]).is_file()
        cam = Camera(rec["azimuth_deg"], rec["elevation_deg"], rec["radius"], rec["fov_deg"])
        np.testing.assert_allclose(np.array(rec["c2w"]), cam.c2w(), atol=1e-12)
        assert rec["resolution"] == [48, 48]
    rig = Image.open(folder / "rig" / "000.png")
    assert rig.mode == "RGBA" and rig.size == (48, 48)
    grid = Image.open(folder / "grid.png")
    assert grid.mode == "RGB" and grid.size == (96, 96)
    assert (folder / "caption.txt").read_text() == "a red and blue box"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_images_line_up_with_cameras_and_are_upright(box_glb, tmp_path):
    settings = RenderSettings(resolution=96, num_random=4, lighting=Lighting(albedo=True))  # default supersample
    (folder,) = render_dataset(resolve_inputs([str(box_glb)]), tmp_path / "out", settings, progress=False)
    meta = json.loads((folder / "cameras.json").read_text())
    # The loader normalises the box (farthest vertex at 1): build the same geometry for the ray caster.
    from fourview.data.assets import load_asset

    asset = load_asset(box_glb)
    mesh = trimesh.util.concatenate([trimesh.Trimesh(p.verts, p.faces, process=False) for p in asset.parts])
    for rec in meta["frames"]:
        cam = Camera(rec["azimuth_deg"], rec["elevation_deg"], rec["radius"], rec["fov_deg"])
        rgba = np.asarray(Image.open(folder / rec["image"]), dtype=np.float32) / 255
        ours = rgba[..., 3] >= 0.5
        assert iou(ours, raycast_mask(mesh, cam, 96)) >= 0.99, rec["image"]
        depth = np.asarray(Image.open(folder / rec["depth"]), dtype=np.float64) * DEPTH_SCALE
        inner = ours & (rgba[..., 3] == 1.0)
        assert np.all((depth[inner] > 4 - 1.0 - 1e-2) & (depth[inner] < 4 + 1.0 + 1e-2))
    # Right way up: red (top half) pixels sit above blue (bottom half) pixels in every rig view.
    for az in ("000", "090", "180", "270"):
        rgba = np.asarray(Image.open(folder / "rig" / f"{az}.png"), dtype=np.float32) / 255
        red = (rgba[..., 0] > 0.8) & (rgba[..., 2] < 0.2) & (rgba[..., 3] > 0.99)
        blue = (rgba[..., 2] > 0.8) & (rgba[..., 0] < 0.2) & (rgba[..., 3] > 0.99)
        assert red.sum() > 50 and blue.sum() > 50
        assert np.nonzero(red)[0].mean() < np.nonzero(blue)[0].mean()


def test_resume_skips_finished_and_shards(box_glb, tmp_path):
    out = tmp_path / "out"
    sources = resolve_inputs([str(box_glb)])
    (folder,) = render_dataset(sources, out, SMALL, progress=False)
    stamp = (folder / "cameras.json").stat().st_mtime_ns
    render_dataset(sources, out, SMALL, progress=False)
    assert (folder / "cameras.json").stat().st_mtime_ns == stamp
    many = [ObjectSource(f"o{i}", box_glb) for i in range(5)]
    settings = RenderSettings(resolution=16, num_random=0, supersample=1, write_depth=False, write_normal=False)
    shard = render_dataset(many, tmp_path / "sharded", settings, rank=1, world_size=2, progress=False)
    assert [p.name for p in shard] == ["o1", "o3"]


def test_an_incomplete_leftover_is_replaced_whole(box_glb, tmp_path):
    stale = tmp_path / "out" / "box" / "rig" / "000.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half an image")
    (tmp_path / "out" / "box" / "notes.txt").write_text("from an older layout")
    (folder,) = render_dataset(resolve_inputs([str(box_glb)]), tmp_path / "out", SMALL, progress=False)
    assert not (folder / "notes.txt").exists()
    assert Image.open(stale).size == (48, 48)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["box"]


def test_a_failure_while_rendering_keeps_what_was_there(box_glb, tmp_path, monkeypatch):
    import fourview.data.dataset_renderer as dataset_renderer

    leftover = tmp_path / "out" / "box" / "rig"
    leftover.mkdir(parents=True)
    calls = []

    def write_png_fails_late(path, img):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        write_png(path, img)

    monkeypatch.setattr(dataset_renderer, "write_png", write_png_fails_late)
    with pytest.raises(InputError, match="No space left"):
        render_dataset(resolve_inputs([str(box_glb)]), tmp_path / "out", SMALL, progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["box"]  # no temporary left behind
    assert [p.name for p in (tmp_path / "out" / "box").iterdir()] == ["rig"]
    assert list(leftover.iterdir()) == []


@pytest.mark.parametrize("umask,file_mode,folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_objects_get_the_modes_of_the_umask(box_glb, tmp_path, umask, file_mode, folder_mode):
    settings = RenderSettings(resolution=16, num_random=1, supersample=1, write_depth=False, write_normal=False)
    old = os.umask(umask)
    try:
        (folder,) = render_dataset(resolve_inputs([str(box_glb)]), tmp_path / "out", settings, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == folder_mode
    assert stat.S_IMODE((folder / "rig").stat().st_mode) == folder_mode
    modes = {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*.png")}
    assert len(modes) == 6 and set(modes.values()) == {file_mode}, modes


def test_failed_object_leaves_nothing(tmp_path):
    bad = tmp_path / "broken.glb"
    bad.write_bytes(b"not a glb at all")
    with pytest.raises(InputError, match="broken.glb"):
        render_dataset(resolve_inputs([str(bad)]), tmp_path / "out", SMALL, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_resolve_inputs_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        resolve_inputs([str(tmp_path / "missing.obj")])
    (tmp_path / "x.xyz").write_text("1 2 3")
    with pytest.raises(InputError, match="unknown asset format"):
        resolve_inputs([str(tmp_path / "x.xyz")])
    with pytest.raises(InputError, match="no object"):
        resolve_inputs([str(tmp_path)])
    with pytest.raises(InputError, match="resolution"):
        RenderSettings(resolution=-4)


def test_shard_from_env(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert shard_from_env() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert shard_from_env() == (2, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert shard_from_env() == (1, 3)


def test_webdataset_shards(box_glb, tmp_path):
    import tarfile

    from fourview.data.dataset_renderer import write_webdataset

    done = render_dataset(resolve_inputs([str(box_glb)]), tmp_path / "out", SMALL, progress=False)
    write_webdataset(done, str(tmp_path / "wds" / "shard-%06d.tar"))
    with tarfile.open(tmp_path / "wds" / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert "box.grid.png" in names and "box.cameras.json" in names and "box.rig_000.png" in names


@pytest.mark.shared
def test_real_objects_render_aligned_with_up_axes(shared_data, tmp_path):
    """All 9 real objects render with their up axes; masks agree with an independent ray caster."""
    from fourview.data.assets import load_asset

    objects = shared_data / "objects" / "objects.json"
    sources = resolve_inputs([], objects_json=str(objects))
    assert len(sources) == 9
    settings = RenderSettings(resolution=64, num_random=1, lighting=Lighting(albedo=True),
                              write_depth=False, write_normal=False)  # fmt: skip
    done = render_dataset(sources, tmp_path / "out", settings, progress=False)
    assert len(done) == 9
    for src, folder in zip(sources, done):
        asset = load_asset(src.path, up_axis=src.up_axis)
        mesh = trimesh.util.concatenate([trimesh.Trimesh(p.verts, p.faces, process=False) for p in asset.parts])
        meta = json.loads((folder / "cameras.json").read_text())
        for rec in meta["frames"][:4]:
            cam = Camera(rec["azimuth_deg"], rec["elevation_deg"])
            alpha = np.asarray(Image.open(folder / rec["image"]))[..., 3] >= 128
            assert iou(alpha, raycast_mask(mesh, cam, 64)) >= 0.98, (src.name, rec["image"])


def test_a_gso_folder_without_a_caption_file_gets_its_caption_from_its_name(tmp_path):
    folder = tmp_path / "Threshold_Porcelain_Teapot_White_kg5fbARBwts"
    (folder / "meshes").mkdir(parents=True)
    trimesh.creation.box().export(folder / "meshes" / "model.obj")
    (source,) = resolve_inputs([str(folder)], up_axis="z")
    assert source.caption_file is None and source.caption == "threshold porcelain teapot white"
    (out,) = render_dataset([source], tmp_path / "out", SMALL, progress=False)
    assert (out / "caption.txt").read_text() == "threshold porcelain teapot white\n"
    (folder / "caption.txt").write_text("a white teapot")
    (source,) = resolve_inputs([str(folder)], up_axis="z")
    assert source.caption_file == folder / "caption.txt" and source.caption is None
