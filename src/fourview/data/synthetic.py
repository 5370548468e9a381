"""The synthetic world: procedural textured objects with captions.

It trains the shipped demo models (stage 1: text -> 2x2 grid of views; stage 2: views -> 3D) and
underlies the prompt-adherence benchmark: for a prompt such as "a red mug", the generated mesh's
mean surface albedo (`surface_albedo`) must be nearest (`nearest_colour`) to ``COLOURS["red"]``,
and its best match among the `canonical_mesh` of every shape by `voxel_iou` must be the mug.

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
`build_asset(spec)` builds the `MeshAsset`, `caption(spec)` writes its text, and
`write_synthetic` writes a folder of GLB files with captions and specs. All of it is
deterministic per seed.

Train/held-out split: the (shape, colour) pairs in `HELDOUT_COMBINATIONS` (34 of 240, 1/7) are
never drawn for training; every shape and every colour has training partners, so the held-out set
tests generalisation to unseen combinations. See `HELDOUT_COLOURS`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import trimesh
from tqdm import tqdm

from fourview.data.primitives import (
    Piece,
    box,
    capsule,
    concatenate,
    cylinder,
    frustum,
    prism,
    revolve,
    sphere,
    torus,
    weld,
)
from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, MeshPart, linear_to_srgb, srgb_to_linear

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
`sample_spec` draws uniformly in [low, high]; `canonical_mesh` uses the defaults."""

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
    body, accent = _shape_pieces(spec.shape, spec.params)
    centre, scale = _normaliser([p.verts for p in body + accent])
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


def canonical_mesh(shape: str) -> trimesh.Trimesh:
    """Reference geometry of a shape: default proportions, normalised like `build_asset`.

    Returns:
        An untextured mesh with vertices welded by position: a union of closed, outward-facing
        components (one per primitive; they may overlap, so use `voxelize`, which handles that,
        rather than ``contains`` on the whole mesh).
    """
    if shape not in SHAPES:
        raise InputError(f"unknown synthetic shape {shape!r}; expected one of {', '.join(SHAPES)}")
    body, accent = _shape_pieces(shape, {k: v[1] for k, v in PROPORTIONS[shape].items()})
    centre, scale = _normaliser([p.verts for p in body + accent])
    whole = concatenate(body + accent)
    verts, faces = weld((whole.verts - centre) * scale, whole.faces)
    return trimesh.Trimesh(verts, faces, process=False)


def voxelize(mesh: trimesh.Trimesh, resolution: int = 32, dilation: int = 0) -> np.ndarray:
    """Occupancy of a normalised mesh on a grid over [-1, 1]^3.

    Each connected component is tested on its own (ray parity, trimesh ``contains``) and the
    results are united, so overlapping closed parts (as in `canonical_mesh`) come out right.

    Args:
        mesh: a mesh in the object frame (inside the unit ball).
        resolution: cells per side.
        dilation: grow the occupancy by this many cells (6-connected), which makes IoU forgiving
            of thin parts (legs, shafts) that are a cell or two off.

    Returns:
        [R, R, R] bool, indexed (x, y, z), cell centres at ``(i + 0.5) / R * 2 - 1``.
    """
    c = (np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0
    grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1).reshape(-1, 3)  # [R^3, 3]
    occupied = np.zeros(len(grid), dtype=bool)
    for part in mesh.split(only_watertight=False):
        lo, hi = part.bounds
        near = np.flatnonzero(((grid >= lo) & (grid <= hi)).all(axis=1))
        if len(near):
            occupied[near] |= part.contains(grid[near])
    occupied = occupied.reshape(resolution, resolution, resolution)
    if dilation > 0:
        from scipy.ndimage import binary_dilation

        occupied = binary_dilation(occupied, iterations=dilation)
    return occupied


