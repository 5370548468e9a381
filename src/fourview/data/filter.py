"""Scoring and filtering rendered objects: CLIP score, LAION aesthetic predictor, quality SVM.

The seed's data stage scores every rendered object and filters the set:

- **CLIP score** between the caption and each of the 4 rig views, ``100 * max(cos, 0)`` of the
  L2-normalised CLIP image and text embeddings (the definition torchmetrics' ``CLIPScore`` uses;
  Hessel et al. 2021 scale by 2.5 instead of 100), averaged over the 4 views. Range [0, 100].
- **Aesthetic score** of each view from the LAION "improved aesthetic predictor"
  (github.com/christophschuhmann/improved-aesthetic-predictor, ``sac+logos+ava1-l14-linearMSE``):
  an MLP without activations on L2-normalised CLIP ViT-L/14 image embeddings (768-d),
  ``Linear(768, 1024) - Dropout(0.2) - Linear(1024, 128) - Dropout(0.2) - Linear(128, 64) -
  Dropout(0.1) - Linear(64, 16) - Linear(16, 1)``; state-dict keys ``layers.{0,2,4,6,7}.{weight,bias}``,
  so the published ``.pth`` loads as is (through ``torch.load(weights_only=True)``). Scores are
  roughly 1..10; the seed drops objects whose mean over the 4 views is < 3.5.
- **Quality SVM**: a small scikit-learn SVM trained on hand-labelled good / bad objects over the
  object's CLIP feature (mean of its 4 L2-normalised view embeddings, normalised again). Stored as
  JSON (coefficients or support vectors), never pickled; the score is the signed decision value
  (> 0: classified good).

Pretrained weights are never downloaded here: the user passes local files. A score whose weights
were not given is *unavailable*: None in the manifest plus a reason (`Availability`), never
replaced by another number under the same name.

Filters (`drop_low_aesthetic`, `curriculum_pass`) are pure functions over manifest records.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from fourview.atomic import atomic_path, write_text_atomic
from fourview.data.captions import Captioner, caption_object
from fourview.data.manifest import ObjectRecord, ScoreKey, load_rig_views, rgb_on_white, scan_objects
from fourview.errors import InputError

DEFAULT_CLIP_MODEL = "ViT-L-14"
"""open_clip model name the LAION aesthetic predictor expects (768-d image embeddings). Use
``ViT-L-14-quickgelu`` for OpenAI's original weights, ``ViT-L-14`` for LAION/DataComp ones."""

MissingPolicy = Literal["raise", "keep", "drop"]
"""What a filter does with a record whose needed score is None: raise `InputError` (default),
keep it (with a warning), or drop it (with a warning)."""


# --------------------------------------------------------------------------------------------
# Availability


@dataclass(frozen=True)
class Availability:
    """Whether a score can be computed, and why not.

    Attributes:
        available: True when the score's weights (and what it depends on) are present.
        reason: why it is unavailable, one line naming what to pass; ``""`` when available.
    """

    available: bool
    reason: str = ""

    def __post_init__(self) -> None:
        if self.available and self.reason:
            raise ValueError("an available score has no reason")
        if not self.available and not self.reason:
            raise ValueError("an unavailable score needs a reason")


CLIP_MISSING = "CLIP weights not given: pass --clip PATH"
AESTHETIC_MISSING = "aesthetic predictor weights not given: pass --aesthetic PATH"
SVM_MISSING = "quality SVM not given: pass --svm PATH (train one with `fourview data svm-train`)"
NO_CAPTION = "no caption (no caption.txt / spec.json and no captioner)"


# --------------------------------------------------------------------------------------------
# CLIP


