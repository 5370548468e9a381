"""The CLIP BPE tokenizer of both SDXL text encoders, written from the vocabulary open_clip ships.

No machine here reaches a model hub, so the tokenizer is rebuilt from the byte-pair-encoding
merges file that the ``open_clip_torch`` package carries (``bpe_simple_vocab_16e6.txt.gz``), in
exactly the way OpenAI's CLIP builds its vocabulary: the 256 byte characters (GPT-2's
byte-to-unicode table), the same with the end-of-word marker ``</w>``, one token per merge (the
first 48894 merges), then ``<|startoftext|>`` and ``<|endoftext|>``: 49408 tokens. The ids are
those of OpenAI CLIP, of open_clip's ``SimpleTokenizer`` and of the ``tokenizer`` /
``tokenizer_2`` folders of SDXL on the hub.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

from fourview.mvgen.config import CLIP_MAX_LENGTH

VOCAB_SIZE: int = 49408
"""Number of CLIP tokens (ids 0..49407); 49406 is ``<|startoftext|>``, 49407 ``<|endoftext|>``."""

_NUM_MERGES = 49152 - 256 - 2  # as in OpenAI CLIP's simple_tokenizer.py


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def bpe_path() -> Path:
    """The BPE merges file shipped by open_clip (``open_clip/bpe_simple_vocab_16e6.txt.gz``)."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's BPE vocabulary is missing: {path}")
    return path


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[str, ...]]:
    """CLIP's vocabulary (token -> id, 49408 entries) and BPE merges ("a b" strings, in rank order)."""
    lines = gzip.open(bpe_path()).read().decode("utf-8").split("\n")
    merges = tuple(lines[1 : _NUM_MERGES + 1])
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"CLIP vocabulary has {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return vocab, merges


def build_clip_tokenizer(pad_token: str = "<|endoftext|>", model_max_length: int = CLIP_MAX_LENGTH) -> CLIPTokenizer:
    """A CLIP tokenizer (transformers) with OpenAI CLIP's vocabulary, built offline.

    Args:
        pad_token: padding token. SDXL's ``tokenizer`` pads with ``<|endoftext|>`` (id 49407),
            its ``tokenizer_2`` with ``"!"`` (id 0).
        model_max_length: sequence length the text encoders take (CLIP's and SDXL's: `CLIP_MAX_LENGTH`).

    Returns:
        A ``transformers.CLIPTokenizer``; ``save_pretrained`` writes the hub's file layout.
    """
    vocab, merges = clip_vocab_and_merges()
    if pad_token not in vocab:
        raise ValueError(f"pad token {pad_token!r} is not a CLIP token")
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(m.split()) for m in merges],
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token=pad_token,
        model_max_length=model_max_length,
    )


def save_compact_tokenizer(tokenizer: CLIPTokenizer, folder: str | Path) -> None:
    """Write a CLIP tokenizer as ``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json`` (1.5 MB).

    ``save_pretrained`` writes a pretty-printed ``tokenizer.json`` of 3.6 MB; the classic pair of
    files (the layout of SDXL's hub folders) holds the same tokenizer in 1.5 MB and loads with
    ``CLIPTokenizer.from_pretrained(folder)``. Any ``tokenizer.json`` in ``folder`` is removed.

    Args:
        tokenizer: a tokenizer from `build_clip_tokenizer` (or loaded from one's folder).
        folder: output folder (created).
    """
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    (folder / "tokenizer.json").unlink(missing_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
