"""Training data of the reconstructor: the dataset renderer's objects as (rig views, supervising frames).

Layout read (written by `fourview.data.dataset_renderer`)::

    ROOT/NAME/rig/000.png 090.png 180.png 270.png    RGBA, the orthogonal rig
    ROOT/NAME/random/NNNN.png                        RGBA, random cameras
    ROOT/NAME/cameras.json                           {"frames": [{"image", "kind", "azimuth_deg",
                                                      "elevation_deg", "radius", "fov_deg",
                                                      "resolution", "c2w"}, ...], ...}

A sample of object ``NAME`` is its four rig views composited on white (the model's input, resized
to the model's view resolution when asked) with the rig's elevation, and ``views_per_sample``
supervising frames drawn without replacement from its random frames (the seed: four random
cameras per object), as RGB on white plus alpha and their cameras.

Randomness: which frames a sample uses depends only on ``(seed, draw, index)``:
``dataset[index]`` is draw 0 and ``dataset[(index, draw)]`` is draw ``draw``, so the training loop
(which uses the step number as the draw) gets the same samples in any process, with any number of
workers and after a resume. `ObjectBatchSampler` gives the matching deterministic, resumable,
shardable order of objects.

Held-out objects: pass a separate folder, or split one folder with ``objects`` / ``exclude`` name lists.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from fourview.cameras import RIG_AZIMUTHS_DEG
from fourview.errors import InputError
from fourview.images import read_rgba

__all__ = [
    "ObjectBatch",
    "ObjectBatchSampler",
    "ObjectRecord",
    "ObjectSample",
    "RenderedObjects",
    "collate_objects",
    "find_objects",
]


@dataclass(frozen=True)
class FrameRecord:
    """One image of an object and its camera (a ``cameras.json`` frame)."""

    image: Path
    kind: str
    elevation_deg: float
    fov_deg: float
    c2w: np.ndarray  # [4, 4] float64


@dataclass(frozen=True)
class ObjectRecord:
    """One rendered object: its rig frames (rig order) and random frames."""

    name: str
    folder: Path
    rig: tuple[FrameRecord, ...]
    random: tuple[FrameRecord, ...]

    @property
    def elevation_deg(self) -> float:
        """Elevation of the rig, degrees."""
        return self.rig[0].elevation_deg


@dataclass
class ObjectSample:
    """One training sample (one object).

    Attributes:
        name: the object's folder name.
        views: [4, 3, H, W] rig views (az 0, 90, 180, 270) RGB composited on white, in [0, 1].
        elevation_deg: elevation of the rig, degrees.
        target_rgb: [K, Ht, Wt, 3] supervising frames, RGB composited on white, in [0, 1], row 0 on top.
        target_alpha: [K, Ht, Wt] their alpha (coverage) in [0, 1].
        c2w: [K, 4, 4] their camera-to-world matrices (OpenGL camera axes, object frame).
        fov_deg: [K] their vertical fields of view, degrees.
    """

    name: str
    views: torch.Tensor
    elevation_deg: float
    target_rgb: torch.Tensor
    target_alpha: torch.Tensor
    c2w: torch.Tensor
    fov_deg: torch.Tensor


@dataclass
class ObjectBatch:
    """A batch of `ObjectSample` (B objects): the same fields with a leading batch dimension.

    Attributes:
        names: B object names.
        views: [B, 4, 3, H, W].
        elevation_deg: [B].
        target_rgb: [B, K, Ht, Wt, 3].
        target_alpha: [B, K, Ht, Wt].
        c2w: [B, K, 4, 4].
        fov_deg: [B, K].
    """

    names: list[str]
    views: torch.Tensor
    elevation_deg: torch.Tensor
    target_rgb: torch.Tensor
    target_alpha: torch.Tensor
    c2w: torch.Tensor
    fov_deg: torch.Tensor

    def to(self, device: str | torch.device) -> ObjectBatch:
        """The batch with every tensor on ``device``."""
        return ObjectBatch(
            names=self.names,
            views=self.views.to(device),
            elevation_deg=self.elevation_deg.to(device),
            target_rgb=self.target_rgb.to(device),
            target_alpha=self.target_alpha.to(device),
            c2w=self.c2w.to(device),
            fov_deg=self.fov_deg.to(device),
        )

    def pin_memory(self) -> ObjectBatch:
        return ObjectBatch(
            names=self.names,
            views=self.views.pin_memory(),
            elevation_deg=self.elevation_deg.pin_memory(),
            target_rgb=self.target_rgb.pin_memory(),
            target_alpha=self.target_alpha.pin_memory(),
            c2w=self.c2w.pin_memory(),
            fov_deg=self.fov_deg.pin_memory(),
        )


def collate_objects(samples: Sequence[ObjectSample]) -> ObjectBatch:
    """Stack samples into an `ObjectBatch` (the ``collate_fn`` of a DataLoader over `RenderedObjects`)."""
    if not samples:
        raise InputError("cannot collate an empty list of samples")
    return ObjectBatch(
        names=[s.name for s in samples],
        views=torch.stack([s.views for s in samples]),
        elevation_deg=torch.tensor([s.elevation_deg for s in samples], dtype=torch.float32),
        target_rgb=torch.stack([s.target_rgb for s in samples]),
        target_alpha=torch.stack([s.target_alpha for s in samples]),
        c2w=torch.stack([s.c2w for s in samples]),
        fov_deg=torch.stack([s.fov_deg for s in samples]),
    )


def _frame(folder: Path, rec: dict, where: str) -> FrameRecord:
    try:
        c2w = np.asarray(rec["c2w"], dtype=np.float64)
        frame = FrameRecord(
            image=folder / rec["image"],
            kind=str(rec["kind"]),
            elevation_deg=float(rec["elevation_deg"]),
            fov_deg=float(rec["fov_deg"]),
            c2w=c2w,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{where}: bad frame record ({type(err).__name__}: {err})") from None
    if c2w.shape != (4, 4):
        raise InputError(f"{where}: c2w of {rec.get('image')} must be 4x4, got shape {c2w.shape}")
    return frame


def _read_object(folder: Path) -> ObjectRecord:
    path = folder / "cameras.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        frames = meta["frames"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError(f"cannot read {path}: {type(err).__name__}: {err}") from None
    recs = [_frame(folder, f, str(path)) for f in frames]
    rig_by_az: dict[int, FrameRecord] = {}
    for f, raw in zip(recs, frames):
        if f.kind == "rig":
            rig_by_az[int(round(float(raw["azimuth_deg"]))) % 360] = f
    try:
        rig = tuple(rig_by_az[int(az)] for az in RIG_AZIMUTHS_DEG)
    except KeyError:
        raise InputError(f"{path}: needs rig frames at azimuths 0, 90, 180, 270, got {sorted(rig_by_az)}") from None
    return ObjectRecord(folder.name, folder, rig, tuple(f for f in recs if f.kind == "random"))


def find_objects(
    root: str | Path, objects: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> list[ObjectRecord]:
    """Index the rendered objects under ``root`` (sorted by name).

    Args:
        root: folder of object folders (``NAME/cameras.json``).
        objects: keep only these names (all must exist), or None for all.
        exclude: drop these names (e.g. the held-out objects of a split folder).

    Raises:
        InputError: a missing root, no objects, an unknown name in ``objects``, a bad ``cameras.json``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    folders = sorted(p.parent for p in root.glob("*/cameras.json") if not p.parent.name.startswith("."))
    by_name = {f.name: f for f in folders}
    if objects is not None:
        unknown = sorted(set(objects) - set(by_name))
        if unknown:
            raise InputError(f"objects not found in {root}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        folders = [by_name[n] for n in sorted(set(objects))]
    if exclude is not None:
        folders = [f for f in folders if f.name not in set(exclude)]
    if not folders:
        raise InputError(f"no rendered objects (NAME/cameras.json) in {root}")
    return [_read_object(f) for f in folders]


def _resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, size, size]: area-like (antialiased bilinear) down, bilinear up."""
    if img.shape[-2:] == (size, size):
        return img
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class RenderedObjects(Dataset):
    """Objects rendered by the dataset renderer, as reconstructor training samples (module docstring).

    The constructor indexes ``root`` (reads each object's ``cameras.json``); images are read in
    ``__getitem__``.

    Args:
        root: folder of rendered objects.
        views_per_sample: K supervising frames per sample (random frames, without replacement).
        view_resolution: side of the input views (the model's ``unet.view_resolution``), or None to
            keep the stored size.
        target_resolution: side of the supervising frames (the model's ``render_resolution``), or
            None to keep the stored size.
        objects: keep only these object names.
        exclude: drop these object names.
        seed: base seed of the frame draws.

    Raises:
        InputError: see `find_objects`; an object with fewer than ``views_per_sample`` random frames.
    """

    def __init__(
        self,
        root: str | Path,
        views_per_sample: int = 4,
        view_resolution: int | None = None,
        target_resolution: int | None = None,
        objects: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        if views_per_sample < 1:
            raise InputError(f"views_per_sample must be >= 1, got {views_per_sample}")
        for name, value in (("view_resolution", view_resolution), ("target_resolution", target_resolution)):
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1 pixel, got {value}")
        self.root = Path(root)
        self.records = find_objects(root, objects, exclude)
        short = [r.name for r in self.records if len(r.random) < views_per_sample]
        if short:
            raise InputError(
                f"{len(short)} objects in {root} have fewer than {views_per_sample} random frames (e.g. {short[0]}); "
                "render more (--random) or lower views_per_sample"
            )
        self.views_per_sample = views_per_sample
        self.view_resolution = view_resolution
        self.target_resolution = target_resolution
        self.seed = seed

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def frame_indices(self, index: int, draw: int = 0) -> list[int]:
        """Indices into object ``index``'s random frames used by draw ``draw`` (sorted)."""
        rng = np.random.default_rng([self.seed, draw, index])
        pick = rng.choice(len(self.records[index].random), size=self.views_per_sample, replace=False)
        return sorted(int(i) for i in pick)

    def rig_views(self, index: int) -> torch.Tensor:
        """[4, 3, H, W] rig views of object ``index`` on white (resized to ``view_resolution``)."""
        rec = self.records[index]
        rgba = torch.from_numpy(np.stack([read_rgba(f.image) for f in rec.rig])).permute(0, 3, 1, 2)  # [4, 4, H, W]
        views = rgba[:, :3] * rgba[:, 3:] + (1.0 - rgba[:, 3:])  # [4, 3, H, W] on white
        if self.view_resolution is not None:
            views = _resize(views, self.view_resolution).clamp(0.0, 1.0)
        return views.contiguous()

    def frames(
        self, index: int, frame_ids: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random frames ``frame_ids`` of object ``index``: rgb [K, H, W, 3] on white, alpha [K, H, W], c2w, fov."""
        rec = self.records[index]
        picked = [rec.random[i] for i in frame_ids]
        rgba = torch.from_numpy(np.stack([read_rgba(f.image) for f in picked])).permute(0, 3, 1, 2)  # [K, 4, H, W]
        # Premultiplied resize keeps colour and coverage consistent at the silhouette.
        premult = torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], dim=1)
        if self.target_resolution is not None:
            premult = _resize(premult, self.target_resolution).clamp(0.0, 1.0)
        alpha = premult[:, 3]  # [K, H, W]
        rgb = (premult[:, :3] + (1.0 - premult[:, 3:])).permute(0, 2, 3, 1)  # [K, H, W, 3] on white
        c2w = torch.tensor(np.stack([f.c2w for f in picked]), dtype=torch.float32)  # [K, 4, 4]
        fov = torch.tensor([f.fov_deg for f in picked], dtype=torch.float32)  # [K]
        return rgb.contiguous(), alpha.contiguous(), c2w, fov

    def __getitem__(self, item: int | tuple[int, int]) -> ObjectSample:
        index, draw = (item, 0) if isinstance(item, (int, np.integer)) else (int(item[0]), int(item[1]))
        if not 0 <= index < len(self.records):
            raise IndexError(f"object index {index} out of range for {len(self.records)} objects")
        rgb, alpha, c2w, fov = self.frames(index, self.frame_indices(index, draw))
        rec = self.records[index]
        return ObjectSample(
            name=rec.name,
            views=self.rig_views(index),
            elevation_deg=rec.elevation_deg,
            target_rgb=rgb,
            target_alpha=alpha,
            c2w=c2w,
            fov_deg=fov,
        )


class ObjectBatchSampler(Sampler[list[tuple[int, int]]]):
    """Endless, deterministic, resumable batches of ``(index, draw)`` keys for `RenderedObjects`.

    Global batch ``g`` takes ``batch_size`` objects from a permutation of the objects that depends
    only on ``(seed, epoch)`` (epochs chain without gaps), and ``draw = g``. Process ``rank`` of
    ``world_size`` takes the global batches ``g = rank, rank + world_size, ...``, starting at
    ``start_batch`` of its own (so ``start_batch`` = micro-batches already consumed by this process).

    Args:
        num_objects: dataset length.
        batch_size: objects per batch (per process).
        seed: order seed.
        start_batch: batches of this process to skip (resume).
        rank: this process's index.
        world_size: number of processes.
    """

    def __init__(
        self,
        num_objects: int,
        batch_size: int,
        seed: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_objects < 1 or batch_size < 1:
            raise InputError(f"need >= 1 object and batch size >= 1, got {num_objects} and {batch_size}")
        if not 0 <= rank < world_size:
            raise InputError(f"bad shard rank {rank} of {world_size}")
        self.num_objects, self.batch_size, self.seed = num_objects, batch_size, seed
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size

    def global_batch(self, g: int) -> list[tuple[int, int]]:
        """Keys of global batch ``g``."""
        n, bs = self.num_objects, self.batch_size
        first = g * bs
        keys = []
        cached_epoch, perm = -1, None
        for pos in range(first, first + bs):
            epoch = pos // n
            if epoch != cached_epoch:
                perm = np.random.default_rng([self.seed, epoch]).permutation(n)
                cached_epoch = epoch
            keys.append((int(perm[pos % n]), g))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        local = self.start_batch
        while True:
            yield self.global_batch(local * self.world_size + self.rank)
            local += 1

    def __len__(self) -> int:  # endless; a large number for code that asks
        return math.floor(2**62)