def clip_score(image_features: torch.Tensor, text_features: torch.Tensor) -> float:
    """CLIP score of one caption against several views: mean over views of ``100 * max(cos, 0)``.

    Args:
        image_features: [V, D] image embeddings (normalised here; any scale).
        text_features: [D] or [1, D] text embedding of the caption.

    Returns:
        The score in [0, 100].
    """
    img = nn.functional.normalize(image_features.double(), dim=-1)  # [V, D]
    txt = nn.functional.normalize(text_features.double().reshape(1, -1), dim=-1)  # [1, D]
    if img.shape[-1] != txt.shape[-1]:
        raise ValueError(f"image features {tuple(img.shape)} and text features {tuple(txt.shape)} differ in D")
    cos = (img * txt).sum(-1)  # [V]
    return float((100.0 * cos.clamp(min=0.0)).mean())


class ClipScorer:
    """CLIP image and text embeddings from an open_clip model.

    Args:
        model: an open_clip ``CLIP`` (anything with ``encode_image`` / ``encode_text``).
        preprocess: PIL RGB image -> [3, H, W] tensor, the model's eval transform.
        tokenizer: list of strings -> [T, L] int64 token ids.
        name: model name, recorded with what is computed from it (e.g. in the SVM file).
        device: torch device the model runs on.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        name: str = "",
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(
        cls,
        weights: str | os.PathLike,
        model_name: str = DEFAULT_CLIP_MODEL,
        device: str | torch.device = "cpu",
    ) -> ClipScorer:
        """Build an open_clip model from local weights (no network).

        Args:
            weights: a checkpoint file for ``model_name`` (``.safetensors``, or ``.bin`` / ``.pt``
                read with ``weights_only=True``), or a folder holding ``open_clip_config.json``
                and the weights (a downloaded hub snapshot, e.g. laion/CLIP-ViT-L-14-...); the
                folder's config then defines the model and ``model_name`` is ignored.
            model_name: open_clip architecture name (see ``open_clip.list_models()``).
            device: torch device.

        Raises:
            InputError: missing weights, unknown model name, or weights that do not fit the model.
        """
        import open_clip

        weights = Path(weights)
        if weights.is_dir():
            if not (weights / "open_clip_config.json").is_file():
                raise InputError(f"CLIP weights folder has no open_clip_config.json: {weights}")
            name, kwargs = f"local-dir:{weights}", {}
        elif weights.is_file():
            if model_name not in open_clip.list_models():
                raise InputError(f"unknown open_clip model {model_name!r} (see open_clip.list_models())")
            name, kwargs = model_name, {"pretrained": str(weights)}
        else:
            raise InputError(f"CLIP weights not found: {weights}")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, device=device, **kwargs)
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as err:  # noqa: BLE001 - a user's file: torch, safetensors and open_clip raise many kinds
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise InputError(
                f"cannot load CLIP weights {weights} as {name}: {type(err).__name__}: {first[:300]}"
            ) from None
        label = model_name if not weights.is_dir() else weights.name
        return cls(model, preprocess, tokenizer, name=label, device=device)

    @property
    def embed_dim(self) -> int | None:
        """Dimension D of the joint embedding, when the model states it."""
        dim = getattr(getattr(self.model, "visual", None), "output_dim", None)
        return int(dim) if dim is not None else None

    @torch.no_grad()
    def image_features(self, views: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised image embeddings of the views (RGBA composited on white), float32 [V, D] on CPU."""
        if len(views) == 0:
            raise InputError("no views to embed")
        batch = torch.stack([self.preprocess(rgb_on_white(v)) for v in views]).to(self.device)  # [V, 3, H, W]
        feats = self.model.encode_image(batch).float()  # [V, D]
        return nn.functional.normalize(feats, dim=-1).cpu()

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, float32 [T, D] on CPU (long texts are truncated by the tokenizer)."""
        if isinstance(texts, str) or len(texts) == 0:
            raise InputError("text_features needs a non-empty list of strings")
        tokens = self.tokenizer(list(texts)).to(self.device)  # [T, L]
        feats = self.model.encode_text(tokens).float()  # [T, D]
        return nn.functional.normalize(feats, dim=-1).cpu()

    def score(self, views: Sequence[Image.Image], caption: str) -> float:
        """`clip_score` of ``caption`` against the views, in [0, 100]."""
        return clip_score(self.image_features(views), self.text_features([caption])[0])


# --------------------------------------------------------------------------------------------
# LAION aesthetic predictor


@dataclass(frozen=True)
class AestheticConfig:
    """Shape of the aesthetic predictor head.

    Attributes:
        embed_dim: CLIP image embedding size it reads: 768 for ViT-L/14 (the published weights).
    """

    embed_dim: int = 768


_AESTHETIC_LINEAR = (0, 2, 4, 6, 7)  # indices of the Linear layers inside `layers`


class AestheticScorer(nn.Module):
    """The LAION aesthetic predictor head (see the module docstring for the architecture).

    Build with random weights from a config; load the real ones with `from_file`.
    """

    def __init__(self, config: AestheticConfig = AestheticConfig()) -> None:
        super().__init__()
        if config.embed_dim < 1:
            raise InputError(f"aesthetic embed_dim must be >= 1, got {config.embed_dim}")
        self.config = config
        # Layer indices match the published state dict (layers.0, .2, .4, .6, .7); no activations,
        # as in the published linearMSE model.
        self.layers = nn.Sequential(
            nn.Linear(config.embed_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )
        self.eval()

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """Aesthetic score per embedding.

        Args:
            image_features: [N, D] CLIP image embeddings; L2-normalised here (zero vectors left
                as they are, like the reference ``normalized``).

        Returns:
            [N] float32 scores (roughly 1..10 with the published weights).
        """
        if image_features.ndim != 2 or image_features.shape[1] != self.config.embed_dim:
            raise ValueError(f"expected [N, {self.config.embed_dim}] features, got {tuple(image_features.shape)}")
        x = image_features.float()
        norm = x.norm(dim=-1, keepdim=True)  # [N, 1]
        x = x / torch.where(norm == 0, torch.ones_like(norm), norm)
        return self.layers(x).squeeze(-1)  # [N]

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> AestheticScorer:
        """Load weights from ``.safetensors`` or a plain tensor state dict (``.pth``/``.pt``/``.bin``).

        ``.pth`` files are read with ``torch.load(weights_only=True)``: plain tensors only, never
        arbitrary pickled objects. A ``{"state_dict": ...}`` wrapper is accepted. The embedding
        size is read from the weights.

        Raises:
            InputError: missing file, unknown extension, a file that is not a plain state dict, or
                keys / shapes that are not the predictor's.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"aesthetic predictor weights not found: {path}")
        state = _load_state_dict(path, "aesthetic predictor weights")
        expected = {f"layers.{i}.{p}" for i in _AESTHETIC_LINEAR for p in ("weight", "bias")}
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise InputError(
                f"{path} is not a LAION aesthetic predictor state dict "
                f"(missing {missing[:4]}, unexpected {unexpected[:4]})"
            )
        first = state["layers.0.weight"]
        if first.ndim != 2 or first.shape[0] != 1024:
            raise InputError(f"{path}: layers.0.weight must be [1024, D], got {tuple(first.shape)}")
        model = cls(AestheticConfig(embed_dim=int(first.shape[1])))
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as err:
            first_line = str(err).splitlines()[0]
            raise InputError(f"{path}: weights do not fit the aesthetic predictor: {first_line}") from None
        return model.eval()

    def save_safetensors(self, path: str | os.PathLike) -> Path:
        """Write the weights as safetensors (e.g. to convert the published ``.pth`` once)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp))
        return path


def _load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise InputError(f"cannot read {what} {path}: {err}") from None
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError ...
            raise InputError(
                f"cannot read {what} {path} as a plain tensor state dict ({type(err).__name__}); "
                "arbitrary pickles are never loaded: convert it to safetensors"
            ) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    else:
        raise InputError(f"{what} must be .safetensors or .pth/.pt/.bin, got {path.name}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} does not hold a state dict of tensors")
    return state


# --------------------------------------------------------------------------------------------
# Quality SVM


@dataclass(frozen=True)
class SVMConfig:
    """Training settings of the quality SVM.

    Attributes:
        kernel: ``"linear"`` (stored as one weight vector) or ``"rbf"`` (stored as support vectors).
        C: soft-margin penalty.
        gamma: RBF width; None uses scikit-learn's ``"scale"`` rule ``1 / (D * var(X))``,
            resolved at training time and stored.
        balanced: weight classes inversely to their frequency (hand labels are usually unbalanced).
    """

    kernel: Literal["linear", "rbf"] = "linear"
    C: float = 1.0
    gamma: float | None = None
    balanced: bool = True


_SVM_FORMAT = "fourview-quality-svm"


def object_feature(image_features: torch.Tensor | np.ndarray) -> np.ndarray:
    """An object's CLIP feature: mean of its L2-normalised view embeddings, L2-normalised, float64 [D].

    Args:
        image_features: [V, D] embeddings of the object's views (any scale).
    """
    x = np.asarray(image_features.detach().cpu() if isinstance(image_features, torch.Tensor) else image_features)
    x = _l2_rows(x.astype(np.float64).reshape(-1, x.shape[-1]))  # [V, D]
    return _l2_rows(x.mean(axis=0, keepdims=True))[0]  # [D]


def _l2_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


@dataclass(frozen=True, eq=False)
class QualitySVM:
    """A trained quality SVM, stored as JSON and evaluated with numpy (no pickle, no scikit-learn).

    The decision value of a feature ``x`` (L2-normalised first) is ``x . coef + intercept`` for
    the linear kernel, and ``sum_i dual_coef_i * exp(-gamma * |sv_i - x|^2) + intercept`` for RBF,
    exactly scikit-learn's ``SVC.decision_function`` with class 1 = good.

    Attributes:
        kernel: ``"linear"`` or ``"rbf"``.
        intercept: the bias term.
        feature_dim: D, the CLIP embedding size it was trained on.
        coef: [D] float64 weights (linear), else None.
        support_vectors: [S, D] float64 (rbf), else None.
        dual_coef: [S] float64 signed dual coefficients (rbf), else None.
        gamma: RBF width (rbf), else None.
        feature_model: name of the CLIP model the features came from (informational).
    """

    kernel: Literal["linear", "rbf"]
    intercept: float
    feature_dim: int
    coef: np.ndarray | None = field(default=None, repr=False)
    support_vectors: np.ndarray | None = field(default=None, repr=False)
    dual_coef: np.ndarray | None = field(default=None, repr=False)
    gamma: float | None = None
    feature_model: str = ""

    def __post_init__(self) -> None:
        d = self.feature_dim
        if self.kernel == "linear":
            if self.coef is None or self.coef.shape != (d,):
                raise InputError(f"linear SVM needs coef of shape [{d}]")
        elif self.kernel == "rbf":
            sv, dc = self.support_vectors, self.dual_coef
            if sv is None or dc is None or sv.ndim != 2 or sv.shape[1] != d or dc.shape != (len(sv),):
                raise InputError(f"rbf SVM needs support_vectors [S, {d}] and dual_coef [S]")
            if self.gamma is None or not self.gamma > 0:
                raise InputError(f"rbf SVM needs gamma > 0, got {self.gamma}")
        else:
            raise InputError(f"SVM kernel must be 'linear' or 'rbf', got {self.kernel!r}")

    @classmethod
    def fit(
        cls,
        good: np.ndarray,
        bad: np.ndarray,
        config: SVMConfig = SVMConfig(),
        feature_model: str = "",
    ) -> QualitySVM:
        """Train on object features of hand-labelled good and bad objects.

        Args:
            good: [Ng, D] features of good objects (e.g. `object_feature`), Ng >= 1.
            bad: [Nb, D] features of bad objects, Nb >= 1.
            config: kernel and regularisation.
            feature_model: CLIP model name, stored with the SVM.

        Raises:
            InputError: a class is empty or the feature sizes differ.
        """
        from sklearn.svm import SVC

        good, bad = np.atleast_2d(np.asarray(good, np.float64)), np.atleast_2d(np.asarray(bad, np.float64))
        n_good, n_bad = (len(a) if a.size else 0 for a in (good, bad))
        if n_good == 0 or n_bad == 0:
            raise InputError(f"the quality SVM needs at least one good and one bad object, got {n_good} / {n_bad}")
        if good.shape[1] != bad.shape[1]:
            raise InputError(f"good and bad features differ in size: {good.shape[1]} vs {bad.shape[1]}")
        x = _l2_rows(np.concatenate([good, bad]))  # [N, D]
        y = np.concatenate([np.ones(len(good), int), np.zeros(len(bad), int)])  # 1 = good
        d = x.shape[1]
        if config.kernel == "linear":
            gamma = None
            clf = SVC(kernel="linear", C=config.C, class_weight="balanced" if config.balanced else None)
        elif config.kernel == "rbf":
            var = float(x.var())
            gamma = config.gamma if config.gamma is not None else (1.0 / (d * var) if var > 0 else 1.0)
            clf = SVC(kernel="rbf", C=config.C, gamma=gamma, class_weight="balanced" if config.balanced else None)
        else:
            raise InputError(f"SVM kernel must be 'linear' or 'rbf', got {config.kernel!r}")
        clf.fit(x, y)
        intercept = float(clf.intercept_[0])
        dual = clf.dual_coef_[0].astype(np.float64)  # [S], signed: > 0 for class 1 (good)
        sv = clf.support_vectors_.astype(np.float64)  # [S, D]
        if config.kernel == "linear":
            return cls("linear", intercept, d, coef=dual @ sv, feature_model=feature_model)
        return cls("rbf", intercept, d, support_vectors=sv, dual_coef=dual, gamma=gamma, feature_model=feature_model)

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """Signed decision values, float64 [N] (> 0: good) for features [N, D] (normalised here)."""
        x = np.atleast_2d(np.asarray(features, np.float64))
        if x.shape[1] != self.feature_dim:
            raise InputError(f"the quality SVM expects {self.feature_dim}-d CLIP features, got {x.shape[1]}-d")
        x = _l2_rows(x)  # [N, D]
        if self.kernel == "linear":
            return x @ self.coef + self.intercept
        sq = (x**2).sum(1)[:, None] + (self.support_vectors**2).sum(1)[None, :] - 2.0 * x @ self.support_vectors.T
        return np.exp(-self.gamma * np.maximum(sq, 0.0)) @ self.dual_coef + self.intercept  # [N]

    def to_json(self) -> dict:
        """JSON-ready dict (floats written with full float64 precision by ``json``)."""
        out = {
            "format": _SVM_FORMAT,
            "version": 1,
            "kernel": self.kernel,
            "feature_dim": self.feature_dim,
            "feature_model": self.feature_model,
            "intercept": self.intercept,
        }
        if self.kernel == "linear":
            out["coef"] = self.coef.tolist()
        else:
            out["gamma"] = self.gamma
            out["dual_coef"] = self.dual_coef.tolist()
            out["support_vectors"] = self.support_vectors.tolist()
        return out

    @classmethod
    def from_json(cls, data: dict, where: str = "quality SVM") -> QualitySVM:
        """Inverse of `to_json`. Raises InputError for another format or malformed fields."""
        if not isinstance(data, dict) or data.get("format") != _SVM_FORMAT:
            raise InputError(f"{where} is not a fourview quality SVM file (format != {_SVM_FORMAT!r})")
        if data.get("version") != 1:
            raise InputError(f"{where}: unsupported quality SVM version {data.get('version')!r}")
        kernel = data.get("kernel")
        allowed = {"format", "version", "kernel", "feature_dim", "feature_model", "intercept"}
        allowed |= {"coef"} if kernel == "linear" else {"gamma", "dual_coef", "support_vectors"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise InputError(f"{where}: unknown keys {unknown}")

        def arr(k: str) -> np.ndarray | None:
            return None if data.get(k) is None else np.asarray(data[k], dtype=np.float64)

        try:
            return cls(
                kernel=kernel,
                intercept=float(data["intercept"]),
                feature_dim=int(data["feature_dim"]),
                coef=arr("coef"),
                support_vectors=arr("support_vectors"),
                dual_coef=arr("dual_coef"),
                gamma=None if data.get("gamma") is None else float(data["gamma"]),
                feature_model=str(data.get("feature_model", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InputError):
                raise InputError(f"{where}: {err}") from None
            raise InputError(f"{where}: malformed quality SVM ({type(err).__name__}: {err})") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON file atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> QualitySVM:
        """Read a file written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"quality SVM file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read quality SVM {path}: {err}") from None
        return cls.from_json(data, where=str(path))


