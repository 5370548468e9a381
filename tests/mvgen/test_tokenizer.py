"""The CLIP tokenizer rebuilt from open_clip's BPE file gives CLIP's ids."""

import pytest

from fourview.mvgen.tokenizer import VOCAB_SIZE, build_clip_tokenizer, save_compact_tokenizer

SENTENCES = [
    "a heavy matte brown dumbbell",
    "A 3D model of a polka-dot Red mug, 3D render",
    "hello   world?? café naïve 1234",  # no "!": tokenizer_2 treats its pad token as special, like SDXL's
    "it's a test-case: two chairs & a sofa",
]


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    open_clip = pytest.importorskip("open_clip")
    return open_clip.get_tokenizer("ViT-L-14")


def test_ids_match_open_clip(open_clip_tokenizer):
    tok = build_clip_tokenizer()
    tok2 = build_clip_tokenizer(pad_token="!")
    assert len(tok) == VOCAB_SIZE
    for s in SENTENCES:
        ref = open_clip_tokenizer([s])[0].tolist()  # pads with 0
        n = ref.index(49407) + 1
        ids = tok(s, padding="max_length", max_length=77, truncation=True).input_ids
        assert ids[:n] == ref[:n]
        assert ids[n:] == [49407] * (77 - n)  # SDXL's tokenizer pads with <|endoftext|>
        assert tok2(s, padding="max_length", max_length=77, truncation=True).input_ids == ref  # "!" is id 0
    # special ids and a known word
    assert tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>", "!"]) == [49406, 49407, 0]


def test_compact_save_round_trip(tmp_path):
    from transformers import CLIPTokenizer

    tok = build_clip_tokenizer(pad_token="!")
    save_compact_tokenizer(tok, tmp_path / "tokenizer_2")
    assert not (tmp_path / "tokenizer_2" / "tokenizer.json").exists()
    back = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer_2")
    for s in SENTENCES:
        a = tok(s, padding="max_length", max_length=77, truncation=True).input_ids
        assert back(s, padding="max_length", max_length=77, truncation=True).input_ids == a
    assert back.pad_token == "!" and back.model_max_length == 77
