"""The on-disk index of rendered objects: one JSON record per line (JSONL).

The dataset renderer writes, per object, ``ROOT/NAME/rig/000.png 090.png 180.png 270.png`` (RGBA
renders of the orthogonal rig, azimuths 0/90/180/270 at the rig elevation, see
`fourview.cameras`), ``ROOT/NAME/grid.png`` and, for synthetic objects, ``ROOT/NAME/caption.txt``.
`scan_objects` turns such a folder into unscored records; `fourview.data.filter.build_manifest`
captions and scores them; `write_manifest` / `read_manifest` store them.

A manifest line looks like::

    {"name": "mug_01", "path": "renders/mug_01", "caption": "a red mug", "caption_source": "caption.txt",
     "clip_score": 27.1, "aesthetic": [4.1, 3.9, 4.0, 4.2], "aesthetic_mean": 4.05, "svm_score": null,
     "unavailable": {"svm_score": "quality SVM not given: pass --svm PATH"}}

Scores that could not be computed are ``null`` and carry a reason under ``unavailable``; a score is
never replaced by another number under the same name. ``aesthetic_mean`` is derived (written for
readers of the file, checked on reading).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from fourview.atomic import write_text_atomic
from fourview.cameras import RIG_AZIMUTHS_DEG
from fourview.errors import InputError

ScoreKey = Literal["clip_score", "aesthetic", "svm_score"]
"""Names of the scores a record carries. ``aesthetic`` ranks by the mean over the 4 rig views."""

SCORE_KEYS: tuple[str, ...] = ("clip_score", "aesthetic", "svm_score")

RIG_VIEW_NAMES: tuple[str, ...] = tuple(f"{int(az):03d}.png" for az in RIG_AZIMUTHS_DEG)
"""File names of the rig views under ``NAME/rig/``, in rig order (az 0, 90, 180, 270)."""

_FIELDS = ("name", "path", "caption", "caption_source", "clip_score", "aesthetic", "svm_score", "unavailable")
_DERIVED = ("aesthetic_mean",)


@dataclass(frozen=True)
class ObjectRecord:
    """One rendered object and its caption and scores.

    Attributes:
        name: the object's folder name under the render root; unique within a manifest.
        path: the object's folder, as given when the manifest was built (absolute, or relative to
            the working directory of that run).
        caption: text caption, or None when none is known.
        caption_source: where the caption came from: ``"caption.txt"``, ``"spec.json"``,
            ``"captioner"``, or ``""`` when there is no caption.
        clip_score: CLIP score between the caption and the 4 rig views (``100 * max(cos, 0)``
            averaged over the views, in [0, 100]), or None when unavailable.
        aesthetic: LAION aesthetic predictor score of each rig view (az 0, 90, 180, 270; roughly
            1..10), or None when unavailable.
        svm_score: signed decision value of the quality SVM (> 0: classified good), or None.
        unavailable: score name (one of `SCORE_KEYS`) -> why that score is None. A score that has
            a value must not be listed here; a None score missing from it has not been computed.
    """

    name: str
    path: str
    caption: str | None = None
    caption_source: str = ""
    clip_score: float | None = None
    aesthetic: tuple[float, float, float, float] | None = None
    svm_score: float | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"record name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.path, str) or not self.path:
            raise InputError(f"record {self.name!r}: path must be a non-empty string, got {self.path!r}")
        if self.caption is not None and not isinstance(self.caption, str):
            raise InputError(f"record {self.name!r}: caption must be a string or null, got {self.caption!r}")
        if not isinstance(self.caption_source, str):
            raise InputError(f"record {self.name!r}: caption_source must be a string, got {self.caption_source!r}")
        for key in ("clip_score", "svm_score"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _finite(value, f"record {self.name!r}: {key}"))
        if self.aesthetic is not None:
            if not isinstance(self.aesthetic, Sequence) or len(self.aesthetic) != len(RIG_VIEW_NAMES):
                raise InputError(
                    f"record {self.name!r}: aesthetic must hold one score per rig view "
                    f"({len(RIG_VIEW_NAMES)}), got {self.aesthetic!r}"
                )
            values = tuple(_finite(v, f"record {self.name!r}: aesthetic") for v in self.aesthetic)
            object.__setattr__(self, "aesthetic", values)
        if not isinstance(self.unavailable, Mapping):
            raise InputError(f"record {self.name!r}: unavailable must be an object, got {self.unavailable!r}")
        reasons = dict(self.unavailable)
        for key, reason in reasons.items():
            if key not in SCORE_KEYS:
                raise InputError(f"record {self.name!r}: unknown score {key!r} in unavailable (known: {SCORE_KEYS})")
            if not isinstance(reason, str) or not reason:
                raise InputError(f"record {self.name!r}: the reason for unavailable {key} must be a non-empty string")
            if getattr(self, key) is not None:
                raise InputError(f"record {self.name!r}: {key} has a value and is also listed as unavailable")
        object.__setattr__(self, "unavailable", reasons)

    @property
    def aesthetic_mean(self) -> float | None:
        """Mean aesthetic score over the 4 rig views, or None when unavailable."""
        if self.aesthetic is None:
            return None
        return math.fsum(self.aesthetic) / len(self.aesthetic)

    def score(self, key: ScoreKey) -> float | None:
        """The score named ``key`` (``aesthetic`` gives the mean over the views), or None."""
        if key == "clip_score":
            return self.clip_score
        elif key == "aesthetic":
            return self.aesthetic_mean
        elif key == "svm_score":
            return self.svm_score
        raise InputError(f"unknown score {key!r}; choose one of {', '.join(SCORE_KEYS)}")

    def missing_reason(self, key: ScoreKey) -> str:
        """Why the score ``key`` is None (``"not computed"`` when no reason was recorded)."""
        return self.unavailable.get(key, "not computed")

    def to_json(self) -> dict:
        """The JSON object written on this record's manifest line."""
        return {
            "name": self.name,
            "path": self.path,
            "caption": self.caption,
            "caption_source": self.caption_source,
            "clip_score": self.clip_score,
            "aesthetic": None if self.aesthetic is None else list(self.aesthetic),
            "aesthetic_mean": self.aesthetic_mean,
            "svm_score": self.svm_score,
            "unavailable": dict(self.unavailable),
        }

    @classmethod
    def from_json(cls, data: object, where: str = "record") -> ObjectRecord:
        """Parse one manifest line's object; unknown keys are errors.

        Args:
            data: the decoded JSON object.
            where: location for error messages, e.g. ``"manifest.jsonl:3"``.

        Raises:
            InputError: not an object, unknown or missing keys, bad values, or an
                ``aesthetic_mean`` that disagrees with ``aesthetic``.
        """
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS) - set(_DERIVED))
        if unknown:
            raise InputError(f"{where}: unknown keys {unknown} (known: {list(_FIELDS)})")
        for key in ("name", "path"):
            if key not in data:
                raise InputError(f"{where}: missing key {key!r}")
        kwargs = {k: data[k] for k in _FIELDS if k in data}
        if kwargs.get("aesthetic") is not None:
            if not isinstance(kwargs["aesthetic"], list):
                raise InputError(f"{where}: aesthetic must be a list of {len(RIG_VIEW_NAMES)} numbers or null")
            kwargs["aesthetic"] = tuple(kwargs["aesthetic"])
        try:
            record = cls(**kwargs)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        stored_mean = data.get("aesthetic_mean")
        mean = record.aesthetic_mean
        consistent = (stored_mean is None and mean is None) or (
            mean is not None
            and isinstance(stored_mean, (int, float))
            and abs(stored_mean - mean) <= 1e-6 * max(1.0, abs(mean))
        )
        if not consistent:
            raise InputError(
                f"{where}: aesthetic_mean {stored_mean!r} does not match the mean of aesthetic ({mean!r})"
            )
        return record


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def write_manifest(path: str | os.PathLike, records: Iterable[ObjectRecord]) -> Path:
    """Write records as JSONL (one object per line), atomically (`fourview.atomic.write_text_atomic`).

    Raises:
        InputError: two records share a name, or the folder cannot be written.
    """
    path = Path(path)
    records = list(records)
    _check_unique(records, str(path))
    lines = [json.dumps(r.to_json(), ensure_ascii=False, allow_nan=False) + "\n" for r in records]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot write manifest {path}: {err.strerror or err}") from None
    return write_text_atomic(path, "".join(lines))


