"""What a client submits: a job's settings (`JobSettings`) and its uploaded images, checked before it is queued.

Every check that can be made before a model runs is made here, so that a bad request is answered
at once with a 4xx and one line (`fourview.errors.InputError` and its subclasses below) and leaves
nothing on disk: the settings' bounds and types, the settings a kind of job does not take, the
prompts' length in tokens (from the generator's tokenizers alone, even while its models load), an
upload's size (`UploadTooLarge`, 413), its type by its first bytes (PNG, JPEG or WebP only:
`UnsupportedImage`, 415), its pixel count and decoding (`fourview.images.read_rgba`), and the
background removal (`fourview.matting.remove_background`), whose cut-out and mask are what the job
then reads. Messages name an upload by its client file name, never by a path of the server's.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fourview.cameras import DEFAULT_ELEVATION_DEG
from fourview.errors import InputError
from fourview.images import MIN_PHOTO_SIDE, MIN_VIEW_SIDE, read_rgba, write_png
from fourview.matting import MattingConfig, MattingMethod, needs_background_removal, remove_background
from fourview.mvgen.prompt_check import check_prompt_lengths
from fourview.pipeline import MAX_SEED, ExportSettings, SamplingSettings
from fourview.views import PosedViews

MAX_PROMPT_CHARS = 1000
"""Longest prompt accepted, characters (the generator's own token limit is checked too: `JobSettings.check`)."""
MAX_JOB_STEPS = 200
MAX_JOB_CANDIDATES = 4
MAX_JOB_FACES = 500_000
MAX_TURNTABLE_FRAMES = 120
GENERATOR_SETTINGS: tuple[str, ...] = ("prompt", "negative", "seed", "steps", "guidance", "candidates")
"""Settings of the generator, which a views job does not run."""
IMAGE_MAGIC: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "webp": (b"RIFF", b"WEBP"),  # "RIFF" <size> "WEBP"
}


class UploadTooLarge(InputError):
    """An upload or a request body over the server's limit (HTTP 413)."""

    status_code = 413


class UnsupportedImage(InputError):
    """An upload that is not a PNG, JPEG or WebP image (HTTP 415)."""

    status_code = 415


class JobSettings(BaseModel):
    """A job's settings: the same keys as a `fourview batch` manifest item, within the server's limits.

    A text job needs ``prompt``; a photo job may give one (what the photo shows); a views job
    takes none of the generator's settings.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="What to make, e.g. 'a red mug'.")
    negative: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="What to steer away from.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the sampler (the same seed gives the same asset).")
    steps: int | None = Field(None, ge=1, le=MAX_JOB_STEPS, description="Sampler steps [default: the generator's].")
    guidance: float | None = Field(None, ge=0.0, le=100.0, description="Classifier-free guidance weight.")
    candidates: int = Field(1, ge=1, le=MAX_JOB_CANDIDATES, description="Draw K grids, keep the best explained.")
    elevation: float = Field(DEFAULT_ELEVATION_DEG, ge=-90.0, le=90.0, description="Elevation of the rig, degrees.")
    method: Literal["marching_cubes", "dmtet"] | None = Field(None, description="Surface extraction.")
    faces: int | None = Field(None, ge=4, le=MAX_JOB_FACES, description="Face budget of the mesh.")
    texture_size: int | None = Field(None, ge=16, le=4096, description="Texture side, a power of two.")
    grid: int | None = Field(None, ge=8, le=512, description="Resolution of the surface extraction grid.")
    turntable: int | None = Field(
        None, ge=0, le=MAX_TURNTABLE_FRAMES, description="Frames of turntable.gif [default: the server's]."
    )
    matting: MattingMethod = Field("auto", description="Background removal of photos (photo and views jobs).")

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(
            seed=self.seed, steps=self.steps, guidance_scale=self.guidance, negative_prompt=self.negative,
            candidates=self.candidates, elevation_deg=self.elevation,
        )  # fmt: skip

    def export(self) -> ExportSettings:
        return ExportSettings(
            face_budget=self.faces, texture_size=self.texture_size, grid_resolution=self.grid, method=self.method
        )

    def check(self, kind: str, mvgen: str | None = None) -> None:
        """The checks that depend on the kind of job, and the library's own checks of the settings.

        Args:
            kind: ``text``, ``photo`` or ``views``.
            mvgen: the server's generator: the prompt and the negative prompt must fit its text
                encoders (`check_prompt_lengths`, from its tokenizers alone: no model loads).

        Raises:
            InputError: a text job without a prompt, a setting the kind does not take, a value the
                pipeline's settings refuse, a prompt longer than the text encoders take.
        """
        given = self.model_fields_set
        if kind == "text" and (self.prompt is None or not self.prompt.strip()):
            raise InputError("prompt is empty; describe the object, e.g. 'a red mug'")
        if kind == "photo" and self.prompt is not None and not self.prompt.strip():
            raise InputError("prompt is empty; describe what the photo shows, or leave it out")
        if kind == "views":
            unused = [k for k in GENERATOR_SETTINGS if k in given]
            if unused:
                raise InputError(f"'{unused[0]}' is a setting of the generator; a views job does not use one")
        if kind == "text" and "matting" in given:
            raise InputError("'matting' is a setting of photo and views jobs")
        self.sampling()
        self.export()
        if mvgen is not None and kind != "views":
            check_prompt_lengths(self.prompt, self.negative, mvgen)


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its client file name (for messages only) and its bytes."""

    name: str
    data: bytes


