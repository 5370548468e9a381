"""`fourview train mvgen` on a tiny SDXL pipeline: LoRA round trip, from-scratch training with resume."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image

from fourview.errors import InputError
from fourview.mvgen.components import build_components
from fourview.mvgen.config import mvgen_preset
from fourview.mvgen.train import MVGenTrainConfig, train
from fourview.mvgen.validation import validation_images

COLOURS = {"red": (200, 30, 35), "blue": (30, 85, 205), "green": (45, 145, 55), "yellow": (240, 205, 35)}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread than on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """Four objects: 64x64 grids of one coloured square per cell on white, with captions."""
    root = tmp_path_factory.mktemp("grids")
    for k, (name, rgb) in enumerate(COLOURS.items()):
        img = np.full((64, 64, 3), 255, np.uint8)
        for r in range(2):
            for c in range(2):
                s = 8 + 2 * k
                img[r * 32 + 16 - s // 2 : r * 32 + 16 + s // 2, c * 32 + 16 - s // 2 : c * 32 + 16 + s // 2] = rgb
        (root / f"obj_{k}").mkdir()
        Image.fromarray(img).save(root / f"obj_{k}" / "grid.png")
        (root / f"obj_{k}" / "caption.txt").write_text(f"a {name} box\n")
    (root / "incomplete").mkdir()  # no caption: skipped
    Image.fromarray(img).save(root / "incomplete" / "grid.png")
    return root


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A saved tiny SDXL pipeline (random weights, seed 1) to start ``init`` runs from; read only."""
    base = tmp_path_factory.mktemp("base")
    StableDiffusionXLPipeline(**build_components(mvgen_preset("tiny"), seed=1)).save_pretrained(base)
    return base


@pytest.fixture(scope="module")
def flat_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("flat")
    for k in range(2):
        Image.fromarray(np.full((48, 80, 3), 60 * k, np.uint8)).save(root / f"p{k}.png")
        (root / f"p{k}.txt").write_text(f"a photo number {k}")
    return root


def _val_reference(out, step):
    settings = json.loads((out / "val" / "settings.json").read_text())
    ref = [
        np.asarray(Image.open(out / "val" / f"step_{step:06d}" / f"{i:02d}.png"), np.float32) / 255
        for i in range(len(settings["prompts"]))
    ]
    return settings, np.stack(ref)


def _sample(pipe, settings):
    images = validation_images(
        pipe, settings["prompts"], settings["resolution"], settings["steps"], settings["guidance"], settings["seed"]
    )
    return np.stack(images)


def test_lora_trains_saves_and_reloads(tmp_path, grids, tiny_base):
    base = tiny_base
    out = tmp_path / "run"
    cfg = MVGenTrainConfig(
        data=str(grids), out=str(out), init=str(base), lora_rank=4, lora_init="gaussian", steps=12, batch_size=4,
        lr=1e-2, warmup_steps=1, caption_dropout=0.0, validate_every=0, checkpoint_every=0, log_every=4,
        val_prompts=("a red box", "a blue box"), val_inference_steps=3, seed=3, num_threads=1,
    )  # fmt: skip
    result = train(cfg)
    assert result.steps == 12 and result.weights == out / "lora"
    assert result.eval_loss_end < result.eval_loss_start  # the fixed-batch loss falls
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    settings, ref = _val_reference(out, 12)

    pipe = StableDiffusionXLPipeline.from_pretrained(base)
    plain = _sample(pipe, settings)
    pipe.load_lora_weights(out / "lora")
    adapted = _sample(pipe, settings)
    assert np.abs(adapted - ref).max() < 1.5 / 255  # the reloaded adapter reproduces the trained model
    assert np.abs(plain - ref).max() > 4 / 255  # and the adapter matters


