"""The synthetic world: procedural textured objects with captions.

It trains the shipped demo models (stage 1: text -> 2x2 grid of views; stage 2: views -> 3D) and
underlies the prompt-adherence benchmark (`fourview.evaluation.adherence`): for a prompt such as
"a red mug", the generated mesh's mean surface albedo must be nearest to ``COLOURS["red"]``, and
its best match among the canonical meshes of every shape by voxel IoU must be the mug.

The world is designed for that test:

- Every object of a shape class shares a silhouette (proportions vary within bounded ranges,
  `PROPORTIONS`), and classes differ at 64x64 pixels from the four rig views.
- An object's surface is dominated by its primary colour: body parts carry the colour, plain or
  with a pattern whose second colour is a lighter or darker shade of it (stripes cover 30% of the
  texture, dots 20%, checks 50% with a fainter shade), so that the area-weighted mean albedo stays
  nearest to the primary colour. Accents (a tree's trunk, a car's wheels, a house's door) use one
  dark neutral colour, `ACCENT_COLOUR`, on at most about 20% of the surface area.
- Objects with a front (car, chair, sofa, bench, bed, house, snowman) face +Z in the object frame,
  +Y up, like `fourview.cameras`; the mug's handle is on its right (+X).

A spec (`SyntheticSpec`) fixes everything about an object; `sample_spec(seed, split)` draws one,
`build_asset(spec)` builds the `MeshAsset` (its geometry from `fourview.data.shapes`),
`caption(spec)` writes its text, and `write_synthetic` writes a folder of GLB files with captions
and specs. All of it is deterministic per seed.

Train/held-out split: the (shape, colour) pairs in `HELDOUT_COMBINATIONS` (34 of 240, 1/7) are
never drawn for training; every shape and every colour has training partners, so the held-out set
tests generalisation to unseen combinations. See `HELDOUT_COLOURS`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from fourview.atomic import atomic_folder
from fourview.data.primitives import Piece, concatenate
from fourview.data.shapes import normaliser, shape_pieces
from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, MeshPart

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 35),
    "orange": (240, 130, 20),
    "yellow": (240, 205, 35),
    "green": (45, 145, 55),
    "teal": (20, 145, 145),
    "blue": (30, 85, 205),
    "purple": (135, 50, 160),
    "pink": (240, 125, 175),
    "brown": (120, 72, 38),
    "black": (30, 30, 30),
    "grey": (130, 130, 130),
    "white": (235, 235, 230),
}
"""Colour words and their sRGB values (0-255), the single table of the synthetic world.

