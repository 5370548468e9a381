"""What every mesh writer stores of a part: its arrays checked and converted, normals, PNG textures.

`part_arrays` turns a `fourview.mesh.MeshPart` into `PartArrays`: float32 positions, int64 faces,
smooth unit normals (`vertex_normals`), and the part's UVs, texture and vertex colours in float32,
after checking that they are finite, of the right shapes, and that a texture has UVs to map it.
`check_mesh` is the check of bare ``verts`` / ``faces`` arrays that the export stage's mesh
operations share. `encode_png` turns a texture into the 8-bit PNG bytes the GLB and OBJ writers
store.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, MeshPart


@dataclass(frozen=True)
class PartArrays:
    """One mesh part, checked, in the dtypes the writers store.

    Attributes:
        verts: [V, 3] float32 positions, object frame.
        faces: [F, 3] int64 vertex indices, counter-clockwise seen from outside.
        normals: [V, 3] float32 smooth unit normals.
        uv: [V, 2] float32 texture coordinates (OBJ convention, v up), or None.
        texture: [H, W, 3|4] float32 sRGB in [0, 1], row 0 at the top, or None (needs ``uv``).
        vertex_colors: [V, 3] float32 sRGB in [0, 1] (clipped), or None.
        material: the part's material (its ``texture`` is the one above).
        tangents: [V, 4] float32 unit tangents with handedness w = +-1, or None.
        normal_map: [H, W, 3] float32 in [0, 1] (encoded tangent-space normals), or None (needs
            ``uv`` and ``tangents``).
        occlusion: [H, W] float32 in [0, 1], or None (needs ``uv``).
    """

    verts: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    uv: np.ndarray | None
    texture: np.ndarray | None
    vertex_colors: np.ndarray | None
    material: Material
    tangents: np.ndarray | None = None
    normal_map: np.ndarray | None = None
    occlusion: np.ndarray | None = None

    @property
    def untextured_colors(self) -> np.ndarray | None:
        """[V, 3] the vertex colours of a part without a texture; None with a texture, which alone gives
        the colour (what GLB and OBJ store; PLY, which has no textures, stores ``vertex_colors``)."""
        return None if self.texture is not None else self.vertex_colors


def mesh_part_arrays(mesh: MeshAsset) -> list[PartArrays]:
    """`part_arrays` of every part of ``mesh``.

    Raises:
        InputError: the mesh has no parts, or a part is malformed (see `part_arrays`).
    """
    if not isinstance(mesh, MeshAsset):
        raise TypeError(f"expected a fourview.mesh.MeshAsset, got {type(mesh).__name__}")
    if not mesh.parts:
        raise InputError(f"mesh {mesh.name!r} has no parts")
    return [part_arrays(part) for part in mesh.parts]


def part_arrays(part: MeshPart) -> PartArrays:
    """Check a part and convert it to the writers' dtypes (normals computed with `vertex_normals`).

    Raises:
        InputError: no faces, non-integer faces, indices out of range, non-finite positions or UVs,
            arrays of the wrong shapes, or a texture without UVs.
    """
    verts64, faces = check_mesh(part.verts, part.faces)
    n = len(verts64)
    uv = texture = vertex_colors = None
    if part.uv is not None:
        uv = np.asarray(part.uv, dtype=np.float32)
        if uv.shape != (n, 2):
            raise InputError(f"uv must be [{n}, 2] (one per vertex), got {uv.shape}")
        if not np.isfinite(uv).all():
            raise InputError("uv has non-finite values")
    if part.material.texture is not None:
        if uv is None:
            raise InputError(f"material {part.material.name!r} has a texture, which needs UV coordinates (uv=None)")
        texture = np.asarray(part.material.texture, dtype=np.float32)
        if texture.ndim != 3 or texture.shape[2] not in (3, 4) or texture.shape[0] < 1 or texture.shape[1] < 1:
            raise InputError(f"texture must be [H, W, 3] or [H, W, 4], got {texture.shape}")
    if part.vertex_colors is not None:
        vertex_colors = np.asarray(part.vertex_colors, dtype=np.float32)
        if vertex_colors.shape != (n, 3):
            raise InputError(f"vertex_colors must be [{n}, 3], got {vertex_colors.shape}")
        vertex_colors = np.clip(vertex_colors, 0.0, 1.0)
    tangents, normal_map, occlusion = _normal_and_occlusion_arrays(part, n, uv is not None)
    return PartArrays(
        verts=verts64.astype(np.float32),
        faces=faces,
        normals=vertex_normals(verts64, faces),
        uv=uv,
        texture=texture,
        vertex_colors=vertex_colors,
        material=part.material,
        tangents=tangents,
        normal_map=normal_map,
        occlusion=occlusion,
    )


def _normal_and_occlusion_arrays(
    part: MeshPart, n: int, has_uv: bool
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """A part's tangents [V, 4], normal map [H, W, 3] and occlusion map [H, W], checked (see `PartArrays`)."""
    tangents = normal_map = occlusion = None
    name = part.material.name
    if part.tangents is not None:
        tangents = np.asarray(part.tangents, dtype=np.float32)
        if tangents.shape != (n, 4) or not np.isfinite(tangents).all():
            raise InputError(f"tangents must be finite [{n}, 4], got {tangents.shape}")
        if not np.all(np.abs(tangents[:, 3]) == 1.0):
            raise InputError("tangents' w (handedness) must be +1 or -1")
    if part.material.normal_map is not None:
        if not has_uv or tangents is None:
            raise InputError(f"material {name!r} has a normal map, which needs UV coordinates and tangents")
        normal_map = np.asarray(part.material.normal_map, dtype=np.float32)
        if normal_map.ndim != 3 or normal_map.shape[2] != 3 or min(normal_map.shape[:2]) < 1:
            raise InputError(f"normal map must be [H, W, 3], got {normal_map.shape}")
    if part.material.occlusion is not None:
        if not has_uv:
            raise InputError(f"material {name!r} has an occlusion map, which needs UV coordinates")
        occlusion = np.asarray(part.material.occlusion, dtype=np.float32)
        if occlusion.ndim != 2 or min(occlusion.shape) < 1:
            raise InputError(f"occlusion map must be [H, W], got {occlusion.shape}")
    return tangents, normal_map, occlusion