def voxel_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean occupancy grids of the same shape (0 if both empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def surface_albedo(asset: MeshAsset, samples: int = 20000, seed: int = 0) -> np.ndarray:
    """Area-weighted mean albedo of an asset's surface, as sRGB.

    The mean is taken in linear space (`fourview.mesh`: ``srgb_to_linear(texture or vertex
    colour) * base_color``) over ``samples`` points drawn uniformly over the surface area with a
    fixed ``seed`` (Monte Carlo; the standard error is about 0.002 at the default), then encoded
    as sRGB. Textures are sampled at the nearest texel.

    Returns:
        [3] float64 sRGB in [0, 1].
    """
    tris, uvs, sources = [], [], []
    for k, part in enumerate(asset.parts):
        tris.append(part.verts[part.faces].astype(np.float64))  # [F, 3, 3]
        uvs.append(part.uv[part.faces] if part.uv is not None else np.zeros((len(part.faces), 3, 2)))
        sources.append(np.full(len(part.faces), k))
    tri = np.concatenate(tris)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)  # [F]
    if area.sum() <= 0:
        raise InputError(f"asset {asset.name!r} has no surface area")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(area), size=samples, p=area / area.sum())  # [S]
    r1, r2 = np.sqrt(rng.random(samples)), rng.random(samples)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)  # [S, 3] uniform over a triangle
    uv = np.einsum("sk,skj->sj", bary, np.concatenate(uvs)[face])  # [S, 2]
    part_of = np.concatenate(sources)[face]
    local = face - np.concatenate([[0], np.cumsum([len(p.faces) for p in asset.parts])])[part_of]
    colour = np.ones((samples, 3))
    for k, part in enumerate(asset.parts):
        sel = part_of == k
        tex, mat = part.material.texture, part.material
        if tex is not None and part.uv is not None:
            h, w = tex.shape[:2]
            col = np.clip((uv[sel, 0] * w).astype(int), 0, w - 1)
            row = np.clip(((1.0 - uv[sel, 1]) * h).astype(int), 0, h - 1)
            colour[sel] = srgb_to_linear(tex[row, col, :3])
        elif part.vertex_colors is not None:
            vc = part.vertex_colors[part.faces[local[sel]]]  # [s, 3, 3]
            colour[sel] = srgb_to_linear(np.einsum("sk,skj->sj", bary[sel], vc))
        colour[sel] *= np.asarray(mat.base_color[:3])
    return linear_to_srgb(colour.mean(axis=0)).astype(np.float64)


def nearest_colour(srgb: np.ndarray) -> str:
    """The `COLOURS` word nearest to an sRGB colour in [0, 1], by CIELAB distance (Delta E 1976)."""
    lab = _srgb_to_lab(np.asarray(srgb, dtype=np.float64).reshape(1, 3))
    table = _srgb_to_lab(np.array(list(COLOURS.values()), dtype=np.float64) / 255.0)
    return list(COLOURS)[int(np.linalg.norm(table - lab, axis=1).argmin())]


def write_synthetic(
    out_dir: str | Path, count: int, seed: int, split: Split = "train", progress: bool = True
) -> list[Path]:
    """Write ``count`` synthetic objects, each in its own folder.

    Object ``i`` uses ``sample_spec(seed + i, split)`` and goes to
    ``out_dir/synth_{split}_{seed + i:06d}/`` with ``model.glb`` (the mesh, +Y up, UV textures and
    PBR materials), ``caption.txt`` (one line) and ``spec.json`` (`SyntheticSpec.to_dict`). Each
    folder is written in a temporary folder beside it and renamed into place, so a folder either
    is complete or does not exist; complete folders are skipped, which makes an interrupted run
    resumable. A crash can leave a hidden ``.synth_*`` temporary folder behind; it is never read.

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

    paths = []
    for i in tqdm(range(count), desc=f"synth {split}", disable=not progress, unit="obj"):
        name = f"synth_{split}_{seed + i:06d}"
        final = out / name
        paths.append(final)
        if _complete(final):
            continue
        spec = sample_spec(seed + i, split)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
        try:
            export_glb(build_asset(spec), tmp / "model.glb")
            (tmp / "caption.txt").write_text(caption(spec) + "\n", encoding="utf-8")
            (tmp / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1) + "\n", encoding="utf-8")
            if final.exists():  # an incomplete folder from an older, non-atomic writer
                shutil.rmtree(final)
            try:
                os.rename(tmp, final)
            except OSError:
                if not _complete(final):  # not a concurrent writer finishing first: a real failure
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return paths


_FILES = ("model.glb", "caption.txt", "spec.json")


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() and (folder / f).stat().st_size > 0 for f in _FILES)


def export_glb(asset: MeshAsset, path: Path) -> None:
    """Write an asset as binary glTF: one node per part, PBR material with a base colour texture."""
    from PIL import Image
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    scene = trimesh.Scene()
    for part in asset.parts:
        mat = part.material
        image = Image.fromarray(np.round(np.clip(mat.texture[..., :3], 0, 1) * 255).astype(np.uint8))
        pbr = PBRMaterial(
            name=mat.name,
            baseColorTexture=image,
            baseColorFactor=[float(c) for c in mat.base_color],
            metallicFactor=float(mat.metallic),
            roughnessFactor=float(mat.roughness),
        )
        mesh = trimesh.Trimesh(part.verts, part.faces, visual=TextureVisuals(uv=part.uv, material=pbr), process=False)
        scene.add_geometry(mesh, geom_name=mat.name, node_name=mat.name)
    path.write_bytes(scene.export(file_type="glb"))


def _check_split(split: str) -> None:
    if split not in ("train", "heldout"):
        raise InputError(f"unknown split {split!r}; expected 'train' or 'heldout'")


def _normaliser(vert_arrays: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Centre of the bounding box and the scale that puts the farthest vertex at distance 1."""
    verts = np.concatenate(vert_arrays)
    centre = (verts.min(axis=0) + verts.max(axis=0)) / 2.0
    return centre, 1.0 / float(np.linalg.norm(verts - centre, axis=1).max())


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