Pairwise CIELAB distances (Delta E 1976) are at least 31 (teal-grey is the closest pair, then
blue-purple at 34). "white" is kept although renders are composited on a white background: it
is a common prompt word, its albedo (235) is below the background's 255, shading separates it
from the background, and the RGBA renders keep its silhouette in alpha. "black" (30) is dark but
not pure black for the same reason."""

ACCENT_COLOUR: tuple[int, int, int] = (58, 52, 46)
"""sRGB (0-255) of accents (trunks, wheels, doors, hats, shafts): dark and nearly neutral."""

SHAPES: tuple[str, ...] = (
    "mug",
    "table",
    "chair",
    "lamp",
    "tree",
    "house",
    "snowman",
    "mushroom",
    "car",
    "vase",
    "bottle",
    "bench",
    "rocket",
    "cactus",
    "barrel",
    "bowl",
    "sofa",
    "dumbbell",
    "umbrella",
    "bed",
)
"""Shape classes; each is also the word used for it in captions."""

PATTERNS: tuple[str, ...] = ("plain", "striped", "checkered", "dotted")
"""Surface patterns of the body parts (procedural 64x64 textures)."""

FINISHES: tuple[str, ...] = ("matte", "glossy", "metallic")
"""Surface finishes; `FINISH_MATERIAL` maps them to glTF factors."""

FINISH_MATERIAL: dict[str, tuple[float, float]] = {
    "matte": (0.0, 0.85),
    "glossy": (0.0, 0.25),
    "metallic": (0.5, 0.3),
}
"""Finish -> (metallic, roughness) of the body material. "metallic" is 0.5, not 1: renderers
without an environment map draw a fully metallic surface almost black, which would hide its
colour; accents are always matte (0.0, 0.85)."""

TEXTURE_SIZE: int = 64
"""Side of the body texture, pixels."""

_PATTERN_WEIGHTS = (0.4, 0.2, 0.2, 0.2)  # plain, striped, checkered, dotted
_FINISH_WEIGHTS = (0.45, 0.35, 0.2)  # matte, glossy, metallic
# Pattern -> (darken, lighten): how far the second colour moves from the primary towards black (for
# light primaries) or white (for dark ones). Lightening is gentler because the mean albedo is taken
# in linear light, where light shades weigh more.
_SHADE_AMOUNT = {"striped": (0.4, 0.25), "checkered": (0.25, 0.15), "dotted": (0.4, 0.25)}
_ACCENT_MATERIAL = (0.0, 0.85)

PROPORTIONS: dict[str, dict[str, tuple[float, float, float]]] = {
    "mug": {"height": (0.8, 1.0, 1.3), "handle_size": (0.26, 0.32, 0.37), "handle_thickness": (0.05, 0.065, 0.08)},
    "table": {
        "width": (1.4, 1.8, 2.3),
        "depth": (0.8, 1.1, 1.4),
        "leg_length": (0.7, 1.0, 1.3),
        "leg_thickness": (0.06, 0.1, 0.14),
    },
    "chair": {"leg_length": (0.7, 0.9, 1.1), "back_height": (0.7, 1.0, 1.3), "leg_thickness": (0.07, 0.09, 0.12)},
    "lamp": {"pole_height": (0.8, 1.1, 1.5), "shade_radius": (0.4, 0.55, 0.7), "shade_height": (0.4, 0.55, 0.7)},
    "tree": {"crown_size": (0.55, 0.75, 0.95), "trunk_height": (0.5, 0.8, 1.1), "trunk_radius": (0.08, 0.13, 0.2)},
    "house": {"width": (1.4, 1.8, 2.3), "wall_height": (0.9, 1.1, 1.4), "roof_height": (0.5, 0.8, 1.1)},
    "snowman": {"body_ratio": (0.6, 0.72, 0.85), "head_ratio": (0.55, 0.68, 0.8), "hat_height": (0.5, 0.8, 1.1)},
    "mushroom": {
        "cap_radius": (0.6, 0.8, 1.0),
        "cap_height": (0.3, 0.45, 0.6),
        "stem_height": (0.5, 0.7, 0.95),
        "stem_radius": (0.15, 0.22, 0.3),
    },
    "car": {"length": (1.8, 2.2, 2.6), "cabin_height": (0.28, 0.38, 0.5), "cabin_length": (0.45, 0.55, 0.65)},
    "vase": {"height": (1.2, 1.6, 2.0), "belly": (0.45, 0.55, 0.65), "neck": (0.16, 0.22, 0.28)},
    "bottle": {"body_height": (0.9, 1.2, 1.5), "neck_length": (0.25, 0.4, 0.55), "shoulder": (0.2, 0.3, 0.4)},
    "bench": {"length": (1.8, 2.4, 3.0), "back_height": (0.3, 0.45, 0.6), "seat_height": (0.4, 0.5, 0.6)},
    "rocket": {"body_height": (1.2, 1.6, 2.0), "nose_height": (0.4, 0.6, 0.8), "fin_size": (0.25, 0.38, 0.5)},
    "cactus": {
        "height": (1.6, 2.0, 2.4),
        "arm_height": (0.3, 0.4, 0.5),
        "arm_reach": (0.4, 0.5, 0.6),
        "arm_length": (0.35, 0.55, 0.75),
    },
    "barrel": {"height": (1.0, 1.3, 1.6), "bulge": (0.03, 0.08, 0.13)},
    "bowl": {"depth": (0.4, 0.55, 0.7), "foot": (0.3, 0.38, 0.45)},
    "sofa": {"width": (1.8, 2.2, 2.8), "back_height": (0.45, 0.6, 0.75), "arm_height": (0.15, 0.25, 0.35)},
    "dumbbell": {"bar_length": (0.8, 1.0, 1.2), "weight_radius": (0.28, 0.33, 0.4), "weight_width": (0.22, 0.3, 0.4)},
    "umbrella": {
        "canopy_radius": (0.8, 1.0, 1.2),
        "canopy_height": (0.25, 0.4, 0.55),
        "shaft_length": (0.8, 1.0, 1.3),
    },
    "bed": {"width": (1.2, 1.5, 1.9), "length": (1.9, 2.1, 2.4), "headboard_height": (0.3, 0.55, 0.8)},
}
"""Per shape, each proportion's (low, default, high) in object units before normalisation.
`sample_spec` draws uniformly in [low, high]; the canonical meshes of the adherence benchmark use the
defaults."""

# Caption phrases for proportions near the ends of their range: (proportion, low phrase, high
# phrase). Phrases starting with "with " go after the noun, the others before the colour.
_DESCRIPTORS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "mug": (("height", "short", "tall"), ("handle_size", "with a small handle", "with a big handle")),
    "table": (("leg_length", "low", "tall"), ("width", "small", "wide")),
    "chair": (("back_height", "with a low back", "with a high back"), ("leg_length", "low", "tall")),
    "lamp": (("shade_radius", "with a narrow shade", "with a wide shade"), ("pole_height", "short", "tall")),
    "tree": (("crown_size", "small", "big"), ("trunk_radius", "with a thin trunk", "with a thick trunk")),
    "house": (("roof_height", "with a low roof", "with a steep roof"), ("wall_height", "low", "tall")),
    "snowman": (("hat_height", "with a short hat", "with a tall hat"), ("body_ratio", "chubby", "tall")),
    "mushroom": (("cap_radius", "with a small cap", "with a wide cap"), ("stem_height", "short", "tall")),
    "car": (("length", "compact", "long"), ("cabin_height", "with a low roof", "with a high roof")),
    "vase": (("belly", "slender", "round"), ("height", "short", "tall")),
    "bottle": (("neck_length", "with a short neck", "with a long neck"), ("body_height", "short", "tall")),
    "bench": (("length", "short", "long"), ("back_height", "with a low backrest", "with a high backrest")),
    "rocket": (("fin_size", "with small fins", "with large fins"), ("body_height", "stubby", "tall")),
    "cactus": (("arm_length", "with short arms", "with long arms"), ("height", "short", "tall")),
    "barrel": (("bulge", "straight", "round"), ("height", "squat", "tall")),
    "bowl": (("depth", "shallow", "deep"),),
    "sofa": (("width", "small", "wide"), ("back_height", "with a low back", "with a high back")),
    "dumbbell": (("weight_radius", "light", "heavy"),),
    "umbrella": (("canopy_height", "with a flat canopy", "with a deep canopy"), ("canopy_radius", "small", "big")),
    "bed": (("width", "narrow", "wide"), ("headboard_height", "with a low headboard", "with a tall headboard")),
}

HELDOUT_COLOURS: dict[str, tuple[str, ...]] = {
    "mug": ("red", "pink"),
    "table": ("teal", "white"),
    "chair": ("orange", "brown"),
    "lamp": ("blue",),
    "tree": ("yellow", "black"),
    "house": ("purple",),
    "snowman": ("green", "grey"),
    "mushroom": ("red", "pink"),
    "car": ("teal", "white"),
    "vase": ("orange", "brown"),
    "bottle": ("blue",),
    "bench": ("yellow", "black"),
    "rocket": ("purple",),
    "cactus": ("green", "grey"),
    "barrel": ("red", "pink"),
    "bowl": ("teal", "white"),
    "sofa": ("orange", "brown"),
    "dumbbell": ("blue",),
    "umbrella": ("yellow", "black"),
    "bed": ("purple",),
}
"""Held-out colours per shape (a fixed list, so adding shapes or colours later moves nothing).