def train_quality_svm(
    good_dirs: Sequence[str | os.PathLike],
    bad_dirs: Sequence[str | os.PathLike],
    clip: ClipScorer,
    config: SVMConfig = SVMConfig(),
) -> QualitySVM:
    """Train the quality SVM on rendered objects labelled by hand.

    Args:
        good_dirs: object folders (``DIR/NAME`` with ``rig/*.png``) labelled good.
        bad_dirs: object folders labelled bad.
        clip: the CLIP model whose image features the SVM reads (use the one scoring will use).
        config: kernel and regularisation.
    """

    def feats(dirs: Sequence[str | os.PathLike]) -> np.ndarray:
        rows = [object_feature(clip.image_features(load_rig_views(d))) for d in dirs]
        return np.stack(rows) if rows else np.zeros((0, 0))  # [N, D]

    return QualitySVM.fit(feats(good_dirs), feats(bad_dirs), config, feature_model=clip.name)


# --------------------------------------------------------------------------------------------
# Scoring objects


@dataclass(frozen=True)
class Scorers:
    """The scoring models at hand; absent ones make their score unavailable.

    Attributes:
        clip: CLIP embeddings (needed by every score), or None.
        aesthetic: the aesthetic predictor head, or None.
        svm: the quality SVM, or None.
    """

    clip: ClipScorer | None = None
    aesthetic: AestheticScorer | None = None
    svm: QualitySVM | None = None

    def __post_init__(self) -> None:
        dim = None if self.clip is None else self.clip.embed_dim
        if dim is None:
            return
        if self.aesthetic is not None and self.aesthetic.config.embed_dim != dim:
            raise InputError(
                f"the aesthetic predictor reads {self.aesthetic.config.embed_dim}-d CLIP features but the CLIP "
                f"model gives {dim}-d (the published predictor needs ViT-L/14)"
            )
        if self.svm is not None and self.svm.feature_dim != dim:
            raise InputError(
                f"the quality SVM was trained on {self.svm.feature_dim}-d CLIP features "
                f"but the CLIP model gives {dim}-d"
            )
        if self.svm is not None and self.svm.feature_model and self.clip.name != self.svm.feature_model:
            warnings.warn(
                f"the quality SVM was trained on features of {self.svm.feature_model!r} but scoring uses "
                f"{self.clip.name!r}: its scores are meaningless unless these are the same model",
                stacklevel=2,
            )

    def availability(self, key: ScoreKey) -> Availability:
        """Whether score ``key`` can be computed with these models (captions aside)."""
        if key == "clip_score":
            own = self.clip is not None, CLIP_MISSING
        elif key == "aesthetic":
            own = self.aesthetic is not None, AESTHETIC_MISSING
        elif key == "svm_score":
            own = self.svm is not None, SVM_MISSING
        else:
            raise InputError(f"unknown score {key!r}")
        if not own[0]:
            return Availability(False, own[1])
        if self.clip is None:
            return Availability(False, f"needs CLIP image features: {CLIP_MISSING}")
        return Availability(True)


