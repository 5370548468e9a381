"""Binary glTF 2.0 (GLB) writer, written by hand so that every field is ours to control.

The file holds one scene whose nodes are the mesh's parts: part ``i`` is node ``i`` (named after
its material), mesh ``i`` with one triangle primitive, and material ``i`` (metallic-roughness):

- Frame and units: the object frame (+Y up, front +Z, docs/conventions.md) is glTF's frame, so
  positions are written as they are; one object-frame unit is one metre.
- Attributes: ``POSITION`` (float32 VEC3, with the ``min`` / ``max`` the specification
  requires), ``NORMAL`` (float32 unit VEC3), ``TEXCOORD_0`` (float32 VEC2) and ``COLOR_0``
  (float32 VEC3, only for a part without a texture). glTF's UV origin is the image's top-left,
  so ``v_gltf = 1 - v_obj``; ``COLOR_0`` is linear by the specification, so sRGB vertex colours
  are linearised.
- Indices: ``uint16`` when every index of the part fits below 65535 (the primitive-restart value
  is avoided), else ``uint32``.
- Material: ``pbrMetallicRoughness`` with ``baseColorFactor`` (linear), ``metallicFactor``,
  ``roughnessFactor`` and, with a texture, ``baseColorTexture`` pointing at a PNG embedded in the
  binary chunk (one sampler for all: linear filtering with mipmaps, clamp-to-edge, as an atlas
  does not tile).
- Layout: a 12-byte header, a JSON chunk padded with spaces and a BIN chunk padded with zeros,
  both to 4 bytes; every buffer view starts on a 4-byte boundary. The BIN chunk holds every
  part's accessors in part order, then the images.

The file is written atomically (`fourview.atomic.write_files_atomic`).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

import fourview
from fourview.atomic import write_files_atomic
from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, srgb_to_linear
from fourview.meshio.part_arrays import PartArrays, encode_png, mesh_part_arrays

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A  # "JSON"
CHUNK_BIN = 0x004E4942  # "BIN\0"
_FLOAT, _UINT16, _UINT32 = 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_TRIANGLES = 4


def write_glb(path: str | os.PathLike, mesh: MeshAsset) -> list[Path]:
    """Write a mesh as a self-contained GLB file, atomically.

    Args:
        path: the ``.glb`` file.
        mesh: the mesh in the object frame (metres); each part's material, UVs, texture and
            vertex colours as described in the module docstring.

    Returns:
        ``[path]``.

    Raises:
        InputError: a malformed part, a texture without UVs, or an unwritable folder.
    """
    data = glb_bytes(mesh)
    write_files_atomic({Path(path): data})
    return [Path(path)]


def glb_bytes(mesh: MeshAsset) -> bytes:
    """The GLB file's bytes (see the module docstring).

    Raises:
        InputError: a malformed part or a texture without UVs.
    """
    parts = mesh_part_arrays(mesh)
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

    def add_primitive(part: PartArrays, material: int) -> dict:
        index_type = np.uint16 if len(part.verts) < 65535 else np.uint32
        indices = add_accessor(part.faces.reshape(-1).astype(index_type), "SCALAR", _ELEMENT_ARRAY_BUFFER, True)
        attributes = {
            "POSITION": add_accessor(part.verts, "VEC3", _ARRAY_BUFFER, bounds=True),
            "NORMAL": add_accessor(part.normals, "VEC3", _ARRAY_BUFFER),
        }
        if part.uv is not None:
            uv_gltf = np.stack([part.uv[:, 0], 1.0 - part.uv[:, 1]], axis=1).astype(np.float32)  # origin top-left
            attributes["TEXCOORD_0"] = add_accessor(uv_gltf, "VEC2", _ARRAY_BUFFER)
        if part.untextured_colors is not None:
            attributes["COLOR_0"] = add_accessor(srgb_to_linear(part.untextured_colors), "VEC3", _ARRAY_BUFFER)
        return {"attributes": attributes, "indices": indices, "material": material, "mode": _TRIANGLES}

    meshes = [{"primitives": [add_primitive(part, i)]} for i, part in enumerate(parts)]
    materials = [_material_json(part.material) for part in parts]
    gltf: dict = {
        "asset": {"version": "2.0", "generator": f"fourview {fourview.__version__}"},
        "scene": 0,
        "scenes": [{"nodes": list(range(len(parts)))}],
        "nodes": [{"mesh": i, "name": part.material.name} for i, part in enumerate(parts)],
        "meshes": meshes,
        "materials": materials,
    }
    textured = [(part, material) for part, material in zip(parts, materials) if part.texture is not None]
    if textured:
        gltf["images"] = []
        gltf["samplers"] = [
            {
                "magFilter": _LINEAR,
                "minFilter": _LINEAR_MIPMAP_LINEAR,
                "wrapS": _CLAMP_TO_EDGE,
                "wrapT": _CLAMP_TO_EDGE,
            }
        ]
        gltf["textures"] = []
        for index, (part, material) in enumerate(textured):
            gltf["images"].append({"bufferView": add_view(encode_png(part.texture), None), "mimeType": "image/png"})
            gltf["textures"].append({"sampler": 0, "source": index})
            material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": index, "texCoord": 0}
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


def _material_json(material: Material) -> dict:
    pbr = {
        "baseColorFactor": [float(c) for c in material.base_color],
        "metallicFactor": float(material.metallic),
        "roughnessFactor": float(material.roughness),
    }
    return {"name": material.name, "pbrMetallicRoughness": pbr, "doubleSided": False}


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
