"""The command line: one-line errors with exit status 2, and no partial output."""

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import click
import pytest

from fourview.cli import main


def run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["data", "render", "missing.obj", "-o", "{out}"], "input not found"),
        (["data", "render", "{bad_ext}", "-o", "{out}"], "unknown asset format"),
        (["data", "render", "{empty_obj}", "-o", "{out}"], "empty.obj"),
        (["data", "render", "example:red_mug", "--res", "-8", "-o", "{out}"], "resolution"),
        (["data", "render", "example:nope", "-o", "{out}"], "unknown example"),
        (["data", "render", "example:red_mug", "--bogus", "-o", "{out}"], "--bogus"),
        (["data", "render", "example:green_tree", "--subset", "eval", "-o", "{out}"], "no objects of the eval subset"),
        (["data", "synth", "--count", "0", "-o", "{out}"], "--count"),
        (["data", "synth", "--count", "1", "--split", "test", "-o", "{out}"], "split"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, needle, tmp_path, capsys):
    (tmp_path / "mesh.xyz").write_text("0 0 0")
    (tmp_path / "empty.obj").write_text("# nothing\n")
    out = tmp_path / "out"
    fill = {"out": str(out), "bad_ext": str(tmp_path / "mesh.xyz"), "empty_obj": str(tmp_path / "empty.obj")}
    code, stdout, err = run([a.format(**fill) for a in args], capsys)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.rglob("*.png"))


