"""Captions for rendered objects: from files beside the renders, or from an image captioner.

Order of sources (`caption_object`): ``caption.txt`` in the object's folder, then ``spec.json``
(the synthetic world's spec), then a `Captioner` run on the 4 rig views whose per-view captions
`merge_captions` turns into one.

Merging rule (`merge_captions`):

1. Clean every per-view caption with `clean_caption`: remove wording that only describes the
   viewpoint ("the back of", "a side view of", "rear view", "seen from the left", "from behind"),
   then tidy spaces and stray punctuation.
2. Turn each cleaned caption into its set of content words (lower-case alphanumeric tokens minus
   a small stop-word list: articles, prepositions, "photo", "image", "render", "view" ...).
3. Give each caption the mean Jaccard overlap of its word set with the other captions' sets,
   and pick the highest: the caption most consistent with the other views. Ties go to the
   caption with more content words (more specific), then to the earlier view (the front view
   first). An empty word set scores 0.
4. Return the chosen caption cleaned; ``""`` when every caption is empty after cleaning.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from fourview.data import synthetic
from fourview.data.manifest import load_rig_views, rgb_on_white
from fourview.errors import InputError


class Captioner(Protocol):
    """Anything that captions images: one caption per view."""

    def caption_views(self, views: list[Image.Image]) -> list[str]:
        """Caption each view (PIL images, RGBA or RGB); returns one string per view, same order."""
        ...


@dataclass(frozen=True)
class CaptionOutput:
    """A caption and where it came from.

    Attributes:
        caption: the object's caption, non-empty.
        source: ``"caption.txt"``, ``"spec.json"`` or ``"captioner"``.
        per_view: the captioner's per-view captions (rig order) when one ran, else empty.
    """

    caption: str
    source: str
    per_view: tuple[str, ...] = ()


_SIDE = r"(?:back|rear|front|side|left|right|top|bottom|underside)"
_VIEW_PATTERNS: tuple[re.Pattern[str], ...] = (
    # "seen from the left", "viewed from above", "from behind", "from the back side"
    re.compile(
        r"[\s,]*\b(?:(?:seen|viewed|shown|photographed|taken|as\s+seen)\s+)?from\s+(?:the\s+)?"
        r"(?:back|behind|rear|front|side|left|right|above|below|top|bottom)(?:\s+side)?\b",
        re.IGNORECASE,
    ),
    # "the back of", "a side view of", "the left side of", "rear view of"
    re.compile(rf"\b(?:(?:the|a|an)\s+)?{_SIDE}(?:[\s-]+side)?(?:\s+view)?\s+of(?:\s+|$)", re.IGNORECASE),
    # "rear view", "side view" standing alone ("a red car, rear view")
    re.compile(rf"[\s,]*\b(?:(?:a|an|the)\s+)?{_SIDE}\s+view\b", re.IGNORECASE),
)

_STOP_WORDS = frozenset(
    {"a", "an", "the", "of", "with", "and", "or", "on", "in", "at", "to", "for", "from", "by", "is", "are", "it"}
    | {"its", "this", "that", "there", "some", "image", "photo", "picture", "render", "rendering", "3d", "view"}
    | {"object"}
)


def clean_caption(text: str) -> str:
    """Remove viewpoint wording ("the back of", "seen from the left", "rear view") from a caption.

    Example: ``"the back of a red chair"`` -> ``"a red chair"``.
    """
    out = text
    for pattern in _VIEW_PATTERNS:
        out = pattern.sub(" ", out)
    out = re.sub(r"\s+", " ", out)
    out = re.sub(r"\s+([,.;:!?])", r"\1", out)  # no space before punctuation
    out = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", out)  # collapse ", ," left by removals
    return out.strip(" ,;:")


def content_words(text: str) -> frozenset[str]:
    """The lower-case letter and digit runs of ``text`` minus a small stop-word list ("a", "of", "photo", ...)."""
    return frozenset(w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP_WORDS)


def merge_captions(per_view: Sequence[str]) -> str:
    """One caption from per-view captions: the cleaned caption most consistent with the others.

    See the module docstring for the rule (view wording removed, mean Jaccard overlap of content
    words with the other views, ties to the more specific then the earlier view).

    Args:
        per_view: captions of the views, in rig order (az 0, 90, 180, 270), at least one.

    Returns:
        The chosen caption, cleaned; ``""`` when every caption is empty after cleaning.

    Raises:
        InputError: ``per_view`` is empty or holds a non-string.
    """
    if isinstance(per_view, str) or len(per_view) == 0:
        raise InputError("merge_captions needs a non-empty list of per-view captions")
    if not all(isinstance(c, str) for c in per_view):
        raise InputError(f"per-view captions must be strings, got {[type(c).__name__ for c in per_view]}")
    cleaned = [clean_caption(c) for c in per_view]
    words = [content_words(c) for c in cleaned]
    candidates = [i for i, c in enumerate(cleaned) if c]
    if not candidates:
        return ""

    def consistency(i: int) -> float:
        others = [j for j in range(len(words)) if j != i]
        if not others:
            return 1.0
        total = 0.0
        for j in others:
            union = words[i] | words[j]
            total += len(words[i] & words[j]) / len(union) if union else 0.0
        return total / len(others)

    best = max(candidates, key=lambda i: (consistency(i), len(words[i]), -i))
    return cleaned[best]


class TemplateCaptioner:
    """Captions of the synthetic world, read from the files beside an object's renders.

    ``caption.txt`` (first non-empty line) wins; otherwise ``spec.json``: its ``"caption"`` field
    when present, else the synthetic world's own template (`fourview.data.synthetic.caption`,
    imported only then). Renders are not looked at.
    """

    def caption_object(self, obj_dir: str | os.PathLike) -> CaptionOutput | None:
        """The object's caption from its files, or None when it has neither file.

        Raises:
            InputError: a caption file is empty or unreadable, or ``spec.json`` cannot be captioned.
        """
        obj_dir = Path(obj_dir)
        txt, spec = obj_dir / "caption.txt", obj_dir / "spec.json"
        if txt.is_file():
            try:
                lines = [line.strip() for line in txt.read_text(encoding="utf-8").splitlines()]
            except (OSError, UnicodeDecodeError) as err:
                raise InputError(f"cannot read caption file {txt}: {err}") from None
            caption = next((line for line in lines if line), "")
            if not caption:
                raise InputError(f"caption file is empty: {txt}")
            return CaptionOutput(caption=caption, source="caption.txt")
        if spec.is_file():
            return CaptionOutput(caption=_caption_from_spec(spec), source="spec.json")
        return None


def _caption_from_spec(spec_path: Path) -> str:
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read synthetic spec {spec_path}: {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"synthetic spec {spec_path} must hold a JSON object")
    if isinstance(data.get("caption"), str) and data["caption"].strip():
        return data["caption"].strip()
    try:
        spec_cls = synthetic.SyntheticSpec
        if hasattr(spec_cls, "from_json"):
            spec = spec_cls.from_json(data)
        elif hasattr(spec_cls, "from_dict"):
            spec = spec_cls.from_dict(data)
        else:
            spec = spec_cls(**data)
        caption = synthetic.caption(spec)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise InputError(f"cannot caption synthetic spec {spec_path}: {err}") from None
    if not isinstance(caption, str) or not caption.strip():
        raise InputError(f"the synthetic template gave an empty caption for {spec_path}")
    return caption.strip()


class HFCaptioner:
    """A transformers image-to-text model (e.g. BLIP, Florence, a small VLM) as a `Captioner`.

    Build it with `from_pretrained` from a local model folder (no network); the constructor only
    stores a ready pipeline, so tests and callers can pass any callable with the pipeline's
    interface: ``pipe(images=[PIL RGB], text=[prompt] | None, **generate_kwargs)`` returning, per
    image, a dict or a one-element list of dicts with ``"generated_text"``.
    """

    def __init__(self, pipe: Callable, prompt: str | None = None, max_new_tokens: int = 40) -> None:
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.pipe = pipe
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike,
        device: str = "cpu",
        prompt: str | None = None,
        max_new_tokens: int = 40,
    ) -> HFCaptioner:
        """Load a captioning model from a local folder through transformers' pipeline.

        Uses the ``image-text-to-text`` task (transformers >= 5) or ``image-to-text`` where that
        is what the installed transformers offers.

        Args:
            model_dir: folder with ``config.json`` and weights (a downloaded hub snapshot).
            device: torch device string.
            prompt: text prompt for models that take one (VLMs); None for plain captioners.
            max_new_tokens: generation length limit.

        Raises:
            InputError: the folder is missing, is not a model folder, or transformers cannot load it.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise InputError(f"captioning model folder not found: {model_dir}")
        if not (model_dir / "config.json").is_file():
            raise InputError(f"not a transformers model folder (no config.json): {model_dir}")
        from transformers import pipeline
        from transformers.pipelines import SUPPORTED_TASKS

        task = "image-text-to-text" if "image-text-to-text" in SUPPORTED_TASKS else "image-to-text"
        try:
            pipe = pipeline(task, model=str(model_dir), device=device)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"cannot load captioning model {model_dir}: {first}") from None
        return cls(pipe, prompt=prompt, max_new_tokens=max_new_tokens)

    def caption_views(self, views: list[Image.Image]) -> list[str]:
        """One caption per view; RGBA views are composited on white first."""
        images = [rgb_on_white(v) for v in views]
        text = None if self.prompt is None else [self.prompt] * len(images)
        kwargs: dict = {"max_new_tokens": self.max_new_tokens}
        if self.prompt is not None:
            kwargs["return_full_text"] = False
        outputs = self.pipe(images=images, text=text, **kwargs)
        if len(outputs) != len(images):
            raise RuntimeError(f"captioner returned {len(outputs)} results for {len(images)} views")
        captions = []
        for out in outputs:
            item = out[0] if isinstance(out, list) else out
            captions.append(str(item["generated_text"]).strip())
        return captions