It was generated once by the rule ``(3 * shape_index + colour_index) % 7 == 0`` over the orders
of `SHAPES` and `COLOURS`: 34 of the 240 pairs (1/7), one or two colours per shape, two or three
shapes per colour."""

HELDOUT_COMBINATIONS: frozenset[tuple[str, str]] = frozenset(
    (shape, colour) for shape, colours in HELDOUT_COLOURS.items() for colour in colours
)
"""(shape, colour) pairs never drawn for training."""

Split = Literal["train", "heldout"]


def is_heldout(shape: str, colour: str) -> bool:
    """Whether the (shape, colour) combination belongs to the held-out split."""
    return (shape, colour) in HELDOUT_COMBINATIONS


def combinations(split: Split) -> list[tuple[str, str]]:
    """All (shape, colour) pairs of a split, in `SHAPES` x `COLOURS` order."""
    _check_split(split)
    return [(s, c) for s in SHAPES for c in COLOURS if is_heldout(s, c) == (split == "heldout")]


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that defines one synthetic object.

    Attributes:
        shape: one of `SHAPES`.
        colour: one of `COLOURS` (the primary colour of the body).
        pattern: one of `PATTERNS`.
        finish: one of `FINISHES`.
        proportions: ``(name, value)`` pairs of the shape's `PROPORTIONS`, sorted by name; missing
            names take their defaults, values must lie in [low, high]. A dict is accepted too.
        seed: non-negative integer seed of the pattern layout and the caption wording.
    """

    shape: str
    colour: str
    pattern: str = "plain"
    finish: str = "matte"
    proportions: tuple[tuple[str, float], ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for field_name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, tuple(COLOURS)),
            ("pattern", self.pattern, PATTERNS),
            ("finish", self.finish, FINISHES),
        ):
            if value not in allowed:
                raise InputError(f"unknown synthetic {field_name} {value!r}; expected one of {', '.join(allowed)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"synthetic seed must be a non-negative integer, got {self.seed!r}")
        ranges = PROPORTIONS[self.shape]
        given = dict(self.proportions)
        unknown = sorted(set(given) - set(ranges))
        if unknown:
            raise InputError(
                f"unknown proportion(s) {', '.join(unknown)} for shape {self.shape!r}; "
                f"expected {', '.join(sorted(ranges))}"
            )
        values = {}
        for name, (lo, default, hi) in ranges.items():
            x = float(given.get(name, default))
            if not (math.isfinite(x) and lo - 1e-9 <= x <= hi + 1e-9):
                raise InputError(f"{self.shape} proportion {name}={x} is outside [{lo}, {hi}]")
            values[name] = x
        object.__setattr__(self, "proportions", tuple(sorted(values.items())))
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def params(self) -> dict[str, float]:
        """The proportions as a dict, name -> value (object units before normalisation)."""
        return dict(self.proportions)

    def to_dict(self) -> dict:
        """A JSON-ready record (proportions as an object); `from_dict` reads it back."""
        return {
            "shape": self.shape,
            "colour": self.colour,
            "pattern": self.pattern,
            "finish": self.finish,
            "proportions": dict(self.proportions),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, record: dict) -> SyntheticSpec:
        """The spec of a `to_dict` record. Raises `InputError` on unknown or missing keys."""
        keys = {"shape", "colour", "pattern", "finish", "proportions", "seed"}
        if not isinstance(record, dict) or set(record) != keys:
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise InputError(f"a synthetic spec needs exactly the keys {sorted(keys)}, got {got}")
        props = record["proportions"]
        if not isinstance(props, dict):
            raise InputError(f"synthetic spec proportions must be an object, got {type(props).__name__}")
        return cls(
            shape=record["shape"],
            colour=record["colour"],
            pattern=record["pattern"],
            finish=record["finish"],
            proportions=tuple(sorted(props.items())),
            seed=record["seed"],
        )


def sample_spec(seed: int, split: Split = "train") -> SyntheticSpec:
    """Draw one spec, deterministically from ``(seed, split)``.

    The shape is uniform over `SHAPES`, the colour uniform over that shape's colours in the split
    (so "train" never yields a `HELDOUT_COMBINATIONS` pair and "heldout" only those), the pattern
    and finish from fixed weights, and each proportion uniform in its range (rounded to 3 decimals).

    Args:
        seed: non-negative integer.
        split: "train" or "heldout".

    Returns:
        The spec; its ``seed`` is ``seed``.

    Raises:
        InputError: on a negative seed or an unknown split.
    """
    _check_split(split)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"synthetic seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([int(seed), 0 if split == "train" else 1])
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colours = [c for c in COLOURS if is_heldout(shape, c) == (split == "heldout")]
    colour = colours[int(rng.integers(len(colours)))]
    pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=_PATTERN_WEIGHTS))]
    finish = FINISHES[int(rng.choice(len(FINISHES), p=_FINISH_WEIGHTS))]
    props = tuple((name, round(float(rng.uniform(lo, hi)), 3)) for name, (lo, _, hi) in PROPORTIONS[shape].items())
    return SyntheticSpec(shape, colour, pattern, finish, props, int(seed))


