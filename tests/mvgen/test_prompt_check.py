"""Prompt checks from the generator's files: token length before loading, and words it never saw."""

from __future__ import annotations

import pytest

from fourview.errors import InputError
from fourview.mvgen.prompt_check import (
    TRAINING_WORDS_FILE,
    check_prompt_length,
    precheck_prompt,
    read_training_words,
    unfamiliar_prompt_warning,
    write_training_words,
)


def test_training_words_round_trip(tmp_path):
    write_training_words(tmp_path, ["a red mug", "a tall blue vase with stripes", "a photo of a mug"])
    assert read_training_words(tmp_path) == {"red", "mug", "tall", "blue", "vase", "stripes"}
    assert read_training_words(tmp_path / "elsewhere") is None
    assert (tmp_path / TRAINING_WORDS_FILE).read_text().splitlines()[0] == "blue"  # sorted, one per line


def test_prompts_with_unseen_words_are_named():
    words = frozenset({"red", "mug", "vase", "white"})
    assert unfamiliar_prompt_warning("a red mug", words) is None
    assert unfamiliar_prompt_warning("A RED MUG!", words) is None
    partly = unfamiliar_prompt_warning("a white porcelain teapot", words)
    assert partly is not None and "'porcelain', 'teapot'" in partly and "\n" not in partly
    assert "none of its words" in unfamiliar_prompt_warning("a cat statue", words)
    assert unfamiliar_prompt_warning("a cat statue", None) is None  # weights without the file: no claim


def test_the_shipped_generator_knows_its_world():
    from fourview.pretrained import demo_folder

    words = read_training_words(demo_folder("mvgen"))
    assert words is not None and {"mug", "red", "chair"} <= words
    assert unfamiliar_prompt_warning("a red mug", words) is None
    assert unfamiliar_prompt_warning("a fire extinguisher", words) is not None


def test_overlong_and_empty_prompts_fail_before_loading():
    with pytest.raises(InputError, match=r"prompt is too long: \d+ tokens with start and end, .* take 77"):
        precheck_prompt("a red mug " * 40, "demo")
    with pytest.raises(InputError, match="prompt is empty"):
        precheck_prompt("   ", "demo")
    precheck_prompt("a red mug", "demo")


def test_the_length_check_reads_the_tokenizers_once_and_counts_from_several_threads(monkeypatch):
    """A batch checks every item's prompt, a server every job's: the tokenizers are read on the first check only."""
    from concurrent.futures import ThreadPoolExecutor

    from transformers import CLIPTokenizer

    from fourview.mvgen import prompt_check

    read = []
    real = CLIPTokenizer.from_pretrained
    monkeypatch.setattr(CLIPTokenizer, "from_pretrained", lambda path, **kw: read.append(path) or real(path, **kw))
    prompt_check._local_tokenizers.cache_clear()
    with pytest.raises(InputError, match=r"^negative prompt is too long: 82 tokens with start and end"):
        check_prompt_length("red " * 80, "demo", "negative prompt")
    with ThreadPoolExecutor(4) as pool:  # a fast tokenizer counting in two threads at once can fail
        list(pool.map(lambda i: check_prompt_length(f"a red mug number {i}", "demo"), range(64)))
    precheck_prompt("a red mug", "demo")
    assert [p.rsplit("/", 1)[-1] for p in read] == ["tokenizer", "tokenizer_2"]


@pytest.mark.parametrize("command", [["generate"], ["image", "photo.png", "--prompt"]])
def test_the_cli_refuses_an_overlong_prompt_before_any_model_loads(command, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from fourview.cli import main
    from fourview.pipeline import FourViewPipeline

    def never(*args, **kwargs):
        raise AssertionError("models loaded before the prompt was checked")

    monkeypatch.setattr(FourViewPipeline, "from_pretrained", never)
    monkeypatch.chdir(tmp_path)
    Image.new("RGBA", (64, 64), (200, 30, 30, 255)).save("photo.png")
    with pytest.raises(SystemExit) as exit_:
        main([*command, "a red mug " * 40, "-o", "out"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "prompt is too long" in err and not (tmp_path / "out").exists()