def read_manifest(path: str | os.PathLike) -> list[ObjectRecord]:
    """Read a JSONL manifest written by `write_manifest` (blank lines are skipped).

    Raises:
        InputError: missing file, invalid JSON, a bad record (with its line number) or duplicate names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
            records.append(ObjectRecord.from_json(data, where=f"{path}:{lineno}"))
    _check_unique(records, str(path))
    return records


def _check_unique(records: Sequence[ObjectRecord], where: str) -> None:
    seen: set[str] = set()
    for r in records:
        if r.name in seen:
            raise InputError(f"{where}: two records are named {r.name!r}")
        seen.add(r.name)


def rig_view_paths(obj_dir: str | os.PathLike) -> list[Path]:
    """Paths of an object's 4 rig renders ``obj_dir/rig/{000,090,180,270}.png``, in rig order."""
    return [Path(obj_dir) / "rig" / n for n in RIG_VIEW_NAMES]


def scan_objects(root: str | os.PathLike) -> list[ObjectRecord]:
    """Unscored records for every rendered object under ``root``, sorted by name.

    An object is a sub-folder of ``root`` holding a ``rig/`` folder; other entries are ignored, and
    so are hidden folders (the renderer's objects still being written, `fourview.atomic.atomic_folder`).

    Raises:
        InputError: ``root`` is not a folder, holds no objects, or an object lacks a rig view.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"render folder not found: {root}")
    records = []
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for obj_dir in (p for p in candidates if (p / "rig").is_dir()):
        for view in rig_view_paths(obj_dir):
            if not view.is_file():
                raise InputError(f"object {obj_dir.name}: missing rig view {view}")
        records.append(ObjectRecord(name=obj_dir.name, path=str(obj_dir)))
    if not records:
        raise InputError(f"no rendered objects under {root} (expected {root}/NAME/rig/{RIG_VIEW_NAMES[0]} ...)")
    return records


def load_rig_views(obj_dir: str | os.PathLike) -> list[Image.Image]:
    """The object's 4 rig renders as RGBA PIL images, in rig order (az 0, 90, 180, 270).

    Raises:
        InputError: a view is missing or not a readable image.
    """
    views = []
    for view in rig_view_paths(obj_dir):
        if not view.is_file():
            raise InputError(f"missing rig view {view}")
        try:
            with Image.open(view) as im:
                views.append(im.convert("RGBA"))
        except OSError as err:
            raise InputError(f"cannot read rig view {view}: {err}") from None
    return views


def rgb_on_white(image: Image.Image) -> Image.Image:
    """The image composited over a white background, as RGB (what image models see)."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
