import json

import numpy as np
import pytest
from PIL import Image

from fourview.cameras import Camera, orthogonal_rig, views_to_grid
from fourview.errors import InputError
from fourview.images import MIN_VIEW_SIDE, write_png
from fourview.views import RIG_VIEW_NAMES, PosedViews


def save(path, arr):
    Image.fromarray((arr * 255).round().astype(np.uint8)).save(path)
    return path


def _grid(views: np.ndarray) -> np.ndarray:
    import torch

    return views_to_grid(torch.from_numpy(views).permute(0, 3, 1, 2)).permute(1, 2, 0).numpy()


def test_four_views_and_grid_give_the_same_posed_views(tmp_path):
    rng = np.random.default_rng(0)
    views = rng.random((4, 16, 16, 4)).round(2).astype(np.float32)
    paths = [save(tmp_path / f"{i}.png", v) for i, v in enumerate(views)]
    from_views = PosedViews.read(paths, 30.0)
    grid_path = save(tmp_path / "grid.png", _grid(from_views.images))
    from_grid = PosedViews.read([grid_path], 30.0)
    np.testing.assert_allclose(from_grid.images, from_views.images)
    np.testing.assert_allclose(from_views.images, views, atol=1 / 255)
    np.testing.assert_allclose(from_grid.c2w, np.stack([c.c2w() for c in orthogonal_rig(30.0)]))
    assert from_views.names == RIG_VIEW_NAMES
    assert from_views.rig_elevation_deg() == pytest.approx(30.0)


def test_rgb_views_get_opaque_alpha_and_the_white_key_only_when_asked():
    rgb = np.ones((4, 8, 8, 3), np.float32)
    rgb[:, 2:6, 2:6] = (0.2, 0.4, 0.6)
    views = PosedViews.from_rig(rgb)
    assert views.images.shape == (4, 8, 8, 4) and float(views.images[..., 3].min()) == 1.0
    keyed = views.with_white_key()
    assert float(keyed.images[0, 0, 0, 3]) == 0.0 and float(keyed.images[0, 3, 3, 3]) == 1.0
    assert keyed.with_white_key() is keyed  # views with transparency stay as they are


def test_model_input_is_rgb_on_white_resized():
    views = np.zeros((4, 16, 16, 4), np.float32)  # fully transparent black -> white
    views[:, 4:12, 4:12] = (1.0, 0.0, 0.0, 1.0)
    x = PosedViews.from_rig(views).model_input(8)
    assert x.shape == (1, 4, 3, 8, 8)
    assert float(x[0, 0, :, 0, 0].min()) == 1.0  # background white
    assert x[0, 0, :, 4, 4].tolist() == [1.0, 0.0, 0.0]


def test_contact_sheet_is_the_grid_for_the_rig_and_rows_otherwise():
    rng = np.random.default_rng(1)
    images = rng.random((4, 6, 6, 4)).astype(np.float32)
    rig = PosedViews.from_rig(images)
    np.testing.assert_allclose(rig.contact_sheet(), _grid(rig.rgb_on_white()))
    cams = [Camera(a, 10.0) for a in (0, 60, 120, 180, 240)]
    five = PosedViews.from_cameras(rng.random((5, 6, 6, 4)).astype(np.float32), cams)
    sheet = five.contact_sheet()
    assert sheet.shape == (12, 24, 3)
    np.testing.assert_allclose(sheet[6:, :6], five.rgb_on_white()[4])
    assert float(sheet[6:, 6:].min()) == 1.0  # empty cells are white


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    views = PosedViews.from_rig(rng.random((4, 8, 8, 4)).astype(np.float32), 12.5)
    back = PosedViews.load(views.save(tmp_path / "views.npz"))
    np.testing.assert_allclose(back.images, views.images, atol=0.5 / 255)
    np.testing.assert_array_equal(back.c2w, views.c2w)
    np.testing.assert_array_equal(back.fov_deg, views.fov_deg)
    assert back.names == views.names and back.rig_elevation_deg() == pytest.approx(12.5)
    # files written before views had names still load
    np.savez(tmp_path / "old.npz", rgba=(views.images * 255).astype(np.uint8), c2w=views.c2w, fov_deg=views.fov_deg)
    assert PosedViews.load(tmp_path / "old.npz").names == ("view 0", "view 1", "view 2", "view 3")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read views"):
        PosedViews.load(tmp_path / "bad.npz")


def test_rig_elevation_rejects_views_that_are_not_the_rig():
    images = np.zeros((4, 8, 8, 4), np.float32)
    shuffled = [orthogonal_rig()[i] for i in (1, 0, 2, 3)]
    with pytest.raises(InputError, match="four rig views"):
        PosedViews.from_cameras(images, shuffled).rig_elevation_deg()
    with pytest.raises(InputError, match="four rig views"):
        PosedViews.from_cameras(images[:3], orthogonal_rig()[:3]).rig_elevation_deg()
    mixed = [Camera(0, 20), Camera(90, 20), Camera(180, 25), Camera(270, 20)]
    with pytest.raises(InputError, match="one elevation"):
        PosedViews.from_cameras(images, mixed).rig_elevation_deg()


