"""Tests of the CPU rasteriser's threads (`fourview.render._raster_cpu`): the output does not depend on them."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest
import torch

from fourview.cameras import Camera
from fourview.render import _raster_cpu, interpolate, rasterize
from fourview.render._raster_reference import rasterize_reference


@pytest.fixture
def set_threads():
    """``torch.set_num_threads``, restored after the test."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def finest_split(monkeypatch):
    """Cut every pass into as many tasks as it goes, so that tiny images run the threaded path."""

    def apply() -> None:
        monkeypatch.setattr(_raster_cpu, "_MIN_PARALLEL_WORK", 0)
        monkeypatch.setattr(_raster_cpu, "_MIN_TASK_TRIANGLES", 1)
        monkeypatch.setattr(_raster_cpu, "_MIN_TASK_VERTICES", 1)
        monkeypatch.setattr(_raster_cpu, "_MIN_TASK_PIXELS", 1)

    return apply


def grid_scene(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bumpy 17 x 17 grid of dyadic clip-space vertices (exact in float32 on every machine) on
    multiples of 1/32, where the pixel centres of a 32-pixel axis lie: pixel centres on edges and
    vertices. Both orientations, and every triangle drawn twice (indices f and f + F at equal
    depth). Returns pos [2, V, 4] (a flat and a perspective image) and tri [2F, 3] int32."""
    rng = np.random.default_rng(seed)
    k = np.arange(-8, 9) / 8.0 * 0.75  # [17] multiples of 3/32
    x, y = np.meshgrid(k, k)
    z = rng.integers(-32, 33, size=x.shape) / 64.0
    flat = np.stack([x, y, z, np.ones_like(x)], axis=-1).reshape(-1, 4)  # [V, 4]
    persp = flat.copy()
    persp[:, 3] = rng.integers(4, 13, size=len(flat)) / 8.0  # w in [0.5, 1.5]
    persp[:, :3] *= persp[:, 3:]
    i = np.arange(16)
    a = (i[:, None] * 17 + i[None, :]).reshape(-1)  # [256] lower-left corners
    quads = np.stack([a, a + 1, a + 18, a + 17], axis=1)
    tri = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    flip = rng.random(len(tri)) < 0.5
    tri[flip] = tri[flip][:, ::-1]  # both orientations
    tri = np.concatenate([tri, tri])  # equal-depth twins: the lower index must win
    pos = torch.from_numpy(np.stack([flat, persp])).float()
    return pos, torch.from_numpy(tri).to(torch.int32)


def soup_scene(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Small dyadic triangles, some crossing the near or far plane or behind the camera (w <= 0):
    pos [2, V, 4], tri [F, 3]."""
    rng = np.random.default_rng(seed)
    n = 120
    centre = rng.integers(-40, 41, size=(2, n, 1, 4)) / 32.0
    offset = rng.integers(-6, 7, size=(2, n, 3, 4)) / 32.0
    pos = (centre + offset).reshape(2, 3 * n, 4)
    pos[..., 3] = rng.integers(-4, 17, size=pos.shape[:2]) / 8.0  # some w <= 0, some |z| > w
    tri = np.arange(3 * n).reshape(n, 3)
    return torch.from_numpy(pos).float(), torch.from_numpy(tri).to(torch.int32)


def mesh_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A dense sphere (tiny triangles) seen through `fourview.cameras`, one camera close enough for
    triangles to cross the near plane: pos [2, V, 4], tri [F, 3]."""
    lat, lon = np.meshgrid(np.linspace(-np.pi / 2, np.pi / 2, 33), np.linspace(0, 2 * np.pi, 65), indexing="ij")
    verts = np.stack([np.cos(lat) * np.cos(lon), np.sin(lat), np.cos(lat) * np.sin(lon)], axis=-1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(32), np.arange(64), indexing="ij")
    a = (i * 65 + j).reshape(-1)
    tri = np.concatenate([np.stack([a, a + 1, a + 66], 1), np.stack([a, a + 66, a + 65], 1)])
    homo = np.c_[verts, np.ones(len(verts))]
    pos = np.stack([homo @ Camera(30.0, 20.0).mvp().T, homo @ Camera(-40.0, 10.0, radius=1.05).mvp().T])
    return torch.from_numpy(pos).float(), torch.from_numpy(tri).to(torch.int32)


SCENES = {
    "grid": lambda: grid_scene(0),
    "soup": lambda: soup_scene(1),
    "mesh": mesh_scene,
}


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)  # float32 -> raw bits: -0.0 != 0.0, NaN == NaN


@pytest.mark.parametrize("res", [(32, 32), (37, 61)])
@pytest.mark.parametrize("scene", sorted(SCENES))
def test_rasterize_is_bit_identical_on_one_and_two_threads(scene, res, set_threads, finest_split):
    pos, tri = SCENES[scene]()
    set_threads(1)
    serial, _ = rasterize(pos, tri, res)
    assert (serial[..., 3] > 0).float().mean() > 0.2  # the scene draws something
    set_threads(2)
    two, _ = rasterize(pos, tri, res)
    single = torch.cat([rasterize(pos[i : i + 1], tri, res)[0] for i in range(len(pos))])
    half = len(tri) // 2
    ranges = torch.tensor([[0, half], [half, len(tri) - half]])  # (start, count) rows
    ranged, _ = rasterize(pos[1], tri, res, ranges=ranges)
    finest_split()  # every pass cut into as many tasks as it goes
    for threads in (2, 3):
        set_threads(threads)
        fine, _ = rasterize(pos, tri, res)
        assert torch.equal(bits(fine), bits(serial))
    fine_ranged, _ = rasterize(pos[1], tri, res, ranges=ranges)
    assert torch.equal(bits(two), bits(serial))
    assert torch.equal(bits(single), bits(serial))
    assert torch.equal(bits(fine_ranged), bits(ranged))


def test_equal_depths_keep_the_lower_index_on_any_number_of_threads(set_threads, finest_split):
    # Every triangle twice (f and f + F), all at z = 0: exact depth ties everywhere. (A fragment's
    # float64 z/w is compared with the stored float32 one, so ties at depths that float32 cannot
    # hold may go either way; they too are the same on any number of threads, as tested above.)
    pos, tri = grid_scene(3)
    pos[..., 2] = 0.0
    n_half = len(tri) // 2
    finest_split()
    for threads in (1, 2, 3):
        set_threads(threads)
        rast, _ = rasterize(pos, tri, (32, 32))
        ids = rast[..., 3].long()  # id + 1, 0 where empty
        assert (ids > 0).float().mean() > 0.4
        assert int(ids.max()) <= n_half  # the twins never win


def test_rows_outside_the_sampled_work_estimate_are_drawn(set_threads, finest_split):
    # The bands of rows are balanced on every 8th triangle; the others must be drawn all the same.
    # 12 small disjoint triangles stacked from the bottom to the top of the image.
    rng = np.random.default_rng(4)
    ys = np.linspace(-0.9, 0.75, 12)
    corners = np.array([[0.0, 0.0], [0.3, 0.02], [0.1, 0.12]])
    xy = corners[None] + np.stack([rng.uniform(-0.9, 0.5, 12), ys], axis=1)[:, None]  # [12, 3, 2]
    pos = torch.from_numpy(np.concatenate([xy, np.zeros((12, 3, 1)), np.ones((12, 3, 1))], -1)).float()
    pos, tri = pos.reshape(1, 36, 4), torch.arange(36, dtype=torch.int32).reshape(12, 3)
    expected = rasterize_reference(pos, tri, (48, 40))[..., 3]
    assert set(expected.unique().tolist()) == set(range(13))  # every triangle covers a pixel
    for split in (False, True):
        if split:
            finest_split()
        for threads in (1, 2, 3):
            set_threads(threads)
            assert torch.equal(rasterize(pos, tri, (48, 40))[0][..., 3], expected.float())


def test_rasterize_bits_are_those_of_the_serial_kernel():
    # sha256 of the output bytes of the single-threaded kernel that preceded the threaded one
    # (commit 0d55480); the scenes are dyadic, so every machine computes the same bits.
    pos, tri = grid_scene(5)
    soup_pos, soup_tri = soup_scene(6)
    digest = hashlib.sha256()
    for p, t, res in ((pos, tri, (32, 32)), (pos, tri, (29, 45)), (soup_pos, soup_tri, (40, 24))):
        digest.update(rasterize(p, t, res)[0].numpy().tobytes())
    assert digest.hexdigest() == "bf89edfccea57fe60ad53c54abd828cb222f58c43b14fdae1418e6cd3463456e"


def test_interpolate_is_bit_identical_on_one_and_two_threads(set_threads, finest_split):
    pos, tri = mesh_scene()
    attr = torch.randn(1, pos.shape[1], 5, generator=torch.Generator().manual_seed(0))
    rast, _ = rasterize(pos, tri, (64, 48))
    set_threads(1)
    serial, _ = interpolate(attr, rast, tri)
    assert serial.abs().sum() > 0
    finest_split()
    set_threads(2)
    two, _ = interpolate(attr, rast, tri)
    assert torch.equal(bits(two), bits(serial))


def test_run_tasks_runs_each_task_once_and_raises_a_tasks_error():
    done, lock = [], threading.Lock()

    def task(i: int) -> None:
        with lock:
            done.append(i)

    _raster_cpu.run_tasks(3, task, [(i,) for i in range(50)])
    assert sorted(done) == list(range(50))

    def failing(i: int) -> None:
        if i == 7:
            raise ValueError("task 7 failed")

    with pytest.raises(ValueError, match="task 7 failed"):
        _raster_cpu.run_tasks(2, failing, [(i,) for i in range(20)])