def _srgb_to_lab(srgb: np.ndarray) -> np.ndarray:
    """[N, 3] sRGB in [0, 1] to CIELAB (D65 white): [N, 3] (L*, a*, b*)."""
    lin = srgb_to_linear(np.clip(srgb, 0.0, 1.0)).astype(np.float64)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    d = 6.0 / 29.0
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d * d) + 4.0 / 29.0)
    return np.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1)


# ---------------------------------------------------------------------------------------------
# Shapes. Each builder takes the proportions (object units, +Y up, front +Z, standing on y = 0)
# and returns (body pieces, accent pieces); `build_asset` normalises afterwards.

Pieces = tuple[list[Piece], list[Piece]]


def _shape_pieces(shape: str, p: dict[str, float]) -> Pieces:
    if shape == "mug":
        return _mug(p)
    elif shape == "table":
        return _table(p)
    elif shape == "chair":
        return _chair(p)
    elif shape == "lamp":
        return _lamp(p)
    elif shape == "tree":
        return _tree(p)
    elif shape == "house":
        return _house(p)
    elif shape == "snowman":
        return _snowman(p)
    elif shape == "mushroom":
        return _mushroom(p)
    elif shape == "car":
        return _car(p)
    elif shape == "vase":
        return _vase(p)
    elif shape == "bottle":
        return _bottle(p)
    elif shape == "bench":
        return _bench(p)
    elif shape == "rocket":
        return _rocket(p)
    elif shape == "cactus":
        return _cactus(p)
    elif shape == "barrel":
        return _barrel(p)
    elif shape == "bowl":
        return _bowl(p)
    elif shape == "sofa":
        return _sofa(p)
    elif shape == "dumbbell":
        return _dumbbell(p)
    elif shape == "umbrella":
        return _umbrella(p)
    elif shape == "bed":
        return _bed(p)
    raise InputError(f"unknown synthetic shape {shape!r}; expected one of {', '.join(SHAPES)}")


def _legs(x: float, z: float, length: float, thickness: float) -> list[Piece]:
    """Four square legs standing on y = 0 at (+-x, +-z), reaching ``length`` (+1% into what they hold)."""
    leg = box(thickness, length * 1.01, thickness).moved(y=length * 1.01 / 2)
    return [leg.moved(sx * x, 0.0, sz * z) for sx in (-1, 1) for sz in (-1, 1)]


def _mug(p: dict[str, float]) -> Pieces:
    h, r, wall = p["height"], 0.5, 0.08
    body = revolve(
        np.array([[0, 0], [r, 0], [r, h], [r - wall, h], [r - wall, 0.1], [0, 0.1]]), 28, creases=(1, 2, 3, 4)
    )
    # A half torus on the right (+X), standing in the XY plane, its ends buried in the wall.
    handle = torus(p["handle_size"] * h, p["handle_thickness"], sections=14, tube_sections=8, arc_deg=180.0)
    handle = handle.rotated("y", 180.0).rotated("x", 90.0).moved(r - 0.01, h / 2, 0.0)
    return [body, handle], []


def _table(p: dict[str, float]) -> Pieces:
    w, d, length, t = p["width"], p["depth"], p["leg_length"], p["leg_thickness"]
    top = box(w, 0.1, d).moved(y=length + 0.05)
    return [top] + _legs(w / 2 - t, d / 2 - t, length, t), []