def test_bad_inputs(tmp_path):
    a = save(tmp_path / "a.png", np.ones((20, 20, 3)))
    b = save(tmp_path / "b.png", np.ones((18, 18, 3)))
    wide = save(tmp_path / "wide.png", np.ones((32, 40, 3)))
    with pytest.raises(InputError, match="4 view images"):
        PosedViews.read([a, a])
    with pytest.raises(InputError, match="same size"):
        PosedViews.read([a, a, a, b])
    with pytest.raises(InputError, match="square"):
        PosedViews.read([wide])
    with pytest.raises(InputError, match="not found"):
        PosedViews.read([tmp_path / "missing.png"])
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read"):
        PosedViews.read([tmp_path / "junk.png"])
    with pytest.raises(InputError, match="transparent"):
        PosedViews.from_rig(np.zeros((4, 8, 8, 4), np.float32)).check_objects()
    with pytest.raises(InputError, match="non-finite"):
        PosedViews.from_rig(np.full((4, 8, 8, 4), np.nan, np.float32))
    with pytest.raises(InputError, match="4 views need 4 cameras"):
        PosedViews(np.zeros((4, 8, 8, 4)), np.zeros((3, 4, 4)), np.full(4, 30.0), ("a", "b", "c", "d"))


def _write_posed(tmp_path, res: int = 16) -> tuple[list, object]:
    cams = [Camera(0.0, 20.0), Camera(120.0, -10.0), Camera(240.0, 50.0)]
    frames = []
    for i, cam in enumerate(cams):
        img = np.zeros((res, res, 4), np.float32)
        img[4:12, 4:12] = (0.5, 0.2, 0.1, 1.0)
        write_png(tmp_path / f"{i}.png", img)
        frames.append({"image": f"{i}.png", "kind": "random", **cam.to_json(res)})
    (tmp_path / "cameras.json").write_text(json.dumps({"frames": frames}))
    return [tmp_path / f"{i}.png" for i in range(len(cams))], tmp_path / "cameras.json"


def test_from_cameras_json_reads_frames(tmp_path):
    paths, cams_json = _write_posed(tmp_path)
    views = PosedViews.from_cameras_json(paths, cams_json)
    assert views.images.shape == (3, 16, 16, 4) and views.names == ("0.png", "1.png", "2.png")
    np.testing.assert_allclose(views.c2w[1], Camera(120.0, -10.0).c2w())


def test_from_cameras_json_errors(tmp_path):
    paths, cams_json = _write_posed(tmp_path)
    meta = json.loads(cams_json.read_text())
    meta["frames"][1]["resolution"] = [64, 64]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not match"):
        PosedViews.from_cameras_json(paths, bad)
    with pytest.raises(InputError, match="no frame"):
        PosedViews.from_cameras_json([tmp_path / "bad.json"], cams_json)
    with pytest.raises(InputError, match="not found"):
        PosedViews.from_cameras_json(paths, tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="cannot read"):
        PosedViews.from_cameras_json(paths, tmp_path / "broken.json")
    write_png(tmp_path / "2.png", np.zeros((24, 24, 4), np.float32) + 0.5)
    meta = json.loads(cams_json.read_text())
    meta["frames"][2]["resolution"] = [24, 24]
    cams_json.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="same size"):
        PosedViews.from_cameras_json(paths, cams_json)


def test_views_too_small_to_hold_a_shape_are_refused(tmp_path):
    """Four 1x1 (or 8x8) views would still give a full mesh: at least MIN_VIEW_SIDE a side, twice that for a grid."""
    small = save(tmp_path / "small.png", np.ones((MIN_VIEW_SIDE - 1, MIN_VIEW_SIDE - 1, 3)))
    with pytest.raises(InputError, match=rf"15x15 pixels: too small \(at least {MIN_VIEW_SIDE} pixels a side\)"):
        PosedViews.read([small] * 4)
    grid = save(tmp_path / "grid.png", np.ones((2 * MIN_VIEW_SIDE - 2, 2 * MIN_VIEW_SIDE - 2, 3)))
    with pytest.raises(InputError, match=rf"too small \(at least {2 * MIN_VIEW_SIDE} pixels a side\)"):
        PosedViews.read([grid])
    ok = save(tmp_path / "ok.png", np.ones((MIN_VIEW_SIDE, MIN_VIEW_SIDE, 3)))
    assert PosedViews.read([ok] * 4).resolution == (MIN_VIEW_SIDE, MIN_VIEW_SIDE)
