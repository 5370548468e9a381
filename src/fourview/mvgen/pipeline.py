"""`MultiViewPipeline`: text (or a photo) -> a 2x2 grid of the four rig views -> four RGBA views.

Stage 1 of fourview. A diffusers ``StableDiffusionXLPipeline`` (SDXL's architecture at any size:
the shipped demo, or a fine-tuned SDXL) draws one square grid laid out like `fourview.cameras`:
``[[az 0, az 90], [az 180, az 270]]`` on a white background. This class adds, around diffusers'
own sampling loops (which it reuses, never copies):

- the Gaussian-blob start (`fourview.mvgen.blobs`): with ``blob_strength < 1`` sampling starts
  from four VAE-encoded Gaussians noised to an intermediate step (SDXL img2img on the same
  components, from latents noised here: diffusers' img2img takes latents from 4-channel VAEs only);
- the image-conditioned path (`fourview.mvgen.image_prompt`): a photo fills the front cell and
  the other three cells are inpainted (the same img2img loop; after every step the known cell's
  latents, noised to the next step's level, are blended back, as diffusers' inpainting pipeline
  does for 4-channel UNets, for any latent width);
- input checks that name the problem (`InputError`): empty or overlong prompts, grid sizes that
  are not multiples of 16, bad steps or strengths;
- per-image seeds (image ``k`` of a batch uses ``seed + k``, so an image does not depend on what
  else is in its batch), memory-efficient attention (torch SDPA by default, xformers when
  installed and on CUDA), LoRA adapters and a few-step student hook;
- the white background turned into alpha (`white_to_alpha`), giving the reconstructor's input.

Weights come in through `MultiViewPipeline.from_pretrained` only: ``"demo"`` (the shipped
weights), a folder in diffusers' layout (``save_pretrained``), or a hub id, resolved by
`fourview.pretrained.resolve_weights`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from fourview.accelerators import optional_import
from fourview.cameras import grid_to_views
from fourview.errors import InputError
from fourview.images import WHITE_ALPHA_HIGH, WHITE_ALPHA_LOW
from fourview.mvgen.blobs import BLOB_SIGMA, blob_image, check_strength, decode_latents, encode_images
from fourview.mvgen.image_prompt import ImagePromptConfig, background_regions, conditioning_grid
from fourview.mvgen.prompt_check import check_prompt_tokens, read_training_words
from fourview.mvgen.rerank import prompt_alignment
from fourview.mvgen.student import (
    STUDENT_FILE,
    STUDENT_GUIDANCE,
    STUDENT_STEPS,
    student_folder,
    student_scheduler,
    student_settings,
)
from fourview.pretrained import hub_error, quiet_hub_logs, resolve_weights

Attention = Literal["auto", "sdpa", "xformers"]

MIN_HOLE: float = 0.004
"""`white_to_alpha`: enclosed near-white regions of at least this fraction of a view are holes
(counting them raises the mask IoU on the synthetic renders: docs/benchmarks.md)."""

DEFAULT_STEPS: int = 8
"""Sampler steps without a student (on the demo world as good as 30: docs/benchmarks.md, "Sampler steps")."""
DEFAULT_GUIDANCE: float = 5.0
"""Classifier-free guidance without a student."""

BLOB_STRENGTH: float = 1.0
"""Default start strength: 1.0 starts from pure noise (blob off); below 1 the blob start is on."""
ALPHA_LOW: float = WHITE_ALPHA_LOW
"""`white_to_alpha`'s default ``low`` (`fourview.images.WHITE_ALPHA_LOW`)."""
ALPHA_HIGH: float = WHITE_ALPHA_HIGH
"""`white_to_alpha`'s default ``high`` (`fourview.images.WHITE_ALPHA_HIGH`)."""

CANDIDATE_SEED_STRIDE: int = 1_000_003
"""Seed offset between the candidates of one image (best-of-K sampling): candidate 0 keeps the
image's own seed, so ``candidates=1`` draws exactly what it drew before."""


