"""Where weights come from: ``demo`` (shipped in the package), a local folder, or a hub id.

The one resolver every loader uses. ``demo`` names the weights trained by the project's own code
and shipped in ``fourview/weights/`` (docs/training.md); a folder is used as it is (it must hold the
kind's marker file); ``owner/name`` is a Hugging Face hub id, downloaded (or found in the cache)
by the loader that needs it; `hub_error` words its failure and `quiet_hub_logs` keeps the hub
libraries' own warnings out of the way.

Weights are safetensors only: a pickled file (``.bin``, ``.pt``, ``.ckpt``...) is refused with the
command that converts it, and never read (unpickling can run any code, even with torch's restricted
unpickler in between). Every check here reads file names and safetensors headers, never weights, so
the commands make them before any model loads.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fourview.errors import InputError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""The shipped demo weights."""

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""A hub repository id ``owner/name``."""

WeightsKind = Literal["mvgen", "student", "recon"]


PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Suffixes of weight files that are Python pickles: refused, never read."""


@dataclass(frozen=True)
class _Kind:
    what: str  # for messages
    demo_folder: str
    marker: str  # a file every folder of this kind holds
    weights: str | None = None  # the one weights file of a folder of this kind (mvgen: one per component)
    from_hub: bool = True  # whether a hub id can name weights of this kind (a student's are local)


_KINDS: dict[str, _Kind] = {
    "mvgen": _Kind("mvgen", "mvgen-demo", "model_index.json"),
    "student": _Kind("student", "mvgen-demo-lcm", "pytorch_lora_weights.safetensors", from_hub=False),
    "recon": _Kind("reconstructor", "recon-demo", "config.json", "model.safetensors"),
}


@dataclass(frozen=True)
class WeightsSource:
    """Resolved weights: a local folder, or a hub id to download.

    Attributes:
        name: what the user gave (``demo``, a path, an id), for ``meta.json`` and messages.
        path: the local folder, or None for a hub id.
        hub_id: the hub id, or None for a folder.
    """

    name: str
    path: Path | None
    hub_id: str | None

    @property
    def location(self) -> str:
        """The folder or hub id, as loaders take it."""
        return str(self.path) if self.path is not None else str(self.hub_id)


def demo_folder(kind: WeightsKind) -> Path:
    """The folder of the shipped demo weights of ``kind``."""
    return WEIGHTS_DIR / _KINDS[kind].demo_folder


def resolve_weights(name_or_path: str | Path, kind: WeightsKind) -> WeightsSource:
    """Resolve ``demo``, a folder or a hub id for weights of ``kind``; checks files, loads nothing.

    Raises:
        InputError: the demo weights missing from the installation; a folder without the kind's
            marker or weights file, or with pickled or unreadable weights (`check_weight_files`); a
            pickled file; something that is neither an existing folder nor a hub id; a hub id with
            no cached copy while offline.
    """
    spec = _KINDS[kind]
    name = str(name_or_path)
    if name == "demo":
        folder = demo_folder(kind)
        if not (folder / spec.marker).is_file():
            raise InputError(f"the shipped demo {spec.what} is missing from the installation ({folder})")
        return WeightsSource(name, folder, None)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
            raise pickle_error(path, spec.weights or f"{path.stem}.safetensors")
        if not (path.is_dir() and (path / spec.marker).is_file()):
            raise InputError(f"{spec.what} weights must be a folder with {spec.marker}: {path}")
        check_weight_files(path, spec.what, spec.weights)
        return WeightsSource(name, path, None)
    if not HUB_ID.match(name):
        raise InputError(f"{spec.what} weights not found: {name} is neither a folder nor a hub id 'owner/name'")
    if spec.from_hub:
        check_cached_when_offline(f"{spec.what} weights", name, spec.marker)
    return WeightsSource(name, None, name)


