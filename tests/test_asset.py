"""`Asset.save`'s checks on what it is asked to write (the writing itself: test_pipeline, test_image_command)."""

from __future__ import annotations

import numpy as np
import pytest

from fourview.asset import Asset
from fourview.errors import InputError


@pytest.mark.parametrize("name", ["../mask.png", "sub/mask.png", "views.png", "model.png", "mask.jpg", ".hidden.png"])
def test_extra_images_need_a_plain_png_name_of_their_own(tmp_path, name):
    asset = Asset(None, None, None, None, None, True, extra_images={name: np.zeros((4, 4), np.float32)})
    with pytest.raises(InputError, match="plain .png file name"):
        asset.save(tmp_path / "out")  # refused before anything is written
    assert not (tmp_path / "out").exists()
