"""Batches: many items (prompts, photos, four views) through one loaded pipeline, resumable and sharded.

A manifest lists the items, one per line; its suffix picks the format:

- ``.jsonl`` / ``.json`` (JSON lines): one object per line, e.g. ``{"prompt": "a red mug", "seed": 3}``;
- ``.csv``: a header row naming the keys, then one row per item (empty cells are not given; four
  views go in one ``views`` cell separated by ``;``);
- anything else: plain text, one prompt per line (blank lines and lines starting with ``#`` skipped).

Keys: ``prompt``; ``image`` (a photo, with a ``prompt`` describing it); ``views`` (four rig views
az 0, 90, 180, 270, or one 2x2 grid image); ``name`` (the folder's name, made safe); and settings
that override the run's: ``seed``, ``steps``, ``guidance``, ``negative``, ``candidates`` (the
generator's; not for views), ``elevation`` (the rig's), ``method`` (surface extraction), ``faces``,
``texture_size``. Relative paths are relative to the manifest's folder. The whole manifest is
checked before any model loads; a bad line is an `InputError` naming its line. So are the inputs
of every item left to run, as the single commands check them (`check_items`: photos and views
readable and within the size limits, prompts within the text encoders' tokens): one bad item
refuses the whole run, and nothing is written. What only running an item can find (a photo whose
object cannot be cut out, a model's failure) is recorded in its result line, and the rest go on.

Seeds: an item's seed is its own ``seed``, else the run's seed plus the item's index (its position
among the manifest's items, from 0), so an item draws the same asset in any shard, order or re-run.

Output, in one folder ``DIR``::

    DIR/<name>/            one asset folder per finished item (`Asset.save`: atomic)
    DIR/results.jsonl      one JSON line per item: input, seed, model ids, steps, time per stage,
                           peak memory, vertex and face counts, files, status (done / failed + error)
    DIR/results.rank{R}-of-{W}.jsonl   a shard's own lines when sharded; rank 0 merges every
                           shard's file into results.jsonl at its end (`merge_results`)

Crash safety: a result line is appended (and synced) only after its item's folder is in place, so
a process killed at any moment loses no finished asset; the folder being assembled is a temporary
that the next run removes (`fourview.atomic.remove_stale_temporaries`), and a torn last line of the
results (no newline) is cut off. A re-run skips the items whose latest line says done and whose
folder exists; failed items run again only when asked (``retry_failed``).

Throughput: the models load once. With ``write_behind`` an item's folder (the files and the
turntable, `Asset.save`) is written by a second thread while the next item is made; the result
lines keep the items' order, and what is written does not change. The writer runs at a lower
priority (Linux): it takes the time that making the next item leaves a core free, not a core from
the sampler's threads. It is off by default: it gained nothing on the two-core CPU.

Sharding: shard ``r`` of ``W`` (torchrun / Accelerate ``RANK``, ``WORLD_SIZE``; SLURM
``SLURM_PROCID``, ``SLURM_NTASKS``) takes the items whose index ``i`` has ``i % W == r``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from fourview.asset import Asset, SaveSettings, peak_memory_mb
from fourview.atomic import TMP_MARK, check_writable, remove_stale_temporaries, write_text_atomic
from fourview.errors import InputError
from fourview.images import MIN_PHOTO_SIDE
from fourview.mvgen.prompt_check import check_prompt_lengths
from fourview.pipeline import ExportSettings, FourViewPipeline, ModelSettings, SamplingSettings, read_photo
from fourview.pretrained import resolve_weights
from fourview.views import PosedViews

try:  # POSIX: one writer per results file
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None

logger = logging.getLogger(__name__)

ItemKind = Literal["prompt", "photo", "views"]

RESULTS_NAME = "results.jsonl"
NAME_LENGTH = 80
"""Most characters of a folder name's readable part (the hash follows it)."""
HASH_LENGTH = 10
"""Hex digits of the identity hash that ends every folder name."""
LISTED_BAD_ITEMS = 5
"""Most manifest lines a refusal of several bad items lists (`check_items`)."""
WRITER_NICENESS = 10
"""How much lower the writer thread's priority is than the process's (`_lower_priority`)."""

