"""The command line: one-line errors with exit status 2, and no partial output."""

import json
import subprocess
import sys

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