def caption(spec: SyntheticSpec) -> str:
    """A template caption, varied across seeds and deterministic per spec.

    It always contains the colour word and the shape word, and the pattern when not plain;
    sometimes the finish and a phrase for a proportion near the end of its range
    ("a small green tree with a thick trunk", "a glossy blue striped vase").
    """
    rng = np.random.default_rng([spec.seed, 2])
    params = spec.params
    adjectives: list[str] = []
    phrases: list[str] = []
    for name, low_phrase, high_phrase in _DESCRIPTORS[spec.shape]:
        lo, _, hi = PROPORTIONS[spec.shape][name]
        x = (params[name] - lo) / (hi - lo)
        phrase = low_phrase if x < 0.2 else high_phrase if x > 0.8 else None
        if phrase is not None and rng.random() < 0.7:
            (phrases if phrase.startswith("with ") else adjectives).append(phrase)
    adjectives, phrases = adjectives[:1], phrases[:1]
    if rng.random() < 0.5:
        adjectives.append(spec.finish)
    adjectives.append(spec.colour)
    if spec.pattern != "plain":
        if rng.random() < 0.5:
            adjectives.append({"striped": "striped", "checkered": "checkered", "dotted": "polka-dot"}[spec.pattern])
        else:
            phrases.insert(
                0,
                {"striped": "with stripes", "checkered": "with a checkered pattern", "dotted": "with dots"}[
                    spec.pattern
                ],
            )
    noun = " ".join(adjectives + [spec.shape])
    if phrases:
        noun += " " + " and ".join([phrases[0]] + [p.removeprefix("with ") for p in phrases[1:]])
    article = "an" if noun[0] in "aeiou" else "a"
    template = int(rng.integers(4))
    if template == 0:
        return f"{article} {noun}"
    if template == 1:
        return f"a 3D model of {article} {noun}"
    if template == 2:
        return noun
    return f"{article} {noun}, 3D render"


