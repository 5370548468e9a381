"""Binary glTF 2.0 (GLB) writer, written by hand so that every field is ours to control.

The file holds one scene, one node, one mesh with one triangle primitive and one
metallic-roughness material:

- Frame and units: the object frame (+Y up, front +Z, docs/conventions.md) is glTF's frame, so
  positions are written as they are; one object-frame unit is one metre.
- Attributes: ``POSITION`` (float32 VEC3, with the ``min`` / ``max`` the specification
  requires), ``NORMAL`` (float32 unit VEC3), ``TEXCOORD_0`` (float32 VEC2) and ``COLOR_0``
  (float32 VEC3). glTF's UV origin is the image's top-left, so ``v_gltf = 1 - v_obj``;
  ``COLOR_0`` is linear by the specification, so sRGB vertex colours are linearised.
- Indices: ``uint16`` when every index fits below 65535 (the primitive-restart value is
  avoided), else ``uint32``.
- Material: ``pbrMetallicRoughness`` with ``baseColorFactor`` (linear), ``metallicFactor``,
  ``roughnessFactor`` and, with a texture, ``baseColorTexture`` pointing at a PNG embedded in the
  binary chunk (linear filtering with mipmaps, clamp-to-edge: an atlas does not tile).
- Layout: a 12-byte header, a JSON chunk padded with spaces and a BIN chunk padded with zeros,
  both to 4 bytes; every buffer view starts on a 4-byte boundary.

The file is written atomically (`fourview.export.obj.write_files_atomic`).
"""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np

from fourview.errors import InputError
from fourview.mesh import Material, srgb_to_linear

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A  # "JSON"
CHUNK_BIN = 0x004E4942  # "BIN\0"
_FLOAT, _UINT16, _UINT32 = 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_TRIANGLES = 4


def write_glb(
    path: str | os.PathLike,
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    vertex_colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    material: Material = Material(),
) -> list[Path]:
    """Write a mesh as a self-contained GLB file.

    Args:
        path: the ``.glb`` file.
        verts: [V, 3] float positions, object frame (metres).
        faces: [F, 3] int vertex indices, counter-clockwise seen from outside.
        uv: [V, 2] texture coordinates, OBJ convention (v up), or None.
        texture: [H, W, 3|4] float sRGB in [0, 1], row 0 at the top, or None; needs ``uv``.
            None falls back to ``material.texture``.
        vertex_colors: [V, 3] float sRGB in [0, 1], or None (stored linear as ``COLOR_0``).
        normals: [V, 3] unit normals, or None to compute smooth ones (`vertex_normals`).
        material: name, linear base colour factor, metallic and roughness (defaults 0 and 0.8).

    Returns:
        ``[path]``.

    Raises:
        InputError: malformed arrays, a texture without UVs, or an unwritable folder.
    """
    from fourview.export.obj import write_files_atomic

    files = glb_files(path, verts, faces, uv, texture, vertex_colors, normals, material)
    write_files_atomic(files)
    return list(files)


def glb_files(
    path: str | os.PathLike,
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    vertex_colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    material: Material = Material(),
) -> dict[Path, bytes]:
    """What `write_glb` would write, as ``{path: bytes}``, without writing it (same arguments)."""
    texture = material.texture if texture is None else texture
    verts, faces, uv, texture, vertex_colors, normals = check_export_arrays(
        verts, faces, uv, texture, vertex_colors, normals
    )
    return {Path(path): glb_bytes(verts, faces, uv, texture, vertex_colors, normals, material)}


