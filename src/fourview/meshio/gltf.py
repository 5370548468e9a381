"""Binary glTF 2.0 (GLB) writer, written by hand so that every field is ours to control.

The file holds one scene whose nodes are the mesh's parts: part ``i`` is node ``i`` (named after
its material), mesh ``i`` with one triangle primitive, and material ``i`` (metallic-roughness):

- Frame and units: the object frame (+Y up, front +Z, docs/conventions.md) is glTF's frame, so
  positions are written as they are; one object-frame unit is one metre.
- Attributes: ``POSITION`` (float32 VEC3, with the ``min`` / ``max`` the specification
  requires), ``NORMAL`` (float32 unit VEC3), ``TANGENT`` (float32 VEC4, with a normal map),
  ``TEXCOORD_0`` (float32 VEC2) and ``COLOR_0`` (float32 VEC3, only for a part without a
  texture). glTF's UV origin is the image's top-left, so ``v_gltf = 1 - v_obj``; ``COLOR_0``
  is linear by the specification, so sRGB vertex colours are linearised.
- Indices: ``uint16`` when every index of the part fits below 65535 (the primitive-restart value
  is avoided), else ``uint32``.
- Material: ``pbrMetallicRoughness`` with ``baseColorFactor`` (linear), ``metallicFactor``,
  ``roughnessFactor`` and, with a texture, ``baseColorTexture`` pointing at a PNG embedded in the
  binary chunk (one sampler for all: linear filtering with mipmaps, clamp-to-edge, as an atlas
  does not tile). A normal map is ``normalTexture``; an occlusion map is packed with the
  roughness and metallic factors into one occlusion-roughness-metallic PNG (R, G, B), used as
  both ``occlusionTexture`` and ``metallicRoughnessTexture`` (the factors are then 1).
- Placement (`fourview.mesh.Placement`): axes, units, height and pivot in the scene's ``extras``.
- Levels of detail: `glb_bytes` with ``lod_extension`` writes ``MSFT_lod``: the coarser levels are
  nodes outside the scene, listed (finest first) in the ``ids`` of the finest level's node; every
  level uses the same material, images stored once.
- Layout: a 12-byte header, a JSON chunk padded with spaces and a BIN chunk padded with zeros,
  both to 4 bytes; every buffer view starts on a 4-byte boundary. The BIN chunk holds every
  part's accessors in part order, then the images.

The file is written atomically (`fourview.atomic.write_files_atomic`).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import replace
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
MSFT_LOD = "MSFT_lod"


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


def glb_bytes(mesh: MeshAsset, lod_extension: bool = False, png_cache: dict | None = None) -> bytes:
    """The GLB file's bytes (see the module docstring).

    Args:
        mesh: the mesh; its ``lods`` are written only with ``lod_extension``.
        lod_extension: write every level of detail, the coarser ones as nodes outside the scene
            listed by ``MSFT_lod`` on the finest level's nodes (one node per part and level).
        png_cache: encoded images by texture, shared by several files of the same ``mesh`` (which
            must stay alive while the cache is used: its arrays' identities are the keys).

    Raises:
        InputError: a malformed part, a texture without UVs, or levels with different part counts.
    """
    levels = mesh.levels if lod_extension else (replace(mesh, lods=()),)
    if len({len(level.parts) for level in levels}) != 1:
        raise InputError("every level of detail needs as many parts as the finest level")
    writer = _GLBWriter({} if png_cache is None else png_cache)
    level_nodes = [[writer.add_part(part) for part in mesh_part_arrays(level)] for level in levels]
    gltf = writer.document(scene_nodes=level_nodes[0])
    if len(levels) > 1:
        gltf["extensionsUsed"] = [MSFT_LOD]
        for i, node in enumerate(level_nodes[0]):
            gltf["nodes"][node]["extensions"] = {MSFT_LOD: {"ids": [nodes[i] for nodes in level_nodes[1:]]}}
    if mesh.placement is not None:
        gltf["scenes"][0]["extras"] = mesh.placement.extras()
    return writer.pack(gltf)


class _GLBWriter:
    """Accumulates a GLB's buffer views, accessors, meshes, nodes, materials and textures.

    Each texture array is stored once however many parts use it (levels of detail share theirs):
    images and materials are keyed by the arrays' identities.
    """

    def __init__(self, png_cache: dict) -> None:
        self.png_cache = png_cache
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []
        self.meshes: list[dict] = []
        self.nodes: list[dict] = []
        self.materials: list[dict] = []
        self.images: list[dict] = []
        self.textures: list[dict] = []
        self._texture_of: dict[tuple, int] = {}
        self._material_of: dict[tuple, int] = {}
        self._keep: list[object] = []  # the arrays keyed by id(), alive until the file is packed

    def add_view(self, data: bytes, target: int | None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.blob.extend(data)
        self.views.append(view)
        return len(self.views) - 1

    def add_accessor(self, array: np.ndarray, kind: str, target: int, bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        component = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint16): _UINT16, np.dtype(np.uint32): _UINT32}[
            array.dtype
        ]
        accessor = {
            "bufferView": self.add_view(array.tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]) if kind != "SCALAR" else int(array.size),
            "type": kind,
        }
        if bounds:
            flat = array.reshape(accessor["count"], -1)
            cast = float if component == _FLOAT else int
            accessor["min"] = [cast(x) for x in flat.min(axis=0)]
            accessor["max"] = [cast(x) for x in flat.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def add_texture(self, key: tuple, image: np.ndarray) -> dict:
        """A texture reference to a [H, W, C] image in [0, 1], the image added once per ``key``."""
        if key not in self._texture_of:
            if key not in self.png_cache:
                self.png_cache[key] = encode_png(image)
            view = self.add_view(self.png_cache[key], None)
            self.images.append({"bufferView": view, "mimeType": "image/png"})
            self.textures.append({"sampler": 0, "source": len(self.images) - 1})
            self._texture_of[key] = len(self.textures) - 1
        return {"index": self._texture_of[key], "texCoord": 0}

    def add_material(self, part: PartArrays) -> int:
        material = part.material
        arrays = (part.texture, part.normal_map, part.occlusion)
        key = (id(material), *(id(a) for a in arrays))
        if key in self._material_of:
            return self._material_of[key]
        self._keep.extend(arrays)
        entry = _material_json(material)
        pbr = entry["pbrMetallicRoughness"]
        if part.texture is not None:
            pbr["baseColorTexture"] = self.add_texture(("color", id(part.texture)), part.texture)
        if part.normal_map is not None:
            entry["normalTexture"] = self.add_texture(("normal", id(part.normal_map)), part.normal_map)
        if part.occlusion is not None:
            # One occlusion-roughness-metallic image: R occlusion, G roughness, B metallic (glTF's
            # channels); the factors become 1 so that the texture alone gives the values.
            orm_key = ("orm", id(part.occlusion), float(material.roughness), float(material.metallic))
            orm = np.stack(
                [
                    part.occlusion,
                    np.full_like(part.occlusion, material.roughness),
                    np.full_like(part.occlusion, material.metallic),
                ],
                axis=-1,
            )
            reference = self.add_texture(orm_key, orm)
            pbr.update(metallicFactor=1.0, roughnessFactor=1.0, metallicRoughnessTexture=reference)
            entry["occlusionTexture"] = dict(reference)
        self.materials.append(entry)
        self._material_of[key] = len(self.materials) - 1
        return len(self.materials) - 1

    def add_part(self, part: PartArrays) -> int:
        """A node with a mesh of one primitive for ``part``; returns the node's index."""
        index_type = np.uint16 if len(part.verts) < 65535 else np.uint32
        indices = self.add_accessor(part.faces.reshape(-1).astype(index_type), "SCALAR", _ELEMENT_ARRAY_BUFFER, True)
        attributes = {
            "POSITION": self.add_accessor(part.verts, "VEC3", _ARRAY_BUFFER, bounds=True),
            "NORMAL": self.add_accessor(part.normals, "VEC3", _ARRAY_BUFFER),
        }
        if part.tangents is not None:
            attributes["TANGENT"] = self.add_accessor(part.tangents, "VEC4", _ARRAY_BUFFER)
        if part.uv is not None:
            uv_gltf = np.stack([part.uv[:, 0], 1.0 - part.uv[:, 1]], axis=1).astype(np.float32)  # origin top-left
            attributes["TEXCOORD_0"] = self.add_accessor(uv_gltf, "VEC2", _ARRAY_BUFFER)
        if part.untextured_colors is not None:
            attributes["COLOR_0"] = self.add_accessor(srgb_to_linear(part.untextured_colors), "VEC3", _ARRAY_BUFFER)
        primitive = {"attributes": attributes, "indices": indices, "material": self.add_material(part)}
        self.meshes.append({"primitives": [{**primitive, "mode": _TRIANGLES}]})
        self.nodes.append({"mesh": len(self.meshes) - 1, "name": part.material.name})
        return len(self.nodes) - 1

    def document(self, scene_nodes: list[int]) -> dict:
        """The glTF JSON of everything added, with one scene of ``scene_nodes``."""
        gltf: dict = {
            "asset": {"version": "2.0", "generator": f"fourview {fourview.__version__}"},
            "scene": 0,
            "scenes": [{"nodes": list(scene_nodes)}],
            "nodes": self.nodes,
            "meshes": self.meshes,
            "materials": self.materials,
        }
        if self.textures:
            gltf["images"] = self.images
            gltf["samplers"] = [
                {
                    "magFilter": _LINEAR,
                    "minFilter": _LINEAR_MIPMAP_LINEAR,
                    "wrapS": _CLAMP_TO_EDGE,
                    "wrapT": _CLAMP_TO_EDGE,
                }
            ]
            gltf["textures"] = self.textures
        return gltf

    def pack(self, gltf: dict) -> bytes:
        """The GLB bytes: header, JSON chunk, BIN chunk."""
        blob = self.blob
        blob.extend(b"\0" * (-len(blob) % 4))
        gltf["accessors"] = self.accessors
        gltf["bufferViews"] = self.views
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