def load_scorers(
    clip_weights: str | os.PathLike | None = None,
    clip_model: str = DEFAULT_CLIP_MODEL,
    aesthetic_weights: str | os.PathLike | None = None,
    svm_path: str | os.PathLike | None = None,
    device: str = "cpu",
) -> Scorers:
    """Load what the user gave; what is None stays unavailable (see `Scorers.availability`).

    Raises:
        InputError: a given file is missing or unusable, or the models do not fit together.
    """
    clip = None if clip_weights is None else ClipScorer.from_pretrained(clip_weights, clip_model, device)
    aesthetic = None if aesthetic_weights is None else AestheticScorer.from_file(aesthetic_weights).to(device)
    svm = None if svm_path is None else QualitySVM.load(svm_path)
    return Scorers(clip=clip, aesthetic=aesthetic, svm=svm)


def score_record(record: ObjectRecord, views: Sequence[Image.Image], scorers: Scorers) -> ObjectRecord:
    """The record with its scores filled in (or marked unavailable with the reason).

    Args:
        record: the object's record; its ``caption`` is used for the CLIP score.
        views: the object's 4 rig views (PIL, RGBA or RGB), rig order.
        scorers: the models at hand.
    """
    if len(views) != 4:
        raise InputError(f"object {record.name}: expected 4 rig views, got {len(views)}")
    reasons: dict[str, str] = {}
    values: dict[str, object] = {"clip_score": None, "aesthetic": None, "svm_score": None}
    feats = None if scorers.clip is None else scorers.clip.image_features(views)  # [4, D]
    for key in ("clip_score", "aesthetic", "svm_score"):
        status = scorers.availability(key)
        if not status.available:
            reasons[key] = status.reason
        elif key == "clip_score":
            if record.caption:
                values[key] = clip_score(feats, scorers.clip.text_features([record.caption])[0])
            else:
                reasons[key] = NO_CAPTION
        elif key == "aesthetic":
            device = next(scorers.aesthetic.parameters()).device
            with torch.no_grad():
                values[key] = tuple(float(s) for s in scorers.aesthetic(feats.to(device)).cpu())
        else:
            values[key] = float(scorers.svm.decision_function(object_feature(feats)[None])[0])
    return replace(record, unavailable=reasons, **values)