@dataclass
class MultiViewOutput:
    """What one `MultiViewPipeline` call drew.

    Attributes:
        grids: [B, S, S, 3] float32 RGB in [0, 1] on white, the 2x2 grids as decoded.
        views: [B, 4, S / 2, S / 2, 4] float32 RGBA (straight alpha) in rig order (az 0, 90, 180,
            270); the white background turned into alpha by `white_to_alpha`.
        latents: [B, C, S / f, S / f] the final latents (before the VAE decoder), float32, CPU.
        prompts: the prompt of each image (B entries).
        seeds: the seed of each image (B entries): the seed of the candidate kept.
        alignment: with ``candidates > 1``, [B, K] the prompt alignment of every candidate
            (`fourview.mvgen.rerank.prompt_alignment`; the kept one is the highest), else None.
    """

    grids: np.ndarray
    views: np.ndarray
    latents: torch.Tensor
    prompts: list[str]
    seeds: list[int]
    alignment: np.ndarray | None = None


def white_to_alpha(
    rgb: np.ndarray, low: float = ALPHA_LOW, high: float = ALPHA_HIGH, min_hole: float = MIN_HOLE
) -> np.ndarray:
    """Turn the white background of views into alpha, with a soft edge.

    A pixel's distance from white is ``1 - min(R, G, B)``. Pixels further than ``high`` are
    object (alpha 1). The others are background candidates; those connected to the view's border
    through candidates are background, and so are enclosed candidate regions of at least
    ``min_hole`` of the view (holes, e.g. between a chair's legs); smaller white or light regions
    enclosed by the object stay opaque (`fourview.mvgen.image_prompt.background_regions`). On the
    background, alpha ramps linearly from 0 (distance ``low``) to 1 (``high``); object pixels
    within two pixels of the background get their coverage of white, estimated against the
    nearest interior colour (`_edge_coverage`): together the soft, anti-aliased edge. Colours are
    then un-composited from white, ``c = (p - (1 - a)) / a``, so compositing the result on white
    gives the input back (exactly where ``alpha > 0`` and the colour needs no clipping, within
    ``low`` where the background was cleared). Opaque islands smaller than 0.2% of the view that
    are not the largest object component (speckles of sampling noise) are cleared.

    Args:
        rgb: [..., H, W, 3] float RGB in [0, 1], each [H, W] image one view on white.
        low: see above, in [0, 1).
        high: see above, in (low, 1].
        min_hole: area fraction of a view from which an enclosed near-white region is a hole.

    Returns:
        [..., H, W, 4] float32 RGBA, straight alpha.
    """
    from scipy.ndimage import label

    if not 0.0 <= low < high <= 1.0:
        raise InputError(f"white_to_alpha needs 0 <= low < high <= 1, got {low}, {high}")
    rgb = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise InputError(f"expected [..., H, W, 3] RGB, got {tuple(rgb.shape)}")
    lead = rgb.shape[:-3]
    flat = rgb.reshape(-1, *rgb.shape[-3:])  # [N, H, W, 3]
    out = np.empty((*flat.shape[:-1], 4), np.float32)
    for i, img in enumerate(flat):
        dist = 1.0 - img.min(axis=-1)  # [H, W] distance from white
        background = background_regions(dist < high, min_hole)  # [H, W]
        alpha = np.where(background, np.clip((dist - low) / (high - low), 0.0, 1.0), 1.0)
        alpha = _edge_coverage(img, alpha, background)
        opaque, n = label(alpha >= 0.5)
        if n > 1:
            areas = np.bincount(opaque.ravel())[1:]  # [n]
            small = np.flatnonzero(areas < 0.002 * alpha.size) + 1
            small = small[small != areas.argmax() + 1]
            alpha[np.isin(opaque, small)] = 0.0
        a = alpha[..., None]
        colour = np.where(a > 1e-6, (img - (1.0 - a)) / np.maximum(a, 1e-6), 1.0)
        out[i, ..., :3] = np.clip(colour, 0.0, 1.0)
        out[i, ..., 3] = alpha
    return out.reshape(*lead, *out.shape[1:])


