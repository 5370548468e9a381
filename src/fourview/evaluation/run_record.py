"""What the resumable benchmarks (`gso_benchmark`, `text_benchmark`) keep beside their records.

A benchmark's output folder holds one JSON record per finished item and ``settings.json``, the
settings those records were made with: a rerun resumes in the folder only with the same settings
(`check_settings`). Each record reads back with `read_record`; each summary names the machine
(`machine_record`) and each record the process's peak resident memory (`peak_rss_mb`).
"""

from __future__ import annotations

import json
import os
import platform
import resource
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from fourview.atomic import write_text_atomic
from fourview.errors import InputError

Record = TypeVar("Record")


def check_settings(path: Path, settings: dict) -> None:
    """Refuse to add records to a folder holding records made with other settings; write them where there are none.

    Args:
        path: the folder's ``settings.json``.
        settings: the run's settings as they read back from JSON (lists, not tuples).

    Raises:
        InputError: ``path`` cannot be read, or holds other settings (the message names the keys that differ).
    """
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read {path}: {error}") from None
        changed = sorted(k for k in {*before, *settings} if before.get(k) != settings.get(k))
        if changed:
            raise InputError(
                f"{path.parent} holds results made with other settings ({', '.join(changed)}); "
                "use another output folder"
            )
        return
    write_text_atomic(path, json.dumps(settings, indent=1) + "\n")


def read_record(path: Path, from_json: Callable[[dict], Record], item: str) -> Record | None:
    """The record at ``path`` (None where there is none yet), built by ``from_json`` from its JSON object.

    Args:
        item: what a record is of (``object``, ``prompt``), for the message.

    Raises:
        InputError: the file cannot be read or does not hold a record.
    """
    if not path.is_file():
        return None
    try:
        return from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, TypeError) as error:
        raise InputError(f"cannot read the record {path}: {error}; delete it to redo the {item}") from None


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, MB (it never decreases)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def machine_record(device: str) -> dict:
    """The machine a summary was made on: host, platform, Python, torch, CPUs and threads, ``device`` (and its GPU)."""
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