def test_render_example_end_to_end(tmp_path, capsys):
    code, stdout, err = run(
        [
            "data",
            "render",
            "example:red_mug",
            "--res",
            "32",
            "--random",
            "2",
            "--albedo",
            "--quiet",
            "-o",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    meta = json.loads((tmp_path / "red_mug" / "cameras.json").read_text())
    assert len(meta["frames"]) == 6 and meta["settings"]["lighting"]["albedo"] is True
    assert (tmp_path / "red_mug" / "caption.txt").read_text().strip() == "a glossy red striped mug"


def test_synth_writes_objects(tmp_path, capsys):
    code, _, err = run(["data", "synth", "--count", "2", "--seed", "5", "--quiet", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    assert len(list(tmp_path.glob("*/model.glb"))) == 2


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "fourview.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "data" in out.stdout


@pytest.mark.parametrize(
    "args, code, stdout, stderr",
    [
        (["data", "synth", "--count", "1", "--quiet", "-o", "objs"], 0, "wrote 1 objects to objs\n", ""),
        (["data", "synth", "--count", "0", "-o", "objs"], 2, "", "fourview: error: --count must be >= 1, got 0\n"),
        (["--version"], 0, "fourview, version", ""),
    ],
)
def test_the_command_line_ends_with_its_status_and_all_its_output(args, code, stdout, stderr, tmp_path):
    """`main` ends the process at once (`_exit_now`): the status and the buffered output must still come out."""
    out = subprocess.run([sys.executable, "-m", "fourview.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert (out.returncode, out.stderr) == (code, stderr)
    assert out.stdout.startswith(stdout)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--help"], ("train", "generate")),
        (["data", "--help"], ("svm-train", "Caption and score")),  # the data commands are built on demand
        (["train", "--help"], ("recon", "mvgen-lcm")),  # so are the train commands (their configs import torch)
        (["bench", "--help"], ("gso",)),
    ],
)
def test_listing_commands_imports_no_torch(args, needles):
    code = (
        f"import sys\nfrom fourview.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and all(n in out.stdout for n in needles), out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize(
    "path, param",
    [
        (["data", "render"], "settings__elevation_deg"),
        (["reconstruct"], "elevation"),
        (["generate"], "sampling__elevation_deg"),
    ],
)
def test_rig_elevation_defaults_are_the_camera_constant(path, param):
    """cli.py writes the rig elevation as a literal where importing fourview.cameras would import torch."""
    from fourview.cameras import DEFAULT_ELEVATION_DEG
    from fourview.cli import cli

    command = cli
    for name in path:
        command = command.get_command(click.Context(command), name)
    (option,) = [p for p in command.params if p.name == param]
    assert option.default == DEFAULT_ELEVATION_DEG


def test_train_commands_are_built_on_demand_with_their_config_options(capsys):
    code, out, _ = run(["train", "--help"], capsys)
    assert code == 0 and all(name in out for name in ("recon", "mvgen", "mvgen-lcm"))
    code, out, _ = run(["train", "recon", "--help"], capsys)
    assert code == 0 and "--data" in out and "--val-data" in out and "--out" in out
    code, _, err = run(["train", "recon", "--data", "somewhere"], capsys)
    assert code == 2 and "Missing option '--out'" in err


@pytest.fixture
def unchecked_training_data(monkeypatch):
    """The train commands index their --data before the run (a missing folder is refused): these tests give none."""
    for indexer in ("fourview.recon.dataset.find_objects", "fourview.mvgen.dataset.grid_dataset"):
        monkeypatch.setattr(indexer, lambda *args, **kwargs: None)


@pytest.mark.parametrize(
    "command, module, runner, extra, field",
    [
        ("recon", "fourview.recon.train", "train", [], "val_objects"),
        ("mvgen", "fourview.mvgen.train", "train", [], "val_prompts"),
        ("mvgen-lcm", "fourview.mvgen.distill", "distill_lcm", ["--teacher", "t"], "val_prompts"),
    ],
)
def test_train_commands_build_their_frozen_config(
    command, module, runner, extra, field, unchecked_training_data, monkeypatch, capsys
):
    import importlib
    from types import SimpleNamespace

    seen = []
    result = SimpleNamespace(steps=3, time_s=1.0, out_dir="o", val=None, eval_loss_start=1.0, eval_loss_end=0.5,
                             weights="w")  # fmt: skip
    monkeypatch.setattr(importlib.import_module(module), runner, lambda config: seen.append(config) or result)
    option = "--" + field.replace("_", "-")
    code, out, _ = run(["train", command, "--data", "d", "--out", "o", *extra, option, "a b", option, "c"], capsys)
    assert code == 0 and "3 steps" in out
    (config,) = seen
    assert getattr(config, field) == ("a b", "c") and config.data == "d" and config.out == "o"
    hash(config)  # frozen and all fields hashable: repeated options arrive as a tuple, not a list


@pytest.mark.parametrize(
    "flag, value", [([], None), (["--zero-terminal-snr"], True), (["--no-zero-terminal-snr"], False)]
)
def test_optional_bool_options_keep_none_unless_given(flag, value, unchecked_training_data, monkeypatch, capsys):
    """A ``bool | None`` field is a --x/--no-x pair whose absence means "leave it as the init has it"."""
    from types import SimpleNamespace

    import fourview.mvgen.train as mvgen_train

    seen = []
    result = SimpleNamespace(steps=1, time_s=1.0, out_dir="o", val=None, eval_loss_start=1.0, eval_loss_end=0.5,
                             weights="w")  # fmt: skip
    monkeypatch.setattr(mvgen_train, "train", lambda config: seen.append(config) or result)
    code, _, _ = run(["train", "mvgen", "--data", "d", "--out", "o", *flag], capsys)
    assert code == 0 and seen[0].zero_terminal_snr is value


_COLLECTOR_SPY = """
import gc, sys
from fourview import cli
sys.argv = ["fourview", "data", "synth", "--count", "0", "-o", "x"]
states = []
done = cli._startup_done
def spy():
    states.append(gc.isenabled())
    done()
cli._startup_done = spy
cli._exit_now = sys.exit  # the process would end in main, before the line below
try:
    cli.main({argv})
except SystemExit as e:
    print(e.code, states, gc.isenabled())
"""


@pytest.mark.parametrize(
    "argv, expected",
    [
        (None, "2 [False, True] True"),  # the command line: off at start, on when the command starts, on after it
        (["data", "synth", "--count", "0", "-o", "x"], "2 [True, True] True"),  # a caller's collector: untouched
    ],
)
def test_the_garbage_collector_is_off_during_start_up_only(argv, expected, tmp_path):
    code = _COLLECTOR_SPY.format(argv=repr(argv) if argv else "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == expected, out.stderr


@dataclass(frozen=True)
class _Knobs:
    """A toy config of one command: a fixed-length tuple, an int Literal, a bool shown as a negative flag."""

    band: tuple[float, float] = (-1.0, 1.0)
    """Band, degrees."""
    level: Literal[1, 2] = 1
    """Level of detail."""
    write_x: bool = True
    """Also write x."""


@pytest.mark.parametrize(
    "args, expected",
    [([], _Knobs()), (["--band", "-5", "7.5", "--level", "2", "--no-x"], _Knobs((-5.0, 7.5), 2, False))],
)
def test_dataclass_options_fixed_tuples_typed_literals_and_negative_flags(args, expected):
    from click.testing import CliRunner

    from fourview.cli import _dataclass_options

    seen = []
    command = click.command()(_dataclass_options(_Knobs, flags={"write_x": "x"})(seen.append))
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert seen == [expected] and type(seen[0].level) is int
    help_text = " ".join(CliRunner().invoke(command, ["--help"]).output.split())
    assert "--band <FLOAT FLOAT>... Band, degrees. [default: -1.0, 1.0]" in help_text
    assert "--level [1|2] Level of detail. [default: 1]" in help_text and "--x / --no-x Also write x." in help_text
    result = CliRunner().invoke(command, ["--band", "1"])
    assert result.exit_code == 2 and "'--band' requires 2 arguments" in result.output


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], {}),
        (
            ["--res", "64", "--elevation", "10", "--random", "2", "--random-elevation", "-10", "30", "--supersample",
             "1", "--no-depth", "--no-normal", "--seed", "3", "--albedo", "--ambient", "0.5", "--directional", "0.1",
             "--light-dir", "0", "0", "1", "--environment", "0.6", "--specular", "0"],
            {"resolution": 64, "elevation_deg": 10.0, "num_random": 2, "random_elevation_deg": (-10.0, 30.0),
             "supersample": 1, "write_depth": False, "write_normal": False, "seed": 3,
             "lighting": {"albedo": True, "ambient": 0.5, "directional": 0.1, "direction": (0.0, 0.0, 1.0),
                          "environment": 0.6, "specular": 0.0}},
        ),
    ],
)  # fmt: skip
def test_render_options_are_the_render_settings_and_lighting(args, expected, monkeypatch, tmp_path, capsys):
    import fourview.data.dataset_renderer as dataset_renderer
    from fourview.data.dataset_renderer import RenderSettings
    from fourview.render.mesh_renderer import Lighting

    seen = []
    monkeypatch.setattr(
        dataset_renderer, "render_dataset", lambda sources, out, settings, **kw: seen.append(settings) or []
    )
    code, _, err = run(["data", "render", "example:red_mug", "-o", str(tmp_path), *args], capsys)
    assert code == 0, err
    lighting = Lighting(**expected.pop("lighting", {}))
    assert seen == [RenderSettings(**expected, lighting=lighting)]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--ambient", "-1"], "lighting ambient must be >= 0, got -1.0"),
        (["--light-dir", "0", "0", "0"], "light direction must be non-zero"),
        (["--light-dir", "0", "1"], "'--light-dir' requires 3 arguments"),
    ],
)
def test_bad_lighting_is_one_line_exit_2(args, needle, tmp_path, capsys):
    code, _, err = run(["data", "render", "example:red_mug", "-o", str(tmp_path / "out"), *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_filter_thresholds_reach_the_curriculum(tmp_path, capsys):
    from fourview.data.manifest import ObjectRecord, read_manifest, write_manifest

    means = {"a": 4.0, "b": 5.0, "c": 6.0, "d": 7.0}
    write_manifest(tmp_path / "m.jsonl", [ObjectRecord(n, n, aesthetic=(m,) * 4) for n, m in means.items()])
    out = tmp_path / "kept.jsonl"
    args = ["data", "filter", str(tmp_path / "m.jsonl"), "-o", str(out), "--min-aesthetic", "4.5", "--pass", "2",
            "--top-fraction", "0.5"]  # fmt: skip
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert [r.name for r in read_manifest(out)] == ["c", "d"] and "kept 2 of 4" in stdout


# ------------------------------------------------------------------ reconstruct --optimize


def _disc_views(tmp_path, res=32, radius=0.6, n=4, opaque=False):
    """Views of a sphere of ``radius`` seen from 4 units: a disc (perspective), written as PNGs."""
    import math

    import numpy as np

    from fourview.images import write_png

    r_px = math.tan(math.asin(radius / 4.0)) / math.tan(math.radians(15.0)) * res / 2
    yy, xx = np.mgrid[0:res, 0:res] + 0.5
    alpha = np.clip(r_px + 0.5 - np.hypot(xx - res / 2, yy - res / 2), 0.0, 1.0).astype(np.float32)
    paths = []
    for i in range(n):
        img = np.zeros((res, res, 4), np.float32)
        img[..., 0], img[..., 1], img[..., 2] = 0.8, 0.3 + 0.1 * i, 0.2
        img[..., 3] = 1.0 if opaque else alpha
        paths.append(tmp_path / f"v{i}.png")
        write_png(paths[-1], img)
    return [str(p) for p in paths]


FAST = ["--steps", "3", "--res", "32", "--grid", "32", "--texture-size", "64", "--faces", "1000", "--quiet"]


def test_reconstruct_optimize_end_to_end_and_reexport(tmp_path, capsys):
    views = _disc_views(tmp_path)
    out = tmp_path / "asset"
    code, stdout, err = run(["reconstruct", *views, "--optimize", *FAST, "-o", str(out)], capsys)
    assert code == 0, err
    assert {"model.glb", "views.png", "reconstruction", "meta.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "optimize" and meta["optimize"]["steps"] == 3 and meta["optimize"]["resolution"] == 32
    assert meta["optimize"]["flat_bottom"] is True
    assert meta["timings_s"]["optimize_s"] > 0 and len(meta["loss_history"]) >= 2
    reexport = ["export", str(out), "--grid", "32", "--texture-size", "64", "-o", str(tmp_path / "re.glb")]
    code, stdout, err = run(reexport, capsys)
    assert code == 0, err
    assert (tmp_path / "re.glb").stat().st_size > 0


def test_reconstruct_optimize_with_cameras(tmp_path, capsys):
    from fourview.cameras import Camera

    views = _disc_views(tmp_path, n=3)
    cams = [Camera(0.0, 20.0), Camera(120.0, -10.0), Camera(240.0, 50.0)]
    frames = [{"image": f"v{i}.png", "kind": "random", **c.to_json(32)} for i, c in enumerate(cams)]
    (tmp_path / "cameras.json").write_text(json.dumps({"frames": frames}))
    out = tmp_path / "asset"
    code, _, err = run(["reconstruct", *views, "--optimize", "--cameras", str(tmp_path / "cameras.json"), *FAST,
                        "-o", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "meta.json").read_text())["views"] == ["v0.png", "v1.png", "v2.png"]


def test_reconstruct_optimize_round_bottom_keeps_the_hull_below(tmp_path, capsys):
    views = _disc_views(tmp_path)
    out = tmp_path / "asset"
    code, _, err = run(["reconstruct", *views, "--optimize", "--round-bottom", *FAST, "-o", str(out)], capsys)
    assert code == 0, err
    assert json.loads((out / "meta.json").read_text())["optimize"]["flat_bottom"] is False


@pytest.mark.parametrize("case, needle", [("opaque", "fully opaque"), ("no_optimize", "need --optimize"),
                                          ("camera_size", "do not match"), ("steps", "--steps"),
                                          ("round_no_optimize", "need --optimize"),
                                          ("round_recon", "not of --recon refinement")])  # fmt: skip
def test_reconstruct_optimize_bad_input_is_one_line_exit_2(case, needle, tmp_path, capsys):
    from fourview.cameras import Camera

    views = _disc_views(tmp_path, opaque=case == "opaque")
    frames = [{"image": f"v{i}.png", "kind": "rig", **Camera(90.0 * i, 20.0).to_json(64)} for i in range(4)]
    (tmp_path / "cameras.json").write_text(json.dumps({"frames": frames}))
    extra = {
        "opaque": ["--optimize"],
        "no_optimize": ["--steps", "3"],
        "camera_size": ["--optimize", "--cameras", str(tmp_path / "cameras.json")],
        "steps": ["--optimize", "--steps", "0"],
        "round_no_optimize": ["--round-bottom"],
        "round_recon": ["--optimize", "--recon", "demo", "--round-bottom"],
    }[case]
    out = tmp_path / "asset"
    code, _, err = run(["reconstruct", *views, *extra, "--quiet", "-o", str(out)], capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_reconstruct_optimize_refines_the_demo_reconstructor(tmp_path, capsys):
    views = _disc_views(tmp_path, res=64)
    out = tmp_path / "asset"
    fast = ["--steps", "2", "--grid", "32", "--texture-size", "64", "--faces", "1000", "--quiet"]
    code, _, err = run(["reconstruct", *views, "--optimize", "--recon", "demo", *fast, "-o", str(out)], capsys)
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "refine" and meta["recon"] == "demo" and meta["refine"]["steps"] == 2
    assert (out / "reconstruction" / "field.safetensors").is_file()


@pytest.mark.parametrize("project", [True, False])
def test_reconstruct_projects_the_views_colours_unless_told_not_to(project, tmp_path, capsys):
    import numpy as np

    from fourview.data.assets import load_asset

    views = _disc_views(tmp_path, res=64)  # flat (0.8, 0.3 + 0.1 i, 0.2) per view
    out = tmp_path / "asset"
    flag = [] if project else ["--no-project-views"]
    code, _, err = run(["reconstruct", *views, "-o", str(out), "--grid", "64", *flag], capsys)
    assert code == 0, err
    assert json.loads((out / "meta.json").read_text())["project_views"] is project
    tex = load_asset(out / "model.glb", normalize=False).parts[0].material.texture  # [T, T, 3|4] sRGB
    red, blue = np.median(tex[..., 0]), np.median(tex[..., 2])
    if project:  # most of the surface is seen: the views' own red and blue, whatever the field thinks
        assert abs(red - 0.8) < 0.05 and abs(blue - 0.2) < 0.05, (red, blue)
    assert (out / "reconstruction" / "views.npz").is_file() is project
    # Re-exporting bakes the same texture: the saved views are projected again.
    code, _, err = run(["export", str(out), "-o", str(tmp_path / "re.glb"), "--grid", "64"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "re.glb.meta.json").read_text())["project_views"] is project
    re_tex = load_asset(tmp_path / "re.glb", normalize=False).parts[0].material.texture
    assert abs(np.median(re_tex[..., 0]) - red) < 0.02 and abs(np.median(re_tex[..., 2]) - blue) < 0.02
