"""What a prompt can be checked for from the generator's files alone, before its models load.

Two checks:

* length: the text encoders take `CLIP_MAX_LENGTH` tokens with the start and end tokens; a longer
  prompt is refused (`check_prompt_tokens`). `precheck_prompt` and `check_prompt_length` read only
  the tokenizers of a local generator folder (once per process), so a command, a batch's items or a
  server's jobs are refused in a fraction of a second instead of after the models load.
* familiarity: a generator trained here writes the content words of its training captions beside
  its weights (``training_words.txt``, `write_training_words`). A prompt word outside them asks the
  model for something it never saw: the result will be some object of its training world, not the
  prompt's. `unfamiliar_prompt_warning` names such words in one line (the CLI logs it, the asset's
  ``meta.json`` records it). Real SDXL-architecture weights have no such file and get no warning.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from fourview.atomic import write_text_atomic
from fourview.data.captions import content_words
from fourview.errors import InputError
from fourview.pretrained import resolve_weights

TRAINING_WORDS_FILE = "training_words.txt"
"""Content words of a generator's training captions, one per line, beside its ``model_index.json``."""

TOKENIZERS = ("tokenizer", "tokenizer_2")
"""The SDXL layout's tokenizer folders."""

_TOKENIZERS_LOCK = threading.Lock()
"""Held while the kept tokenizers load and count: a fast tokenizer used by two threads at once fails."""


def check_prompt_tokens(prompt: str, tokenizers: Iterable, what: str = "prompt") -> None:
    """Refuse ``prompt`` when a tokenizer makes more tokens of it than its ``model_max_length``.

    Raises:
        InputError: too many tokens (the message gives the count and the limit).
    """
    for tok in tokenizers:
        if tok is None:
            continue
        n = len(tok(prompt, truncation=False, verbose=False).input_ids)
        if n > tok.model_max_length:
            raise InputError(
                f"{what} is too long: {n} tokens with start and end, the text encoders take "
                f"{tok.model_max_length}; shorten it"
            )


def precheck_prompt(prompt: str, mvgen: str | os.PathLike) -> None:
    """The checks of `MultiViewPipeline.check_prompt` that need only files: emptiness and length.

    For a hub id (no local files) only emptiness is checked here; the length is checked once the
    generator is loaded.

    Raises:
        InputError: an empty or overlong prompt, or weights that cannot be found.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("prompt is empty; describe the object, e.g. 'a red mug'")
    check_prompt_length(prompt, mvgen)


def check_prompt_length(prompt: str, mvgen: str | os.PathLike, what: str = "prompt") -> None:
    """`check_prompt_tokens` with the tokenizers of generator ``mvgen`` alone, before (or without) its models.

    The tokenizers of a local generator folder are read on the first call and kept for the
    process's life (a batch checks every item's prompt, a server every job's); nothing is checked
    for a hub id (the loaded generator checks). Safe to call from several threads.

    Raises:
        InputError: too many tokens, or weights or tokenizers that cannot be read.
    """
    name = str(mvgen)
    path = Path(name).expanduser()
    # a folder is kept by where it is: a relative name may mean another folder after a chdir
    key = str(path.absolute()) if name != "demo" and path.exists() else name
    with _TOKENIZERS_LOCK:
        check_prompt_tokens(prompt, _local_tokenizers(key), what)


def check_prompt_lengths(prompt: str | None, negative: str | None, mvgen: str | os.PathLike) -> None:
    """`check_prompt_length` of a prompt and its negative prompt, each when given (not blank).

    Raises:
        InputError: either is longer than the text encoders take (the message says which).
    """
    for text, what in ((prompt, "prompt"), (negative, "negative prompt")):
        if text is not None and text.strip():
            check_prompt_length(text, mvgen, what)


@functools.lru_cache(maxsize=4)
def _local_tokenizers(mvgen: str) -> tuple:
    """The tokenizers of a local generator folder (none for a hub id), read once per process."""
    source = resolve_weights(mvgen, "mvgen")
    if source.path is None:
        return ()
    from transformers import CLIPTokenizer  # the heavy library, needed only to count tokens

    tokenizers = []
    for name in TOKENIZERS:
        if (source.path / name).is_dir():
            try:
                tokenizers.append(CLIPTokenizer.from_pretrained(str(source.path / name)))
            except (OSError, ValueError) as err:
                first = (str(err).splitlines() or [type(err).__name__])[0]
                raise InputError(f"cannot read the tokenizer {source.path / name}: {first}") from None
    return tuple(tokenizers)


def write_training_words(folder: str | os.PathLike, captions: Iterable[str]) -> Path:
    """Write the content words of ``captions`` (`fourview.data.captions.content_words`) into ``folder``."""
    words = sorted(set().union(*(content_words(c) for c in captions)))
    return write_text_atomic(Path(folder) / TRAINING_WORDS_FILE, "".join(w + "\n" for w in words))


def read_training_words(folder: str | os.PathLike | None) -> frozenset[str] | None:
    """The words written by `write_training_words`, or None when ``folder`` has none (e.g. real SDXL weights)."""
    if folder is None:
        return None
    path = Path(folder) / TRAINING_WORDS_FILE
    if not path.is_file():
        return None
    try:
        return frozenset(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}") from None


def unfamiliar_prompt_warning(prompt: str, words: frozenset[str] | None) -> str | None:
    """One line naming the words of ``prompt`` not among the generator's training ``words`` (None: all known,
    or nothing to check against)."""
    unknown = sorted(content_words(prompt) - words) if words is not None else []
    if not unknown:
        return None
    what = "none of its words" if not content_words(prompt) & words else ", ".join(repr(w) for w in unknown)
    return (
        f"the generator never saw {what} in training ({len(words)} words, e.g. "
        f"{', '.join([w for w in sorted(words) if w.isalpha()][:6])}, ...): expect an object of its training world, "
        "not the prompt's; for open-ended prompts pass real SDXL-architecture weights with --mvgen"
    )


__all__ = [
    "TRAINING_WORDS_FILE",
    "check_prompt_length",
    "check_prompt_lengths",
    "check_prompt_tokens",
    "precheck_prompt",
    "read_training_words",
    "unfamiliar_prompt_warning",
    "write_training_words",
]