def _chair(p: dict[str, float]) -> Pieces:
    length, bh, t = p["leg_length"], p["back_height"], p["leg_thickness"]
    seat = box(1.0, 0.1, 1.0).moved(y=length + 0.05)
    back = box(1.0, bh, 0.1).moved(0.0, length + 0.1 + bh / 2 - 0.01, -0.45)  # behind the seat: front is +Z
    return [seat, back] + _legs(0.5 - t / 2, 0.5 - t / 2, length, t), []


def _lamp(p: dict[str, float]) -> Pieces:
    pole, sr, sh = p["pole_height"], p["shade_radius"], p["shade_height"]
    base = frustum(0.4, 0.34, 0.08, 24)
    stem = cylinder(0.035, pole, 10).moved(y=0.07)
    shade = frustum(sr, 0.6 * sr, sh, 24).moved(y=0.08 + pole - 0.6 * sh)
    return [base, shade], [stem]


def _tree(p: dict[str, float]) -> Pieces:
    cs, th, tr = p["crown_size"], p["trunk_height"], p["trunk_radius"]
    trunk = cylinder(tr, th + 0.5 * cs, 12)
    cy = th + 0.9 * cs
    crown = [sphere(cs, 14, 9).moved(y=cy)]
    for az in (45.0, 135.0, 225.0, 315.0):  # four lobes, so every rig view sees a lumpy crown
        a = math.radians(az)
        crown.append(sphere(0.62 * cs, 12, 7).moved(0.62 * cs * math.sin(a), cy - 0.2 * cs, 0.62 * cs * math.cos(a)))
    return crown, [trunk]


def _house(p: dict[str, float]) -> Pieces:
    w, wh, rh, d = p["width"], p["wall_height"], p["roof_height"], 1.4
    walls = box(w, wh, d).moved(y=wh / 2)
    roof = prism(np.array([[-d / 2 - 0.12, wh - 0.02], [d / 2 + 0.12, wh - 0.02], [0.0, wh + rh]]), w + 0.2)
    chimney = box(0.2, 0.6 * rh, 0.2).moved(0.28 * w, wh + 0.55 * rh, -0.2 * d)
    door = box(0.32, 0.6, 0.04).moved(0.0, 0.3, d / 2 + 0.01)  # the front (+Z) wall
    windows = [box(0.3, 0.28, 0.04).moved(sx * 0.3 * w, 0.6 * wh, d / 2 + 0.01) for sx in (-1, 1)]
    return [walls, roof, chimney], [door] + windows


def _snowman(p: dict[str, float]) -> Pieces:
    r0 = 0.6
    r1 = r0 * p["body_ratio"]
    r2 = r1 * p["head_ratio"]
    y0 = r0
    y1 = y0 + r0 + 0.6 * r1
    y2 = y1 + r1 + 0.6 * r2
    balls = [sphere(r0, 16, 10).moved(y=y0), sphere(r1, 16, 10).moved(y=y1), sphere(r2, 14, 9).moved(y=y2)]
    hat_y = y2 + 0.75 * r2
    brim = cylinder(0.95 * r2, 0.05, 16).moved(y=hat_y)
    crown = cylinder(0.6 * r2, p["hat_height"] * r2, 16).moved(y=hat_y + 0.04)
    nose = frustum(0.12 * r2, 0.0, 0.6 * r2, 8).rotated("x", 90.0).moved(0.0, y2, 0.9 * r2)  # points +Z
    return balls, [brim, crown, nose]


def _mushroom(p: dict[str, float]) -> Pieces:
    cr, ch, sh, sr = p["cap_radius"], p["cap_height"], p["stem_height"], p["stem_radius"]
    stem = frustum(1.15 * sr, sr, sh, 16)
    y0 = sh - 0.05
    phi = np.linspace(0.0, math.pi / 2, 9)
    dome = np.stack([cr * np.cos(phi), y0 + ch * np.sin(phi)], axis=1)
    dome[-1, 0] = 0.0
    cap = revolve(np.concatenate([[[0.0, y0]], dome]), 24, creases=(1,))
    return [stem, cap], []


