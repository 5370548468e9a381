"""Prompt sets of the text-to-3D benchmark: the shipped public sets, the synthetic world's, or a user's file.

A set is named by what ``--prompts`` takes:

- a shipped public set, by its file's stem in `PROMPTS_DIR` (``df415``, ``gpteval3d_110``,
  ``t3bench_prompt_single``, ``t3bench_prompt_surr``, ``t3bench_prompt_multi``; `shipped_prompt_sets`);
  where each comes from and under which licence is in ``prompts/SOURCES.md`` and ``prompts/README.md``;
- ``synthetic_heldout`` / ``synthetic_train``: `SYNTHETIC_COUNT` specs of the synthetic world
  (`fourview.data.synthetic.sample_spec`, seeds 0 .. 33, the held-out shape-colour combinations
  or the training ones), the prompt being the spec's caption, with its shape and colour, which
  the colour/shape adherence scores need (the specs `benchmarks/bench_prompt_adherence.py` draws);
- a file: ``.txt`` (one prompt per line; blank lines and lines starting with ``#`` skipped),
  ``.json`` (a list of prompts or of records, or an object holding one such list, as threestudio's
  ``prompt_library.json``) or ``.jsonl`` (one record per line). A record is ``{"prompt": ...}``
  with optional ``name`` (the asset's folder) and ``shape`` and ``colour`` (words of the synthetic
  world: `fourview.data.synthetic.SHAPES`, `COLOURS`) that mark the prompt as one of the world's.

A name given that is also an existing path is read as the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from fourview.data.synthetic import COLOURS, SHAPES, caption, sample_spec
from fourview.errors import InputError

PROMPTS_DIR: Path = Path(__file__).resolve().parent / "prompts"
"""The shipped public prompt sets (``NAME.txt``) with their attribution (``SOURCES.md``, ``README.md``)."""
SYNTHETIC_SETS: dict[str, str] = {"synthetic_heldout": "heldout", "synthetic_train": "train"}
"""The synthetic world's sets: name -> split of `fourview.data.synthetic.sample_spec`."""
SYNTHETIC_COUNT: int = 34
"""Specs in a synthetic set (seeds 0 .. 33), as `benchmarks/bench_prompt_adherence.py` draws by default."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
"""Names a record may give its asset folder."""


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a set.

    Attributes:
        name: its asset's folder name, unique in the set (``NNNN_words`` unless the record names it).
        prompt: the text.
        shape: the synthetic world's shape the prompt asks for, when it is one of the world's.
        colour: the synthetic world's colour word, likewise.
    """

    name: str
    prompt: str
    shape: str | None = None
    colour: str | None = None

    @property
    def synthetic(self) -> bool:
        """Whether the colour/shape adherence scores apply (both words known)."""
        return self.shape is not None and self.colour is not None


@dataclass(frozen=True)
class PromptSet:
    """The prompts of one ``--prompts`` value, in file order.

    Attributes:
        name: the shipped set's name, or the file's path.
        items: the prompts.
        digest: SHA-256 of the prompts and their fields (a rerun on another set is refused).
    """

    name: str
    items: tuple[PromptItem, ...]

    @property
    def digest(self) -> str:
        text = json.dumps([[i.name, i.prompt, i.shape, i.colour] for i in self.items])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def prompts(self) -> list[str]:
        """The distinct prompts, in order of first appearance (the retrieval set of CLIP R-precision)."""
        return list(dict.fromkeys(i.prompt for i in self.items))


def shipped_prompt_sets() -> list[str]:
    """Names of the shipped public sets and of the synthetic world's sets."""
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.txt")) + list(SYNTHETIC_SETS)


def read_prompt_set(spec: str) -> PromptSet:
    """The set ``spec`` names (the module docstring).

    Raises:
        InputError: an unknown name, a file that cannot be read, a bad record, no prompts, or two
            items with one folder name.
    """
    path = Path(spec)
    if not path.exists() and spec in SYNTHETIC_SETS:
        return synthetic_prompt_set(SYNTHETIC_SETS[spec], name=spec)
    if not path.exists() and (PROMPTS_DIR / f"{spec}.txt").is_file():
        return _from_records(spec, _read_records(PROMPTS_DIR / f"{spec}.txt"))
    if not path.is_file():
        raise InputError(f"--prompts {spec}: no such file, and not a shipped set ({', '.join(shipped_prompt_sets())})")
    return _from_records(str(path), _read_records(path))


def synthetic_prompt_set(split: str, count: int = SYNTHETIC_COUNT, first_seed: int = 0, name: str = "") -> PromptSet:
    """``count`` specs of the world's ``split`` (seeds ``first_seed`` on): captions with their shape and colour."""
    specs = [sample_spec(first_seed + i, split) for i in range(count)]
    records = [{"prompt": caption(s), "shape": s.shape, "colour": s.colour} for s in specs]
    return _from_records(name or f"synthetic_{split}", records)


def item_name(index: int, prompt: str) -> str:
    """The default folder name of a prompt: its index (4 digits) and its first words, lower case, ``a-z0-9_`` only."""
    words = "_".join(re.findall(r"[a-z0-9]+", prompt.lower()))[:40].rstrip("_")
    return f"{index:04d}_{words}" if words else f"{index:04d}"


def _read_records(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the prompts {path}: {error}") from None
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                records.append(_json(line, f"{path}:{number}"))
        return records
    if path.suffix == ".json":
        data = _json(text, str(path))
        if isinstance(data, dict):  # {"dreamfusion": [...]}: one list of prompts
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise InputError(f"{path}: a JSON object must hold exactly one list of prompts, found {len(lists)}")
            data = lists[0]
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of prompts or records")
        return [{"prompt": r} if isinstance(r, str) else r for r in data]
    lines = [line.strip() for line in text.splitlines()]
    return [{"prompt": line} for line in lines if line and not line.startswith("#")]


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not JSON ({error.msg} at line {error.lineno})") from None


def _from_records(name: str, records: list) -> PromptSet:
    items: list[PromptItem] = []
    for index, record in enumerate(records):
        where = f"{name}: prompt {index + 1}"
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise InputError(f"{where}: expected a non-empty prompt (a string, or a record with 'prompt')")
        unknown = sorted(set(record) - {"prompt", "name", "shape", "colour"})
        if unknown:
            raise InputError(f"{where}: unknown keys {', '.join(unknown)} (expected prompt, name, shape, colour)")
        shape, colour = record.get("shape"), record.get("colour")
        if shape is not None and shape not in SHAPES:
            raise InputError(f"{where}: shape {shape!r} is not one of the synthetic world's: {', '.join(SHAPES)}")
        if colour is not None and colour not in COLOURS:
            raise InputError(f"{where}: colour {colour!r} is not one of the synthetic world's: {', '.join(COLOURS)}")
        folder = record.get("name", item_name(index, record["prompt"]))
        if not isinstance(folder, str) or not NAME_PATTERN.fullmatch(folder):
            raise InputError(f"{where}: name {folder!r} must be 1-100 of A-Z a-z 0-9 _ . - (not starting with . _ -)")
        items.append(PromptItem(folder, " ".join(record["prompt"].split()), shape, colour))
    if not items:
        raise InputError(f"{name}: no prompts")
    seen: dict[str, int] = {}
    for item in items:
        seen[item.name] = seen.get(item.name, 0) + 1
    twice = sorted(n for n, k in seen.items() if k > 1)
    if twice:
        raise InputError(f"{name}: names used twice: {', '.join(twice[:5])}")
    return PromptSet(name, tuple(items))
