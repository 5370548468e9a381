"""`MultiViewPipeline` on a tiny random SDXL (built from configs, saved and loaded; no network)."""

from __future__ import annotations

import copy
import functools
import logging
import re

import numpy as np
import pytest
import torch

from fourview.errors import InputError
from fourview.images import composite_on_white
from fourview.mvgen.pipeline import ALPHA_LOW, CANDIDATE_SEED_STRIDE, MultiViewPipeline, white_to_alpha
from fourview.pretrained import demo_folder

STEPS = 3


@functools.lru_cache(maxsize=1)
def _tiny_components() -> dict:
    from fourview.mvgen.components import build_components
    from fourview.mvgen.config import mvgen_preset

    torch.set_num_threads(1)
    return build_components(mvgen_preset("tiny"), seed=0)


def tiny_pipeline() -> MultiViewPipeline:
    """A fresh tiny pipeline (its own copy of the cached random modules): grid 64, views 32."""
    pipe = MultiViewPipeline.from_components(copy.deepcopy(_tiny_components()), name="tiny")
    return pipe


@pytest.fixture(scope="module")
def pipe() -> MultiViewPipeline:
    return tiny_pipeline()


def save_tiny(pipe: MultiViewPipeline, folder) -> None:
    """``save_pretrained``, with the tokenizers in the compact layout the demo ships (faster to load)."""
    from fourview.mvgen.tokenizer import save_compact_tokenizer

    pipe.sdxl.save_pretrained(folder)
    save_compact_tokenizer(pipe.sdxl.tokenizer, folder / "tokenizer")
    save_compact_tokenizer(pipe.sdxl.tokenizer_2, folder / "tokenizer_2")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, pipe):
    folder = tmp_path_factory.mktemp("tiny-mvgen")
    save_tiny(pipe, folder)
    return folder


def test_output_shapes_ranges_and_grid_layout(pipe):
    out = pipe("a red mug", num_inference_steps=STEPS, seed=1)
    assert pipe.resolution == 64
    assert out.grids.shape == (1, 64, 64, 3) and out.grids.dtype == np.float32
    assert out.views.shape == (1, 4, 32, 32, 4)
    assert out.latents.shape == (1, 4, 32, 32)
    assert 0.0 <= out.grids.min() and out.grids.max() <= 1.0
    assert 0.0 <= out.views.min() and out.views.max() <= 1.0
    assert out.prompts == ["a red mug"] and out.seeds == [1]
    # views are the grid's cells in rig order [[az0, az90], [az180, az270]]; on white they give the cells back
    cells = [out.grids[0, :32, :32], out.grids[0, :32, 32:], out.grids[0, 32:, :32], out.grids[0, 32:, 32:]]
    for view, cell in zip(out.views[0], cells):
        np.testing.assert_allclose(composite_on_white(view), cell, atol=ALPHA_LOW + 1e-5)


def test_seeds_reproduce_and_differ(pipe):
    a = pipe("a red mug", num_inference_steps=STEPS, seed=5)
    b = pipe("a red mug", num_inference_steps=STEPS, seed=5)
    c = pipe("a red mug", num_inference_steps=STEPS, seed=6)
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)
    assert (a.latents - c.latents).abs().max() > 1e-2


def test_batch_matches_single_images(pipe):
    batch = pipe(["a red mug", "a blue car"], num_inference_steps=STEPS, seed=[3, 7])
    one = pipe("a blue car", num_inference_steps=STEPS, seed=7)
    torch.testing.assert_close(batch.latents[1:], one.latents, rtol=1e-4, atol=1e-4)
    per_prompt = pipe("a red mug", num_inference_steps=STEPS, seed=10, num_images_per_prompt=2)
    assert per_prompt.seeds == [10, 11] and per_prompt.prompts == ["a red mug"] * 2
    second = pipe("a red mug", num_inference_steps=STEPS, seed=11)
    torch.testing.assert_close(per_prompt.latents[1:], second.latents, rtol=1e-4, atol=1e-4)


def test_best_of_k_keeps_the_best_aligned_candidate_and_its_seed(pipe):
    out = pipe(["a red mug", "a blue car"], num_inference_steps=STEPS, seed=[4, 9], candidates=3)
    assert out.alignment.shape == (2, 3) and out.latents.shape[0] == 2 and out.views.shape[0] == 2
    assert len(set(out.alignment[0].tolist())) == 3  # the candidates differ
    for i, (prompt, seed) in enumerate([("a red mug", 4), ("a blue car", 9)]):
        best = int(np.argmax(out.alignment[i]))
        assert out.seeds[i] == seed + best * CANDIDATE_SEED_STRIDE
        alone = pipe(prompt, num_inference_steps=STEPS, seed=out.seeds[i])  # the kept draw, drawn alone
        assert alone.alignment is None
        torch.testing.assert_close(out.latents[i : i + 1], alone.latents, rtol=1e-4, atol=1e-4)
    one = pipe("a red mug", num_inference_steps=STEPS, seed=4, candidates=1)
    assert one.alignment is None and one.seeds == [4]
    for bad in (0, 1.5, True):
        with pytest.raises(InputError, match="candidates"):
            pipe("a red mug", num_inference_steps=STEPS, candidates=bad)