def resolve_lora(name_or_path: str | Path) -> str:
    """Check LoRA weights (diffusers' format) before any model loads: a ``.safetensors`` file, a folder
    holding one, or a hub id; returns what the loader takes.

    Raises:
        InputError: a pickled file or a folder of pickles (with how to convert them), another kind
            of file, a folder without a ``.safetensors`` file, an unreadable header, a name that is
            neither a path nor a hub id, or a hub id not cached while offline.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise pickle_error(path, f"{path.stem}.safetensors")
        if path.suffix != ".safetensors":
            raise InputError(f"LoRA weights must be a .safetensors file or a folder holding one: {path}")
        check_safetensors(path, "LoRA")
        return str(path)
    if path.is_dir():
        check_weight_files(path, "LoRA")
        if not any(path.glob("*.safetensors")):
            raise InputError(f"LoRA weights must be a .safetensors file or a folder holding one: {path}")
        return str(path)
    if not HUB_ID.match(name):
        raise InputError(f"LoRA weights not found: {name} is neither a file, a folder nor a hub id 'owner/name'")
    check_cached_when_offline("LoRA weights", name, "pytorch_lora_weights.safetensors")
    return name


def check_weight_files(folder: Path, what: str, weights: str | None = None) -> None:
    """Refuse a weights folder whose weights (in it or its components' folders) are pickles or broken safetensors.

    A folder (or component folder) with both keeps its safetensors: the loaders take those. Reads
    names and safetensors headers only.

    Args:
        folder: the weights folder.
        what: the kind of weights, for messages.
        weights: the one weights file the folder must hold (e.g. ``model.safetensors``), or None.

    Raises:
        InputError: one line naming the file, and for a pickle how to convert it.
    """
    for part in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        files = sorted(p for p in part.iterdir() if p.is_file())
        safe = [p for p in files if p.suffix == ".safetensors"]
        pickled = [p for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickled and not safe:
            target = weights if part == folder and weights else _safetensors_name(pickled[0])
            raise pickle_error(pickled[0], target)
        for file in safe:
            check_safetensors(file, what)
    if weights is not None and not (folder / weights).is_file():
        raise InputError(f"{what} weights must be a folder with {weights}: {folder}")


def check_safetensors(path: Path, what: str) -> None:
    """Refuse a ``.safetensors`` file whose header is broken or does not cover the file (truncated, not one).

    Raises:
        InputError: one line naming the file.
    """
    from safetensors import SafetensorError, safe_open  # reads the header only; no torch

    try:
        with safe_open(str(path), framework="np"):
            pass
    except (SafetensorError, OSError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise InputError(f"cannot read {what} weights {path}: {first}") from None


def pickle_error(path: Path, target: str) -> InputError:
    """The one-line refusal of a pickled weights file, with the command that converts it into ``target``."""
    out = path.with_name(target)
    return InputError(
        f"{path} is a pickled weights file ({path.suffix}): fourview reads safetensors only and never unpickles; "
        f'if you trust it, convert it with: python -c "import torch, safetensors.torch as st; '
        f"st.save_file(torch.load('{path}', weights_only=True), '{out}')\""
    )


def _safetensors_name(path: Path) -> str:
    """The safetensors name the loaders look for in place of a pickled file (transformers' and diffusers')."""
    return "model.safetensors" if path.name == "pytorch_model.bin" else f"{path.stem}.safetensors"


def check_cached_when_offline(what: str, hub_id: str, marker: str) -> None:
    """Offline (``HF_HUB_OFFLINE``), refuse a hub id with no cached copy before any model loads.

    Raises:
        InputError: one line naming the id.
    """
    # huggingface_hub imports httpx (0.1 s): only for a hub id, so that resolving folders stays cheap.
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.is_offline_mode() and not isinstance(try_to_load_from_cache(hub_id, marker), str):
        raise InputError(
            f"cannot get {what} {hub_id!r} from the hub: offline (HF_HUB_OFFLINE) and no cached copy found"
        )


_OFFLINE = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError", "ConnectTimeout", "ConnectionError"}
_NO_REPO = {"RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"}
_HUB_LOGGERS = ("huggingface_hub", "diffusers", "transformers")


def hub_error(what: str, hub_id: str, err: BaseException) -> InputError:
    """The one-line error for a hub id that could not be fetched.

    Args:
        what: the kind of weights, for the message (``reconstructor``, ``mvgen weights``...).
        hub_id: the id the user gave.
        err: what the download (or the loader that downloads) raised.
    """
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [err]
    while todo:  # the error and every cause and context behind it (diffusers wraps the hub's errors)
        e = todo.pop()
        if e is not None and all(e is not c for c in chain):
            chain.append(e)
            todo += [e.__cause__, e.__context__]
    # By class name: huggingface_hub.errors imports httpx (0.1 s), and this module stays cheap to import.
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    if names & _NO_REPO:
        reason = "no such repository or revision on the hub, or no access to it"
    elif names & _OFFLINE:
        reason = "no network connection and no cached copy found"
    else:
        reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    return InputError(f"cannot get {what} {hub_id!r} from the hub: {reason}")


@contextlib.contextmanager
def quiet_hub_logs() -> Iterator[None]:
    """Inside: huggingface_hub's, diffusers' and transformers' own warnings silenced.

    For a download whose failure `hub_error` reports in one line: their retry and fallback
    warnings would say the same thing at length first.
    """
    loggers = [logging.getLogger(name) for name in _HUB_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
