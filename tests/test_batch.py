"""`fourview batch`: manifests, safe names, failures recorded, resume, sharding, and SIGKILL at any moment."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from fourview.atomic import TMP_MARK
from fourview.batch import HASH_LENGTH, NAME_LENGTH, read_manifest, read_results, run_batch, safe_name
from fourview.errors import InputError
from fourview.pipeline import ExportSettings, SamplingSettings
from tests.gltf_validation import validate_glb
from tests.mvgen.test_generate import FAST as GENERATE_FAST
from tests.mvgen.test_generate import run, tiny_mvgen  # noqa: F401 (tiny_mvgen: a fixture)

FAST = [*GENERATE_FAST, "--turntable", "0"]
NAME = re.compile(rf"^[a-z0-9][a-z0-9._-]*-[0-9a-f]{{{HASH_LENGTH}}}$")
TRICKY = ["../../etc/x", "a/b\\c", "nul\x00byte", "🚗🚕", "x" * 500, "x" * 499 + "y", "A Red Mug", "a red mug",
          ".", "..", "", "-rf /"]  # fmt: skip
COLOURS = [(200, 30, 30), (30, 60, 200), (40, 160, 40), (220, 200, 30)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def result_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# -- the manifest --------------------------------------------------------------------------------


def test_the_three_formats_give_the_same_items(tmp_path):
    (tmp_path / "m").mkdir()
    text = write_jsonl(tmp_path / "m" / "a.txt", [])
    text.write_text("# prompts\na red mug\n\n  a blue car  \n# done\n")
    jsonl = write_jsonl(tmp_path / "m" / "a.jsonl", [{"prompt": "a red mug"}, {"prompt": "a blue car"}])
    csv = tmp_path / "m" / "a.csv"
    csv.write_text("prompt,seed,steps\na red mug,,\na blue car,,\n")
    by_format = [read_manifest(p, SamplingSettings(seed=10)) for p in (text, jsonl, csv)]
    for items in by_format:
        assert [(i.index, i.kind, i.prompt, i.sampling.seed) for i in items] == [
            (0, "prompt", "a red mug", 10), (1, "prompt", "a blue car", 11)]  # fmt: skip
        assert [i.name for i in items] == [i.name for i in by_format[0]]  # same identity, same folder
    assert [i.line for i in by_format[0]] == [2, 4]
    assert [i.line for i in by_format[2]] == [2, 3]


def test_items_take_their_inputs_and_settings(tmp_path):
    jsonl = write_jsonl(tmp_path / "m.jsonl", [
        {"prompt": "a mug", "seed": 3, "steps": 4, "guidance": 2.5, "method": "dmtet", "name": "My Mug"},
        {"image": "photos/p.png", "prompt": "a bottle", "faces": 500},
        {"views": ["v/0.png", "v/1.png", "v/2.png", "/abs/3.png"], "elevation": 30},
        {"views": "grid.png"},
    ])  # fmt: skip
    items = read_manifest(jsonl, SamplingSettings(seed=100, steps=9), ExportSettings(texture_size=64))
    mug, photo, views, grid = items
    assert mug.sampling.seed == 3 and mug.sampling.steps == 4 and mug.sampling.guidance_scale == 2.5
    assert mug.export.method == "dmtet" and mug.export.texture_size == 64 and mug.name.startswith("my_mug-")
    assert photo.kind == "photo" and photo.image == tmp_path / "photos" / "p.png"
    assert photo.sampling.seed == 101 and photo.sampling.steps == 9 and photo.export.face_budget == 500
    assert views.kind == "views" and views.sampling.elevation_deg == 30.0
    assert views.views == (tmp_path / "v/0.png", tmp_path / "v/1.png", tmp_path / "v/2.png", Path("/abs/3.png"))
    assert grid.views == (tmp_path / "grid.png",) and grid.name.startswith("grid-")
    csv = tmp_path / "m.csv"
    csv.write_text("views,elevation,seed\nv/0.png; v/1.png;v/2.png;v/3.png,10,7\n")
    (item,) = read_manifest(csv)
    assert item.views[3] == tmp_path / "v/3.png" and item.sampling.elevation_deg == 10.0 and item.sampling.seed == 7


@pytest.mark.parametrize(
    "suffix, content, match",
    [
        (".jsonl", '{"prompt": "a"}\n{"prompt": \n', r"m\.jsonl:2: not valid JSON"),
        (".jsonl", '["a red mug"]\n', r":1: expected a JSON object"),
        (".jsonl", '{"prompt": "a", "colour": "red"}\n', r":1: unknown key 'colour'"),
        (".jsonl", '{"image": "p.png"}\n', r":1: a photo item needs a 'prompt'"),
        (".jsonl", '{"image": "p.png", "views": ["g.png"], "prompt": "a"}\n', r"'image' or 'views', not both"),
        (".jsonl", '{"views": ["a.png", "b.png"]}\n', r":1: 'views' must be 4 image paths"),
        (".jsonl", '{"views": "g.png", "steps": 3}\n', r"'steps' is a setting of the generator"),
        (".jsonl", '\n{"prompt": "a"}\n{"prompt": "b", "steps": 0}\n', r":3: steps must be in \[1, 1000\]"),
        (".jsonl", '{"prompt": "a", "seed": "x"}\n', r":1: 'seed' must be an integer, got 'x'"),
        (".jsonl", '{"prompt": "a", "seed": true}\n', r":1: 'seed' must be an integer"),
        (".jsonl", '{"prompt": "a", "seed": -1}\n', r":1: seed must be in \[0, 2\*\*63 - 1\]"),
        (".jsonl", '{"prompt": "a", "method": "voxels"}\n', r":1: 'method' must be marching_cubes or dmtet"),
        (".jsonl", '{"prompt": "  "}\n', r":1: 'prompt' must be a non-empty string"),
        (".jsonl", '{"name": "x"}\n', r":1: an item needs a 'prompt'"),
        (".csv", "prompt,colour\na,b\n", r"m\.csv:1: unknown column 'colour'"),
        (".csv", "prompt,steps\na,2\nb,two\n", r"m\.csv:3: 'steps' must be an integer, got 'two'"),
        (".csv", "prompt,guidance\na,nan\n", r":2: 'guidance' must be a finite number"),
        (".csv", "prompt\na,b\n", r":2: more cells than the header has columns"),
        (".txt", "# nothing but comments\n\n", r"m\.txt lists no items"),
    ],
)
def test_a_bad_line_is_named_with_its_problem(tmp_path, suffix, content, match):
    path = tmp_path / f"m{suffix}"
    path.write_text(content)
    with pytest.raises(InputError, match=match):
        read_manifest(path)


def test_bad_manifest_exits_2_before_any_model_loads(tmp_path, capsys):
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a"}, {"prompt": "b", "steps": 5000}])
    out = tmp_path / "out"
    code, _, err = run(["batch", path, "-o", out, "--mvgen", tmp_path / "no" / "weights"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "m.jsonl:2: steps must be in [1, 1000], got 5000" in err  # not the missing weights
    assert not out.exists()
    code, _, err = run(["batch", tmp_path / "none.txt", "-o", out], capsys)
    assert code == 2 and "manifest not found" in err and not out.exists()
    code, _, err = run(["batch", "-o", out], capsys)
    assert code == 2 and "give a MANIFEST" in err


# -- safe names ----------------------------------------------------------------------------------


def test_safe_names_stay_in_the_folder_and_never_collide(tmp_path):
    names = [safe_name(text, f"{i}\n{text}") for i, text in enumerate(TRICKY)]
    assert len(set(names)) == len(names)  # case-only and cut-at-80 differences included
    for name in names:
        assert NAME.match(name), name
        assert len(name) <= NAME_LENGTH + 1 + HASH_LENGTH and "/" not in name and "\x00" not in name
        folder = tmp_path / name
        folder.mkdir()  # the file system takes it
        assert folder.resolve().parent == tmp_path.resolve()
    assert names[0].startswith("etc_x-") and names[6].startswith("a_red_mug-") and names[7].startswith("a_red_mug-")
    assert names[3].startswith("item-") and names[9].startswith("item-")
    assert safe_name("a red mug", "0") == safe_name("a red mug", "0")  # stable across runs


def test_manifest_names_from_tricky_prompts_and_names(tmp_path):
    records = [{"prompt": t} for t in TRICKY if t] + [
        {"prompt": "p", "name": n} for n in ("../x", "a/b", "\x00", "🚗")
    ]
    items = read_manifest(write_jsonl(tmp_path / "m.jsonl", records))
    assert len({i.name for i in items}) == len(items)
    assert all(NAME.match(i.name) for i in items)


def grid_image(path: Path, colour: tuple[int, int, int]) -> Path:
    """A 2x2 grid of four 32-px views on white, each a disc of ``colour``."""
    yy, xx = np.mgrid[:32, :32]
    cell = np.full((32, 32, 3), 255, np.uint8)
    cell[(yy - 16) ** 2 + (xx - 16) ** 2 < 100] = colour
    Image.fromarray(np.tile(cell, (2, 2, 1))).save(path)
    return path


# -- runs ----------------------------------------------------------------------------------------


def test_a_run_records_failures_resumes_and_retries(tiny_mvgen, tmp_path, capsys):  # noqa: F811
    photo = tmp_path / "photo.png"  # fully transparent: readable (checked before the run), no object to cut out
    Image.fromarray(np.zeros((48, 40, 4), np.uint8), "RGBA").save(photo)
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        {"prompt": "../../etc/x"},
        {"image": "photo.png", "prompt": "a green bottle"},
        {"prompt": "A Red Mug", "name": "mug/../../x\x00🚗"},
    ])  # fmt: skip
    out = tmp_path / "out"
    code, stdout, err = run(["batch", manifest, "-o", out, "--mvgen", tiny_mvgen, "--seed", 5, *FAST], capsys)
    assert code == 1, err
    assert "3 items: 2 made, 0 finished before, 1 failed" in stdout
    lines = result_lines(out)
    assert [r["index"] for r in lines] == [0, 1, 2] and [r["seed"] for r in lines] == [5, 6, 7]
    assert [r["status"] for r in lines] == ["done", "failed", "done"]
    assert lines[1]["error"].startswith("no object found in the photo") and lines[1]["input"]["image"] == str(photo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "out", "photo.png"]  # nothing escaped DIR
    assert sorted(p.name for p in out.iterdir()) == sorted([lines[0]["name"], lines[2]["name"], "results.jsonl"])
    for r in (lines[0], lines[2]):
        assert r["steps"] == 2 and r["models"]["mvgen"] == str(tiny_mvgen) and r["models"]["recon"] == "demo"
        assert r["vertices"] > 0 and r["faces"] > 0 and r["peak_memory_mb"] > 0
        assert {"mvgen_s", "reconstruct_s", "export_s", "save_s", "item_s"} <= set(r["timings_s"])
        assert all((out / f).exists() for f in r["files"]) and f"{r['name']}/model.glb" in r["files"]
        meta = json.loads((out / r["name"] / "meta.json").read_text())
        assert meta["seed"] == r["seed"] and meta["batch"]["index"] == r["index"]
    glb = out / lines[2]["name"] / "model.glb"
    views_png = (out / lines[2]["name"] / "views.png").read_bytes()
    stamp = glb.stat().st_mtime_ns

    # a torn last line (a write cut short) is ignored; a re-run skips the finished items and keeps the failed
    with open(out / "results.jsonl", "ab") as f:
        f.write(b'{"name": "' + lines[1]["name"].encode() + b'", "status": "do')
    code, stdout, _ = run(["batch", manifest, "-o", out, "--mvgen", tmp_path / "no" / "weights"], capsys)
    assert code == 1 and "0 made, 2 finished before, 1 failed" in stdout  # no model was needed
    assert result_lines(out) == lines and glb.stat().st_mtime_ns == stamp

    # --retry-failed runs the failed item only; a deleted folder is made again, the same for the same seed
    rgba = np.zeros((48, 40, 4), np.uint8)
    rgba[8:40, 10:30] = [30, 160, 40, 255]
    Image.fromarray(rgba, "RGBA").save(photo)
    shutil.rmtree(out / lines[2]["name"])
    code, stdout, err = run(["batch", manifest, "-o", out, "--mvgen", tiny_mvgen, "--seed", 5, "--retry-failed",
                             *FAST], capsys)  # fmt: skip
    assert code == 0, err
    assert "2 made, 1 finished before, 0 failed" in stdout
    again = result_lines(out)
    assert [r["status"] for r in again] == ["done"] * 3 and again[0] == lines[0]  # one line per item
    assert (out / lines[2]["name"] / "views.png").read_bytes() == views_png  # deterministic per seed


def test_two_shards_and_a_merge(tmp_path, capsys, monkeypatch):
    grids = [grid_image(tmp_path / f"grid{i}.png", c) for i, c in enumerate(COLOURS[:3])]
    manifest = tmp_path / "views.csv"
    manifest.write_text("views\n" + "".join(f"{g.name}\n" for g in grids))
    out = tmp_path / "out"
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "1")  # torchrun / Accelerate
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, stdout, err = run(["batch", manifest, "-o", out, *FAST], capsys)
    assert code == 0, err
    assert "shard 1/2: 1 items: 1 made" in stdout and "results.rank1-of-2.jsonl" in stdout
    assert not (out / "results.jsonl").exists()  # rank 1 does not merge
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SLURM_PROCID", "0")  # SLURM
    monkeypatch.setenv("SLURM_NTASKS", "2")
    code, stdout, err = run(["batch", manifest, "-o", out, *FAST], capsys)
    assert code == 0, err
    rank0 = [json.loads(line) for line in (out / "results.rank0-of-2.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rank0] == [0, 2] and {r["rank"] for r in rank0} == {0}
    merged = result_lines(out)
    assert [r["index"] for r in merged] == [0, 1, 2]  # rank 0 merged every shard present at its end
    # a torn last line (a write cut short by a kill) is cut off before the shard appends again
    shard_file = out / "results.rank0-of-2.jsonl"
    whole = shard_file.read_bytes()
    shard_file.write_bytes(whole + b'{"index": 2, "name": "')
    code, stdout, _ = run(["batch", manifest, "-o", out, *FAST], capsys)
    assert code == 0 and "0 made, 2 finished before" in stdout and shard_file.read_bytes() == whole
    (out / "results.jsonl").unlink()
    code, stdout, _ = run(["batch", "--merge", "-o", out], capsys)
    assert code == 0 and result_lines(out) == merged
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(r["name"] for r in merged)


class _FakeAsset:
    """What `run_batch` uses of an `Asset`: saving (slow here) and the counts of its result line."""

    def __init__(self, events: list, prompt: str) -> None:
        self.events, self.prompt = events, prompt
        self.meta, self.timings, self.peak_memory_mb, self.num_verts, self.num_faces = {}, {"mvgen_s": 0.0}, 1.0, 3, 1

    def save(self, out_dir, **_) -> list[Path]:
        self.events.append(("save starts", self.prompt))
        time.sleep(0.3)  # long enough for the next item to be made meanwhile
        if self.prompt == "unwritable":
            raise OSError("disk full")
        out = Path(out_dir)
        out.mkdir()
        (out / "model.glb").write_bytes(b"glb")
        self.events.append(("saved", self.prompt))
        return [out / "model.glb"]


class _FakePipeline:
    names = {"mvgen": "fake", "recon": "fake"}
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.events: list = []

    def text_to_3d(self, prompt, sampling, export):
        self.events.append(("made", prompt))
        if prompt == "impossible":
            raise InputError("no such object")
        return _FakeAsset(self.events, prompt)


def test_an_item_is_written_while_the_next_is_made_and_the_lines_keep_the_order(tmp_path):
    prompts = ["a mug", "impossible", "unwritable", "a car"]
    (tmp_path / "m.txt").write_text("".join(f"{p}\n" for p in prompts))
    pipe = _FakePipeline()
    s = run_batch(read_manifest(tmp_path / "m.txt"), tmp_path / "out", pipeline=pipe, write_behind=True)
    assert (s.done, s.failed) == (2, 2)
    lines = result_lines(tmp_path / "out")
    assert [r["index"] for r in lines] == [0, 1, 2, 3]
    assert [r["status"] for r in lines] == ["done", "failed", "failed", "done"]
    assert lines[1]["error"] == "no such object" and lines[2]["error"] == "OSError: disk full"
    assert lines[0]["files"] == [f"{lines[0]['name']}/model.glb"] and lines[0]["timings_s"]["save_s"] >= 0.3
    events = pipe.events
    assert events.index(("made", "impossible")) < events.index(("saved", "a mug"))  # made while "a mug" was written
    assert not (tmp_path / "out" / lines[2]["name"]).exists()
    # one after the other: the same lines
    pipe = _FakePipeline()
    run_batch(read_manifest(tmp_path / "m.txt"), tmp_path / "one_by_one", pipeline=pipe)  # the default
    assert pipe.events[:4] == [("made", "a mug"), ("save starts", "a mug"), ("saved", "a mug"), ("made", "impossible")]
    unstable = ("timings_s", "finished", "peak_memory_mb")
    assert [{k: v for k, v in r.items() if k not in unstable} for r in result_lines(tmp_path / "one_by_one")] == [
        {k: v for k, v in r.items() if k not in unstable} for r in lines
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities: Linux")
def test_the_writer_thread_alone_runs_at_a_lower_priority():
    from fourview.batch import WRITER_NICENESS, _lower_priority

    seen = {}

    def writer():
        _lower_priority()
        seen["writer"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()
    assert seen["writer"] == min(19, main + WRITER_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main


# -- kill -9 at any moment -----------------------------------------------------------------------


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as f:  # the child keeps its own copy
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0, delay: float = 0.0) -> bool:
    """SIGKILL ``proc`` ``delay`` s after ``ready()`` holds; False if it ended by itself first."""
    end = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                return False
            assert time.monotonic() < end, "the batch made no progress"
            time.sleep(0.002)
        time.sleep(delay)
        return proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)  # also when the wait failed: no process outlives the test
        proc.wait()


def test_sigkill_at_any_moment_loses_nothing_and_leaves_nothing_half_written(tmp_path):
    # Views items: the reconstructor alone, so that each of the four processes starts sooner.
    grids = [grid_image(tmp_path / f"grid{i}.png", c) for i, c in enumerate(COLOURS)]
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"views": g.name} for g in grids])
    out, log = tmp_path / "out", tmp_path / "log.txt"
    results = out / "results.jsonl"
    cmd = [sys.executable, "-m", "fourview.cli", "batch", str(manifest), "-o", str(out), "--quiet", "--grid", "32",
           "--texture-size", "64", "--faces", "2000", "--turntable", "8", "--preview-resolution", "48"]  # fmt: skip
    # (a turntable of 8 frames keeps each folder's assembling long enough to be caught: items are
    # written in the batch's own thread, between two items, and a 2-frame one could slip between polls)

    def assembling(proc: subprocess.Popen):  # ``proc``'s own temporary folder exists
        return lambda: out.is_dir() and any(f"{TMP_MARK}{proc.pid}-" in p.name for p in out.iterdir())

    # 1: right after the first result line
    assert _kill_when(_start(cmd, log), lambda: _lines(results) >= 1), log.read_text()
    first = read_results(out)
    assert [r["status"] for r in first.values()] == ["done"]
    (first_name,) = first
    stamp = (out / first_name / "model.glb").stat().st_mtime_ns
    # 2: while an asset folder is being assembled (its temporary exists)
    proc = _start(cmd, log)
    assert _kill_when(proc, assembling(proc)), log.read_text()
    assert assembling(proc)()
    # 3: at a random short delay after the second result line
    delay = random.Random(18).uniform(0.0, 1.5)
    _kill_when(_start(cmd, log), lambda: _lines(results) >= 2, delay=delay)
    # to the end
    proc = _start(cmd, log)
    assert not _kill_when(proc, lambda: False, timeout=300) and proc.returncode == 0, log.read_text()

    lines = result_lines(out)
    assert [r["index"] for r in lines] == [0, 1, 2, 3] and [r["status"] for r in lines] == ["done"] * 4
    assert len({r["name"] for r in lines}) == 4 and [r["input"]["views"] for r in lines] == [[str(g)] for g in grids]
    assert sorted(p.name for p in out.iterdir()) == sorted([*(r["name"] for r in lines), "results.jsonl"])
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]  # no temporaries left
    assert (out / first_name / "model.glb").stat().st_mtime_ns == stamp  # a finished asset is never redone
    for r in lines:
        glb = out / r["name"] / "model.glb"
        mesh = trimesh.load(glb, force="mesh", process=False)
        assert len(mesh.faces) == r["faces"] and len(mesh.vertices) == r["vertices"]
        assert json.loads((out / r["name"] / "meta.json").read_text())["batch"]["name"] == r["name"]
        assert validate_glb(glb)["issues"]["numErrors"] == 0
