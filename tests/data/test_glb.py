"""Tests of the synthetic world's GLB writer."""

from __future__ import annotations

from fourview.data import synthetic as S
from fourview.data.glb import export_glb


def test_glb_bytes_are_deterministic(tmp_path):
    asset = S.build_asset(S.sample_spec(9))
    export_glb(asset, tmp_path / "a.glb")
    export_glb(S.build_asset(S.sample_spec(9)), tmp_path / "b.glb")
    assert (tmp_path / "a.glb").read_bytes() == (tmp_path / "b.glb").read_bytes()
