"""Prompt sets: the shipped public sets as their sources count them, the synthetic world's, and users' files."""

from __future__ import annotations

import json

import pytest

from fourview.data.synthetic import caption, is_heldout, sample_spec
from fourview.errors import InputError
from fourview.evaluation.prompt_sets import PROMPTS_DIR, item_name, read_prompt_set, shipped_prompt_sets

SHIPPED_COUNTS = {"df415": 415, "gpteval3d_110": 110, "t3bench_prompt_single": 100, "t3bench_prompt_surr": 100,
                  "t3bench_prompt_multi": 100}  # fmt: skip
"""Prompts per shipped file, as prompts/SOURCES.md states them."""


def test_the_shipped_sets_hold_the_prompts_their_sources_list_with_their_attribution():
    assert shipped_prompt_sets() == [*sorted(SHIPPED_COUNTS), "synthetic_heldout", "synthetic_train"]
    sources = (PROMPTS_DIR / "SOURCES.md").read_text()
    for name, count in SHIPPED_COUNTS.items():
        prompts = read_prompt_set(name)
        assert len(prompts.items) == count, name
        assert f"`{name}.txt`" in sources
    assert read_prompt_set("df415").items[0].prompt == "a 20-sided die made out of glass"
    assert "Apache License" in (PROMPTS_DIR / "LICENSE-Apache-2.0").read_text()
    readme = (PROMPTS_DIR / "README.md").read_text()
    assert all(name in readme for name in SHIPPED_COUNTS)


def test_the_synthetic_sets_are_the_worlds_captions_with_their_shape_and_colour():
    heldout = read_prompt_set("synthetic_heldout")
    assert len(heldout.items) == 34
    for seed, item in enumerate(heldout.items):
        spec = sample_spec(seed, "heldout")
        assert (item.prompt, item.shape, item.colour) == (caption(spec), spec.shape, spec.colour)
        assert item.synthetic and is_heldout(item.shape, item.colour)
        assert item.name == item_name(seed, item.prompt)
    train = read_prompt_set("synthetic_train")
    assert not any(is_heldout(i.shape, i.colour) for i in train.items)


def test_text_json_and_jsonl_files(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("# a comment\na red mug\n\n  a blue   car  \n")
    items = read_prompt_set(str(text)).items
    assert [(i.name, i.prompt, i.synthetic) for i in items] == [("0000_a_red_mug", "a red mug", False),
                                                               ("0001_a_blue_car", "a blue car", False)]  # fmt: skip
    library = tmp_path / "library.json"
    library.write_text(json.dumps({"dreamfusion": ["a cat", "a dog"]}))
    assert [i.prompt for i in read_prompt_set(str(library)).items] == ["a cat", "a dog"]
    records = tmp_path / "p.jsonl"
    records.write_text('{"prompt": "a red mug", "shape": "mug", "colour": "red", "name": "mug1"}\n\n'
                       '{"prompt": "a red mug"}\n')  # fmt: skip
    first, second = read_prompt_set(str(records)).items
    assert (first.name, first.shape, first.colour, first.synthetic) == ("mug1", "mug", "red", True)
    assert second.name == "0001_a_red_mug" and not second.synthetic
    assert read_prompt_set(str(records)).prompts == ["a red mug"]  # distinct prompts: the retrieval set
    assert read_prompt_set(str(records)).digest != read_prompt_set(str(text)).digest


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('{"prompt": "a mug", "color": "red"}\n', ".jsonl", "unknown keys color"),
        ('{"prompt": "a mug", "shape": "teapot"}\n', ".jsonl", "shape 'teapot' is not one of the synthetic world's"),
        ('{"prompt": "a mug", "colour": "mauve"}\n', ".jsonl", "colour 'mauve' is not one"),
        ('{"prompt": "  "}\n', ".jsonl", "prompt 1: expected a non-empty prompt"),
        ('{"prompt": "a", "name": "x"}\n{"prompt": "b", "name": "x"}\n', ".jsonl", "names used twice: x"),
        ('{"prompt": "a", "name": "../x"}\n', ".jsonl", "name '../x' must be"),
        ("{not json\n", ".jsonl", r"p.jsonl:1: not JSON"),
        ('{"a": ["x"], "b": ["y"]}', ".json", "exactly one list of prompts, found 2"),
        ("# only a comment\n", ".txt", "no prompts"),
    ],
)
def test_bad_files_are_refused_with_the_place_and_reason(tmp_path, content, suffix, message):
    path = tmp_path / f"p{suffix}"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_prompt_set(str(path))


def test_an_unknown_name_lists_the_shipped_sets(tmp_path):
    with pytest.raises(InputError, match="no such file, and not a shipped set .*df415.*synthetic_heldout"):
        read_prompt_set("df416")
    (tmp_path / "df415").write_text("a path wins over the shipped name\n")
    assert read_prompt_set(str(tmp_path / "df415")).items[0].prompt == "a path wins over the shipped name"