def build_manifest(
    root: str | os.PathLike,
    scorers: Scorers,
    captioner: Captioner | None = None,
    progress: bool = False,
) -> list[ObjectRecord]:
    """Caption and score every rendered object under ``root`` (``root/NAME/rig/*.png``).

    Captions come from ``caption.txt`` / ``spec.json`` beside the renders, else from
    ``captioner`` (see `fourview.data.captions.caption_object`).

    Returns:
        One record per object, sorted by name; write them with `fourview.data.manifest.write_manifest`.
    """
    records = scan_objects(root)
    iterator: Iterable[ObjectRecord] = records
    if progress:
        from tqdm import tqdm

        iterator = tqdm(records, desc="scoring", unit="obj")
    out = []
    for record in iterator:
        cap = caption_object(record.path, captioner)
        if cap is not None:
            record = replace(record, caption=cap.caption, caption_source=cap.source)
        out.append(score_record(record, load_rig_views(record.path), scorers))
    return out


# --------------------------------------------------------------------------------------------
# Filters (pure functions over records)


def _split_missing(
    records: Sequence[ObjectRecord], key: ScoreKey, on_missing: MissingPolicy, what: str
) -> tuple[list[tuple[int, ObjectRecord, float]], list[int]]:
    """(index, record, score) of scored records, and indices of unscored records to keep."""
    if on_missing not in ("raise", "keep", "drop"):
        raise InputError(f"on_missing must be 'raise', 'keep' or 'drop', got {on_missing!r}")
    scored, missing = [], []
    for i, r in enumerate(records):
        value = r.score(key)
        if value is None:
            missing.append(i)
        else:
            scored.append((i, r, value))
    if missing:
        first = records[missing[0]]
        if on_missing == "raise":
            raise InputError(
                f"{what}: {len(missing)} object(s) have no {key} score, e.g. {first.name!r} "
                f"({first.missing_reason(key)}); rescore them or choose on_missing='keep' or 'drop'"
            )
        warnings.warn(
            f"{what}: {len(missing)} object(s) have no {key} score (e.g. {first.name!r}: "
            f"{first.missing_reason(key)}); {'keeping' if on_missing == 'keep' else 'dropping'} them",
            stacklevel=3,
        )
    return scored, missing if on_missing == "keep" else []