def test_prompt_alignment_matches_its_definition_and_is_paired(pipe):
    from diffusers import DDPMScheduler

    from fourview.mvgen.rerank import prompt_alignment

    sdxl = pipe.sdxl
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 32, 32, generator=g)
    prompts = ["a red mug", "a blue car", "a red mug"]
    score = prompt_alignment(sdxl, latents, prompts, num_timesteps=2, seed=3)
    torch.testing.assert_close(prompt_alignment(sdxl, latents, prompts, num_timesteps=2, seed=3, batch_size=1), score)
    # Each latent's score does not depend on the others (same timesteps and noise for every row).
    torch.testing.assert_close(prompt_alignment(sdxl, latents[1:2], prompts[1:2], num_timesteps=2, seed=3), score[1:2])
    # The definition, written out for latent 0: error without the prompt minus error with it.
    sched = DDPMScheduler.from_config(sdxl.scheduler.config)
    n = sched.config.num_train_timesteps
    ts = torch.tensor([round(0.1 * n), round(0.9 * n)])
    noise = torch.randn((2, 4, 32, 32), generator=torch.Generator().manual_seed(3))
    x = latents[:1].expand(2, -1, -1, -1)
    noisy = sched.add_noise(x, noise, ts)
    y = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(x, noise, ts)
    cond, _, pooled, _ = sdxl.encode_prompt(["a red mug"], device="cpu", do_classifier_free_guidance=False)
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]]).expand(2, -1)
    with torch.no_grad():
        errs = [
            (
                (
                    sdxl.unet(
                        noisy,
                        ts,
                        c.expand(2, -1, -1),
                        added_cond_kwargs={"text_embeds": p.expand(2, -1), "time_ids": time_ids},
                    ).sample
                    - y
                )
                ** 2
            ).mean()
            for c, p in ((cond, pooled), (torch.zeros_like(cond), torch.zeros_like(pooled)))
        ]
    torch.testing.assert_close(score[0], errs[1] - errs[0], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="latents"):
        prompt_alignment(sdxl, latents, prompts[:2])


