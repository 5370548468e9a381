"""fourview's export options of issue 21 on the command line: bad values are one line and exit 2 before any
model loads, and a saved reconstruction is re-exported for a game (every file valid, the size and pivot right)."""

from __future__ import annotations

import json
import re

import pytest
import trimesh

from fourview.cli import main
from fourview.pipeline import ExportSettings, FourViewPipeline
from tests.gltf_validation import validate_glb


def run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


@pytest.fixture
def no_models(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(FourViewPipeline, "from_pretrained", classmethod(refuse))


BAD = [
    (["--height", "-1"], "--height must be a positive number of metres, got -1.0"),
    (["--height", "0"], "--height must be a positive number of metres, got 0.0"),
    (["--lods", "0"], r"--lods must be an integer in \[1, 6\]"),
    (["--lods", "7"], r"--lods must be an integer in \[1, 6\]"),
    (["--target", "mobile"], "Invalid value for '--target': 'mobile' is not one of 'game', 'film', 'print'"),
    (["--pivot", "top"], "Invalid value for '--pivot'"),
    (["--target", "game", "--vertex-colors", "--normal-map"], "a normal map and occlusion are textures"),
]


@pytest.mark.parametrize("options, message", BAD)
@pytest.mark.parametrize("command", ["generate", "reconstruct", "export"])
def test_bad_export_options_are_one_line_and_exit_2(tmp_path, capsys, no_models, command, options, message):
    view = tmp_path / "view.png"
    view.write_bytes(b"")
    head = {
        "generate": ["generate", "a red mug", "-o", str(tmp_path / "out")],
        "reconstruct": ["reconstruct", str(view), "-o", str(tmp_path / "out")],
        "export": ["export", str(tmp_path), "-o", str(tmp_path / "out.glb")],
    }[command]
    code, out, err = run([*head, *options], capsys)
    assert code == 2 and out == ""
    assert err.startswith("fourview: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.glb").exists()


def test_targets_and_user_options():
    game = ExportSettings(target="game").overrides()
    assert game["face_budget"] == 10_000 and game["texture_size"] == 1024 and game["normal_map"] and game["occlusion"]
    assert game["pivot"] == "bottom" and game["target"] == "game"
    mine = ExportSettings(target="game", face_budget=5000, texture_size=512, pivot="center", normal_map=False)
    assert {k: mine.overrides()[k] for k in ("face_budget", "texture_size", "pivot", "normal_map")} == {
        "face_budget": 5000, "texture_size": 512, "pivot": "center", "normal_map": False}  # fmt: skip
    flat = ExportSettings(target="game", vertex_colors=True).overrides()
    assert flat["vertex_colors"] and not flat["normal_map"] and not flat["occlusion"]
    assert ExportSettings(target="print").overrides()["vertex_colors"] is True
    assert ExportSettings().overrides() == {}  # no target: the presets as before


def test_reexport_for_a_game(tmp_path, capsys):
    """`fourview export --target game --lods 3 --height 0.3` on a saved demo reconstruction."""
    from fourview.data.dataset_renderer import RenderSettings, render_dataset, resolve_inputs
    from fourview.render.mesh_renderer import Lighting

    settings = RenderSettings(resolution=64, num_random=0, lighting=Lighting(albedo=True), write_depth=False,
                              write_normal=False)  # fmt: skip
    (folder,) = render_dataset(resolve_inputs(["example:red_mug"]), tmp_path / "render", settings, progress=False)
    views = [str(folder / "rig" / f"{az:03d}.png") for az in (0, 90, 180, 270)]
    saved = tmp_path / "mug"
    code, _, err = run(["reconstruct", *views, "-o", str(saved), "--quiet", "--texture-size", "64", "--grid", "48"],
                       capsys)  # fmt: skip
    assert code == 0, err
    out = tmp_path / "game" / "mug.glb"
    args = ["export", str(saved), "-o", str(out), "--target", "game", "--lods", "3", "--height", "0.3",
            "--texture-size", "256", "--grid", "96", "--faces", "3000"]  # fmt: skip
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    meta = json.loads(out.with_name("mug.glb.meta.json").read_text())
    assert [level["faces"] for level in meta["mesh"]["lods"]] == [3000, 1500, 750]
    assert meta["mesh"]["placement"] == {"up": "+Y", "front": "+Z", "units": "metres", "height_m": 0.3,
                                         "pivot": "bottom", "scale": meta["mesh"]["placement"]["scale"],
                                         "target": "game"}  # fmt: skip
    assert meta["export"]["target"] == "game" and meta["export"]["texture_size"] == 256
    names = ["mug.glb", "mug_lod1.glb", "mug_lod2.glb", "mug_lods.glb"]
    assert sorted(p.name for p in out.parent.glob("*.glb")) == sorted(names)
    for name in names:
        assert validate_glb(out.with_name(name))["issues"]["numErrors"] == 0
    lo, hi = trimesh.load(out, force="mesh").bounds
    assert hi[1] - lo[1] == pytest.approx(0.3, rel=1e-4) and lo[1] == pytest.approx(0.0, abs=1e-6)