_INPUT_KEYS: tuple[str, ...] = ("prompt", "image", "views", "name")
_SETTING_KEYS: dict[str, tuple[str, str, type]] = {
    "seed": ("sampling", "seed", int),
    "steps": ("sampling", "steps", int),
    "guidance": ("sampling", "guidance_scale", float),
    "negative": ("sampling", "negative_prompt", str),
    "candidates": ("sampling", "candidates", int),
    "elevation": ("sampling", "elevation_deg", float),
    "method": ("export", "method", str),
    "faces": ("export", "face_budget", int),
    "texture_size": ("export", "texture_size", int),
}
"""Per-item settings: manifest key -> (settings dataclass, its field, the value's type)."""
_GENERATOR_KEYS = frozenset({"steps", "guidance", "negative", "candidates"})
_KEYS = (*_INPUT_KEYS, *_SETTING_KEYS)


@dataclass(frozen=True)
class BatchItem:
    """One line of a manifest, checked, with the settings it runs with.

    Attributes:
        index: position among the manifest's items, from 0 (sharding and default seeds use it).
        line: its line in the manifest, from 1 (for messages).
        name: its output folder's name (`safe_name`).
        kind: ``prompt`` (text), ``photo`` (image + prompt) or ``views`` (four rig views or a grid).
        prompt: the text (None for views).
        image: the photo of a ``photo`` item.
        views: the view files of a ``views`` item (4, or 1 grid).
        sampling: the run's sampling settings with the item's seed and overrides.
        export: the run's export settings with the item's overrides.
    """

    index: int
    line: int
    name: str
    kind: ItemKind
    prompt: str | None
    image: Path | None
    views: tuple[Path, ...]
    sampling: SamplingSettings
    export: ExportSettings

    def input_record(self) -> dict:
        """What the item was made from, for its result line."""
        return {
            "prompt": self.prompt,
            "image": None if self.image is None else str(self.image),
            "views": [str(v) for v in self.views] or None,
        }


@dataclass(frozen=True)
class BatchSummary:
    """What `run_batch` did in one shard.

    Attributes:
        rank, world_size: the shard.
        items: this shard's items.
        done: items made in this run.
        skipped: items finished by an earlier run.
        failed: items whose latest result is a failure (this run's, or an earlier one not retried).
        results: the shard's results file.
        merged: the merged ``results.jsonl`` when this run wrote it, else None.
        load_models_s: seconds to load the models (0 when nothing was left to do).
    """

    rank: int
    world_size: int
    items: int
    done: int
    skipped: int
    failed: int
    results: Path
    merged: Path | None
    load_models_s: float


# -- the manifest ----------------------------------------------------------------------------------


