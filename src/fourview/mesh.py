"""Textured triangle meshes as plain value types, shared by loading, rendering and export.

Arrays are numpy (this is the I/O side of the project); renderers move them to torch.

Colour spaces (see docs/conventions.md): textures and vertex colours hold sRGB-encoded values in
[0, 1], as stored in PNG files; `Material.base_color` is a linear RGBA factor, as glTF's
``baseColorFactor``. The albedo of a surface point is ``srgb_to_linear(texture or vertex colour)
* base_color`` in linear space.

UV coordinates follow the OBJ convention: ``(0, 0)`` is the bottom-left corner of the texture
image, ``v`` grows upwards. Texture arrays are stored with row 0 at the top of the image.

Game-ready extras (all optional): a tangent-space normal map with per-vertex tangents
(`MeshPart.tangents`, MikkTSpace conventions, see `Material.normal_map`), an ambient-occlusion map,
coarser levels of detail sharing the material (`MeshAsset.lods`) and the placement in metres
(`Placement`: +Y up, front +Z, a real-world height and a pivot).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

Pivot = Literal["object", "bottom", "center"]
"""Where a placed mesh's origin is: the object frame's own (the bounding box centred by loading), the
centre of the bounding box's base (what engines expect for props), or the bounding box's centre."""


@dataclass(frozen=True)
class Material:
    """A metallic-roughness material.

    Attributes:
        name: material name, for export and messages.
        base_color: linear RGBA factor multiplied into the albedo.
        texture: [H, W, 3] or [H, W, 4] float32 sRGB in [0, 1], row 0 at the top; None for none.
        metallic: glTF metallic factor in [0, 1].
        roughness: glTF roughness factor in [0, 1].
        normal_map: [H, W, 3] float32 tangent-space normals encoded as ``(n + 1) / 2`` (linear, not
            sRGB), row 0 at the top; +X along the tangent (increasing u), +Y along the bitangent
            (increasing v, up in the image), +Z along the normal: glTF's ``normalTexture``. The
            mesh parts using it need ``tangents``. None for none.
        occlusion: [H, W] float32 ambient occlusion in [0, 1] (1 = unoccluded, linear), row 0 at
            the top, over the same UVs; None for none. The GLB packs it with the roughness and
            metallic factors into one occlusion-roughness-metallic texture.
    """

    name: str = "default"
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    texture: np.ndarray | None = field(default=None, repr=False, compare=False)
    metallic: float = 0.0
    roughness: float = 0.8
    normal_map: np.ndarray | None = field(default=None, repr=False, compare=False)
    occlusion: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class MeshPart:
    """One triangle mesh with one material.

    Attributes:
        verts: [V, 3] float32 positions.
        faces: [F, 3] int64 vertex indices.
        material: the part's material.
        uv: [V, 2] float32 texture coordinates (OBJ convention), or None.
        vertex_colors: [V, 3] float32 sRGB in [0, 1], or None.
        tangents: [V, 4] float32 tangents of the normal map (glTF's ``TANGENT``): xyz a unit vector
            along increasing u, orthogonal to the writers' smooth vertex normal
            (`fourview.meshio.part_arrays.vertex_normals`); w = +-1, the bitangent being
            ``w * cross(normal, tangent)``. None without a normal map.
    """

    verts: np.ndarray
    faces: np.ndarray
    material: Material = field(default_factory=Material)
    uv: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None
    tangents: np.ndarray | None = None

    def __post_init__(self) -> None:
        v, f = self.verts, self.faces
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"verts must be [V, 3], got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"faces must be [F, 3], got {f.shape}")
        if len(f) and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(f"face indices must lie in [0, {len(v)}), got [{f.min()}, {f.max()}]")
        for name, arr, width in (
            ("uv", self.uv, 2),
            ("vertex_colors", self.vertex_colors, 3),
            ("tangents", self.tangents, 4),
        ):
            if arr is not None and arr.shape != (len(v), width):
                raise ValueError(f"{name} must be [{len(v)}, {width}], got {arr.shape}")

    def transformed(self, matrix: np.ndarray) -> MeshPart:
        """The part with positions mapped by a 4x4 affine ``matrix`` (faces flipped if it mirrors)."""
        verts = self.verts @ matrix[:3, :3].T + matrix[:3, 3]
        mirrored = np.linalg.det(matrix[:3, :3]) < 0
        faces = self.faces[:, ::-1].copy() if mirrored else self.faces
        tangents = self.tangents
        if tangents is not None:  # directions follow the linear part; a mirror flips the handedness
            xyz = tangents[:, :3] @ matrix[:3, :3].T
            xyz = xyz / np.maximum(np.linalg.norm(xyz, axis=1, keepdims=True), 1e-12)
            w = -tangents[:, 3:] if mirrored else tangents[:, 3:]
            tangents = np.concatenate([xyz, w], axis=1).astype(np.float32)
        return replace(self, verts=verts.astype(np.float32), faces=faces, tangents=tangents)


@dataclass(frozen=True)
class Placement:
    """How an exported mesh sits in its file: the axes, the units, its size and its origin.

    The axes and units are fixed (the object frame of docs/conventions.md is glTF's): +Y up, the
    front faces +Z, one unit is one metre.

    Attributes:
        height: the bounding box's height (along Y), metres.
        pivot: where the origin is (`Pivot`).
        scale: metres per object-frame unit (the mesh was scaled by this, then moved).
        target: the export target it was made for (``game``, ``film``, ``print``), or None.
    """

    height: float
    pivot: Pivot = "object"
    scale: float = 1.0
    target: str | None = None

    def extras(self) -> dict:
        """The record written to meta.json and to the GLB's scene ``extras``."""
        record = {"up": "+Y", "front": "+Z", "units": "metres", "height_m": round(float(self.height), 6)}
        record.update(pivot=self.pivot, scale=round(float(self.scale), 6))
        if self.target is not None:
            record["target"] = self.target
        return record


@dataclass(frozen=True)
class MeshAsset:
    """A loaded object: named parts in the object frame of docs/conventions.md.

    Attributes:
        name: the object's name (file or folder stem).
        parts: its meshes, each with one material.
        lods: coarser levels of detail of the same object, finest first (level 1, 2, ...), their
            parts using the same materials (one texture set for the chain); () for none.
        placement: axes, size and origin when the mesh was placed for export; None otherwise.
    """

    name: str
    parts: tuple[MeshPart, ...]
    lods: tuple[MeshAsset, ...] = ()
    placement: Placement | None = None

    @property
    def num_faces(self) -> int:
        return sum(len(p.faces) for p in self.parts)

    @property
    def num_verts(self) -> int:
        return sum(len(p.verts) for p in self.parts)

    @property
    def texture_size(self) -> int | None:
        """Side of the first part's texture in texels; None without a texture."""
        texture = next((p.material.texture for p in self.parts if p.material.texture is not None), None)
        return None if texture is None else int(texture.shape[0])

    def summary(self) -> dict:
        """What meta.json says of the mesh: its counts, each level of detail's, and its placement."""
        record: dict = {"vertices": self.num_verts, "faces": self.num_faces, "texture_size": self.texture_size}
        if self.lods:
            record["lods"] = [
                {"level": k, "vertices": m.num_verts, "faces": m.num_faces} for k, m in enumerate(self.levels)
            ]
        if self.placement is not None:
            record["placement"] = self.placement.extras()
        return record

    def bounds(self) -> np.ndarray:
        """[2, 3] min and max corner of the bounding box of all vertices."""
        verts = np.concatenate([p.verts for p in self.parts], axis=0)
        return np.stack([verts.min(axis=0), verts.max(axis=0)])

    def transformed(self, matrix: np.ndarray) -> MeshAsset:
        """Every part (and level of detail) mapped by a 4x4 affine ``matrix``; the placement is kept."""
        return replace(
            self,
            parts=tuple(p.transformed(matrix) for p in self.parts),
            lods=tuple(m.transformed(matrix) for m in self.lods),
        )

    @property
    def levels(self) -> tuple[MeshAsset, ...]:
        """This mesh followed by its coarser levels of detail, each without levels of its own."""
        return (replace(self, lods=()), *self.lods)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear (IEC 61966-2-1)."""
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear values in [0, 1] to sRGB encoding (IEC 61966-2-1)."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1.0 / 2.4) - 0.055).astype(np.float32)
