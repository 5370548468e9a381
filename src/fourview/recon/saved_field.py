"""A reconstruction on disk: one object's triplanes plus the decoder that reads them.

`fourview reconstruct` writes it to ``DIR/reconstruction/`` so that `fourview export` can
re-export the object (other formats, face budgets, texture sizes) without running the U-Net:

    reconstruction/config.json          the ReconConfig of the model (decoder and plane sizes)
    reconstruction/field.safetensors    planes [3, C, R, R], texture_planes (split configs), decoder.*,
                                        bound.* (the silhouettes a carved field stays inside) and its
                                        scale in the metadata, restore.* (the silhouette pixels whose
                                        part of the hull a restored field adds)
    reconstruction/views.npz            the input views with their cameras, when they were projected
                                        onto the texture (`fourview.views.PosedViews`)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fourview.atomic import atomic_path, write_text_atomic
from fourview.errors import InputError
from fourview.recon.carving import SilhouetteBound
from fourview.recon.config import ReconConfig
from fourview.recon.decoder import TriplaneDecoder, TriplaneField
from fourview.views import PosedViews

FIELD_NAME = "field.safetensors"
CONFIG_NAME = "config.json"
VIEWS_NAME = "views.npz"


def save_field(directory: str | Path, field: TriplaneField, config: ReconConfig, metadata: dict | None = None) -> Path:
    """Write ``field`` (planes and decoder weights) and ``config`` into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {"planes": field.planes[0].detach().contiguous().cpu()}
    if field.texture_planes is not None:
        tensors["texture_planes"] = field.texture_planes[0].detach().contiguous().cpu()
    for name, value in field.decoder.state_dict().items():
        tensors[f"decoder.{name}"] = value.detach().contiguous().cpu()
    meta = {"format": "pt", "library": "fourview", **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    if field.outer_bound is not None:
        tensors.update({f"bound.{k}": v.contiguous().cpu() for k, v in field.outer_bound.tensors().items()})
        meta["bound_scale"] = json.dumps(field.bound_scale)
    if field.restore is not None:
        tensors.update({f"restore.{k}": v.contiguous().cpu() for k, v in field.restore.tensors().items()})
    with atomic_path(out / FIELD_NAME) as tmp:  # safetensors alone writes 0600 files
        save_file(tensors, str(tmp), metadata=meta)
    write_text_atomic(out / CONFIG_NAME, config.to_json() + "\n")
    return out


def load_field_config(directory: str | Path) -> ReconConfig:
    """The `ReconConfig` saved with a field (in ``directory`` or its ``reconstruction/`` folder).

    Raises:
        InputError: the folder holds no saved field, or its config cannot be read.
    """
    folder = _reconstruction_folder(directory)
    if not (folder / FIELD_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        raise InputError(f"no saved reconstruction in {directory} (expected {FIELD_NAME} and {CONFIG_NAME})")
    try:
        return ReconConfig.from_json((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {folder / CONFIG_NAME}: {' '.join(str(e).split())}") from None


def load_field_metadata(directory: str | Path) -> dict:
    """The ``metadata`` given to `save_field` (JSON values decoded; empty for a field saved without).

    Raises:
        InputError: the folder holds no saved field, or the file cannot be read.
    """
    path = _reconstruction_folder(directory) / FIELD_NAME
    if not path.is_file():
        raise InputError(f"no saved reconstruction in {directory} (expected {FIELD_NAME})")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (OSError, SafetensorError) as e:
        raise InputError(f"cannot read {path}: {' '.join(str(e).split())}") from None
    out = {}
    for key, value in raw.items():
        if key in ("format", "library"):
            continue
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_field(directory: str | Path, device: str | torch.device = "cpu") -> TriplaneField:
    """Read a field written by `save_field` (or a ``fourview reconstruct`` output folder holding one).

    Raises:
        InputError: the folder or its files are missing or unreadable.
    """
    folder = _reconstruction_folder(directory)
    config = load_field_config(folder)
    try:
        tensors = load_file(str(folder / FIELD_NAME), device=str(device))
    except (OSError, SafetensorError) as e:
        raise InputError(f"cannot read {folder / FIELD_NAME}: {' '.join(str(e).split())}") from None
    decoder = TriplaneDecoder.for_unet(config.decoder, config.unet).to(device)
    state = {k.removeprefix("decoder."): v for k, v in tensors.items() if k.startswith("decoder.")}
    try:
        decoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"{folder / FIELD_NAME} does not match its config: {str(e).splitlines()[0]}") from None
    if "planes" not in tensors:
        raise InputError(f"{folder / FIELD_NAME} holds no planes")
    decoder.eval()
    field = TriplaneField(decoder, tensors["planes"], tensors.get("texture_planes"))
    bound = {k.removeprefix("bound."): v for k, v in tensors.items() if k.startswith("bound.")}
    restore = {k.removeprefix("restore."): v for k, v in tensors.items() if k.startswith("restore.")}
    if not bound:
        if restore:
            raise InputError(f"{folder / FIELD_NAME} holds restored silhouettes without the bound they restore from")
        return field
    scale = load_field_metadata(folder).get("bound_scale")
    if not isinstance(scale, (int, float)) or not scale > 0:
        raise InputError(f"{folder / FIELD_NAME} holds a silhouette bound without a valid bound_scale")
    field = field.carved(SilhouetteBound.from_tensors(bound), float(scale))
    return field.restored(SilhouetteBound.from_tensors(restore)) if restore else field


def load_saved_views(directory: str | Path) -> PosedViews | None:
    """The views saved beside a field (``views.npz``), or None when none were saved.

    Raises:
        InputError: the file exists but cannot be read.
    """
    path = _reconstruction_folder(directory) / VIEWS_NAME
    return PosedViews.load(path) if path.is_file() else None


def _reconstruction_folder(directory: str | Path) -> Path:
    """``directory`` itself, or its ``reconstruction/`` when it is a ``fourview reconstruct`` output folder."""
    folder = Path(directory)
    return folder / "reconstruction" if (folder / "reconstruction" / FIELD_NAME).is_file() else folder
