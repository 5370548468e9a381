import imageio.v3 as iio
import numpy as np
import pytest
import trimesh
from PIL import Image

from fourview.cameras import RIG_AZIMUTHS_DEG
from fourview.errors import InputError
from fourview.export.preview import contact_sheet, orbit_cameras, write_previews, write_turntable
from fourview.mesh import Material, MeshAsset, MeshPart


def red_right_box() -> MeshAsset:
    """A grey box with a red +X face: it shows on the right from the front, and faces the az-90 camera."""
    box = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    colors = np.full((len(box.faces) * 3, 3), 0.6, np.float32)
    verts = box.vertices[box.faces].reshape(-1, 3).astype(np.float32)
    faces = np.arange(len(verts)).reshape(-1, 3)
    plus_x = np.repeat(box.face_normals[:, 0] > 0.9, 3)
    colors[plus_x] = (1.0, 0.0, 0.0)
    return MeshAsset("box", (MeshPart(verts, faces, Material(), vertex_colors=colors),))


def test_orbit_starts_at_front_and_is_even():
    cams = orbit_cameras(4, 30.0)
    assert tuple(c.azimuth_deg for c in cams) == RIG_AZIMUTHS_DEG
    assert all(c.elevation_deg == 30.0 for c in cams)
    with pytest.raises(InputError, match="a turntable needs at least 1 frame, got 0"):
        orbit_cameras(0)


def test_contact_sheet_is_the_rig_in_grid_order():
    sheet = contact_sheet(red_right_box(), resolution=32)
    assert sheet.shape == (64, 64, 3) and sheet.dtype == np.uint8
    red = (sheet[..., 0] > 150) & (sheet[..., 1] < 80)
    cells = {"az0": red[:32, :32], "az90": red[:32, 32:], "az180": red[32:, :32], "az270": red[32:, 32:]}
    assert cells["az90"].sum() > 100  # the red face looks at the az-90 camera (top right cell)
    assert cells["az0"].sum() == cells["az180"].sum() == cells["az270"].sum() == 0  # edge-on or hidden


def test_frames_are_right_handed():
    from fourview.cameras import Camera
    from fourview.export.preview import render_frames

    front_right, back_right = render_frames(red_right_box(), [Camera(45, 0), Camera(135, 0)], resolution=32)
    red = lambda im: (im[..., 0] > 150) & (im[..., 1] < 80)  # noqa: E731
    assert red(front_right)[:, 16:].sum() > 50 and red(front_right)[:, :16].sum() == 0  # +X right of the front
    assert red(back_right)[:, :16].sum() > 50 and red(back_right)[:, 16:].sum() == 0  # left, seen from behind


def test_previews_written(tmp_path):
    paths = write_previews(red_right_box(), tmp_path, resolution=32, num_frames=6, formats=("gif", "mp4"))
    assert [p.name for p in paths] == ["turntable.gif", "turntable.mp4", "contact_sheet.png"]
    with Image.open(tmp_path / "turntable.gif") as gif:
        assert gif.n_frames == 6 and gif.size == (32, 32)
    assert iio.imread(tmp_path / "turntable.mp4").shape == (6, 32, 32, 3)  # an MP4 container, all frames
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    with pytest.raises(InputError, match=r"turntable format must be \.gif or \.mp4, got t\.avi"):
        write_turntable(tmp_path / "t.avi", [np.zeros((8, 8, 3), np.uint8)])


def test_a_gif_turntable_keeps_the_frames_colours(tmp_path):
    from fourview.export.preview import orbit_cameras, render_frames

    frames = render_frames(red_right_box(), orbit_cameras(8), resolution=32)
    write_turntable(tmp_path / "t.gif", frames, fps=10)
    back = iio.imread(tmp_path / "t.gif", index=None)[..., :3].astype(np.float64)  # [8, 32, 32, 3]
    assert back.shape == (8, 32, 32, 3)
    assert np.sqrt(((back - np.stack(frames)) ** 2).mean()) < 6.0  # of 255: the palette's quantisation alone
    with Image.open(tmp_path / "t.gif") as gif:
        assert gif.info["loop"] == 0 and gif.info["duration"] == 100