def build_asset(spec: SyntheticSpec, texture_size: int = TEXTURE_SIZE) -> MeshAsset:
    """Build the textured mesh of a spec, normalised to the object frame.

    Normalisation (docs/conventions.md): the centre of the bounding box of all vertices is at the
    origin and the farthest vertex at distance 1. +Y is up and fronts face +Z.

    Args:
        spec: the object.
        texture_size: side of the body texture in pixels.

    Returns:
        A `MeshAsset` named ``"{colour}_{shape}_{seed:06d}"`` with a part "body" (primary colour
        and pattern, finish from `FINISH_MATERIAL`) and, for shapes with accents, a part "accent"
        (`ACCENT_COLOUR`, matte). Every part has UVs and an sRGB texture with ``base_color`` 1.
    """
    if not isinstance(texture_size, (int, np.integer)) or texture_size < 4:
        raise InputError(f"texture size must be an integer >= 4 pixels, got {texture_size!r}")
    body, accent = shape_pieces(spec.shape, spec.params)
    centre, scale = normaliser(body + accent)
    metallic, roughness = FINISH_MATERIAL[spec.finish]
    tex = _pattern_texture(spec.pattern, COLOURS[spec.colour], spec.seed, texture_size)
    parts = [
        _part(concatenate(body), centre, scale, Material("body", texture=tex, metallic=metallic, roughness=roughness))
    ]
    if accent:
        accent_tex = np.broadcast_to(np.asarray(ACCENT_COLOUR, np.float32) / 255.0, (4, 4, 3)).copy()
        metallic, roughness = _ACCENT_MATERIAL
        parts.append(
            _part(
                concatenate(accent),
                centre,
                scale,
                Material("accent", texture=accent_tex, metallic=metallic, roughness=roughness),
            )
        )
    return MeshAsset(name=f"{spec.colour}_{spec.shape}_{spec.seed:06d}", parts=tuple(parts))