def drop_low_aesthetic(
    records: Sequence[ObjectRecord], threshold: float = 3.5, on_missing: MissingPolicy = "raise"
) -> list[ObjectRecord]:
    """Drop objects whose mean aesthetic score over the 4 rig views is below ``threshold``.

    A mean exactly at the threshold is kept (the seed drops "< 3.5"). Order is preserved.

    Args:
        records: manifest records.
        threshold: minimum mean aesthetic score.
        on_missing: what to do with records without an aesthetic score (see `MissingPolicy`).
    """
    scored, keep_missing = _split_missing(records, "aesthetic", on_missing, "drop_low_aesthetic")
    keep = {i for i, _, value in scored if value >= threshold} | set(keep_missing)
    return [r for i, r in enumerate(records) if i in keep]


def top_count(n: int, fraction: float) -> int:
    """How many of ``n`` objects the top ``fraction`` holds: ``ceil(fraction * n)``, at least 1 when n > 0.

    The product is rounded to 9 decimals first, so 0.07 * 100 gives 7, not 8 (0.07 * 100 is
    7.000000000000001 in floating point).
    """
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"top fraction must be in (0, 1], got {fraction}")
    if n <= 0:
        return 0
    return max(1, math.ceil(round(fraction * n, 9)))


def curriculum_pass(
    records: Sequence[ObjectRecord],
    pass_index: int,
    low_threshold: float | None,
    top_fraction: float = 0.3,
    key: ScoreKey = "aesthetic",
    on_missing: MissingPolicy = "raise",
) -> list[ObjectRecord]:
    """The training set of one curriculum pass.

    Pass 1: every object whose score ``key`` is at or above ``low_threshold`` (all objects when
    it is None). Pass 2: the best ``top_fraction`` of the pass-1 set by ``key``:
    ``top_count(len(pass 1), top_fraction)`` objects (ceil, at least one); ties at the cut are
    broken by name, so the count is exact and the result deterministic. Records without the score
    follow ``on_missing``; with ``"keep"`` they are in both passes, unranked. The input order is
    preserved.

    Args:
        records: manifest records (usually already through `drop_low_aesthetic`).
        pass_index: 1 or 2.
        low_threshold: pass-1 minimum of ``key``, or None for no minimum.
        top_fraction: share of the pass-1 set that pass 2 keeps, in (0, 1].
        key: the score to threshold and rank by (``aesthetic`` means the mean over the 4 views).
        on_missing: what to do with records lacking the score (see `MissingPolicy`).
    """
    if pass_index not in (1, 2):
        raise InputError(f"curriculum pass must be 1 or 2, got {pass_index}")
    top_count(1, top_fraction)  # validates the fraction before any work
    scored, keep_missing = _split_missing(records, key, on_missing, f"curriculum pass {pass_index}")
    first = [(i, r, v) for i, r, v in scored if low_threshold is None or v >= low_threshold]
    if pass_index == 1:
        chosen = {i for i, _, _ in first}
    else:
        ranked = sorted(first, key=lambda t: (-t[2], t[1].name))
        chosen = {i for i, _, _ in ranked[: top_count(len(first), top_fraction)]}
    chosen |= set(keep_missing)
    return [r for i, r in enumerate(records) if i in chosen]
