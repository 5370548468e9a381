import numpy as np
import pytest
from PIL import Image

from fourview.errors import InputError
from fourview.views import check_views, grid_image, load_views, views_to_model_input


def save(path, arr):
    Image.fromarray((arr * 255).round().astype(np.uint8)).save(path)
    return path


def test_four_views_and_grid_give_the_same_views(tmp_path):
    rng = np.random.default_rng(0)
    views = rng.random((4, 8, 8, 4)).round(2).astype(np.float32)
    paths = [save(tmp_path / f"{i}.png", v) for i, v in enumerate(views)]
    from_views = load_views(paths)
    grid_path = save(tmp_path / "grid.png", grid_image(from_views))
    np.testing.assert_allclose(load_views([grid_path]), from_views)
    np.testing.assert_allclose(from_views, views, atol=1 / 255)
    # grid order: az 90 is the top-right cell
    np.testing.assert_allclose(grid_image(from_views)[:8, 8:], from_views[1])


def test_model_input_is_rgb_on_white_resized(tmp_path):
    views = np.zeros((4, 16, 16, 4), np.float32)  # fully transparent black -> white
    views[:, 4:12, 4:12] = (1.0, 0.0, 0.0, 1.0)
    x = views_to_model_input(views, 8)
    assert x.shape == (1, 4, 3, 8, 8)
    assert float(x[0, 0, :, 0, 0].min()) == 1.0  # background white
    torch_red = x[0, 0, :, 4, 4]
    assert torch_red.tolist() == [1.0, 0.0, 0.0]


def test_bad_inputs(tmp_path):
    a = save(tmp_path / "a.png", np.ones((8, 8, 3)))
    b = save(tmp_path / "b.png", np.ones((6, 6, 3)))
    wide = save(tmp_path / "wide.png", np.ones((8, 10, 3)))
    with pytest.raises(InputError, match="4 view images"):
        load_views([a, a])
    with pytest.raises(InputError, match="same size"):
        load_views([a, a, a, b])
    with pytest.raises(InputError, match="square"):
        load_views([wide])
    with pytest.raises(InputError, match="not found"):
        load_views([tmp_path / "missing.png"])
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read"):
        load_views([tmp_path / "junk.png"])
    with pytest.raises(InputError, match="transparent"):
        check_views(np.zeros((4, 8, 8, 4), np.float32))