def display_name(name: str | None) -> str:
    """A client's file name made safe to show in one line (never used as a path)."""
    text = "".join(c for c in unicodedata.normalize("NFKC", name or "") if c.isprintable())
    return text[:80] or "upload"


def image_type(data: bytes) -> str | None:
    """``png``, ``jpeg`` or ``webp`` by the file's first bytes, else None."""
    for kind, magic in IMAGE_MAGIC.items():
        if kind == "webp":
            if data[:4] == magic[0] and data[8:12] == magic[1]:
                return kind
        elif data.startswith(magic[0]):
            return kind
    return None


def check_upload(upload: Upload, max_bytes: int) -> str:
    """The upload's image type, after its size and type are checked.

    Raises:
        UploadTooLarge: over ``max_bytes``.
        UnsupportedImage: not a PNG, JPEG or WebP file.
    """
    name = display_name(upload.name)
    if len(upload.data) > max_bytes:
        raise UploadTooLarge(f"{name!r} is {len(upload.data) / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:g} MB")
    kind = image_type(upload.data)
    if kind is None:
        raise UnsupportedImage(f"{name!r} is not a PNG, JPEG or WebP image")
    return kind


def _read_upload(upload: Upload, kind: str, folder: Path, stem: str, min_side: int) -> np.ndarray:
    """The upload decoded as RGBA [H, W, 4] (`read_rgba`'s limits), read from a file that is removed after."""
    path = folder / f"{stem}.{kind}"
    path.write_bytes(upload.data)
    try:
        return read_rgba(path, min_side)
    except InputError as e:
        raise InputError(str(e).replace(str(path), repr(display_name(upload.name)))) from None
    finally:
        path.unlink(missing_ok=True)


def write_photo_inputs(upload: Upload, settings: JobSettings, folder: Path, max_bytes: int) -> dict:
    """Check a photo job's upload, remove its background, and write ``photo_rgba.png`` and ``mask.png``.

    Returns:
        The record of the inputs: the client file name and the matting method with its note.

    Raises:
        InputError: an upload that is too large, of another type, unreadable, too many or too few
            pixels, or whose object cannot be found.
    """
    kind = check_upload(upload, max_bytes)
    image = _read_upload(upload, kind, folder, "upload", MIN_PHOTO_SIDE)
    matte = remove_background(image, MattingConfig(method=settings.matting))
    write_png(folder / "photo_rgba.png", matte.rgba)
    write_png(folder / "mask.png", matte.mask)
    return {"photo": display_name(upload.name), "matting": {"method": matte.method, "note": matte.note}}


def write_views_inputs(uploads: list[Upload], settings: JobSettings, folder: Path, max_bytes: int) -> dict:
    """Check a views job's four photos (az 0, 90, 180, 270), cut out opaque ones, write ``view_{i}.png``.

    Photos with alpha, and renders on white, are kept as they are (as `fourview reconstruct` does);
    opaque photos get their backgrounds removed and a 2x2 ``mask.png`` in the layout of views.png.

    Raises:
        InputError: not four uploads; one too large, of another type or unreadable; views of
            different sizes or not square; an object that cannot be found.
    """
    if len(uploads) != 4:
        raise InputError(f"a views job takes 4 photos (az 0, 90, 180, 270), got {len(uploads)}")
    images = []
    for i, upload in enumerate(uploads):
        images.append(_read_upload(upload, check_upload(upload, max_bytes), folder, f"upload_{i}", MIN_VIEW_SIDE))
    names = [display_name(u.name) for u in uploads]
    sizes = {image.shape[:2] for image in images}
    if len(sizes) != 1:
        listing = ", ".join(f"{n!r} {im.shape[1]}x{im.shape[0]}" for n, im in zip(names, images))
        raise InputError(f"the 4 views must have the same size, got {listing}")
    views = PosedViews.from_rig(np.stack(images), settings.elevation)
    record: dict = {"views": names, "matting": None}
    if needs_background_removal(views.images):
        mattes = []
        for name, image in zip(names, views.images):
            try:
                mattes.append(remove_background(image[..., :3], MattingConfig(method=settings.matting)))
            except InputError as e:
                raise InputError(f"view {name!r} is opaque and its background could not be removed: {e}") from None
        m = [matte.mask for matte in mattes]
        write_png(folder / "mask.png", np.block([[m[0], m[1]], [m[2], m[3]]]))
        record["matting"] = [{"view": n, "method": mt.method, "note": mt.note} for n, mt in zip(names, mattes)]
        views = PosedViews.from_rig(np.stack([matte.rgba for matte in mattes]), settings.elevation)
    views.check_objects()
    for i, image in enumerate(views.images):
        write_png(folder / f"view_{i}.png", image)
    return record


def view_paths(folder: str | os.PathLike) -> list[Path]:
    """The four view files `write_views_inputs` wrote, in rig order."""
    return [Path(folder) / f"view_{i}.png" for i in range(4)]
