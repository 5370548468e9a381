"""`fourview generate`: text (or a photo) -> views -> reconstruction -> asset folder, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fourview.cli import main
from fourview.mvgen.pipeline import CANDIDATE_SEED_STRIDE
from fourview.pretrained import demo_folder, resolve_weights
from tests.mvgen.test_pipeline import save_tiny, tiny_pipeline

FAST = ["--steps", "2", "--grid", "32", "--texture-size", "64", "--faces", "2000"]


@pytest.fixture(scope="module")
def tiny_mvgen(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-mvgen")
    save_tiny(tiny_pipeline(), folder)
    return folder


def run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def test_generate_writes_the_asset_folder(tiny_mvgen, tmp_path, capsys):
    out = tmp_path / "out" / "mug"
    code, stdout, err = run(
        [
            "generate",
            "a red mug",
            "-o",
            out,
            "--mvgen",
            tiny_mvgen,
            "--seed",
            7,
            "--turntable",
            4,
            "--candidates",
            2,
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert {"model.glb", "views.png", "turntable.gif", "meta.json", "reconstruction"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    assert (out / "model.glb").read_bytes()[:4] == b"glTF"
    with Image.open(out / "views.png") as im:
        assert im.size == (64, 64)  # the tiny generator's grid
    with Image.open(out / "turntable.gif") as im:
        assert im.n_frames == 4
    meta = json.loads((out / "meta.json").read_text())
    assert meta["prompt"] == "a red mug" and meta["seed"] == 7 and meta["steps"] == 2
    assert meta["candidates"] == 2 and meta["kept_seed"] in (7, 7 + CANDIDATE_SEED_STRIDE)
    assert meta["mvgen"] == str(tiny_mvgen) and meta["recon"] == "demo" and meta["grid_size"] == 64
    for stage in ("load_models_s", "mvgen_s", "reconstruct_s", "export_s", "turntable_s"):
        assert meta["timings_s"][stage] >= 0.0
    assert meta["peak_memory_mb"] >= meta["peak_memory_after_mvgen_mb"] > 0
    assert "wrote" in stdout and "model.glb" in stdout


def test_generate_from_a_photo(tiny_mvgen, tmp_path, capsys):
    photo = np.zeros((48, 40, 4), np.uint8)
    photo[8:40, 10:30] = [30, 160, 40, 255]
    Image.fromarray(photo, "RGBA").save(tmp_path / "photo.png")
    out = tmp_path / "from-photo"
    code, _, err = run(
        ["generate", "a green bottle", "-o", out, "--mvgen", tiny_mvgen, "--image", tmp_path / "photo.png",
         "--turntable", 0, *FAST], capsys,
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["image"].endswith("photo.png")
    assert not (out / "turntable.gif").exists()
    views = np.asarray(Image.open(out / "views.png").convert("RGB"), np.float32) / 255.0
    front = views[:32, :32]
    assert front[16, 16, 1] > 0.5 and front[16, 16, 0] < 0.3  # the photo's green object, centred
    assert front[1, 1].min() > 0.95  # on white


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "", "-o", "{out}"], "prompt is empty"),
        (["generate", "  ", "-o", "{out}"], "prompt is empty"),
        (["generate", "a very " * 80 + "red mug", "-o", "{out}", "--mvgen", "{mvgen}"], "too long"),
        (["generate", "a red mug", "-o", "{out}", "--mvgen", "{tmp}/no/such/weights"], "mvgen weights not found"),
        (["generate", "a red mug", "-o", "{out}", "--mvgen", "{tmp}"], "model_index.json"),
        (["generate", "a red mug", "-o", "{out}", "--mvgen", "{mvgen}", "--recon", "{tmp}/no/recon"], "reconstructor"),
        (["generate", "a red mug", "-o", "{out}", "--mvgen", "{mvgen}", "--size", "72"], "multiple of 16"),
        (
            ["generate", "a red mug", "-o", "{out}", "--mvgen", "{mvgen}", "--image", "{tmp}/none.png"],
            "image not found",
        ),
        (["generate", "a red mug", "-o", "{out}", "--mvgen", "{mvgen}", "--steps", "0"], "steps"),
        (["generate", "a red mug", "-o", "{out}", "--mvgen", "{mvgen}", "--blob-strength", "0"], "strength"),
        (["generate", "a red mug", "-o", "{out}", "--elevation", "100"], "elevation"),
        (["generate", "a red mug", "-o", "{out}", "--candidates", "0"], "candidates"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, needle, tiny_mvgen, tmp_path, capsys):
    out = tmp_path / "out" / "asset"
    fill = {"out": out, "mvgen": tiny_mvgen, "tmp": tmp_path}
    args = [a.format(**fill) for a in args]
    code, _, err = run([args[0], *FAST, "--turntable", "0", *args[1:]], capsys)  # the case's options win
    assert code == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "out").exists()


@pytest.mark.skipif(not (demo_folder("mvgen") / "model_index.json").is_file(), reason="demo mvgen weights absent")
def test_demo_weights_keep_the_photo_through_the_vae():
    """Without keep_photo, the front cell is the VAE's rendering of the photo's latents.

    The decoder's GroupNorm sees the whole grid, so the generated cells shift the front cell's
    decoding; it stays within 0.12 (mean, [0, 1] scale; measured 0.084 with the shipped demo) of
    the photo's own round trip.
    """
    import torch

    from fourview.mvgen.blobs import decode_latents, encode_images
    from fourview.mvgen.image_prompt import ImagePromptConfig, conditioning_grid
    from fourview.mvgen.pipeline import MultiViewPipeline

    pipe = MultiViewPipeline.from_pretrained("demo")
    photo = np.ones((64, 64, 4), np.float32)
    photo[..., 3] = 0.0
    photo[12:52, 20:44] = [0.8, 0.1, 0.1, 1.0]
    cfg = ImagePromptConfig(keep_photo=False)
    out = pipe("a red bottle", num_inference_steps=8, seed=0, image=photo, image_config=cfg)
    cond = conditioning_grid(photo, 128, cfg)
    with torch.no_grad():
        z = encode_images(pipe.sdxl.vae, torch.from_numpy(cond.grid).permute(2, 0, 1)[None])
        round_trip = decode_latents(pipe.sdxl.vae, z)[0].permute(1, 2, 0).numpy()
    err = np.abs(out.grids[0, :64, :64] - round_trip[:64, :64]).mean()
    assert err < 0.12, err


def test_command_defaults_are_the_library_defaults(monkeypatch, tmp_path, capsys):
    """The command builds its settings from the dataclasses; only the turntable differs (24 frames)."""
    import fourview.pipeline as pipeline_module
    from fourview.pipeline import ExportSettings, ModelSettings, SamplingSettings

    seen = {}

    class Recorder:
        @classmethod
        def from_pretrained(cls, **models):
            seen["models"] = models
            raise SystemExit(0)

    monkeypatch.setattr(pipeline_module, "FourViewPipeline", Recorder)
    code, _, err = run(["generate", "a red mug", "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    assert seen["models"] == {**{f: getattr(ModelSettings(), f) for f in ModelSettings.__dataclass_fields__},
                              "progress": True}  # fmt: skip
    assert SamplingSettings().steps is None and ExportSettings().project_views is True


def test_text_to_3d_with_loaded_models_reuses_them(tmp_path):
    from fourview.pipeline import ExportSettings, FourViewPipeline, SamplingSettings
    from fourview.recon.model import Reconstructor

    pipe = FourViewPipeline(tiny_pipeline(), Reconstructor.from_pretrained(resolve_weights("demo", "recon").location))
    export = ExportSettings(grid_resolution=32, texture_size=64)
    asset = pipe.text_to_3d("a blue car", SamplingSettings(steps=2), export)
    again = pipe.text_to_3d("a blue car", SamplingSettings(steps=2), export)
    assert asset.views.images.shape == (4, 32, 32, 4) and asset.num_faces == again.num_faces > 0
    np.testing.assert_array_equal(asset.views.images, again.views.images)  # deterministic per seed
    assert asset.timings["total_s"] >= asset.timings["mvgen_s"] > 0 and asset.peak_memory_mb > 0
    asset.save(tmp_path / "car")
    meta = json.loads((tmp_path / "car" / "meta.json").read_text())
    assert meta["mvgen"] == "tiny" and meta["mvgen_attention"] == "sdpa" and meta["method"] == "feedforward"