def glb_bytes(
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray | None,
    texture: np.ndarray | None,
    vertex_colors: np.ndarray | None,
    normals: np.ndarray,
    material: Material,
) -> bytes:
    """The GLB file's bytes (see the module docstring); arrays already validated."""
    blob = bytearray()
    views: list[dict] = []
    accessors: list[dict] = []

    def add_view(data: bytes, target: int | None) -> int:
        blob.extend(b"\0" * (-len(blob) % 4))
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        blob.extend(data)
        views.append(view)
        return len(views) - 1

    def add_accessor(array: np.ndarray, kind: str, target: int, bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        component = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint16): _UINT16, np.dtype(np.uint32): _UINT32}[
            array.dtype
        ]
        accessor = {
            "bufferView": add_view(array.tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]) if kind != "SCALAR" else int(array.size),
            "type": kind,
        }
        if bounds:
            flat = array.reshape(accessor["count"], -1)
            cast = float if component == _FLOAT else int
            accessor["min"] = [cast(x) for x in flat.min(axis=0)]
            accessor["max"] = [cast(x) for x in flat.max(axis=0)]
        accessors.append(accessor)
        return len(accessors) - 1

    index_type = np.uint16 if len(verts) < 65535 else np.uint32
    indices = add_accessor(faces.reshape(-1).astype(index_type), "SCALAR", _ELEMENT_ARRAY_BUFFER, bounds=True)
    attributes = {
        "POSITION": add_accessor(verts.astype(np.float32), "VEC3", _ARRAY_BUFFER, bounds=True),
        "NORMAL": add_accessor(normals.astype(np.float32), "VEC3", _ARRAY_BUFFER),
    }
    if uv is not None:
        uv_gltf = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1).astype(np.float32)  # glTF: origin top-left
        attributes["TEXCOORD_0"] = add_accessor(uv_gltf, "VEC2", _ARRAY_BUFFER)
    if vertex_colors is not None:
        attributes["COLOR_0"] = add_accessor(srgb_to_linear(vertex_colors), "VEC3", _ARRAY_BUFFER)

    pbr: dict = {
        "baseColorFactor": [float(c) for c in material.base_color],
        "metallicFactor": float(material.metallic),
        "roughnessFactor": float(material.roughness),
    }
    gltf: dict = {
        "asset": {"version": "2.0", "generator": _generator()},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": material.name}],
        "meshes": [
            {"primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": _TRIANGLES}]}
        ],
        "materials": [{"name": material.name, "pbrMetallicRoughness": pbr, "doubleSided": False}],
    }
    if texture is not None:
        image_view = add_view(encode_png(texture), None)
        gltf["images"] = [{"bufferView": image_view, "mimeType": "image/png"}]
        gltf["samplers"] = [
            {
                "magFilter": _LINEAR,
                "minFilter": _LINEAR_MIPMAP_LINEAR,
                "wrapS": _CLAMP_TO_EDGE,
                "wrapT": _CLAMP_TO_EDGE,
            }
        ]
        gltf["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
    blob.extend(b"\0" * (-len(blob) % 4))
    gltf["accessors"] = accessors
    gltf["bufferViews"] = views
    gltf["buffers"] = [{"byteLength": len(blob)}]

    text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return b"".join(
        [
            struct.pack("<III", GLB_MAGIC, 2, total),
            struct.pack("<II", len(text), CHUNK_JSON),
            text,
            struct.pack("<II", len(blob), CHUNK_BIN),
            bytes(blob),
        ]
    )


def check_export_arrays(
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray | None,
    texture: np.ndarray | None,
    vertex_colors: np.ndarray | None,
    normals: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Validate what a writer was given and convert it to the writers' dtypes.

    Returns:
        verts float32 [V, 3], faces int64 [F, 3], uv float32 [V, 2] or None, texture float32
        [H, W, 3|4] or None, vertex_colors float32 [V, 3] or None, normals float32 [V, 3]
        (computed when None was given).

    Raises:
        InputError: wrong shapes or dtypes, indices out of range, non-finite values, or a
            texture without UVs.
    """
    from fourview.export.mesh_cleanup import check_mesh, vertex_normals

    verts64, faces = check_mesh(verts, faces)
    n = len(verts64)
    if uv is not None:
        uv = np.asarray(uv, dtype=np.float32)
        if uv.shape != (n, 2):
            raise InputError(f"uv must be [{n}, 2] (one per vertex), got {uv.shape}")
        if not np.isfinite(uv).all():
            raise InputError("uv has non-finite values")
    if texture is not None:
        if uv is None:
            raise InputError("a texture needs UV coordinates (uv=None was given)")
        texture = np.asarray(texture, dtype=np.float32)
        if texture.ndim != 3 or texture.shape[2] not in (3, 4) or texture.shape[0] < 1 or texture.shape[1] < 1:
            raise InputError(f"texture must be [H, W, 3] or [H, W, 4], got {texture.shape}")
    if vertex_colors is not None:
        vertex_colors = np.asarray(vertex_colors, dtype=np.float32)
        if vertex_colors.shape != (n, 3):
            raise InputError(f"vertex_colors must be [{n}, 3], got {vertex_colors.shape}")
        vertex_colors = np.clip(vertex_colors, 0.0, 1.0)
    if normals is None:
        normals = vertex_normals(verts64, faces)
    else:
        normals = np.asarray(normals, dtype=np.float32)
        if normals.shape != (n, 3):
            raise InputError(f"normals must be [{n}, 3], got {normals.shape}")
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        normals = np.where(length > 1e-12, normals / np.maximum(length, 1e-12), np.float32([0.0, 1.0, 0.0]))
    return verts64.astype(np.float32), faces, uv, texture, vertex_colors, normals.astype(np.float32)


def encode_png(texture: np.ndarray) -> bytes:
    """[H, W, 3|4] float sRGB in [0, 1] (row 0 at the top) -> 8-bit PNG bytes."""
    from PIL import Image

    array = np.round(np.clip(texture, 0.0, 1.0) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def read_glb_json(path: str | os.PathLike) -> dict:
    """The JSON chunk of a GLB file (for tests and tools).

    Raises:
        InputError: not a GLB file.
    """
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise InputError(f"{path} is not a GLB file (too short)")
    magic, version, _ = struct.unpack("<III", data[:12])
    chunk_len, chunk_type = struct.unpack("<II", data[12:20])
    if magic != GLB_MAGIC or version != 2 or chunk_type != CHUNK_JSON:
        raise InputError(f"{path} is not a glTF 2.0 binary file")
    return json.loads(data[20 : 20 + chunk_len].decode("utf-8"))


def _generator() -> str:
    from fourview import __version__

    return f"fourview {__version__}"
