"""CLIP score and R-precision on hand-made embeddings; CLIP weights loaded from a tiny random transformers CLIP."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from fourview.errors import InputError
from fourview.evaluation.clip_metrics import clip_scores, load_clip, view_images
from fourview.mvgen.tokenizer import VOCAB_SIZE, build_clip_tokenizer, save_compact_tokenizer


def save_tiny_clip(folder) -> None:
    """A random transformers CLIP (2 x 16-wide layers, 32 px images, 8-d embeddings) with OpenAI CLIP's tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    text = {"vocab_size": VOCAB_SIZE, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 49406,
            "eos_token_id": 49407}  # fmt: skip
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}  # fmt: skip
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(folder)
    save_compact_tokenizer(build_clip_tokenizer(), folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    save_tiny_clip(folder)
    return folder


def _frames(colours) -> np.ndarray:
    """[N, 40, 40, 4] frames: a square of each colour on a transparent background."""
    frames = np.zeros((len(colours), 40, 40, 4), np.float32)
    for frame, colour in zip(frames, colours):
        frame[10:30, 10:30] = [*colour, 1.0]
    return frames


def test_the_score_and_r_precision_of_hand_made_embeddings():
    prompts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])  # [4, 3]
    views = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.5, 0.1], [0.2, 0.0, 1.0]])  # [3, 3]
    scores = clip_scores(views, prompts, own=2)
    assert scores.ranks == (1, 4, 1)  # view 1 is nearer prompts 3, 0 and 1 than its own
    assert scores.r_precision == pytest.approx(2 / 3)
    cos = torch.nn.functional.cosine_similarity(views, prompts[2:3]).clamp(min=0)
    assert scores.score == pytest.approx(float(100 * cos.mean()))


def test_a_tiny_transformers_clip_loads_from_its_folder_with_or_without_its_preprocessor(tiny_clip, tmp_path):
    clip = load_clip(str(tiny_clip))
    text = clip.text_features(["a red mug", "a blue car", "a red mug"])
    assert text.shape == (3, 8)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text[0], text[2])
    assert not torch.allclose(text[0], text[1])
    images = clip.image_features(view_images(_frames([(1, 0, 0), (0, 0, 1), (1, 0, 0)])))
    assert images.shape == (3, 8)
    torch.testing.assert_close(images[0], images[2])
    assert not torch.allclose(images[0], images[1])
    shutil.copytree(tiny_clip, tmp_path / "bare")
    (tmp_path / "bare" / "preprocessor_config.json").unlink()  # CLIP's resize and crop at the model's size instead
    bare = load_clip(str(tmp_path / "bare"))
    torch.testing.assert_close(bare.image_features(view_images(_frames([(1, 0, 0)])))[0], images[0])


def test_clip_weights_that_are_not_there_or_do_not_load_are_refused(tmp_path):
    with pytest.raises(InputError, match="neither a file, a folder nor a hub id"):
        load_clip(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither config.json .* nor open_clip_config.json"):
        load_clip(str(tmp_path / "empty"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="cannot load CLIP weights .*broken as a transformers CLIPModel"):
        load_clip(str(tmp_path / "broken"))
    with pytest.raises(InputError, match="cannot get CLIP weights 'nobody/no-clip' from the hub"):
        load_clip("nobody/no-clip")  # offline in tests: never downloads
