"""Bad input to every command, as a new user gives it (issue 18, item 4).

Each case: exit status 2, one line on stderr naming the problem, refused before any model loads
(the loaders are replaced by ones that fail the test) and nothing left on disk. A batch is refused
whole when one of its items is bad, naming the first (its manifest line and index) and how many
are. The library-level checks behind them are tested beside their modules (test_images,
test_views, test_pretrained, test_atomic); the cases already driven through the command line
elsewhere (test_cli, test_image_command, test_batch, mvgen/test_prompt_check, server/) are not
repeated here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image

from fourview.atomic import TMP_MARK, _host
from fourview.batch import read_manifest
from fourview.cli import main
from fourview.errors import InputError
from tests.test_images import _png_declaring

PROMPT = "a red mug"
VIEWS = ["{v0}", "{v1}", "{v2}", "{v3}"]
GEN = ["generate", PROMPT, "-o", "{out}"]
REC = ["reconstruct", *VIEWS, "-o", "{out}"]
BATCH = ["batch", "{prompts}", "-o", "{out}"]
RENDER = ["data", "render", "example:red_mug", "-o", "{out}"]
LONG = "red " * 80  # 82 tokens with start and end: over the text encoders' 77
TRAIN_MVGEN = ["train", "mvgen", "--from-scratch", "tiny", "--out", "{out}"]
BAD_ITEMS = {
    "missing_photo": [{"prompt": PROMPT}, {"image": "nowhere.png", "prompt": PROMPT}],
    "bomb_photo": [{"image": "20000x20000.png", "prompt": PROMPT}],
    "dot_photo": [{"prompt": PROMPT}, {"image": "dot.png", "prompt": PROMPT}],
    "corrupt_photo": [{"image": "corrupt.png", "prompt": PROMPT}],
    "long_prompt": [{"prompt": PROMPT}, {"prompt": LONG}],
    "long_negative": [{"prompt": PROMPT, "negative": LONG}],
    "small_views": [{"views": ["v0.png", "v1.png", "v2.png", "v8.png"]}],
    "mixed_views": [{"views": ["v0.png", "v1.png", "v2.png", "v48.png"]}],
    "several_bad": [{"prompt": PROMPT}, {"image": "nowhere.png", "prompt": PROMPT}, {"prompt": LONG},
                    {"views": ["v8.png"] * 4}, {"prompt": "a blue car"}],
}  # fmt: skip
"""Batch manifests (JSON lines beside the inputs) with bad items: every item is checked before any model loads."""
# fmt: off
CASES = [
    # generate: settings, bounds and devices
    ([*GEN, "--faces", "0"], r"face budget must be in \[4, 10000000\], got 0"),
    ([*GEN, "--texture-size", "100"], r"texture size must be a power of two"),
    ([*GEN, "--seed", str(2**70)], r"seed must be in \[0, 2\*\*63 - 1\], got 1180591"),
    ([*GEN, "--size", "100000"], r"grid size must be a multiple of 16 pixels in \[16, 4096\]"),
    ([*GEN, "--grid", "100000"], r"extraction grid must be in \[8, 1024\], got 100000"),
    ([*GEN, "--steps", "100000"], r"steps must be in \[1, 1000\], got 100000"),
    ([*GEN, "--candidates", "1000"], r"candidates must be in \[1, 16\], got 1000"),
    ([*GEN, "--turntable", "100000"], r"turntable frames must be in \[0, 720\]"),
    ([*GEN, "--preview-resolution", "100000"], r"preview resolution must be in \[16, 2048\]"),
    ([*GEN, "--lods", "100000"], r"--lods must be an integer in \[1, 6\]"),
    ([*GEN, "--blob-sigma", "-1"], r"blob sigma must be in \(0, 1\], got -1.0"),
    ([*GEN, "--device", "banana"], r"unknown device 'banana'; expected cpu, cuda, cuda:N or mps$"),
    ([*GEN, "--device", "cuda"], r"device 'cuda' asked for, but torch sees no CUDA GPU"),
    # generate: the output folder
    (["generate", PROMPT, "-o", "{photo}/out"], r"cannot write .*photo.png/out: .*photo.png is not a folder"),
    (["generate", PROMPT, "-o", "{previous_run}"], r"previous_run is not empty; choose another or pass --overwrite"),
    # generate: weights
    ([*GEN, "--mvgen", "{pickled_mvgen}"],
     r"text_encoder/pytorch_model.bin is a pickled weights file \(.bin\): fourview reads safetensors only .*"
     r"convert it with: python -c .*text_encoder/model.safetensors"),
    ([*GEN, "--recon", "{pickled_recon}"], r"recon/model.pt is a pickled weights file"),
    ([*GEN, "--recon", "{pickled_recon}/model.pt"], r"model.pt is a pickled weights file"),
    ([*GEN, "--recon", "{corrupt_recon}"],
     r"cannot read reconstructor weights .*corrupt/model.safetensors: .*header"),
    ([*GEN, "--recon", "{empty_recon}"], r"weights must be a folder with model.safetensors"),
    ([*GEN, "--lora", "{lora_bin}"], r"lora.bin is a pickled weights file"),
    ([*GEN, "--lora", "{photo}"], r"LoRA weights must be a .safetensors file or a folder"),
    ([*GEN, "--mvgen", "nobody/nothing"],
     r"^cannot get mvgen weights 'nobody/nothing' from the hub: offline \(HF_HUB_OFFLINE\) and no cached copy found$"),
    ([*GEN, "--recon", "nobody/nothing"], r"cannot get reconstructor weights 'nobody/nothing'"),
    # generate and image: photos
    ([*GEN, "--image", "{bomb}"], r"decompression bomb"),
    (["image", "{bomb}", "-o", "{out}"], r"declares more pixels than Pillow decodes safely .*40 megapixels"),
    (["image", "{dot}", "-o", "{out}"], r"^image .*dot.png is 1x1 pixels: too small \(at least 16 pixels a side\)$"),
    (["image", "{corrupt_png}", "-o", "{out}"], r"cannot read image .*corrupt.png"),
    (["image", "{photo}", "-o", "{photo}/out"], r"cannot write .*photo.png/out"),
    (["image", "{photo}", "-o", "{out}", "--faces", "3"], r"face budget must be in \[4, 10000000\], got 3"),
    # reconstruct: views
    (["reconstruct", "{dot}", "{dot}", "{dot}", "{dot}", "-o", "{out}"], r"1x1 pixels: too small \(at least 16"),
    (["reconstruct", "{v8}", "{v8}", "{v8}", "{v8}", "-o", "{out}"], r"8x8 pixels: too small \(at least 16 pixels"),
    (["reconstruct", "{v8}", "-o", "{out}"], r"8x8 pixels: too small \(at least 32 pixels"),
    (["reconstruct", "{v0}", "{v1}", "{v2}", "-o", "{out}"], r"expected 4 view images \(az 0, 90, 180, 270\)"),
    (["reconstruct", "{v0}", "{v1}", "{v2}", "{v48}", "-o", "{out}"], r"the 4 views must have the same size"),
    ([*REC, "--optimize", "--steps", "100000"], r"--steps must be in \[1, 10000\]"),
    ([*REC, "--optimize", "--res", "100000"], r"--res must be in \[8, 2048\] pixels"),
    ([*REC, "--grid", "100000"], r"extraction grid must be in \[8, 1024\]"),
    ([*REC, "--device", "banana"], r"unknown device 'banana'"),
    (["reconstruct", *VIEWS, "-o", "{photo}/out"], r"cannot write .*photo.png/out"),
    ([*REC, "--recon", "{ckpt_recon}"], r"model.ckpt is a pickled weights file"),
    # batch
    (["batch", "{prompts}", "-o", "{photo}/out"], r"cannot write .*photo.png/out"),
    ([*BATCH, "--steps", "100000"], r"steps must be in \[1, 1000\]"),
    ([*BATCH, "--device", "banana"], r"unknown device 'banana'"),
    ([*BATCH, "--mvgen", "{pickled_mvgen}"], r"pytorch_model.bin is a pickled weights file"),
    ([*BATCH, "--mvgen", "nobody/nothing"], r"cannot get mvgen weights 'nobody/nothing'"),
    # batch: each item's inputs, as the single commands check theirs; one bad item refuses the whole batch
    (["batch", "-o", "{out}", "{missing_photo}"], r"^manifest line 2 \(item 1\): image not found: .*/nowhere.png$"),
    (["batch", "-o", "{out}", "{bomb_photo}"],
     r"^manifest line 1 \(item 0\): image .*20000x20000.png declares more pixels than Pillow decodes safely"),
    (["batch", "-o", "{out}", "{dot_photo}"],
     r"^manifest line 2 \(item 1\): image .*/dot.png is 1x1 pixels: too small \(at least 16 pixels a side\)$"),
    (["batch", "-o", "{out}", "{corrupt_photo}"], r"^manifest line 1 \(item 0\): cannot read image .*corrupt.png"),
    (["batch", "-o", "{out}", "{long_prompt}"],
     r"^manifest line 2 \(item 1\): prompt is too long: 82 tokens with start and end, the text encoders take 77"),
    (["batch", "-o", "{out}", "{long_negative}"], r"^manifest line 1 \(item 0\): negative prompt is too long: 82"),
    ([*BATCH, "--negative", LONG], r"^manifest line 1 \(item 0\): negative prompt is too long"),
    (["batch", "-o", "{out}", "{small_views}"], r"^manifest line 1 \(item 0\): image .*/v8.png is 8x8 pixels: too"),
    (["batch", "-o", "{out}", "{mixed_views}"], r"\(item 0\): the 4 views must have the same size, got .*v48.png 48"),
    (["batch", "-o", "{out}", "{several_bad}"],
     r"^manifest line 2 \(item 1\): image not found: .*/nowhere.png; 3 of the 5 items are bad \(manifest lines 2, 3, "
     r"4\), nothing was made$"),
    # export
    (["export", "{views_dir}", "-o", "{photo}/out/m.glb"], r"cannot write .*photo.png/out/m.glb"),
    (["export", "{views_dir}", "-o", "{views_dir}"], r"Invalid value for '-o' / '--out': .* is a directory"),
    (["export", "{views_dir}", "-o", "{out}/m.glb", "--faces", "0"], r"face budget must be in \[4, 10000000\]"),
    # data render
    ([*RENDER, "--res", "100000"], r"--res must be in \[1, 4096\], got 100000"),
    ([*RENDER, "--supersample", "100"], r"--supersample must be in \[1, 8\]"),
    ([*RENDER, "--random", "100000"], r"--random must be in \[0, 10000\]"),
    ([*RENDER, "--workers", "100000"], r"--workers must be in \[1, 256\]"),
    (["data", "render", "example:red_mug", "-o", "{photo}/out"], r"cannot write .*photo.png/out"),
    # train
    (["train", "recon", "--data", "{views_dir}", "--out", "{photo}/out"], r"cannot write .*photo.png/out"),
    (["train", "mvgen", "--from-scratch", "tiny", "--data", "{views_dir}", "--out", "{photo}/out"],
     r"cannot write .*photo.png/out"),
    # train: the data, before the output folder is made (or a model built)
    (["train", "recon", "--out", "{out}", "--data", "{nowhere}"], r"^dataset folder not found: .*/nowhere$"),
    (["train", "recon", "--out", "{out}", "--data", "{bare}"], r"^no rendered objects \(NAME/cameras.json\) in .*/ba"),
    (["train", "recon", "--data", "{objects}", "--out", "{out}", "--val-data", "{bare}"],
     r"^no rendered objects \(NAME/cameras.json\) in .*/bare$"),
    ([*TRAIN_MVGEN, "--data", "{nowhere}"], r"^mvgen training data folder not found: .*/nowhere$"),
    ([*TRAIN_MVGEN, "--data", "{bare}"], r"^no object folders with grid.png and caption.txt in .*/bare$"),
    ([*TRAIN_MVGEN, "--data", "{objects}", "--mix-2d", "{bare}"], r"^no image \+ .txt caption pairs in 2D pair"),
    (["train", "mvgen-lcm", "--teacher", "demo", "--out", "{out}", "--data", "{bare}"],
     r"^no object folders with grid.png and caption.txt in .*/bare$"),
    # serve
    (["serve", "--data", "{photo}/data"], r"cannot create the data folder .*photo.png/data"),
    (["serve", "--data", "{out}", "--mvgen", "{pickled_mvgen}"], r"pytorch_model.bin is a pickled weights file"),
    (["serve", "--data", "{out}", "--recon", "nobody/nothing"], r"cannot get reconstructor weights 'nobody/nothing'"),
]
# fmt: on


def _view(path: Path, side: int) -> Path:
    """A red disc on transparent, side x side."""
    yy, xx = np.mgrid[:side, :side]
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[(yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 3) ** 2] = (200, 40, 30, 255)
    Image.fromarray(rgba).save(path)
    return path


def _inputs(root: Path) -> dict[str, Path]:
    """The cases' input files. The pickles are not even valid ones: they must be refused by name, never read."""
    root.mkdir()
    files = {f"v{i}": _view(root / f"v{i}.png", 32) for i in range(4)}
    files |= {"views_dir": root, "photo": _view(root / "photo.png", 64), "v8": _view(root / "v8.png", 8)}
    files |= {"v48": _view(root / "v48.png", 48), "bomb": _png_declaring(root, 20000, 20000)}
    Image.new("RGB", (1, 1)).save(root / "dot.png")
    (root / "corrupt.png").write_bytes(files["photo"].read_bytes()[:60])
    (root / "prompts.txt").write_text(f"{PROMPT}\n")
    files |= {"dot": root / "dot.png", "corrupt_png": root / "corrupt.png", "prompts": root / "prompts.txt"}
    mvgen = root / "mvgen"
    (mvgen / "text_encoder").mkdir(parents=True)
    (mvgen / "model_index.json").write_text("{}")
    (mvgen / "text_encoder" / "pytorch_model.bin").write_bytes(b"not read")
    for name, weights in (("recon", "model.pt"), ("ckpt", "model.ckpt"), ("corrupt", "model.safetensors"),
                          ("empty", None)):  # fmt: skip
        (root / name).mkdir()
        (root / name / "config.json").write_text("{}")
        if weights:
            (root / name / weights).write_bytes(b"\x10\0\0\0\0\0\0\0{garbage")
        files[f"{'pickled' if name == 'recon' else name}_recon"] = root / name
    (root / "lora.bin").write_bytes(b"not read")
    previous = root.parent / "previous_run"
    previous.mkdir()
    (previous / "turntable.gif").write_bytes(b"GIF89a")
    for name, items in BAD_ITEMS.items():
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(item) + "\n" for item in items))
    (root / "bare").mkdir()
    mug = root / "objects" / "mug"  # training data of one object: the generator's and the reconstructor's
    mug.mkdir(parents=True)
    _view(mug / "grid.png", 64)
    (mug / "caption.txt").write_text(PROMPT)
    rig = [{"image": f"v{i}.png", "kind": "rig", "azimuth_deg": 90 * i, "elevation_deg": 20.0, "fov_deg": 30.0,
            "c2w": np.eye(4).tolist()} for i in range(4)]  # fmt: skip
    (mug / "cameras.json").write_text(json.dumps({"frames": rig}))
    files |= {"bare": root / "bare", "nowhere": root / "nowhere", "objects": root / "objects"}
    return files | {"pickled_mvgen": mvgen, "lora_bin": root / "lora.bin", "previous_run": previous}