def test_lora_checkpoints_hold_only_the_adapter_and_resume_exactly(tmp_path, grids, tiny_base):
    from safetensors.torch import load_file

    kw = dict(data=str(grids), init=str(tiny_base), lora_rank=2, lora_init="gaussian", steps=4, batch_size=2, lr=1e-2,
              warmup_steps=1, caption_dropout=0.0, validate_every=0, checkpoint_every=0, log_every=1, ema_decay=0.5,
              val_prompts=("a red box",), val_inference_steps=1, seed=5, num_threads=1)  # fmt: skip
    whole = train(MVGenTrainConfig(out=str(tmp_path / "whole"), **kw))
    first = train(MVGenTrainConfig(out=str(tmp_path / "split"), stop_after_steps=2, **kw))
    ckpt = tmp_path / "split" / "checkpoints" / "step_000002"
    assert (ckpt / "lora.safetensors").is_file() and not list(ckpt.glob("model*.safetensors"))
    assert all(".lora_" in k for k in load_file(ckpt / "lora.safetensors"))
    second = train(MVGenTrainConfig(out=str(tmp_path / "split"), **kw))
    assert first.steps == 2 and second.steps == 4 and second.eval_loss_start == pytest.approx(first.eval_loss_end)
    a = load_file(whole.weights / "pytorch_lora_weights.safetensors")  # the EMA of the adapter
    b = load_file(second.weights / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_from_scratch_resumes_and_saves_a_pipeline(tmp_path, grids, flat_pairs):
    out = tmp_path / "run"
    kw = dict(
        data=str(grids), out=str(out), from_scratch="tiny", steps=4, batch_size=4, vae_steps=3, vae_batch_size=4,
        lr=1e-3, warmup_steps=1, checkpoint_every=0, validate_every=0, log_every=1, val_prompts=("a green box",),
        val_inference_steps=3, mix_2d=str(flat_pairs), num_threads=1, mix_2d_ratio=0.5, ema_decay=0.9,
        zero_terminal_snr=True,
    )  # fmt: skip
    first = train(MVGenTrainConfig(**kw, stop_after_steps=2))
    assert first.steps == 2 and first.weights is None
    assert (out / "checkpoints" / "step_000002" / "state.json").is_file()
    meta = json.loads((out / "latents.json").read_text())
    assert len(meta["paths"]) == 6  # 4 grids (the incomplete folder skipped) + 2 flat pairs
    second = train(MVGenTrainConfig(**kw))
    assert second.steps == 4 and second.eval_loss_start == pytest.approx(first.eval_loss_end, rel=1e-5)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]

    pipe = StableDiffusionXLPipeline.from_pretrained(second.weights)
    assert pipe.vae.config.scaling_factor == pytest.approx(meta["scaling_factor"]) and meta["scaling_factor"] != 1.0
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr  # sampling follows the trained schedule
    settings, ref = _val_reference(out, 4)
    assert np.abs(_sample(pipe, settings) - ref).max() < 1.5 / 255


def test_bad_options(tmp_path, grids, tiny_base):
    with pytest.raises(InputError, match="exactly one"):
        train(MVGenTrainConfig(data=str(grids), out=str(tmp_path / "a")))
    with pytest.raises(InputError, match="--init"):
        train(MVGenTrainConfig(data=str(grids), out=str(tmp_path / "b"), from_scratch="tiny", lora_rank=4))
    with pytest.raises(InputError, match="mix-2d"):
        train(MVGenTrainConfig(data=str(grids), out=str(tmp_path / "c"), from_scratch="tiny", mix_2d_ratio=0.3))
    with pytest.raises(InputError, match="v-prediction"):
        train(MVGenTrainConfig(data=str(grids), out=str(tmp_path / "e"), init=str(tiny_base),
                               prediction_type="epsilon", zero_terminal_snr=True))  # fmt: skip
    with pytest.raises(InputError, match="not found"):
        train(MVGenTrainConfig(data=str(tmp_path / "missing"), out=str(tmp_path / "d"), from_scratch="tiny"))


def _latent_colour_error(vae, images: torch.Tensor) -> float:
    """L1 between the latent's first three channels (posterior mean) and the images pooled to its size."""
    with torch.no_grad():
        mean = vae.encode(images).latent_dist.mean
    pooled = torch.nn.functional.avg_pool2d(images, images.shape[-1] // mean.shape[-1])
    return float((mean[:, :3] - pooled).abs().mean())


def test_latent_colour_term_puts_the_colours_in_three_latent_channels(tmp_path, grids):
    from diffusers import AutoencoderKL

    from fourview.mvgen.dataset import grid_dataset
    from fourview.mvgen.train import _train_vae

    data = grid_dataset(grids, 64)
    images = torch.stack([data.image(i) for i in range(len(data))])  # [4, 3, 64, 64]
    errors = {}
    for weight in (0.0, 1.0):
        vae = build_components(mvgen_preset("tiny"), seed=2)["vae"]
        c = MVGenTrainConfig(data=str(grids), out=str(tmp_path), from_scratch="tiny", vae_steps=60, vae_batch_size=4,
                             vae_lr=3e-3, vae_latent_colour_weight=weight, log_every=100)  # fmt: skip
        _train_vae(vae, data, c, "cpu")
        errors[weight] = _latent_colour_error(vae, images)
    assert errors[1.0] < 0.5 * errors[0.0]  # three channels follow the pooled colours only when asked to

    two = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=2, norm_num_groups=4)  # fmt: skip
    two.save_pretrained(tmp_path / "vae2")
    with pytest.raises(InputError, match="3 latent channels"):
        train(MVGenTrainConfig(data=str(grids), out=str(tmp_path / "run"), from_scratch="tiny",
                               vae_init=str(tmp_path / "vae2"), vae_latent_colour_weight=1.0))  # fmt: skip