def read_manifest(
    path: str | os.PathLike, sampling: SamplingSettings = SamplingSettings(), export: ExportSettings = ExportSettings()
) -> list[BatchItem]:
    """Read and check every item of a manifest (see the module docstring), before any model loads.

    Args:
        path: the manifest (``.jsonl``/``.json`` JSON lines, ``.csv`` with a header, else text).
        sampling: the run's sampling settings; ``sampling.seed + index`` seeds items without a seed.
        export: the run's export settings.

    Raises:
        InputError: an unreadable or empty manifest, or a bad line (the message names the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"manifest not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"manifest is a folder, not a file: {path}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"manifest {path} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    except OSError as e:
        raise InputError(f"cannot read manifest {path}: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = _json_lines(path, text)
    elif suffix == ".csv":
        records = _csv_rows(path, text)
    else:
        records = [(n, {"prompt": s}) for n, line in enumerate(text.splitlines(), 1) if (s := line.strip())
                   and not s.startswith("#")]  # fmt: skip
    if not records:
        raise InputError(f"manifest {path} lists no items")
    base = path.resolve().parent
    items = [_item(path, i, line, raw, base, sampling, export) for i, (line, raw) in enumerate(records)]
    seen: dict[str, BatchItem] = {}
    for item in items:  # the hash makes this all but impossible; it is still checked, not assumed
        if item.name in seen:
            raise InputError(f"{path}:{item.line}: folder name {item.name} repeats line {seen[item.name].line}'s")
        seen[item.name] = item
    return items


def _json_lines(path: Path, text: str) -> list[tuple[int, dict]]:
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(raw, dict):
            raise InputError(f'{path}:{n}: expected a JSON object such as {{"prompt": "a red mug"}}')
        records.append((n, raw))
    return records


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    unknown = [k for k in header if k not in _KEYS]
    if unknown:
        raise InputError(f"{path}:1: unknown column {unknown[0]!r}; columns are {', '.join(_KEYS)}")
    records = []
    try:
        for row in reader:
            if None in row:
                raise InputError(f"{path}:{reader.line_num}: more cells than the header has columns")
            cells = {k: v.strip() for k, v in row.items() if v is not None and v.strip()}
            if not cells:
                continue
            if "views" in cells:
                cells["views"] = [v.strip() for v in cells["views"].split(";") if v.strip()]
            records.append((reader.line_num, cells))
    except csv.Error as e:
        raise InputError(f"{path}:{reader.line_num}: {e}") from None
    return records


def _item(
    path: Path, index: int, line: int, raw: dict, base: Path, sampling: SamplingSettings, export: ExportSettings
) -> BatchItem:
    def fail(problem: str) -> InputError:
        return InputError(f"{path}:{line}: {problem}")

    unknown = [k for k in raw if k not in _KEYS]
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; keys are {', '.join(_KEYS)}")
    prompt, image, name = (_text(raw, k, fail) for k in ("prompt", "image", "name"))
    views = raw.get("views")
    if isinstance(views, str):
        views = [views]
    if views is not None and (not isinstance(views, list) or len(views) not in (1, 4)
                              or not all(isinstance(v, str) and v.strip() for v in views)):  # fmt: skip
        raise fail("'views' must be 4 image paths (az 0, 90, 180, 270) or one 2x2 grid image path")
    if views is not None and image is not None:
        raise fail("an item takes an 'image' or 'views', not both")
    if views is not None:
        kind: ItemKind = "views"
        generator_keys = sorted(_GENERATOR_KEYS & set(raw))
        if generator_keys:
            raise fail(f"'{generator_keys[0]}' is a setting of the generator; a views item does not use one")
    elif image is not None:
        kind = "photo"
        if prompt is None:
            raise fail("a photo item needs a 'prompt' describing the object")
    elif prompt is not None:
        kind = "prompt"
    else:
        raise fail("an item needs a 'prompt', an 'image' with a 'prompt', or 'views'")
    changes: dict[str, dict] = {"sampling": {"seed": sampling.seed + index}, "export": {}}
    for key, (group, field_name, kind_of) in _SETTING_KEYS.items():
        if key in raw:
            changes[group][field_name] = _typed(raw[key], kind_of, key, fail)
    try:
        item_sampling = replace(sampling, **changes["sampling"])
        item_export = replace(export, **changes["export"])
    except InputError as e:
        raise fail(str(e)) from None
    if item_export.method not in (None, "marching_cubes", "dmtet"):
        raise fail(f"'method' must be marching_cubes or dmtet, got {item_export.method!r}")
    readable = name or prompt or Path((views or [""])[0]).stem
    identity = json.dumps({"index": index, **raw}, sort_keys=True, ensure_ascii=False)
    return BatchItem(
        index=index,
        line=line,
        name=safe_name(readable, identity),
        kind=kind,
        prompt=prompt,
        image=None if image is None else _resolve(base, image),
        views=tuple(_resolve(base, v) for v in views or ()),
        sampling=item_sampling,
        export=item_export,
    )


def _text(raw: dict, key: str, fail) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise fail(f"'{key}' must be a non-empty string")
    return value.strip()


def _typed(value, kind_of: type, key: str, fail):
    """A setting's value: JSON values must have the type already; CSV cells (strings) are converted."""
    if kind_of is str:
        if not isinstance(value, str):
            raise fail(f"'{key}' must be a string")
        return value
    if isinstance(value, str):
        try:
            value = kind_of(value)
        except ValueError:
            raise fail(f"'{key}' must be {'an integer' if kind_of is int else 'a number'}, got {value!r}") from None
    ok = isinstance(value, int) if kind_of is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (kind_of is float and not math.isfinite(value)):
        raise fail(f"'{key}' must be {'an integer' if kind_of is int else 'a finite number'}, got {value!r}")
    return kind_of(value)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def safe_name(text: str, identity: str) -> str:
    """A folder name for an item: ``text`` made safe, then a hash of the item's ``identity``.

    NFKC-normalised and lower-cased, characters other than ``a-z 0-9 . _ -`` become ``_``, runs of
    those three collapse to one, leading and trailing ``. _ -`` are stripped, the rest is cut to `NAME_LENGTH`
    characters (``item`` when nothing is left), and ``-`` plus `HASH_LENGTH` hex digits of the
    identity's SHA-256 follow. So the name is never empty, ``.``, ``..``, hidden, a path or a NUL,
    and items that differ only in case or past the cut get different folders.
    """
    readable = re.sub(r"[^a-z0-9._-]+", "_", unicodedata.normalize("NFKC", text).lower())
    # a run of separators becomes one: "_" if it holds one (``../`` -> ``_``), else its first (``..`` -> ``.``)
    readable = re.sub(r"[._-]{2,}", lambda m: "_" if "_" in m[0] else m[0][0], readable)
    readable = readable.strip("._-")[:NAME_LENGTH].rstrip("._-") or "item"
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]
    return f"{readable}-{digest}"