def caption_from_name(name: str) -> str:
    """A caption made from a scan's name: underscores to spaces, lower case, a random id suffix dropped.

    GSO names are product names (``Threshold_Porcelain_Teapot_White``); some end in a random
    11-character identifier (``CONE_SORTING_kg5fbARBwts``) that says nothing about the object.
    """
    words = name.replace("_", " ").split()
    if len(words) > 1 and _looks_like_id(words[-1]):
        words = words[:-1]
    return " ".join(words).lower()


def _looks_like_id(word: str) -> bool:
    """11 letters and digits in both cases, not capitalised words run together (``TablePurple``)."""
    mixed = any(c.islower() for c in word) and any(c.isupper() for c in word)
    return bool(re.fullmatch(r"[A-Za-z0-9]{11}", word)) and mixed and not re.fullmatch(r"([A-Z][a-z]+)+", word)


def caption_object(obj_dir: str | os.PathLike, captioner: Captioner | None = None) -> CaptionOutput | None:
    """The object's caption: from its files (`TemplateCaptioner`), else from ``captioner``.

    Args:
        obj_dir: the object's folder (``obj_dir/rig/*.png`` as written by the dataset renderer).
        captioner: runs on the 4 rig views when the folder has no caption file; None for none.

    Returns:
        The caption, or None when there are no caption files and no captioner, or the captioner's
        merged caption is empty.
    """
    from_files = TemplateCaptioner().caption_object(obj_dir)
    if from_files is not None or captioner is None:
        return from_files
    per_view = captioner.caption_views(load_rig_views(obj_dir))
    merged = merge_captions(per_view)
    if not merged:
        return None
    return CaptionOutput(caption=merged, source="captioner", per_view=tuple(per_view))
