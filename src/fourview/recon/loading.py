"""Where reconstructor weights come in: ``demo``, a local folder or a model hub (the only module that downloads them).

A pretrained reconstructor is a folder with ``config.json`` (`fourview.recon.config.ReconConfig`,
strict) and ``model.safetensors`` (the state dict of `fourview.recon.model.Reconstructor`), as
`Reconstructor.save_pretrained` writes it. Nothing is unpickled. This module finds the folder
(`resolve_pretrained`: `fourview.pretrained.resolve_weights` decides, a hub id is downloaded here)
and reads its files (`read_config`, `read_weights`, `check_weights_fit`); it needs no model class:
`Reconstructor.from_pretrained` builds the model from them, and `load_init_weights` fills a
model it is given (stage B from stage A).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from fourview.errors import InputError
from fourview.pretrained import hub_error, quiet_hub_logs, resolve_weights
from fourview.recon.config import ReconConfig

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "InitReport",
    "check_weights_fit",
    "init_config",
    "load_init_weights",
    "read_config",
    "read_weights",
    "resolve_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def resolve_pretrained(name_or_path: str | Path, revision: str | None = None) -> Path:
    """The local folder holding a pretrained reconstructor: the shipped demo, a folder, or a hub snapshot.

    Args:
        name_or_path: ``demo``, a folder, or a hub repository id ``owner/name``
            (`fourview.pretrained.resolve_weights`); a hub id is downloaded with
            ``huggingface_hub.snapshot_download``, which uses its cache and honours ``HF_HUB_OFFLINE``.
        revision: hub revision (branch, tag or commit) for a hub id.

    Raises:
        InputError: missing demo weights, a folder without ``config.json``, or a hub id that cannot
            be fetched (one line: offline without a cached copy, or no such repository).
    """
    source = resolve_weights(name_or_path, "recon")
    if source.path is not None:
        return source.path
    # huggingface_hub's download API imports its HTTP stack (a few tenths of a second): only for a hub id
    from huggingface_hub import snapshot_download

    try:
        with quiet_hub_logs():  # the one-line error below says it all
            local = snapshot_download(
                repo_id=source.hub_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]
            )
    except Exception as err:  # offline, unknown repo, no access: one line for each
        raise hub_error("reconstructor", source.location, err) from None
    return Path(local)


def read_config(folder: Path) -> ReconConfig:
    """The `ReconConfig` of a pretrained folder (strict: unknown or missing keys are errors).

    Raises:
        InputError: a missing or unreadable file, or a config `ReconConfig.from_json` rejects.
    """
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"{path} not found: a pretrained reconstructor folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
    try:
        return ReconConfig.from_json(text)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of a pretrained folder (safetensors: nothing is unpickled).

    Raises:
        InputError: a missing or unreadable file.
    """
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise InputError(f"{path} not found: a pretrained reconstructor folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise InputError(f"cannot read weights {path}: {first}") from None


def check_weights_fit(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], folder: Path) -> None:
    """Reject weights ``state`` of ``folder`` that do not fit a model's ``expected`` state dict.

    Raises:
        InputError: missing or unexpected tensors, or tensors of other shapes.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(
            f"{folder / WEIGHTS_NAME} does not fit {CONFIG_NAME}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    bad = [k for k, v in state.items() if v.shape != expected[k].shape]
    if bad:
        k = bad[0]
        raise InputError(
            f"{folder / WEIGHTS_NAME} does not fit {CONFIG_NAME}: {len(bad)} tensors have other shapes, "
            f"e.g. {k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        )


@dataclass
class InitReport:
    """What `load_init_weights` did.

    Attributes:
        copied: target parameter names that received weights with the same name and shape.
        mapped: target names filled by a stage A -> stage B mapping (decoder trunk -> split MLPs).
        skipped: target names left at their fresh initialisation.
    """

    copied: list[str] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.copied)} copied, {len(self.mapped)} mapped, {len(self.skipped)} left fresh"


def init_config(config: ReconConfig, name_or_path: str | Path) -> ReconConfig:
    """``config`` as a model initialised from these weights (`load_init_weights`) should carry it.

    An SDF decoder initialised from a density decoder takes its ``density_iso``: its SDF starts as
    ``log(density_iso) - log(density)`` of the source, and `fourview.recon.decoder.volume_density`
    reads it back with the same level. Anything else is returned unchanged.
    """
    source = read_config(resolve_pretrained(name_or_path)).decoder
    if config.decoder.geometry == "sdf" and source.geometry == "density":
        return replace(config, decoder=replace(config.decoder, density_iso=source.density_iso))
    return config


def load_init_weights(model: nn.Module, name_or_path: str | Path) -> InitReport:
    """Initialise ``model`` from other pretrained weights (stage B from stage A), as far as they fit.

    Every tensor with the same name and shape is copied. From a one-trunk decoder (stage A,
    density) into a split decoder (stage B, SDF): the trunk's hidden layers go to both MLPs where
    the shapes fit, the texture MLP's output layer takes the trunk's three colour rows, and the
    geometry MLP's output layer takes the trunk's density row as an SDF-like level function:
    ``sdf ~ log(density_iso) - raw`` (zero where the density is ``density_iso``, negative inside),
    i.e. the weights negated and the bias ``log(density_iso) - b``; its deformation rows (if any)
    start at zero, so stage B starts from stage A's surface on the regular grid. Both heads of a split
    U-Net take the single head's weights where shapes fit (the texture head by name; the geometry
    head when it sits at the top level, ``geometry_downsample=0``, as in the demo preset).
    Everything else (e.g. a geometry head at a lower resolution) keeps its fresh initialisation.

    Args:
        model: the `fourview.recon.model.Reconstructor` to initialise (in place).
        name_or_path: folder or hub id of the source weights (`Reconstructor.from_pretrained`'s layout).

    Returns:
        `InitReport`.
    """
    folder = resolve_pretrained(name_or_path)
    source_cfg = read_config(folder)
    state = read_weights(folder)
    target = model.state_dict()
    report = InitReport()
    new_state = {}
    for k, v in target.items():
        if k in state and state[k].shape == v.shape:
            new_state[k] = state[k]
            report.copied.append(k)
    if not any(k.startswith("unet.geometry_head.") for k in state):
        # From a single head: geometry planes at the same level decode from the same features.
        for k, v in target.items():
            src = state.get(k.replace("unet.geometry_head.", "unet.head.", 1))
            if k.startswith("unet.geometry_head.") and k not in new_state and src is not None and src.shape == v.shape:
                new_state[k] = src
                report.mapped.append(k)
    trunk = sorted({k.split(".")[2] for k in state if k.startswith("decoder.trunk.")}, key=int)
    has_split = any(k.startswith("decoder.geometry_mlp.") for k in target)
    if trunk and has_split:
        last = trunk[-1]
        for k, v in target.items():
            if k in new_state:
                continue
            parts = k.split(".")  # decoder.<mlp>.<layer>.<weight|bias>
            if parts[0] != "decoder" or parts[1] not in ("geometry_mlp", "texture_mlp"):
                continue
            layer, kind = parts[2], parts[3]
            src = state.get(f"decoder.trunk.{layer}.{kind}")
            if src is None:
                continue
            if layer != last:
                if src.shape == v.shape:
                    new_state[k] = src
                    report.mapped.append(k)
                continue
            if parts[1] == "texture_mlp" and src[1:4].shape == v.shape:
                new_state[k] = src[1:4]
                report.mapped.append(k)
            elif parts[1] == "geometry_mlp" and src[0:1].shape[1:] == v.shape[1:]:
                iso = math.log(source_cfg.decoder.density_iso)
                mapped = torch.zeros_like(v)  # rows after the first: the deformation head, zero = none
                mapped[0:1] = iso - src[0:1] if kind == "bias" else -src[0:1]
                new_state[k] = mapped
                report.mapped.append(k)
    report.skipped = [k for k in target if k not in new_state]
    merged = dict(target)
    merged.update({k: t.to(target[k].dtype) for k, t in new_state.items()})
    model.load_state_dict(merged)
    return report
