"""Textured triangle meshes as plain value types, shared by loading, rendering and export.

Arrays are numpy (this is the I/O side of the project); renderers move them to torch.

Colour spaces (see docs/conventions.md): textures and vertex colours hold sRGB-encoded values in
[0, 1], as stored in PNG files; `Material.base_color` is a linear RGBA factor, as glTF's
``baseColorFactor``. The albedo of a surface point is ``srgb_to_linear(texture or vertex colour)
* base_color`` in linear space.

UV coordinates follow the OBJ convention: ``(0, 0)`` is the bottom-left corner of the texture
image, ``v`` grows upwards. Texture arrays are stored with row 0 at the top of the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Material:
    """A metallic-roughness material.

    Attributes:
        name: material name, for export and messages.
        base_color: linear RGBA factor multiplied into the albedo.
        texture: [H, W, 3] or [H, W, 4] float32 sRGB in [0, 1], row 0 at the top; None for none.
        metallic: glTF metallic factor in [0, 1].
        roughness: glTF roughness factor in [0, 1].
    """

    name: str = "default"
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    texture: np.ndarray | None = field(default=None, repr=False, compare=False)
    metallic: float = 0.0
    roughness: float = 0.8


@dataclass(frozen=True)
class MeshPart:
    """One triangle mesh with one material.

    Attributes:
        verts: [V, 3] float32 positions.
        faces: [F, 3] int64 vertex indices.
        material: the part's material.
        uv: [V, 2] float32 texture coordinates (OBJ convention), or None.
        vertex_colors: [V, 3] float32 sRGB in [0, 1], or None.
    """

    verts: np.ndarray
    faces: np.ndarray
    material: Material = field(default_factory=Material)
    uv: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        v, f = self.verts, self.faces
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"verts must be [V, 3], got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"faces must be [F, 3], got {f.shape}")
        if len(f) and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(f"face indices must lie in [0, {len(v)}), got [{f.min()}, {f.max()}]")
        for name, arr, width in (("uv", self.uv, 2), ("vertex_colors", self.vertex_colors, 3)):
            if arr is not None and arr.shape != (len(v), width):
                raise ValueError(f"{name} must be [{len(v)}, {width}], got {arr.shape}")

    def transformed(self, matrix: np.ndarray) -> MeshPart:
        """The part with positions mapped by a 4x4 affine ``matrix`` (faces flipped if it mirrors)."""
        verts = self.verts @ matrix[:3, :3].T + matrix[:3, 3]
        faces = self.faces[:, ::-1].copy() if np.linalg.det(matrix[:3, :3]) < 0 else self.faces
        return replace(self, verts=verts.astype(np.float32), faces=faces)


@dataclass(frozen=True)
class MeshAsset:
    """A loaded object: named parts in the object frame of docs/conventions.md.

    Attributes:
        name: the object's name (file or folder stem).
        parts: its meshes, each with one material.
    """

    name: str
    parts: tuple[MeshPart, ...]

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

    def bounds(self) -> np.ndarray:
        """[2, 3] min and max corner of the bounding box of all vertices."""
        verts = np.concatenate([p.verts for p in self.parts], axis=0)
        return np.stack([verts.min(axis=0), verts.max(axis=0)])

    def transformed(self, matrix: np.ndarray) -> MeshAsset:
        return replace(self, parts=tuple(p.transformed(matrix) for p in self.parts))


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear (IEC 61966-2-1)."""
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear values in [0, 1] to sRGB encoding (IEC 61966-2-1)."""
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1.0 / 2.4) - 0.055).astype(np.float32)
