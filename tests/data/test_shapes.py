"""Tests of the synthetic world's shape builders."""

from __future__ import annotations

import numpy as np
import pytest

from fourview.data import synthetic as S
from fourview.data.primitives import box
from fourview.data.shapes import normaliser, shape_pieces
from fourview.errors import InputError


def test_normaliser_centres_the_bounding_box_and_puts_the_farthest_vertex_at_one():
    pieces = [box(2.0, 1.0, 1.0).moved(x=1.0), box(1.0, 1.0, 1.0).moved(y=3.0)]  # x in [-0.5, 2], y in [-0.5, 3.5]
    centre, scale = normaliser(pieces)
    np.testing.assert_allclose(centre, [0.75, 1.5, 0.0])
    verts = (np.concatenate([p.verts for p in pieces]) - centre) * scale
    assert np.linalg.norm(verts, axis=1).max() == pytest.approx(1.0)
    assert scale == pytest.approx(1.0 / np.sqrt(1.25**2 + 2.0**2 + 0.5**2))  # e.g. (-0.5, 3.5, 0.5)


def test_every_shape_class_has_a_builder_with_a_body():
    for shape in S.SHAPES:
        body, accent = shape_pieces(shape, {k: v[1] for k, v in S.PROPORTIONS[shape].items()})
        assert body, shape
        assert all(np.isfinite(p.verts).all() and len(p.faces) for p in body + accent), shape


def test_unknown_shapes_are_refused():
    with pytest.raises(InputError, match="unknown synthetic shape 'spaceship'"):
        shape_pieces("spaceship", {})