def test_guidance_and_negative_prompt_change_the_output(pipe):
    base = pipe("a red mug", num_inference_steps=STEPS, seed=2, guidance_scale=5.0)
    no_cfg = pipe("a red mug", num_inference_steps=STEPS, seed=2, guidance_scale=1.0)
    neg = pipe("a red mug", num_inference_steps=STEPS, seed=2, guidance_scale=5.0, negative_prompt="blurry")
    assert (base.latents - no_cfg.latents).abs().max() > 1e-4
    assert (base.latents - neg.latents).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"prompt": ""}, "empty"),
        ({"prompt": "   "}, "empty"),
        ({"prompt": "a very " * 80 + "red mug"}, "too long"),
        ({"prompt": "a red mug", "negative_prompt": "blurry " * 90}, "negative prompt is too long"),
        ({"prompt": "a red mug", "size": 72}, "multiple of 16"),
        ({"prompt": "a red mug", "size": 0}, "multiple of 16"),
        ({"prompt": "a red mug", "num_inference_steps": 0}, "steps"),
        ({"prompt": "a red mug", "guidance_scale": float("nan")}, "guidance"),
        ({"prompt": "a red mug", "seed": [1, 2]}, "seed"),
        ({"prompt": []}, "no prompt"),
    ],
)
def test_bad_input_raises_input_error(pipe, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        pipe(**{"num_inference_steps": STEPS, **kwargs})


def test_77_tokens_is_the_limit(pipe):
    tok = pipe.sdxl.tokenizer
    assert tok.model_max_length == 77
    ok = "red " * 75  # 75 words + start + end = 77 tokens
    assert len(tok(ok).input_ids) == 77
    pipe.check_prompt(ok)
    with pytest.raises(InputError, match="78 tokens"):
        pipe.check_prompt(ok + "mug")


def test_other_grid_sizes_multiple_of_16(pipe):
    out = pipe("a red mug", num_inference_steps=2, seed=0, size=48)
    assert out.grids.shape == (1, 48, 48, 3) and out.views.shape == (1, 4, 24, 24, 4)


def test_save_and_from_pretrained_reproduce(pipe, saved):
    loaded = MultiViewPipeline.from_pretrained(saved)
    assert loaded.name == str(saved) and loaded.attention == "sdpa"
    a = pipe("a green tree", num_inference_steps=STEPS, seed=4)
    b = loaded("a green tree", num_inference_steps=STEPS, seed=4)
    torch.testing.assert_close(a.latents, b.latents, rtol=1e-5, atol=1e-5)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        MultiViewPipeline.from_pretrained(str(tmp_path / "no" / "such" / "folder"))
    with pytest.raises(InputError, match="model_index.json"):
        MultiViewPipeline.from_pretrained(tmp_path)


def test_an_offline_hub_id_is_one_line_without_the_hub_libraries_warnings(capfd, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InputError) as err:
        MultiViewPipeline.from_pretrained("nobody-here/no-such-model")  # HF_HUB_OFFLINE=1 (conftest)
    assert str(err.value) == (
        "cannot get mvgen weights 'nobody-here/no-such-model' from the hub: "
        "offline (HF_HUB_OFFLINE) and no cached copy found"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert capfd.readouterr().err == ""


def test_demo_name_resolves_to_the_shipped_folder():
    if (demo_folder("mvgen") / "model_index.json").is_file():
        pipe = MultiViewPipeline.from_pretrained("demo")
        assert pipe.resolution == 128 and pipe.name == "demo"
        # trained on the rescaled schedule (docs/training.md); sampling must use the same one
        cfg = pipe.sdxl.scheduler.config
        assert cfg.rescale_betas_zero_snr and cfg.prediction_type == "v_prediction"
    else:
        with pytest.raises(InputError, match="the shipped demo mvgen is missing from the installation"):
            MultiViewPipeline.from_pretrained("demo")


def test_attention_processors():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    pipe = tiny_pipeline()
    assert {type(p) for p in pipe.sdxl.unet.attn_processors.values()} == {AttnProcessor2_0}
    ref = pipe("a red mug", num_inference_steps=STEPS, seed=0)
    pipe.sdxl.unet.set_attn_processor(AttnProcessor())  # the plain (quadratic-memory) reference
    slow = pipe("a red mug", num_inference_steps=STEPS, seed=0)
    torch.testing.assert_close(ref.latents, slow.latents, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="xformers"):
        pipe.set_attention("xformers")  # CPU: never available
    assert pipe.set_attention("auto") == "sdpa"


def test_lora_save_and_load_reproduces_the_adapted_output(saved, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    live = tiny_pipeline()  # the same weights as `saved`
    base = live("a red mug", num_inference_steps=STEPS, seed=0)
    torch.manual_seed(1)
    # non-zero init: peft's default init makes B = 0, which would leave the output unchanged
    config = LoraConfig(
        r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
    )
    live.sdxl.unet.add_adapter(config)
    adapted = live("a red mug", num_inference_steps=STEPS, seed=0)
    assert (adapted.latents - base.latents).abs().max() > 1e-3
    StableDiffusionXLPipeline.save_lora_weights(
        tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(live.sdxl.unet)
    )
    reloaded = MultiViewPipeline.from_pretrained(saved, lora=tmp_path / "lora")
    assert reloaded.adapters == {"lora": 1.0}
    again = reloaded("a red mug", num_inference_steps=STEPS, seed=0)
    torch.testing.assert_close(again.latents, adapted.latents, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="LoRA"):
        MultiViewPipeline.from_pretrained(saved, lora=tmp_path / "missing-lora")


def test_student_hook_switches_to_lcm_and_samples(saved, tmp_path):
    import json

    from diffusers import LCMScheduler, StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = tiny_pipeline()
    prediction = pipe.sdxl.scheduler.config.prediction_type
    pipe.use_student(None)  # a student distilled into the weights: only the scheduler changes
    assert isinstance(pipe.sdxl.scheduler, LCMScheduler)
    assert pipe.sdxl.scheduler.config.prediction_type == prediction
    assert pipe.sampling_defaults() == (8, 5.0)
    out = pipe("a red mug", num_inference_steps=4, guidance_scale=1.0, seed=0)
    assert np.isfinite(out.grids).all() and out.grids.shape == (1, 64, 64, 3)

    # a student folder as `fourview train mvgen-lcm` writes it: LoRA + student.json
    donor = tiny_pipeline()
    torch.manual_seed(2)
    donor.sdxl.unet.add_adapter(
        LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=["to_q", "to_v"])
    )
    folder = tmp_path / "student"
    StableDiffusionXLPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(donor.sdxl.unet))
    record = {"num_ddim_timesteps": 25, "timestep_scaling": 10.0, "recommended_steps": 3, "recommended_guidance": 1.5}
    (folder / "student.json").write_text(json.dumps(record))
    student = MultiViewPipeline.from_pretrained(saved, student=folder)
    assert student.adapters == {"student": 1.0} and student.student == str(folder)
    assert isinstance(student.sdxl.scheduler, LCMScheduler)
    assert student.sdxl.scheduler.config.original_inference_steps == 25
    assert student.sampling_defaults() == (3, 1.5)
    fast = student("a red mug", num_inference_steps=3, guidance_scale=1.5, seed=0)
    assert np.isfinite(fast.grids).all()
    # Best-of-K with a student: candidates are scored by the teacher (the student adapter off), then
    # the adapter is back on: the next draw is the same as before.
    from fourview.mvgen.rerank import prompt_alignment

    best = student("a red mug", num_inference_steps=3, guidance_scale=1.5, seed=0, candidates=2)
    teacher_scores = prompt_alignment(tiny_pipeline().sdxl, best.latents, ["a red mug"])
    torch.testing.assert_close(float(best.alignment.max()), float(teacher_scores[0]), rtol=1e-4, atol=1e-6)
    again = student("a red mug", num_inference_steps=3, guidance_scale=1.5, seed=0)
    torch.testing.assert_close(again.latents, fast.latents, rtol=0, atol=0)
    with pytest.raises(InputError, match="student weights not found"):
        MultiViewPipeline.from_pretrained(saved, student=tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# white_to_alpha


def _object_on_white(size: int = 48) -> np.ndarray:
    """A dark square with a soft left edge, a white spot, a hole, and a speck of noise in the background."""
    img = np.ones((size, size, 3), np.float32)
    img[12:36, 12:36] = [0.2, 0.3, 0.6]
    img[12:36, 10] = 1.0 - 0.3 * (1.0 - np.array([0.2, 0.3, 0.6]))  # 30% coverage
    img[12:36, 11] = 1.0 - 0.6 * (1.0 - np.array([0.2, 0.3, 0.6]))  # 60% coverage
    img[14:16, 14:16] = 1.0  # white, but a small region enclosed by the object: part of it
    img[22:30, 22:30] = 1.0  # a larger enclosed white region: a hole
    img[2, 40] = [0.3, 0.3, 0.3]  # one dark background pixel (sampling noise)
    img[44, 3] = 0.985  # nearly white background
    return img


def test_white_to_alpha_background_object_and_soft_edge():
    img = _object_on_white()
    rgba = white_to_alpha(img)
    a = rgba[..., 3]
    assert rgba.shape == (48, 48, 4)
    assert a[0].max() == 0.0 and a[:, 0].max() == 0.0 and a[44, 3] == 0.0  # background cleared
    hole = np.zeros((48, 48), bool)
    hole[22:30, 22:30] = True
    assert (a[12:36, 12:36][~hole[12:36, 12:36]] == 1.0).all()  # object, including the small white spot
    assert (a[hole] == 0.0).all()  # 64 px enclosed: more than MIN_HOLE of the view
    assert a[2, 40] == 0.0  # isolated speck removed
    assert 0.0 < a[20, 10] < a[20, 11] < 1.0  # the soft edge ramps towards the object
    # on white, the RGBA gives the input back (exactly where alpha > 0; within the low threshold elsewhere)
    back = composite_on_white(rgba)
    keep = a > 0
    np.testing.assert_allclose(back[keep], img[keep], atol=1e-5)
    speck = np.zeros_like(keep)
    speck[2, 40] = True
    assert np.abs(back[~keep & ~speck] - img[~keep & ~speck]).max() <= ALPHA_LOW + 1e-6
    # the edge pixel's colour is the object's colour, un-composited from white
    np.testing.assert_allclose(rgba[20, 10, :3], [0.2, 0.3, 0.6], atol=0.05)


def test_white_to_alpha_batches_and_checks():
    img = _object_on_white()
    batch = white_to_alpha(np.stack([img, np.ones_like(img)])[None])  # [1, 2, H, W, 3]
    assert batch.shape == (1, 2, 48, 48, 4)
    np.testing.assert_array_equal(batch[0, 0], white_to_alpha(img))
    assert batch[0, 1, ..., 3].max() == 0.0  # an all-white view is all background
    with pytest.raises(InputError, match="white_to_alpha needs 0 <= low < high <= 1"):
        white_to_alpha(img, low=0.2, high=0.1)
    with pytest.raises(InputError, match=re.escape("expected [..., H, W, 3] RGB, got (48, 48, 2)")):
        white_to_alpha(img[..., :2])