def check_items(items: list[BatchItem], mvgen: str | None) -> None:
    """Check the items' inputs as the single commands check theirs before any model loads.

    A prompt (and a negative prompt) within the text encoders' tokens (`check_prompt_lengths`: the
    tokenizers of generator ``mvgen`` alone, read once); a photo readable, within the pixel limit
    and at least `MIN_PHOTO_SIDE` a side (``fourview image``); four views or a grid readable, of one
    size and not empty (``fourview reconstruct``). Removing a photo's background is the item's work,
    not checked here.

    Args:
        items: the items to check (those left to run).
        mvgen: the generator whose tokenizers count the prompts' tokens; None: not counted.

    Raises:
        InputError: generator weights that cannot be found; one line naming the first bad item (its
            manifest line and index) and its problem, and how many items are bad when there are several.
    """
    if mvgen is not None and any(item.kind != "views" for item in items):
        resolve_weights(mvgen, "mvgen")  # the generator's own problems are no item's
    bad: list[tuple[BatchItem, str]] = []
    for item in items:
        try:
            _check_item(item, mvgen)
        except InputError as e:
            bad.append((item, " ".join(str(e).split())))
    if not bad:
        return
    item, problem = bad[0]
    more = ""
    if len(bad) > 1:
        lines = ", ".join(str(i.line) for i, _ in bad[:LISTED_BAD_ITEMS]) + (", ..." if len(bad) > LISTED_BAD_ITEMS
                                                                             else "")  # fmt: skip
        more = f"; {len(bad)} of the {len(items)} items are bad (manifest lines {lines}), nothing was made"
    raise InputError(f"manifest line {item.line} (item {item.index}): {problem}{more}")


def _check_item(item: BatchItem, mvgen: str | None) -> None:
    if item.kind != "views" and mvgen is not None:
        check_prompt_lengths(item.prompt, item.sampling.negative_prompt, mvgen)
    if item.kind == "photo":
        read_photo(item.image, MIN_PHOTO_SIDE)
    elif item.kind == "views":
        PosedViews.read(list(item.views), item.sampling.elevation_deg).check_objects()


# -- the results -----------------------------------------------------------------------------------


def results_path(out_dir: str | os.PathLike, rank: int = 0, world_size: int = 1) -> Path:
    """The results file a shard appends to: ``results.jsonl``, or ``results.rank{R}-of-{W}.jsonl`` when sharded."""
    name = RESULTS_NAME if world_size == 1 else f"results.rank{rank}-of-{world_size}.jsonl"
    return Path(out_dir) / name


def _results_files(out_dir: Path) -> list[Path]:
    merged = out_dir / RESULTS_NAME
    return [*([merged] if merged.is_file() else []), *sorted(out_dir.glob("results.rank*-of-*.jsonl"))]