@pytest.fixture
def no_loading(monkeypatch):
    """Every model loader, and each command's work, fails the test: the checks must come first."""
    import uvicorn

    from fourview.data import dataset_renderer
    from fourview.mvgen import distill
    from fourview.mvgen import train as mvgen_train
    from fourview.mvgen.pipeline import MultiViewPipeline
    from fourview.recon import train as recon_train
    from fourview.recon.model import Reconstructor

    def loading(*args, **kwargs):
        raise AssertionError("a model loaded (or the work began) before the inputs were checked")

    monkeypatch.setattr(MultiViewPipeline, "from_pretrained", loading)
    monkeypatch.setattr(Reconstructor, "from_pretrained", loading)
    monkeypatch.setattr(dataset_renderer, "render_dataset", loading)
    monkeypatch.setattr(recon_train, "train", loading)
    monkeypatch.setattr(mvgen_train, "train", loading)
    monkeypatch.setattr(distill, "distill_lcm", loading)
    monkeypatch.setattr(uvicorn, "run", loading)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("FOURVIEW_API_KEY", raising=False)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:1] + a[-2:])[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_before_loading_and_leaves_nothing(args, message, tmp_path, no_loading, capsys):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    files = {k: str(v) for k, v in _inputs(tmp_path / "in").items()} | {"out": str(tmp_path / "out")}
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([a.format(**files) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("fourview: error: ") and err.count("\n") == 1, err
    assert TMP_MARK not in err  # never an internal temporary's name
    assert re.search(message, err.removeprefix("fourview: error: ").strip()), err
    assert _tree(tmp_path) == before


def test_a_killed_runs_temporaries_are_removed_by_the_next_run(tmp_path, no_loading, capsys):
    """``kill -9`` leaves `.NAME.fourview-tmp-PID-HOST-X` beside the output; the next run removes it at its start."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out{TMP_MARK}{int(dead.stdout)}-{_host()}-abcd1234"
    (stale / "reconstruction").mkdir(parents=True)
    (stale / "model.glb").write_bytes(b"half")
    views = [_view(tmp_path / f"v{i}.png", 32) for i in range(3)]
    with pytest.raises(SystemExit):  # three views: refused after the output folder was checked
        main(["reconstruct", *map(str, views), "-o", str(tmp_path / "out")])
    assert "expected 4 view images" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["v0.png", "v1.png", "v2.png"]  # the temporary gone, no output made


def test_a_batch_checks_only_the_items_left_to_run(tmp_path, no_loading, capsys):
    """A re-run is not refused for an item finished before whose photo has gone since: it is not made again."""
    manifest = _inputs(tmp_path / "in")["missing_photo"]
    out = tmp_path / "out"
    out.mkdir()
    items = read_manifest(manifest)
    for item in items:
        (out / item.name).mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps({"index": i.index, "name": i.name, "status": "done"}) + "\n"
                                               for i in items))  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(["batch", str(manifest), "-o", str(out)])
    captured = capsys.readouterr()
    assert exit_.value.code == 0, captured.err
    assert "2 items: 0 made, 2 finished before, 0 failed" in captured.out


def test_the_server_refuses_views_too_small_to_hold_a_shape(tmp_path):
    """A views job of four 8x8 photos: HTTP 422 (an `InputError`) naming the upload, and nothing written."""
    from fourview.server.submission import JobSettings, Upload, write_views_inputs

    png = _view(tmp_path / "v8.png", 8).read_bytes()
    uploads = [Upload(f"view {i}.png", png) for i in range(4)]
    (tmp_path / "job").mkdir()
    with pytest.raises(InputError, match=r"^image 'view 0.png' is 8x8 pixels: too small \(at least 16 pixels"):
        write_views_inputs(uploads, JobSettings(), tmp_path / "job", 10**6)
    assert not any((tmp_path / "job").iterdir())
