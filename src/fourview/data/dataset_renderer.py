"""The data stage's dataset renderer: objects in, training images and cameras out.

For each object (a real asset file, a Google Scanned Objects folder, or a synthetic object's
folder), it writes::

    DIR/NAME/rig/000.png 090.png 180.png 270.png       RGBA, the orthogonal rig (stage 1 and 2 inputs)
    DIR/NAME/rig/000_depth.png, 000_normal.png ...      depth (uint16, depth_scale units) and normals
    DIR/NAME/grid.png                                   the 2x2 grid of the rig on white (stage 1 target)
    DIR/NAME/random/0000.png ... (+ _depth, _normal)    random cameras on the radius-4 sphere (stage 2)
    DIR/NAME/cameras.json                               every image with its camera (written last)
    DIR/NAME/caption.txt                                copied from the source folder when present; for a GSO
                                                        folder without one, made from its name (`caption_from_name`)

An object's folder is assembled under a temporary name and renamed into place when complete
(`fourview.atomic.atomic_folder`), so an interrupted run leaves no half-written object, and a
rerun skips finished ones. Objects are split across processes by ``rank`` / ``world_size`` (read
from torchrun's ``RANK`` and ``WORLD_SIZE`` or SLURM's ``SLURM_PROCID`` and ``SLURM_NTASKS``) and
across local worker processes.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fourview.atomic import atomic_folder
from fourview.cameras import DEFAULT_ELEVATION_DEG, RADIUS, Camera, orthogonal_rig, random_cameras, views_to_grid
from fourview.data.assets import load_asset
from fourview.data.captions import caption_from_name
from fourview.data.examples import example_path
from fourview.errors import InputError
from fourview.images import composite_on_white, write_png
from fourview.render.mesh_renderer import Lighting, MeshRenderer

ASSET_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".off", ".stl")
DEPTH_SCALE = 1e-3
"""Depth PNGs hold ``round(depth / DEPTH_SCALE)`` as uint16 (so 1 unit = 1 mm for a 1 m object radius)."""


@dataclass(frozen=True)
class RenderSettings:
    """Settings of a dataset render."""

    resolution: int = 512
    """Side of every image, pixels."""
    elevation_deg: float = DEFAULT_ELEVATION_DEG
    """Elevation of the orthogonal rig, degrees."""
    num_random: int = 100
    """Random views (cameras) per object."""
    random_elevation_deg: tuple[float, float] = (-90.0, 90.0)
    """Elevation band of the random views, degrees (uniform over that part of the sphere)."""
    radius: float = RADIUS
    """Camera distance."""
    lighting: Lighting = field(default_factory=Lighting)
    """Shading settings (``Lighting(albedo=True)`` for unlit albedo renders)."""
    supersample: int = 3
    """Anti-aliasing samples per pixel along each axis (odd keeps alpha >= 0.5 equal to the pixel-centre coverage)."""
    write_depth: bool = True
    """Also write depth maps."""
    write_normal: bool = True
    """Also write normal maps."""
    seed: int = 0
    """Base seed of the random cameras (each object mixes in a hash of its name)."""

    def __post_init__(self) -> None:
        if self.resolution < 1:
            raise InputError(f"resolution must be a positive number of pixels, got {self.resolution}")
        if self.num_random < 0:
            raise InputError(f"number of random views must be >= 0, got {self.num_random}")
        if self.supersample < 1:
            raise InputError(f"supersample must be >= 1, got {self.supersample}")
        if not -90.0 <= self.elevation_deg <= 90.0:
            raise InputError(f"elevation must be in [-90, 90] degrees, got {self.elevation_deg}")


@dataclass(frozen=True)
class ObjectSource:
    """One object to render: where it is, what to call it, which axis is up."""

    name: str
    path: Path
    up_axis: str = "y"
    caption_file: Path | None = None
    caption: str | None = None
    """A caption made from the name (a GSO folder without ``caption.txt``), written as ``caption.txt``."""


def resolve_inputs(inputs: list[str], up_axis: str = "y", objects_json: str | None = None) -> list[ObjectSource]:
    """Turn command-line inputs into objects to render, checking that each exists and is readable.

    An input is an asset file, a GSO folder (``meshes/model.obj``), an object folder holding
    ``model.glb`` (the synthetic world's layout), a folder of such object folders, or
    ``example:NAME`` (an example shipped with the package). ``objects_json`` is a list of
    ``{"name", "mesh", "up_axis"}`` records with paths relative to the file (as in
    ``shared/data/objects/objects.json``).

    Raises:
        InputError: a missing file, an unknown format, a duplicate name.
    """
    sources: list[ObjectSource] = []
    if objects_json is not None:
        sources += _sources_from_json(Path(objects_json))
    for item in inputs:
        sources += _sources_from_input(item, up_axis)
    if not sources:
        raise InputError("no objects to render: give asset paths, folders or --objects FILE")
    seen: dict[str, Path] = {}
    for s in sources:
        if s.name in seen:
            raise InputError(f"two objects are both named {s.name!r}: {seen[s.name]} and {s.path}")
        seen[s.name] = s.path
    return sources


def _sources_from_json(path: Path) -> list[ObjectSource]:
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"objects file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"objects file {path} is not valid JSON: {e}") from None
    if not isinstance(records, list):
        raise InputError(f"objects file {path} must hold a JSON list of records")
    out = []
    for r in records:
        if not isinstance(r, dict) or "mesh" not in r:
            raise InputError(f"objects file {path}: each record needs a 'mesh' path, got {r!r}")
        mesh = (path.parent / r["mesh"]).resolve()
        src = _sources_from_input(str(mesh), r.get("up_axis", "y"))[0]
        out.append(ObjectSource(r.get("name", src.name), src.path, src.up_axis, src.caption_file, src.caption))
    return out


def _sources_from_input(item: str, up_axis: str) -> list[ObjectSource]:
    if item.startswith("example:"):
        path = example_path(item.split(":", 1)[1])
        return [ObjectSource(path.parent.name, path, "y", _caption_beside(path))]
    path = Path(item)
    if path.is_file():
        if path.suffix.lower() not in ASSET_SUFFIXES:
            raise InputError(
                f"unknown asset format {path.suffix!r}: {path} (expected one of {', '.join(ASSET_SUFFIXES)})"
            )
        name = path.parent.name if path.stem == "model" else path.stem
        return [ObjectSource(name, path, up_axis, _caption_beside(path))]
    if path.is_dir():
        if (path / "meshes" / "model.obj").is_file():  # Google Scanned Objects layout: the name is the product's
            caption_file = _caption_beside(path / "meshes" / "model.obj")
            caption = None if caption_file is not None else caption_from_name(path.name)
            return [ObjectSource(path.name, path, up_axis, caption_file, caption)]
        model = next((path / f"model{s}" for s in ASSET_SUFFIXES if (path / f"model{s}").is_file()), None)
        if model is not None:
            return [ObjectSource(path.name, model, up_axis, _caption_beside(model))]
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        found = [s for c in children for s in _sources_from_input(str(c), up_axis) if _looks_like_object(c)]
        if found:
            return found
        raise InputError(f"no object found in folder {path} (expected model.glb, meshes/model.obj or object folders)")
    raise InputError(f"input not found: {item}")


def _looks_like_object(folder: Path) -> bool:
    return (folder / "meshes" / "model.obj").is_file() or any((folder / f"model{s}").is_file() for s in ASSET_SUFFIXES)


def _caption_beside(mesh_path: Path) -> Path | None:
    for folder in (mesh_path.parent, mesh_path.parent.parent):
        if (folder / "caption.txt").is_file():
            return folder / "caption.txt"
    return None


def shard_from_env() -> tuple[int, int]:
    """(rank, world_size) from torchrun (RANK, WORLD_SIZE) or SLURM (SLURM_PROCID, SLURM_NTASKS); (0, 1) otherwise."""
    for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and size_var in os.environ:
            rank, size = int(os.environ[rank_var]), int(os.environ[size_var])
            if not 0 <= rank < size:
                raise InputError(f"bad shard: {rank_var}={rank}, {size_var}={size}")
            return rank, size
    return 0, 1


def object_cameras(name: str, settings: RenderSettings) -> tuple[list[Camera], list[Camera]]:
    """The rig and random cameras of one object (random ones seeded by the settings' seed and the name)."""
    rig = orthogonal_rig(settings.elevation_deg, settings.radius)
    seed = (settings.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**32
    rand = random_cameras(settings.num_random, seed, settings.random_elevation_deg, settings.radius)
    return rig, rand


def render_object(source: ObjectSource, out_dir: Path, settings: RenderSettings) -> Path:
    """Render one object into ``out_dir/NAME`` (atomically); returns that folder. Skips finished objects."""
    final = out_dir / source.name
    if (final / "cameras.json").is_file():
        return final
    asset = load_asset(source.path, up_axis=source.up_axis, normalize=True, name=source.name)
    renderer = MeshRenderer(asset)
    # An incomplete leftover (an older layout, or a copy without cameras.json) is replaced whole.
    with atomic_folder(final, overwrite=True) as tmp:
        (tmp / "rig").mkdir()
        if settings.num_random:
            (tmp / "random").mkdir()
        rig, rand = object_cameras(source.name, settings)
        records, rig_rgba = [], []
        for kind, cams in (("rig", rig), ("random", rand)):
            for i, cam in enumerate(cams):
                stem = f"rig/{int(round(cam.azimuth_deg)):03d}" if kind == "rig" else f"random/{i:04d}"
                out = renderer.render(cam, settings.resolution, settings.lighting, settings.supersample)
                write_png(tmp / f"{stem}.png", out.rgba)
                rec = {"image": f"{stem}.png", "kind": kind, **cam.to_json(settings.resolution)}
                if settings.write_depth:
                    depth = np.clip(np.rint(out.depth / DEPTH_SCALE), 0, 65535).astype(np.uint16)
                    write_png(tmp / f"{stem}_depth.png", depth)
                    rec["depth"] = f"{stem}_depth.png"
                if settings.write_normal:
                    write_png(
                        tmp / f"{stem}_normal.png", np.concatenate([(out.normal + 1) / 2, out.rgba[..., 3:]], -1)
                    )
                    rec["normal"] = f"{stem}_normal.png"
                records.append(rec)
                if kind == "rig":
                    rig_rgba.append(out.rgba)
        views = torch.from_numpy(np.stack([composite_on_white(v) for v in rig_rgba])).permute(0, 3, 1, 2)
        write_png(tmp / "grid.png", views_to_grid(views).permute(1, 2, 0).numpy())  # [2H, 2W, 3]
        if source.caption_file is not None:
            shutil.copyfile(source.caption_file, tmp / "caption.txt")
        elif source.caption:
            (tmp / "caption.txt").write_text(source.caption + "\n", encoding="utf-8")
        meta = {
            "name": source.name,
            "source": str(source.path),
            "up_axis": source.up_axis,
            "convention": "object frame +Y up, front +Z; c2w camera-to-world, OpenGL camera axes; docs/conventions.md",
            "depth_scale": DEPTH_SCALE,
            "normal_encoding": "object-frame unit normal n stored as (n + 1) / 2, alpha = coverage",
            "settings": _settings_json(settings),
            "frames": records,
        }
        (tmp / "cameras.json").write_text(json.dumps(meta, indent=1))  # the folder is the atomic unit
    return final


def _settings_json(settings: RenderSettings) -> dict:
    d = asdict(settings)
    d["lighting"] = asdict(settings.lighting)
    return d


def _init_worker() -> None:
    # Worker processes share the cores: one thread each avoids oversubscription.
    torch.set_num_threads(1)


def render_dataset(
    sources: list[ObjectSource],
    out_dir: str | os.PathLike,
    settings: RenderSettings,
    workers: int = 1,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Render this shard's share of ``sources`` into ``out_dir``; returns the finished object folders.

    Objects ``i`` with ``i % world_size == rank`` belong to this shard; finished objects are skipped.
    """
    if rank is None or world_size is None:
        rank, world_size = shard_from_env()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mine = [s for i, s in enumerate(sources) if i % world_size == rank]
    bar = tqdm(total=len(mine), desc=f"render [{rank}/{world_size}]", unit="obj", disable=not progress)
    done: list[Path] = []
    if workers <= 1:
        for s in mine:
            done.append(render_object(s, out, settings))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            for folder in pool.map(render_object, mine, [out] * len(mine), [settings] * len(mine)):
                done.append(folder)
                bar.update()
    bar.close()
    return done


def write_webdataset(object_dirs: list[Path], pattern: str, max_count: int = 1000) -> None:
    """Pack rendered objects into WebDataset tar shards (``pattern`` like ``out/shard-%06d.tar``).

    One sample per object, keyed by its name: ``grid.png``, ``rig_000.png`` ... ``rig_270.png``,
    ``random_NNNN.png``, ``cameras.json`` and ``caption.txt`` when present.
    """
    import webdataset as wds

    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(pattern, maxcount=max_count, verbose=0) as sink:
        for folder in object_dirs:
            sample: dict[str, object] = {"__key__": folder.name}
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    sample[str(f.relative_to(folder)).replace("/", "_")] = f.read_bytes()
            sink.write(sample)