def read_results(out_dir: str | os.PathLike) -> dict[str, dict]:
    """The latest result line of each item (by name) over every results file in ``out_dir``.

    A last line without its newline (a write cut short) is left out.
    """
    latest: dict[str, dict] = {}
    for path in _results_files(Path(out_dir)):
        lines = path.read_bytes().split(b"\n")[:-1]  # the piece after the last newline is torn or empty
        for n, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                name = record["name"]
            except (ValueError, TypeError, KeyError):
                logger.warning("%s:%d: not a result line; ignored", path, n)
                continue
            old = latest.get(name)
            if old is None or record.get("finished", 0.0) >= old.get("finished", 0.0):
                latest[name] = record
    return latest


def merge_results(out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/results.jsonl``: every item's latest line over all results files, by item index.

    Raises:
        InputError: no results in ``out_dir``, or a run is appending to ``results.jsonl`` now.
    """
    out = Path(out_dir)
    latest = read_results(out) if out.is_dir() else {}
    if not latest:
        raise InputError(f"no batch results in {out} (results.jsonl or results.rank*-of-*.jsonl)")
    records = sorted(latest.values(), key=lambda r: (r.get("index", math.inf), r["name"]))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with _locked(out / RESULTS_NAME):  # not while an unsharded run appends to it
        return write_text_atomic(out / RESULTS_NAME, text)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """``path`` opened for appending (created if missing) and locked against a second writer; yields its fd."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(f"another fourview batch is writing {path}; wait for it to end") from None
        yield fd
    finally:
        os.close(fd)  # releases the lock


class _ResultsLog:
    """A shard's results file, appended one synced line at a time (a torn last line is cut off first)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            os.ftruncate(fd, keep)
            logger.warning("cut off an incomplete last result line (%d bytes)", len(data) - keep)

    def append(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
        while data:
            data = data[os.write(self.fd, data) :]
        os.fsync(self.fd)


# -- the run ---------------------------------------------------------------------------------------


def shard_items(items: list[BatchItem], rank: int, world_size: int) -> list[BatchItem]:
    """Shard ``rank``'s items: those whose index ``i`` has ``i % world_size == rank``."""
    return [item for item in items if item.index % world_size == rank]


def shard_device(device: str, world_size: int) -> str:
    """``cuda`` in a sharded run means this process's own GPU (``LOCAL_RANK`` / ``SLURM_LOCALID``)."""
    if device != "cuda" or world_size == 1 or not torch.cuda.is_available():
        return device
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
    return f"cuda:{local % torch.cuda.device_count()}"


def run_batch(
    items: list[BatchItem],
    out_dir: str | os.PathLike,
    models: ModelSettings = ModelSettings(),
    save: SaveSettings = SaveSettings(),
    *,
    rank: int = 0,
    world_size: int = 1,
    retry_failed: bool = False,
    pipeline: FourViewPipeline | None = None,
    progress: bool = False,
    write_behind: bool = False,
) -> BatchSummary:
    """Make shard ``rank``'s items into ``out_dir`` (see the module docstring), loading the models once.

    Args:
        items: the manifest's items (`read_manifest`); this shard takes its own (`shard_items`).
        out_dir: the output folder: new, empty, or one an earlier batch wrote (it resumes).
        models: the models to load (the generator only when a prompt or photo item is left to run).
        save: what each asset folder holds besides the GLB (``overwrite`` is implied: a folder
            left without its result line by a killed run is replaced).
        rank, world_size: the shard.
        retry_failed: run the items whose latest result is a failure again.
        pipeline: an already loaded pipeline to use instead of loading ``models``.
        progress: a progress bar over the items (with an ETA).
        write_behind: write each item's folder in a writer thread while the next item is made
            (the same files). Off by default: on the two-core CPU it gained nothing, loaded or quiet
            (docs/benchmarks.md).

    Raises:
        InputError: an output folder that is a file, or holds other files than a batch's; another
            run writing the same results file; models that cannot be loaded; when it loads them
            (no ``pipeline`` given), a bad item among those left to run in any shard (`check_items`).
    """
    out = Path(out_dir)
    _check_output(out)
    own = results_path(out, rank, world_size)
    mine = shard_items(items, rank, world_size)
    # Models load before the folder is made, so a bad model leaves nothing behind; the plan is made
    # again under the results file's lock, which keeps a second run of this shard out.
    latest = read_results(out) if out.is_dir() else {}
    todo, _, _ = _plan(mine, latest, out, retry_failed)
    if pipeline is None and todo:  # every shard's items left to run: each shard refuses a bad batch alike
        check_items(_plan(items, latest, out, retry_failed)[0], models.mvgen)
    pipe, load_s = (pipeline, 0.0) if pipeline is not None or not todo else _load(models, todo, world_size)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out}: {e.strerror or e}") from None
    remove_stale_temporaries(out)
    done = failed = 0
    with _locked(own) as fd:
        log = _ResultsLog(fd)
        todo, skipped, failed_before = _plan(mine, read_results(out), out, retry_failed)
        if todo and pipe is None:
            pipe, load_s = _load(models, todo, world_size)
        desc = "batch" if world_size == 1 else f"batch [{rank}/{world_size}]"
        bar = tqdm(total=len(todo), desc=desc, unit="item", disable=not progress or not todo, dynamic_ncols=True)

        def finish(item: BatchItem, saving: Future) -> None:
            """Wait for ``item``'s folder, then append its result line."""
            nonlocal done, failed
            record = saving.result()
            log.append({**record, "rank": rank, "world_size": world_size, "finished": time.time()})
            if record["status"] == "done":
                done += 1
            else:
                failed += 1
                logger.warning("%s (line %d) failed: %s", item.name, item.line, record["error"])
                bar.set_postfix(failed=failed)
            bar.update()

        writer = ThreadPoolExecutor(1, thread_name_prefix="batch-writer", initializer=_lower_priority)
        submit = writer.submit if write_behind else _run_now
        with writer:
            saving: tuple[BatchItem, Future] | None = None  # the item whose folder is being written
            for item in todo:
                made = _make_item(pipe, item)
                if saving is not None:
                    finish(*saving)
                saving = (item, submit(_save_item, made, out, save))
            if saving is not None:
                finish(*saving)
        bar.close()
    merged = merge_results(out) if rank == 0 and read_results(out) else None
    return BatchSummary(rank, world_size, len(mine), done, skipped, failed + failed_before, own, merged, load_s)