def check_mesh(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a mesh given by the user and return it as float64 verts and int64 faces.

    Raises:
        InputError: shapes other than [V, 3] / [F, 3], non-integer faces, indices out of range,
            non-finite positions, or no faces.
    """
    verts = np.asarray(verts)
    faces = np.asarray(faces)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise InputError(f"verts must be [V, 3], got shape {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(f"faces must be [F, 3], got shape {faces.shape}")
    if len(faces) == 0:
        raise InputError("mesh has no faces")
    if not np.issubdtype(faces.dtype, np.integer):
        raise InputError(f"faces must hold integers, got dtype {faces.dtype}")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise InputError(f"face indices must lie in [0, {len(verts)}), got [{faces.min()}, {faces.max()}]")
    if not np.isfinite(verts).all():
        raise InputError("mesh has non-finite vertex positions")
    return verts.astype(np.float64), faces.astype(np.int64)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth unit vertex normals, area-weighted, shared across vertices at the same position.

    Vertices split at UV seams (same position, different UV) get the same normal, so seams do
    not show in shading. A vertex with no usable face gets +Y.

    Args:
        verts: [V, 3] positions.
        faces: [F, 3] vertex indices, counter-clockwise seen from outside.

    Returns:
        [V, 3] float32 unit normals, object frame.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    _, weld = np.unique(verts, axis=0, return_inverse=True)
    weld = weld.reshape(-1)
    tri = verts[faces]  # [F, 3, 3]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [F, 3], length = 2 * area
    acc = np.zeros((int(weld.max()) + 1, 3))
    for k in range(3):
        np.add.at(acc, weld[faces[:, k]], fn)
    normals = acc[weld]
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-20, normals / np.maximum(length, 1e-20), np.array([0.0, 1.0, 0.0]))
    return normals.astype(np.float32)


def encode_png(texture: np.ndarray) -> bytes:
    """[H, W, 3|4] float sRGB in [0, 1] (row 0 at the top) -> 8-bit PNG bytes."""
    array = np.round(np.clip(texture, 0.0, 1.0) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
