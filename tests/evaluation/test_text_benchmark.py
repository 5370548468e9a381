"""The text-to-3D benchmark: a tiny pipeline with a tiny CLIP, resuming, shards, refusals; the demo from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from fourview.cli import main
from fourview.data.synthetic import COLOURS, SHAPES
from fourview.errors import InputError
from fourview.evaluation.clip_metrics import load_clip
from fourview.evaluation.text_benchmark import (
    CLIP_VIEWS,
    TextBenchConfig,
    check_output,
    run_text_benchmark,
)
from fourview.pipeline import ExportSettings, FourViewPipeline, SamplingSettings
from fourview.recon.model import Reconstructor
from tests.evaluation.test_clip_metrics import save_tiny_clip
from tests.mvgen.test_pipeline import tiny_pipeline
from tests.test_pipeline import sphere_forward, tiny_recon  # noqa: F401 (fixtures: a tiny reconstructor of a sphere)

SAMPLING = SamplingSettings(steps=2)
EXPORT = ExportSettings(grid_resolution=24, texture_size=64, face_budget=800)
SMALL = {"turntable_frames": 3, "preview_resolution": 32, "adherence_resolution": 16}
TABLES = ("results.jsonl", "results.md", "summary.json", "settings.json")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    save_tiny_clip(folder)
    return load_clip(str(folder))


@pytest.fixture
def pipe(tiny_recon, sphere_forward):  # noqa: F811
    return FourViewPipeline(tiny_pipeline(), Reconstructor.from_pretrained(str(tiny_recon)).eval())


@pytest.fixture
def prompts(tmp_path) -> Path:
    """A synthetic-world prompt, a free one, and one longer than the text encoder's 77 tokens."""
    path = tmp_path / "prompts.jsonl"
    records = [{"prompt": "a red mug", "shape": "mug", "colour": "red"}, {"prompt": "a blue car"},
               {"prompt": "a very long prompt " * 30}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_clip_scores_adherence_and_errors_are_recorded_then_a_rerun_resumes(pipe, tiny_clip, prompts, tmp_path):
    config = TextBenchConfig(prompts=str(prompts), clip="tiny", **SMALL)
    out = tmp_path / "out"
    summary = run_text_benchmark(config, out, pipe, tiny_clip, SAMPLING, EXPORT, progress=False)
    assert (summary.selected, summary.computed, summary.skipped, summary.clip) == (3, 3, 0, "available")
    assert all((out / name).is_file() for name in TABLES)
    mug, car, long = _records(out)
    assert "tokens" in long["error"] and long["clip_score"] is None
    for record in (mug, car):
        assert record["error"] is None and record["faces"] > 0
        assert 0.0 <= record["clip_score"] <= 100.0
        assert len(record["clip_ranks"]) == CLIP_VIEWS and all(1 <= r <= 3 for r in record["clip_ranks"])
        assert record["clip_r_precision"] == sum(r == 1 for r in record["clip_ranks"]) / CLIP_VIEWS
        assert record["timings_s"]["asset_s"] >= record["timings_s"]["mvgen_s"] > 0.0
        assert record["peak_memory_mb"] > 0.0 and record["peak_gpu_memory_mb"] is None
        folder = out / "assets" / record["name"]
        assert json.loads((folder / "meta.json").read_text())["prompt"] == record["prompt"]
        with Image.open(folder / "turntable.gif") as gif:
            assert (gif.n_frames, gif.size) == (3, (32, 32))
    assert car["adherence"] is None
    adherence = mug["adherence"]
    assert (adherence["target_shape"], adherence["target_colour"]) == ("mug", "red")
    assert adherence["colour"] in COLOURS and adherence["colour_hit"] == (adherence["colour"] == "red")
    assert adherence["shape"] in SHAPES and adherence["shape_hit"] == (adherence["shape"] == "mug")
    assert adherence["best_iou"] >= adherence["prompt_shape_iou"] >= 0.0
    means = summary.means
    assert means["clip_score"] == pytest.approx((mug["clip_score"] + car["clip_score"]) / 2)
    assert (means["colour_rate"], means["shape_rate"]) == (adherence["colour_hit"], adherence["shape_hit"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["prompts"]["failed"] == {long["name"]: long["error"]} and saved["prompts"]["synthetic"] == 1
    table = (out / "results.md").read_text()
    assert "| **mean (2)** |" in table and "failed:" in table and f"{adherence['colour']} (" in table
    again = run_text_benchmark(config, out, pipe, tiny_clip, SAMPLING, EXPORT, progress=False)
    assert (again.computed, again.skipped) == (0, 3) and _records(out) == [mug, car, long]
    other = TextBenchConfig(prompts=str(prompts), clip="tiny", **{**SMALL, "turntable_frames": 4})
    with pytest.raises(InputError, match="holds results made with other settings .*turntable_frames"):
        run_text_benchmark(other, out, pipe, tiny_clip, SAMPLING, EXPORT, progress=False)
    with pytest.raises(InputError, match="other settings .*prompts_digest"):
        check_output(TextBenchConfig(prompts="synthetic_heldout", clip="tiny", **SMALL), out, pipe.names, SAMPLING,
                     EXPORT)  # fmt: skip


def test_two_shards_split_the_prompts_and_either_writes_every_record(pipe, prompts, tmp_path):
    config = TextBenchConfig(prompts=str(prompts), max_prompts=2, **SMALL)
    first = run_text_benchmark(config, tmp_path, pipe, None, SAMPLING, EXPORT, rank=1, world_size=2, progress=False)
    assert (first.selected, first.computed, len(first.results)) == (2, 1, 1)
    assert first.results[0].prompt == "a blue car"
    second = run_text_benchmark(config, tmp_path, pipe, None, SAMPLING, EXPORT, rank=0, world_size=2, progress=False)
    assert second.computed == 1 and [r.prompt for r in second.results] == ["a red mug", "a blue car"]
    assert second.clip.startswith("unavailable (CLIP weights not given")
    assert second.means["clip_score"] is None and second.means["colour_rate"] is not None
    assert json.loads((tmp_path / "summary.json").read_text())["clip"] == second.clip
    assert "| unavailable | unavailable |" in (tmp_path / "results.md").read_text()


def test_pipelines_and_clip_weights_that_do_not_fit_are_refused(pipe, tiny_clip, prompts, tmp_path):
    config = TextBenchConfig(prompts=str(prompts))
    with pytest.raises(InputError, match="needs a pipeline with a generator and a reconstructor"):
        run_text_benchmark(config, tmp_path, FourViewPipeline(None, pipe.reconstructor), progress=False)
    with pytest.raises(InputError, match="exactly when the settings name them"):
        run_text_benchmark(config, tmp_path, pipe, tiny_clip, progress=False)
    with pytest.raises(InputError, match="--max-prompts must be >= 1"):
        TextBenchConfig(max_prompts=0)
    assert not (tmp_path / "settings.json").exists()


def _run(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def test_the_command_with_the_demo_models_then_resumed(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red mug\na blue car\n")
    out = tmp_path / "out"
    args = ["bench", "text", "--prompts", str(prompts), "-o", str(out), "--steps", "2", "--turntable", "2",
            "--preview-resolution", "32", "--faces", "800", "--texture-size", "64", "--grid", "32",
            "--quiet"]  # fmt: skip
    code, stdout, stderr = _run(args, capsys)
    assert code == 0, stderr
    assert "2 generated now, 0 finished before" in stdout and "CLIP: unavailable (CLIP weights not given" in stdout
    assert [r["error"] for r in _records(out)] == [None, None]
    assert json.loads((out / "settings.json").read_text())["models"] == {"mvgen": "demo", "student": None,
                                                                          "lora": None, "recon": "demo"}  # fmt: skip
    code, stdout, stderr = _run(args, capsys)
    assert code == 0 and "0 generated now, 2 finished before" in stdout, stderr
    code, _, stderr = _run([*args, "--steps", "3"], capsys)
    assert code == 2 and "holds results made with other settings (sampling)" in stderr
    code, _, stderr = _run(["bench", "text", "--prompts", "no_such_set", "-o", str(tmp_path / "x")], capsys)
    assert code == 2 and "--prompts no_such_set: no such file, and not a shipped set" in stderr
    code, _, stderr = _run(["bench", "text", "--prompts", "df415", "-o", str(tmp_path / "y"), "--clip",
                            str(tmp_path / "no-clip")], capsys)  # fmt: skip
    assert code == 2 and "CLIP weights not found" in stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
