"""Shared fixtures of the reconstructor's tests: one torch thread, tiny rendered synthetic objects, a posed sphere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fourview.cameras import orthogonal_rig
from fourview.views import PosedViews
from tests.recon.posed_sphere import sphere_views


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and do not stall when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def render_objects(root: Path, count: int = 2, resolution: int = 32, num_random: int = 8) -> Path:
    """Synthetic objects rendered the way `fourview data render` does (albedo, no depth/normals)."""
    from fourview.data.dataset_renderer import RenderSettings, render_dataset, resolve_inputs
    from fourview.data.synthetic import write_synthetic
    from fourview.render.mesh_renderer import Lighting

    paths = write_synthetic(root / "synth", count=count, seed=0, progress=False)
    settings = RenderSettings(
        resolution=resolution,
        num_random=num_random,
        lighting=Lighting(albedo=True),
        supersample=1,
        write_depth=False,
        write_normal=False,
    )
    render_dataset(resolve_inputs([str(p) for p in paths]), root / "render", settings, progress=False)
    return root / "render"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    return render_objects(tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="module")
def rig() -> PosedViews:
    """The four rig views (elevation 20, 32 px) of the sphere of `tests.recon.posed_sphere`."""
    return PosedViews.from_rig(sphere_views(orthogonal_rig(20.0)), 20.0)