def _check_output(out: Path) -> None:
    """Refuse, before any model loads, an output folder that is a file, foreign, or cannot be written."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder is a file: {out}")
    if out.is_dir() and not _results_files(out) and any(not _is_temporary(p) for p in out.iterdir()):
        raise InputError(f"output folder {out} is not empty and holds no batch results; choose another")
    check_writable(out)


def _plan(
    items: list[BatchItem], latest: dict[str, dict], out: Path, retry_failed: bool
) -> tuple[list[BatchItem], int, int]:
    """(items to run, items finished before, items failed before and not retried)."""
    todo, skipped, failed = [], 0, 0
    for item in items:
        status = latest.get(item.name, {}).get("status")
        if status == "done" and (out / item.name).is_dir():
            skipped += 1
        elif status == "failed" and not retry_failed:
            failed += 1
        else:
            todo.append(item)
    return todo, skipped, failed


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and TMP_MARK in path.name


def _load(models: ModelSettings, todo: list[BatchItem], world_size: int) -> tuple[FourViewPipeline, float]:
    """The pipeline for ``todo`` (a generator only if a prompt or photo is among them), and seconds to load it."""
    t0 = time.perf_counter()
    needs_generator = any(item.kind != "views" for item in todo)
    pipe = FourViewPipeline.from_pretrained(
        mvgen=models.mvgen if needs_generator else None,
        recon=models.recon,
        student=models.student if needs_generator else None,
        lora=models.lora if needs_generator else None,
        device=shard_device(models.device, world_size),
        dtype=models.dtype,
        cpu_offload=models.cpu_offload and needs_generator,
    )
    return pipe, time.perf_counter() - t0


@dataclass
class _MadeItem:
    """An item's result line so far, and its asset (None when making it failed: the line says why)."""

    record: dict
    asset: Asset | None
    make_s: float