def _car(p: dict[str, float]) -> Pieces:
    length, chh, cl = p["length"], p["cabin_height"], p["cabin_length"]
    w = 1.0
    hull = box(w, 0.42, length).moved(y=0.39)
    z0, z1 = -0.4 * length, (-0.4 + cl) * length  # cabin towards the back: the bonnet points +Z
    yb, yt = 0.59, 0.6 + chh
    cabin = prism(np.array([[z0, yb], [z1, yb], [z1 - 0.35 * chh, yt], [z0 + 0.15 * chh, yt]]), 0.88 * w)
    wheel = cylinder(0.21, 0.16, 16).moved(y=-0.08).rotated("z", 90.0)  # axle along X
    wheels = [wheel.moved(sx * (w / 2 - 0.04), 0.21, sz * 0.3 * length) for sx in (-1, 1) for sz in (-1, 1)]
    return [hull, cabin], wheels


def _vase(p: dict[str, float]) -> Pieces:
    from scipy.interpolate import PchipInterpolator

    h, belly, neck = p["height"], p["belly"], p["neck"]
    lip = 1.35 * neck
    radius = PchipInterpolator([0.0, 0.35, 0.8, 1.0], [0.32, belly, neck, lip])
    t = np.linspace(0.0, 1.0, 14)
    outer = np.stack([radius(t), h * t], axis=1)
    inner = np.array([[lip - 0.04, h], [0.8 * neck, h - 0.18], [0.0, h - 0.22]])
    profile = np.concatenate([[[0.0, 0.0]], outer, inner])
    return [revolve(profile, 28, creases=(1, 14, 15))], []


def _bottle(p: dict[str, float]) -> Pieces:
    bh, nl, sh = p["body_height"], p["neck_length"], p["shoulder"]
    r, rn = 0.35, 0.11
    phi = np.linspace(0.0, math.pi / 2, 6)
    shoulder = np.stack([rn + (r - rn) * np.cos(phi), bh + sh * np.sin(phi)], axis=1)
    top = bh + sh + nl
    profile = np.concatenate([[[0.0, 0.0], [r, 0.0]], shoulder, [[rn, top], [0.0, top]]])
    body = revolve(profile, 24, creases=(1, 7, 8))
    cap = cylinder(0.13, 0.14, 16).moved(y=top - 0.03)
    return [body], [cap]


def _bench(p: dict[str, float]) -> Pieces:
    length, bh, sh = p["length"], p["back_height"], p["seat_height"]
    seat = box(length, 0.08, 0.55).moved(y=sh)
    sides = [box(0.08, sh, 0.5).moved(sx * (length / 2 - 0.2), sh / 2, 0.0) for sx in (-1, 1)]
    back = box(length, bh, 0.06).moved(0.0, sh + 0.15 + bh / 2, -0.28)  # backrest behind: front is +Z
    posts = [box(0.08, bh + 0.17, 0.06).moved(sx * (length / 2 - 0.2), sh + (bh + 0.17) / 2, -0.32) for sx in (-1, 1)]
    return [seat, back] + sides + posts, []


def _rocket(p: dict[str, float]) -> Pieces:
    bh, nh, fs = p["body_height"], p["nose_height"], p["fin_size"]
    body = cylinder(0.3, bh, 24)
    nose = frustum(0.3, 0.0, nh, 24).moved(y=bh - 0.01)
    fin = prism(np.array([[0.2, 0.0], [0.3 + fs, -0.1], [0.3 + 0.3 * fs, 1.2 * fs], [0.2, 1.6 * fs]]), 0.05)
    fins = [fin.rotated("y", az) for az in (45.0, 135.0, 225.0, 315.0)]
    nozzle = frustum(0.26, 0.18, 0.15, 16).moved(y=-0.14)
    return [body, nose] + fins, [nozzle]


def _cactus(p: dict[str, float]) -> Pieces:
    h, ah, reach, al = p["height"], p["arm_height"], p["arm_reach"], p["arm_length"]
    ra = 0.16
    trunk = capsule(0.25, h, 14, 4)
    pieces = [trunk]
    for side, y, length in ((1.0, ah * h, al), (-1.0, (ah + 0.12) * h, 0.8 * al)):
        # Out along +-X, ending inside the upright part (no shared vertices between the two).
        arm = capsule(ra, reach + 0.6 * ra, 12, 3).rotated("z", -90.0 * side).moved(y=y)
        up = capsule(ra, length + ra, 12, 3).moved(side * reach, y - ra, 0.0)
        pieces += [arm, up]
    return pieces, []