def _edge_coverage(img: np.ndarray, alpha: np.ndarray, background: np.ndarray, band: int = 2) -> np.ndarray:
    """Alpha of anti-aliased object pixels next to the background: their coverage of white.

    An edge pixel (opaque, within ``band`` pixels of the background) is modelled as
    ``p = a * c + (1 - a) * white`` with ``c`` the colour of the nearest interior pixel; ``a`` is
    the least-squares solution ``((1 - p) . (1 - c)) / |1 - c|^2``. Interior colours close to
    white (``|1 - c| < 0.1``) say nothing about coverage; those pixels keep their alpha.

    Args:
        img: [H, W, 3] RGB. alpha: [H, W] current alpha. background: [H, W] bool.

    Returns:
        [H, W] float alpha.
    """
    from scipy.ndimage import binary_dilation, distance_transform_edt

    if not background.any():
        return alpha
    near_bg = binary_dilation(background, structure=np.ones((3, 3), bool), iterations=band)
    edge = near_bg & ~background
    core = ~near_bg
    if not edge.any() or not core.any():
        return alpha
    _, (ri, ci) = distance_transform_edt(~core, return_indices=True)
    c = img[ri, ci]  # [H, W, 3] colour of the nearest interior pixel
    dc = 1.0 - c
    norm2 = (dc * dc).sum(-1)  # [H, W]
    cover = np.clip(((1.0 - img) * dc).sum(-1) / np.maximum(norm2, 1e-6), 0.0, 1.0)
    use = edge & (norm2 > 0.01)
    out = alpha.copy()
    out[use] = cover[use]
    return out


