"""Where weights come from: ``demo`` (shipped in the package), a local folder, or a hub id.

The one resolver every loader uses. ``demo`` names the weights trained by the project's own code
and shipped in ``fourview/weights/`` (docs/training.md); a folder is used as it is (it must hold the
kind's marker file); ``owner/name`` is a Hugging Face hub id, downloaded (or found in the cache)
by the loader that needs it; `hub_error` words its failure and `quiet_hub_logs` keeps the hub
libraries' own warnings out of the way.
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


@dataclass(frozen=True)
class _Kind:
    what: str  # for messages
    demo_folder: str
    marker: str  # a file every folder of this kind holds


_KINDS: dict[str, _Kind] = {
    "mvgen": _Kind("mvgen", "mvgen-demo", "model_index.json"),
    "student": _Kind("student", "mvgen-demo-lcm", "pytorch_lora_weights.safetensors"),
    "recon": _Kind("reconstructor", "recon-demo", "config.json"),
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
        InputError: the demo weights missing from the installation, a folder without the kind's
            marker file, or something that is neither an existing folder nor a hub id.
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
        if not (path.is_dir() and (path / spec.marker).is_file()):
            raise InputError(f"{spec.what} weights must be a folder with {spec.marker}: {path}")
        return WeightsSource(name, path, None)
    if not HUB_ID.match(name):
        raise InputError(f"{spec.what} weights not found: {name} is neither a folder nor a hub id 'owner/name'")
    return WeightsSource(name, None, name)


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