def write_synthetic(
    out_dir: str | Path, count: int, seed: int, split: Split = "train", progress: bool = True
) -> list[Path]:
    """Write ``count`` synthetic objects, each in its own folder.

    Object ``i`` uses ``sample_spec(seed + i, split)`` and goes to
    ``out_dir/synth_{split}_{seed + i:06d}/`` with ``model.glb`` (the mesh, +Y up, UV textures and
    PBR materials), ``caption.txt`` (one line) and ``spec.json`` (`SyntheticSpec.to_dict`). Each
    folder is written in a temporary folder beside it and renamed into place, so a folder either
    is complete or does not exist; complete folders are skipped, which makes an interrupted run
    resumable. A crash can leave a hidden temporary folder behind (``.synth_*.fourview-tmp-*``); it
    is never read, and the next run in ``out_dir`` removes it (`fourview.atomic.atomic_folder`).

    Args:
        out_dir: output folder, created if missing.
        count: number of objects, >= 1.
        seed: seed of the first object, >= 0.
        split: "train" or "heldout" (which (shape, colour) pairs are drawn, see `is_heldout`).
        progress: show a progress bar.

    Returns:
        The ``count`` object folders, in order (written or skipped).

    Raises:
        InputError: ``count < 1``, a bad seed or split, or an output folder that cannot be written.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError(f"synthetic object count must be an integer >= 1, got {count!r}")
    _check_split(split)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"synthetic seed must be a non-negative integer, got {seed!r}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"output folder {out} is not writable")

    # trimesh, slow to import, writes the GLBs: imported here so that the world's names (SHAPES...) import fast
    from fourview.data.glb import export_glb

    paths = []
    for i in tqdm(range(count), desc=f"synth {split}", disable=not progress, unit="obj"):
        name = f"synth_{split}_{seed + i:06d}"
        final = out / name
        paths.append(final)
        if _complete(final):
            continue
        spec = sample_spec(seed + i, split)
        try:
            # overwrite: an incomplete folder (from an older, non-atomic writer) is replaced whole.
            with atomic_folder(final, overwrite=True) as tmp:
                export_glb(build_asset(spec), tmp / "model.glb")
                (tmp / "caption.txt").write_text(caption(spec) + "\n", encoding="utf-8")
                (tmp / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1) + "\n", encoding="utf-8")
        except InputError:
            if not _complete(final):  # not a concurrent writer finishing first: a real failure
                raise
    return paths


_FILES = ("model.glb", "caption.txt", "spec.json")


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() and (folder / f).stat().st_size > 0 for f in _FILES)


def _check_split(split: str) -> None:
    if split not in ("train", "heldout"):
        raise InputError(f"unknown split {split!r}; expected 'train' or 'heldout'")


def _part(piece: Piece, centre: np.ndarray, scale: float, material: Material) -> MeshPart:
    return MeshPart(
        verts=((piece.verts - centre) * scale).astype(np.float32),
        faces=piece.faces.astype(np.int64),
        material=material,
        uv=piece.uv.astype(np.float32),
    )


def _pattern_texture(pattern: str, colour: tuple[int, int, int], seed: int, size: int) -> np.ndarray:
    """The body texture: [size, size, 3] float32 sRGB in [0, 1] (values are multiples of 1/255)."""
    rng = np.random.default_rng([seed, 1])
    primary = np.asarray(colour, dtype=np.float64) / 255.0
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size  # [size, size] each, in (0, 1); row 0 at the top
    x, y = x + rng.random(), y + rng.random()  # a random phase per object
    if pattern == "plain":
        mask = np.zeros((size, size), dtype=bool)
    elif pattern == "striped":
        n = int(rng.integers(3, 7))
        mask = (y * n) % 1.0 < 0.3  # horizontal bands (rings around revolved parts), 30% of the area
    elif pattern == "checkered":
        n = int(rng.choice([4, 6, 8]))
        mask = (np.floor(x * n) + np.floor(y * n)) % 2 == 1
    elif pattern == "dotted":
        n = int(rng.integers(4, 7))
        radius = math.sqrt(0.2 / math.pi)  # dots cover 20% of each cell
        dx, dy = (x * n) % 1.0 - 0.5, (y * n) % 1.0 - 0.5
        mask = dx * dx + dy * dy < radius * radius
    else:
        raise InputError(f"unknown synthetic pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")
    if pattern == "plain":
        second = primary
    else:
        luma = float(primary @ np.array([0.2126, 0.7152, 0.0722]))
        darken, lighten = _SHADE_AMOUNT[pattern]
        if luma > 0.5:  # a darker shade of light colours, a lighter shade of dark ones
            second = primary * (1.0 - darken)
        else:
            second = primary + lighten * (1.0 - primary)
    img = np.where(mask[..., None], second, primary)  # [size, size, 3]
    return (np.round(img * 255.0) / 255.0).astype(np.float32)