def _barrel(p: dict[str, float]) -> Pieces:
    h, bulge = p["height"], p["bulge"]
    t = np.linspace(0.0, 1.0, 11)
    radius = 0.42 + bulge * np.sin(math.pi * t)
    profile = np.concatenate([[[0.0, 0.0]], np.stack([radius, h * t], axis=1), [[0.0, h]]])
    body = revolve(profile, 28, creases=(1, 11))
    hoops = [torus(0.42 + bulge * math.sin(math.pi * s), 0.025, 28, 6).moved(y=s * h) for s in (0.15, 0.85)]
    return [body], hoops


def _bowl(p: dict[str, float]) -> Pieces:
    depth, foot = p["depth"], p["foot"]
    rim, wall, fh = 1.0, 0.06, 0.06
    phi0 = math.asin(foot / rim)
    phi = np.linspace(phi0, math.pi / 2, 9)
    outer = np.stack([rim * np.sin(phi), fh + depth * (1.0 - np.cos(phi))], axis=1)
    phi_in = np.linspace(math.pi / 2, 0.0, 9)
    inner = np.stack([(rim - wall) * np.sin(phi_in), fh + wall + (depth - wall) * (1.0 - np.cos(phi_in))], axis=1)
    inner[-1, 0] = 0.0
    profile = np.concatenate([[[0.0, 0.0], [foot, 0.0]], outer, inner])
    return [revolve(profile, 32, creases=(1, 2, 10, 11))], []


def _sofa(p: dict[str, float]) -> Pieces:
    w, bh, ah = p["width"], p["back_height"], p["arm_height"]
    d = 0.95
    base = box(w, 0.35, d).moved(y=0.275)
    back = box(w, bh + 0.35, 0.25).moved(0.0, 0.1 + (bh + 0.35) / 2, -d / 2 + 0.125)  # back at -Z: front is +Z
    arms = [box(0.22, 0.35 + ah, d).moved(sx * (w / 2 - 0.11), 0.1 + (0.35 + ah) / 2, 0.0) for sx in (-1, 1)]
    legs = _legs(w / 2 - 0.1, d / 2 - 0.1, 0.1, 0.08)
    return [base, back] + arms, legs


def _dumbbell(p: dict[str, float]) -> Pieces:
    bl, wr, ww = p["bar_length"], p["weight_radius"], p["weight_width"]
    grip = bl - 2.0 * ww + 0.1  # the bar only spans the gap between the weights (+0.05 into each)
    bar = cylinder(0.045, grip, 12).moved(y=-grip / 2).rotated("z", 90.0).moved(y=wr)
    plate = cylinder(wr, ww, 24).moved(y=-ww / 2).rotated("z", 90.0)
    plates = [plate.moved(sx * (bl / 2 - ww / 2), wr, 0.0) for sx in (-1, 1)]
    return plates, [bar]


def _umbrella(p: dict[str, float]) -> Pieces:
    cr, ch, sl = p["canopy_radius"], p["canopy_height"], p["shaft_length"]
    phi = np.linspace(0.0, math.pi / 2, 7)
    under = np.stack([0.97 * cr * np.sin(phi), 0.75 * ch * np.cos(phi)], axis=1)  # axis -> rim, underneath
    over = np.stack([cr * np.sin(phi[::-1]), ch * np.cos(phi[::-1])], axis=1)  # rim -> axis, on top
    over[-1, 0] = 0.0
    canopy = revolve(np.concatenate([under, over]), 8, creases=(6, 7))  # 8 panels
    shaft = cylinder(0.025, ch + sl, 8).moved(y=-sl)
    hook = torus(0.1, 0.025, 10, 6, arc_deg=180.0).rotated("x", 90.0).rotated("z", 90.0).moved(0.1, -sl, 0.0)
    return [canopy], [shaft, hook]


def _bed(p: dict[str, float]) -> Pieces:
    w, length, hb = p["width"], p["length"], p["headboard_height"]
    frame = box(w, 0.25, length).moved(y=0.245)
    mattress = box(w - 0.06, 0.22, length - 0.06).moved(y=0.47)
    head = box(w, 0.47 + hb, 0.08).moved(0.0, 0.12 + (0.47 + hb) / 2, -length / 2 + 0.04)  # head at -Z
    foot = box(w, 0.45, 0.06).moved(0.0, 0.12 + 0.225, length / 2 - 0.03)
    pillow = box(0.6 * w, 0.12, 0.35).moved(0.0, 0.62, -length / 2 + 0.3)
    return [frame, mattress, head, foot, pillow], _legs(w / 2 - 0.06, length / 2 - 0.06, 0.125, 0.08)