class MultiViewPipeline:
    """The multi-view generator around a diffusers ``StableDiffusionXLPipeline``.

    Build it with `from_pretrained` (weights) or `from_components` (modules in memory, e.g. random
    ones from `fourview.mvgen.components.build_components`); the constructor does no I/O.

    Attributes:
        sdxl: the diffusers pipeline (its modules are shared with the img2img and inpainting
            pipelines built for the blob start and the image-conditioned path).
        name: where the weights came from (``"demo"``, a folder, a hub id), for records.
        adapters: LoRA adapters loaded so far, name -> weight.
    """

    def __init__(self, sdxl, name: str = "components") -> None:
        self.sdxl = sdxl
        self.name = name
        self.adapters: dict[str, float] = {}
        self.attention = "default"
        self.student: str | None = None
        self.progress = False
        self.training_words: frozenset[str] | None = None  # `fourview.mvgen.prompt_check`

    # ---------------------------------------------------------------------------------------
    # Construction and loading

    @classmethod
    def from_components(
        cls, components: dict, name: str = "components", attention: Attention = "auto"
    ) -> MultiViewPipeline:
        """Wrap SDXL modules (the keyword arguments of ``StableDiffusionXLPipeline``)."""
        from diffusers import StableDiffusionXLPipeline

        kwargs = dict(components)
        kwargs.setdefault("add_watermarker", False)
        pipe = cls(StableDiffusionXLPipeline(**kwargs), name=name)
        pipe.set_attention(attention)
        return pipe

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = "demo",
        *,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
        student: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        attention: Attention = "auto",
    ) -> MultiViewPipeline:
        """Load a generator: the shipped demo, a diffusers folder, or a hub id.

        Args:
            name_or_path: ``"demo"`` (the shipped generator, 128 px grids), a folder written by
                ``save_pretrained`` (with ``model_index.json``), or a hub id ``owner/name`` (e.g. a
                fine-tuned SDXL); `fourview.pretrained.resolve_weights`.
            lora: optional LoRA weights (a folder or file in diffusers' LoRA format, as
                ``save_lora_weights`` writes them) applied with weight ``lora_scale``.
            lora_scale: weight of ``lora``.
            student: optional few-step student (``"demo"`` or a folder; see `use_student`): LoRA
                weights distilled for consistency sampling; loading it switches the scheduler to
                ``LCMScheduler``. `sampling_defaults` then gives its steps and guidance (4, 1).
            device: torch device.
            dtype: parameter dtype (float16 is for GPUs).
            attention: ``"auto"`` (xformers on CUDA when installed, else SDPA), ``"sdpa"`` or ``"xformers"``.

        Raises:
            InputError: weights that are missing or cannot be loaded.
        """
        from diffusers import StableDiffusionXLPipeline

        name = str(name_or_path)
        source = resolve_weights(name, "mvgen")
        student = None if student is None else str(student_folder(student))  # fail before loading
        quiet = quiet_hub_logs() if source.path is None else contextlib.nullcontext()
        try:
            with quiet:  # a hub id's failure is the one line below, without diffusers' warnings first
                # safetensors only (the design's rule): a hub download never fetches or unpickles a .bin
                sdxl = StableDiffusionXLPipeline.from_pretrained(
                    source.location, dtype=dtype, add_watermarker=False, use_safetensors=True
                )
        except (OSError, ValueError, KeyError, TypeError) as err:
            if source.path is None:
                raise hub_error("mvgen weights", name, err) from None
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise InputError(
                f"cannot load mvgen weights from folder {name!r}: {type(err).__name__}: {first}"
            ) from None
        pipe = cls(sdxl.to(device), name=name)
        pipe.training_words = read_training_words(source.path)
        pipe.set_attention(attention)
        if lora is not None:
            pipe.load_lora(lora, lora_scale)
        if student is not None:
            pipe.use_student(student)
        return pipe

    def load_lora(self, path: str | Path, scale: float = 1.0, adapter_name: str = "lora") -> None:
        """Load LoRA weights (diffusers' format) as an adapter and activate it with weight ``scale``.

        Raises:
            InputError: the weights cannot be read.
        """
        try:
            self.sdxl.load_lora_weights(str(path), adapter_name=adapter_name)
        except (OSError, ValueError, KeyError) as err:
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise InputError(f"cannot load LoRA weights {str(path)!r}: {type(err).__name__}: {first}") from None
        self.adapters[adapter_name] = float(scale)
        self.sdxl.set_adapters(list(self.adapters), adapter_weights=list(self.adapters.values()))

    def use_student(self, lora: str | Path | None, scheduler=None) -> None:
        """Switch to a few-step student: its LoRA adapter (if given) and its scheduler.

        Args:
            lora: ``"demo"`` (the shipped student) or a student folder written by
                ``fourview train mvgen-lcm`` (``pytorch_lora_weights.safetensors`` + ``student.json``),
                or None when the student is already in the weights (a fully distilled UNet).
            scheduler: a diffusers scheduler instance; by default ``LCMScheduler`` with the current
                scheduler's betas and prediction type and the student's LCM settings
                (`fourview.mvgen.student.student_scheduler`).
        """
        if lora is not None:
            lora = str(student_folder(lora))
            self.load_lora(lora, 1.0, adapter_name="student")
        if scheduler is None:
            scheduler = student_scheduler(self.sdxl.scheduler.config, lora)
        self.sdxl.scheduler = scheduler
        self.student = None if lora is None else str(lora)

    @contextlib.contextmanager
    def _without_student(self):
        """Inside: the UNet without the student's LoRA (other adapters stay as they were)."""
        if "student" not in self.adapters:
            yield
            return
        others = {name: w for name, w in self.adapters.items() if name != "student"}
        if others:
            self.sdxl.set_adapters(list(others), adapter_weights=list(others.values()))
        else:
            self.sdxl.disable_lora()
        try:
            yield
        finally:
            if not others:
                self.sdxl.enable_lora()
            self.sdxl.set_adapters(list(self.adapters), adapter_weights=list(self.adapters.values()))

    def sampling_defaults(self) -> tuple[int, float]:
        """Recommended (steps, guidance): the student's (its ``student.json``) when one is loaded, else 8, 5.0."""
        if self.student is not None:
            if (Path(self.student) / STUDENT_FILE).is_file():
                meta = student_settings(self.student)
                return int(meta.get("recommended_steps", STUDENT_STEPS)), float(
                    meta.get("recommended_guidance", STUDENT_GUIDANCE)
                )
            return STUDENT_STEPS, STUDENT_GUIDANCE
        return DEFAULT_STEPS, DEFAULT_GUIDANCE

    def set_attention(self, attention: Attention = "auto") -> str:
        """Choose the attention kernels of the UNet and VAE; returns the one chosen.

        ``auto`` picks xformers when it is importable and the model is on CUDA, else torch's
        scaled-dot-product attention (diffusers' ``AttnProcessor2_0``: flash / memory-efficient
        kernels where torch has them, a fused CPU kernel otherwise).

        Raises:
            InputError: ``xformers`` asked for but not installed or not on CUDA, or an unknown name.
        """
        on_cuda = self.device.type == "cuda"
        has_xformers = on_cuda and optional_import("xformers") is not None
        if attention == "auto":
            attention = "xformers" if (on_cuda and has_xformers) else "sdpa"
        if attention == "xformers":
            if not (on_cuda and has_xformers):
                raise InputError("xformers attention needs the xformers package and a CUDA device")
            self.sdxl.enable_xformers_memory_efficient_attention()
        elif attention == "sdpa":
            from diffusers.models.attention_processor import AttnProcessor2_0

            self.sdxl.unet.set_attn_processor(AttnProcessor2_0())
            self.sdxl.vae.set_attn_processor(AttnProcessor2_0())
        else:
            raise InputError(f"unknown attention {attention!r}; expected 'auto', 'sdpa' or 'xformers'")
        self.attention = attention
        return attention

    def to(self, device: str | torch.device) -> MultiViewPipeline:
        """Move every module to ``device``."""
        self.sdxl.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.sdxl.unet.device

    @property
    def resolution(self) -> int:
        """Side of the grid the model was trained on, pixels (UNet sample size x VAE downsampling)."""
        return int(self.sdxl.unet.config.sample_size) * int(self.sdxl.vae_scale_factor)

    # ---------------------------------------------------------------------------------------
    # Input checks

    def check_prompt(self, prompt: str, what: str = "prompt", allow_empty: bool = False) -> None:
        """Reject an empty prompt or one longer than the text encoders take (with start/end tokens).

        Raises:
            InputError: not a string, empty (unless ``allow_empty``), or too many tokens.
        """
        if not isinstance(prompt, str):
            raise InputError(f"{what} must be text, got {type(prompt).__name__}")
        if not prompt.strip():
            if allow_empty:
                return
            raise InputError(f"{what} is empty; describe the object, e.g. 'a red mug'")
        check_prompt_tokens(prompt, (self.sdxl.tokenizer, self.sdxl.tokenizer_2), what)

    def check_size(self, size: int) -> None:
        """Grid sides must be positive multiples of 16 (each view a multiple of 8, the VAE's factor).

        Raises:
            InputError: otherwise.
        """
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0 or size % 16:
            raise InputError(f"grid size must be a positive multiple of 16 pixels, got {size}")

    # ---------------------------------------------------------------------------------------
    # Sampling

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        seed: int | list[int] = 0,
        num_images_per_prompt: int = 1,
        size: int | None = None,
        blob_sigma: float = BLOB_SIGMA,
        blob_strength: float = BLOB_STRENGTH,
        blob_colour: float | tuple[float, float, float] = 0.5,
        image: np.ndarray | None = None,
        image_config: ImagePromptConfig = ImagePromptConfig(),
        alpha_low: float = ALPHA_LOW,
        alpha_high: float = ALPHA_HIGH,
        candidates: int = 1,
    ) -> MultiViewOutput:
        """Draw 2x2 grids of the four rig views.

        Args:
            prompt: one prompt or a list (B = len(prompts) * num_images_per_prompt images, prompt
                major: image ``k`` has prompt ``k // num_images_per_prompt``).
            negative_prompt: what to steer away from (classifier-free guidance), shared by all.
            num_inference_steps: scheduler steps of the full schedule (a blob start runs
                ``int(steps * blob_strength)`` of them).
            guidance_scale: classifier-free guidance weight (<= 1: no guidance, one UNet pass per step).
            seed: one seed (image ``k`` uses ``seed + k``) or a list of B seeds.
            num_images_per_prompt: images per prompt.
            size: grid side in pixels, a multiple of 16; the model's own (`resolution`) when None.
            blob_sigma: width of each start blob (fraction of the cell side).
            blob_strength: start strength in (0, 1]; 1 = pure noise (no blob).
            blob_colour: grey level or RGB of the blobs' centres.
            image: optional photo [H, W, 3|4] in [0, 1] for the front cell (az 0); the other three
                cells are inpainted (their start is the blob image when ``blob_strength < 1``).
            image_config: background removal and framing of ``image``.
            alpha_low: `white_to_alpha` threshold.
            alpha_high: `white_to_alpha` threshold.
            candidates: best-of-K sampling: K candidates per image (candidate ``j`` of the image
                with seed ``s`` uses seed ``s + j * CANDIDATE_SEED_STRIDE``), of which the one the
                prompt explains best is kept (`fourview.mvgen.rerank.prompt_alignment`). 1: off.

        Returns:
            `MultiViewOutput` (grids, RGBA views, latents, prompts, seeds).

        Raises:
            InputError: empty or overlong prompts, bad size, steps, strength, seeds or image.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise InputError("no prompt given")
        for p in prompts:
            self.check_prompt(p)
        if negative_prompt is not None:
            self.check_prompt(negative_prompt, "negative prompt", allow_empty=True)
        size = self.resolution if size is None else size
        self.check_size(size)
        if (
            isinstance(num_inference_steps, bool)
            or int(num_inference_steps) != num_inference_steps
            or num_inference_steps < 1
        ):
            raise InputError(f"steps must be a positive integer, got {num_inference_steps}")
        num_inference_steps = int(num_inference_steps)
        if not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise InputError(f"guidance scale must be a finite number >= 0, got {guidance_scale}")
        if num_images_per_prompt < 1:
            raise InputError(f"images per prompt must be >= 1, got {num_images_per_prompt}")
        if isinstance(candidates, bool) or int(candidates) != candidates or candidates < 1:
            raise InputError(f"candidates must be a positive integer, got {candidates}")
        k = int(candidates)
        check_strength(blob_strength, num_inference_steps)
        batch = len(prompts) * num_images_per_prompt
        seeds = (
            [int(seed) + k for k in range(batch)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        )
        if len(seeds) != batch or any(s < 0 for s in seeds):
            raise InputError(f"expected one seed or {batch} non-negative seeds, got {seed}")
        # Candidates of one image are adjacent (prompt-major, then image, then candidate).
        draws = [s + j * CANDIDATE_SEED_STRIDE for s in seeds for j in range(k)]
        generators = [torch.Generator("cpu").manual_seed(s) for s in draws]

        common = dict(
            prompt=prompts,
            negative_prompt=None if negative_prompt is None else [negative_prompt] * len(prompts),
            num_inference_steps=num_inference_steps,
            guidance_scale=float(guidance_scale),
            num_images_per_prompt=num_images_per_prompt * k,
            generator=generators,
            output_type="latent",
        )
        blob = blob_image(size, blob_sigma, blob_colour) if blob_strength < 1.0 else None  # [S, S, 3]
        if image is not None:
            cond = conditioning_grid(image, size, image_config, fill_other=blob)
            start = torch.from_numpy(cond.grid).permute(2, 0, 1)[None]  # [1, 3, S, S]
            latents = self._from_latents(start, torch.from_numpy(cond.mask)[None, None], blob_strength, common)
        elif blob is not None:
            start = torch.from_numpy(blob).permute(2, 0, 1)[None]  # [1, 3, S, S]
            latents = self._from_latents(start, None, blob_strength, common)
        else:
            pipe = self._variant("text")
            latents = pipe(height=size, width=size, **common).images  # [B K, C, s, s]
        alignment = None
        if k > 1:
            per_draw = [prompts[i // (num_images_per_prompt * k)] for i in range(batch * k)]
            with self._without_student():  # a consistency student is no denoiser to score with
                alignment = prompt_alignment(self.sdxl, latents, per_draw).view(batch, k)  # [B, K]
            best = alignment.argmax(dim=1)  # [B]
            latents = latents.view(batch, k, *latents.shape[1:])[torch.arange(batch), best]  # [B, C, s, s]
            seeds = [seeds[i] + int(best[i]) * CANDIDATE_SEED_STRIDE for i in range(batch)]
            alignment = alignment.cpu().numpy()
        grids = self._decode(latents).permute(0, 2, 3, 1).cpu().numpy()  # [B, S, S, 3]
        cell = size // 2
        if image is not None and image_config.keep_photo:
            grids[:, :cell, :cell] = cond.grid[:cell, :cell]
        views = grid_to_views(torch.from_numpy(grids).permute(0, 3, 1, 2))  # [B, 4, 3, S/2, S/2]
        views = white_to_alpha(views.permute(0, 1, 3, 4, 2).numpy(), alpha_low, alpha_high)  # [B, 4, S/2, S/2, 4]
        if image is not None and image_config.keep_photo:
            views[:, 0] = cond.front  # the photo's own alpha
        return MultiViewOutput(
            grids=grids.astype(np.float32),
            views=views,
            latents=latents.float().cpu(),
            prompts=[prompts[i // num_images_per_prompt] for i in range(batch)],
            seeds=seeds,
            alignment=alignment,
        )

    def _from_latents(
        self, start: torch.Tensor, mask: torch.Tensor | None, strength: float, common: dict
    ) -> torch.Tensor:
        """Sample from a start image noised to ``strength``, optionally keeping its unmasked part.

        SDXL img2img with the start latents computed here (`encode_images`, then noise from the
        call's generators) rather than by diffusers, whose img2img and inpainting pipelines only
        take latents from 4-channel VAEs (and inpaint only with 4- or 9-channel UNets). Where
        ``mask`` is 0, the start's latents, noised to the next step's level, are blended back
        after every step, as diffusers' inpainting does for 4-channel UNets; after the last step
        they are the start's own.

        Args:
            start: [1, 3, S, S] RGB in [0, 1] (the blob image, or the photo's conditioning grid).
            mask: [1, 1, S, S], 1 where to generate and 0 where to keep ``start``; None: generate all.
            strength: noise level of the start in (0, 1]; 1 = pure noise.
            common: the sampling arguments of ``__call__`` (prompts, steps, generators...).

        Returns:
            [B, C, s, s] final latents.
        """
        from diffusers.utils.torch_utils import randn_tensor

        pipe = self._variant("img2img")
        dtype, device = self.sdxl.unet.dtype, self.sdxl.unet.device
        init = encode_images(self.sdxl.vae, start).to(device=device, dtype=dtype)  # [1, C, s, s]
        batch = len(common["prompt"]) * common["num_images_per_prompt"]
        init = init.expand(batch, -1, -1, -1)
        pipe.scheduler.set_timesteps(common["num_inference_steps"], device=device)
        timesteps, _ = pipe.get_timesteps(common["num_inference_steps"], strength, device)
        noise = randn_tensor(init.shape, generator=common["generator"], device=device, dtype=dtype)
        if strength >= 1.0:
            latents = noise * pipe.scheduler.init_noise_sigma
        else:
            latents = pipe.scheduler.add_noise(init, noise, timesteps[:1].repeat(batch))
        callback = None
        if mask is not None:
            keep = 1.0 - F.interpolate(mask.float(), size=init.shape[-2:]).to(device=device, dtype=dtype)  # [1,1,s,s]

            def callback(p, i, t, kwargs):
                known = init
                if i < len(timesteps) - 1:  # the scheduler now stands at step i + 1
                    known = p.scheduler.add_noise(init, noise, timesteps[i + 1 : i + 2].repeat(batch))
                return {"latents": keep * known + (1.0 - keep) * kwargs["latents"]}

        # ``image`` is required by img2img but unused once ``latents`` are given
        return pipe(
            image=start.to(device), latents=latents, strength=float(strength), callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=["latents"], **common
        ).images  # fmt: skip

    def _variant(self, kind: Literal["text", "img2img"]):
        """The diffusers pipeline for one sampling mode, sharing this pipeline's modules."""
        if kind == "text":
            pipe = self.sdxl
        else:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            parts = {k: v for k, v in self.sdxl.components.items()}
            pipe = StableDiffusionXLImg2ImgPipeline(
                **parts,
                requires_aesthetics_score=False,
                force_zeros_for_empty_prompt=bool(self.sdxl.config.get("force_zeros_for_empty_prompt", True)),
                add_watermarker=False,
            )
        pipe.set_progress_bar_config(disable=not self.progress, desc="sampling", leave=False)
        return pipe

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, s, s] -> RGB [B, 3, S, S] float32 in [0, 1] (float32 VAE when it must upcast)."""
        vae = self.sdxl.vae
        if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae.to(torch.float32)
        return decode_latents(vae, latents).float()
