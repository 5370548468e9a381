"""CLIP score and CLIP R-precision of rendered assets against their prompts.

- **CLIP score** of an asset: `fourview.data.filter.clip_score` of its prompt against its views,
  ``100 * max(cos, 0)`` of the L2-normalised embeddings averaged over the views (torchmetrics'
  ``CLIPScore`` scale). Range [0, 100].
- **CLIP R-precision** (R = 1, Dream Fields, Jain et al. 2022): for each view, the prompts of the
  whole set are ranked by cosine similarity to it; a hit when the asset's own prompt is first
  (ties count as hits). An asset's R-precision is its share of hits over its views; the
  benchmark's is the mean over assets. Retrieval among the whole set's distinct prompts, so the
  number of a run on the first N prompts of a set is comparable to the whole set's.

Weights come from ``--clip``: a transformers CLIP folder or hub id (``CLIPModel``, e.g.
``openai/clip-vit-large-patch14``), or an open_clip checkpoint file / folder
(`fourview.data.filter.ClipScorer.from_pretrained`). Without weights both scores are
*unavailable*: reported as such with the reason, never replaced by another metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fourview.data.filter import CLIP_MISSING, DEFAULT_CLIP_MODEL, ClipScorer, clip_score
from fourview.errors import InputError
from fourview.images import to_uint8
from fourview.pretrained import HUB_ID, hub_error, quiet_hub_logs

CLIP_UNAVAILABLE: str = f"unavailable ({CLIP_MISSING}: transformers CLIP weights or an open_clip checkpoint)"
"""What the outputs say for both CLIP scores when no weights are given."""


@dataclass(frozen=True)
class ClipScores:
    """One asset's CLIP scores (the module docstring).

    Attributes:
        score: CLIP score in [0, 100].
        r_precision: share of views whose nearest prompt of the set is the asset's own, in [0, 1].
        ranks: per view, the rank of the asset's own prompt among the set's (1 = first).
    """

    score: float
    r_precision: float
    ranks: tuple[int, ...]


class _TransformersClip(nn.Module):
    """A transformers ``CLIPModel`` behind open_clip's ``encode_image`` / ``encode_text``, as `ClipScorer` takes it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return _projected(self.model.get_image_features(pixel_values=pixels))  # [V, D]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        # No attention mask: padding follows the end token, which the causal mask keeps from seeing it.
        return _projected(self.model.get_text_features(input_ids=tokens))  # [T, D]


def _projected(output) -> torch.Tensor:
    """The projected embedding: transformers 4 returns it, 5 returns an output holding it as ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_clip(weights: str, model_name: str = DEFAULT_CLIP_MODEL, device: str | torch.device = "cpu") -> ClipScorer:
    """CLIP weights as a `ClipScorer`: an open_clip checkpoint file or folder (``open_clip_config.json``), a
    transformers folder (``config.json``) or a transformers hub id.

    Args:
        weights: what ``--clip`` gave.
        model_name: open_clip architecture of a checkpoint file (ignored otherwise).
        device: torch device.

    Raises:
        InputError: nothing at ``weights``, a folder of neither kind, or weights that do not load.
    """
    path = Path(weights).expanduser()
    if path.is_file() or (path / "open_clip_config.json").is_file():
        return ClipScorer.from_pretrained(path, model_name, device)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"CLIP weights folder has neither config.json (transformers) nor open_clip_config.json: "
                             f"{path}")  # fmt: skip
        return _load_transformers_clip(str(path), path.name, device)
    if not HUB_ID.match(weights):
        raise InputError(f"CLIP weights not found: {weights} is neither a file, a folder nor a hub id 'owner/name'")
    return _load_transformers_clip(weights, weights, device)


def _load_transformers_clip(location: str, label: str, device: str | torch.device) -> ClipScorer:
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer  # seconds to import

    try:
        with quiet_hub_logs():
            model = CLIPModel.from_pretrained(location).to(device).eval()
            tokenizer = CLIPTokenizer.from_pretrained(location)
            try:
                processor = CLIPImageProcessor.from_pretrained(location)
            except OSError:  # no preprocessor_config.json: CLIP's own resize and crop at the model's size
                side = model.config.vision_config.image_size
                processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    except Exception as error:  # noqa: BLE001 - a user's folder or the hub: transformers raises many kinds
        if not Path(location).exists():
            raise hub_error("CLIP weights", location, error) from None
        first = (str(error).strip().splitlines() or [""])[0]
        raise InputError(f"cannot load CLIP weights {location} as a transformers CLIPModel: "
                         f"{type(error).__name__}: {first[:300]}") from None  # fmt: skip
    max_length = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)

    def preprocess(image: Image.Image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]  # [3, S, S]

    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")["input_ids"]

    return ClipScorer(_TransformersClip(model), preprocess, tokenize, name=label, device=device)


def view_images(frames: np.ndarray | list[np.ndarray]) -> list[Image.Image]:
    """Frames ``[H, W, 3 | 4]`` (uint8, or float in [0, 1]) as PIL images (`ClipScorer` composites RGBA on white)."""
    return [Image.fromarray(f if f.dtype == np.uint8 else to_uint8(f)) for f in map(np.asarray, frames)]


def clip_scores(image_features: torch.Tensor, prompt_features: torch.Tensor, own: int) -> ClipScores:
    """The CLIP score and R-precision of one asset.

    Args:
        image_features: [V, D] embeddings of the asset's views.
        prompt_features: [P, D] embeddings of the set's distinct prompts.
        own: the index of the asset's prompt in ``prompt_features``.
    """
    img = nn.functional.normalize(image_features.double(), dim=-1)  # [V, D]
    txt = nn.functional.normalize(prompt_features.double(), dim=-1)  # [P, D]
    sims = img @ txt.T  # [V, P]
    ranks = 1 + (sims > sims[:, own : own + 1]).sum(dim=1)  # [V]
    return ClipScores(
        clip_score(image_features, prompt_features[own]),
        float((ranks == 1).double().mean()),
        tuple(int(r) for r in ranks),
    )