def _make_item(pipe: FourViewPipeline, item: BatchItem) -> _MadeItem:
    """Make one item's asset (not saved yet); a failure is recorded in its result line, not raised."""
    record = {
        "index": item.index,
        "name": item.name,
        "line": item.line,
        "kind": item.kind,
        "input": item.input_record(),
        "seed": item.sampling.seed,
        "steps": item.sampling.steps,
        "guidance": item.sampling.guidance_scale,
        "models": {k: pipe.names.get(k) for k in ("mvgen", "student", "lora", "recon")},
    }
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(pipe.device)
    start = time.perf_counter()
    try:
        if item.kind == "views":
            views = PosedViews.read(list(item.views), item.sampling.elevation_deg)
            asset = pipe.views_to_3d(views, "feedforward", item.export, meta={"inputs": record["input"]["views"]})
        elif item.kind == "photo":
            asset = pipe.image_to_3d(item.image, item.prompt, item.sampling, item.export)
        else:
            asset = pipe.text_to_3d(item.prompt, item.sampling, item.export)
        asset.meta["batch"] = {"index": item.index, "name": item.name, "manifest_line": item.line}
    except Exception as e:  # noqa: BLE001 - any failure of one item is recorded; the others go on
        if cuda:  # an out-of-memory item leaves its blocks cached; the next item needs them
            torch.cuda.empty_cache()
        make_s = time.perf_counter() - start
        return _MadeItem(_failed(record, e, {"item_s": make_s}), None, make_s)
    if cuda:
        record["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(pipe.device) / 2**20
    return _MadeItem(record, asset, time.perf_counter() - start)


def _save_item(made: _MadeItem, out: Path, save: SaveSettings) -> dict:
    """Write a made item's folder (in the writer thread); returns its complete result line."""
    record, asset = made.record, made.asset
    if asset is None:
        return record
    name = record["name"]
    t0 = time.perf_counter()
    try:
        paths = asset.save(
            out / name,
            formats=save.formats,
            turntable_frames=save.turntable_frames,
            preview_resolution=save.preview_resolution,
            overwrite=True,  # a folder a killed run left without its result line
        )
        _sync_folder(out)  # the folder's rename is durable before its result line says done
    except Exception as e:  # noqa: BLE001 - recorded, as a failure to make it is
        save_s = time.perf_counter() - t0
        return _failed(record, e, {"save_s": save_s, "item_s": made.make_s + save_s})
    save_s = time.perf_counter() - t0
    return {
        **record,
        "status": "done",
        "error": None,
        "steps": asset.meta.get("steps", record["steps"]),
        "guidance": asset.meta.get("guidance_scale", record["guidance"]),
        # the item's own seconds: making it, then writing it (while the next item was being made)
        "timings_s": {**asset.timings, "save_s": save_s, "item_s": made.make_s + save_s},
        "peak_memory_mb": max(asset.peak_memory_mb, peak_memory_mb()),
        "vertices": asset.num_verts,
        "faces": asset.num_faces,
        "folder": name,
        "files": [f"{name}/{p.name}" for p in paths],
    }


def _failed(record: dict, error: Exception, timings: dict[str, float]) -> dict:
    """The result line of an item that failed with ``error``."""
    message = " ".join(str(error).split())
    if not isinstance(error, InputError):
        message = f"{type(error).__name__}: {message}"
        logger.debug("item %s failed", record["name"], exc_info=error)
    return {**record, "status": "failed", "error": message, "timings_s": timings, "peak_memory_mb": peak_memory_mb()}


def _run_now(fn, *args) -> Future:
    """``fn(*args)`` run in this thread, as a finished `Future` (`run_batch` without ``write_behind``)."""
    done = Future()
    done.set_result(fn(*args))
    return done


def _lower_priority() -> None:
    """Lower the calling thread's priority (the batch's writer) by `WRITER_NICENESS`; Linux only.

    The sampler's OpenMP threads wait for each other at the end of every operation: a writer taking
    a core from one of them at the same priority would stall all of them, many times an item. Not
    idle priority: on a machine busy with other work the writer would starve, and the batch with it.
    """
    if sys.platform.startswith("linux"):  # where nice is per thread (elsewhere it would slow the whole process)
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICENESS))


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = [
    "BatchItem",
    "BatchSummary",
    "check_items",
    "merge_results",
    "read_manifest",
    "read_results",
    "results_path",
    "run_batch",
    "safe_name",
    "shard_device",
    "shard_items",
]
