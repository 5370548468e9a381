"""Loading textured 3D assets into `fourview.mesh.MeshAsset`.

One entry point, `load_asset`, reads a file (or a Google Scanned Objects folder) with trimesh,
flattens its scene graph, converts materials and colours to the conventions of `fourview.mesh`,
turns the asset so that its up axis is +Y, and normalises it (docs/conventions.md).

Formats
    ``.obj`` (+ ``.mtl`` + texture images), ``.gltf`` / ``.glb`` (every mesh node, node
    transforms applied), ``.ply`` / ``.off`` / ``.stl`` (vertex or face colours when present), and
    a Google Scanned Objects (GSO) folder ``DIR/meshes/model.obj`` with its texture in
    ``DIR/materials/textures/texture.png``.

Conversions (what trimesh gives, and what we make of it)
    - Texture images become float32 sRGB arrays in [0, 1], row 0 at the top, [H, W, 3], or
      [H, W, 4] when the image has an alpha channel.
    - UVs follow the OBJ convention (v grows upwards). trimesh already flips glTF's ``v``
      (``v_obj = 1 - v_gltf``); OBJ/PLY UVs are taken as they are.
    - glTF ``baseColorFactor`` is linear; trimesh stores it as uint8 RGBA (0-255, no gamma), so we
      divide by 255 (a quantisation of at most 0.5/255). glTF ``metallicFactor`` and
      ``roughnessFactor`` default to 1 (the glTF default) when absent; when a metallic-roughness
      texture is present, the factor is multiplied by the mean of the texture's blue (metallic)
      or green (roughness) channel, since `fourview.mesh.Material` holds scalars only.
    - glTF ``COLOR_0`` is linear by the glTF specification: it is converted to sRGB with
      `fourview.mesh.linear_to_srgb`. OBJ/PLY/OFF vertex colours are taken as sRGB. Vertex alpha
      is dropped. Face colours (PLY/OFF) become vertex colours by giving each face its own
      vertices.
    - OBJ/MTL: ``Kd`` is a linear colour (as Blender writes and reads it). When ``map_Kd`` loads,
      the base colour's RGB is 1 and the texture alone gives the colour (``Kd`` is ignored, as
      Blender's importer does; Blender-written MTLs carry a default ``Kd 0.8`` next to the
      texture). When the texture is missing, a warning names it and ``Kd`` is the colour. ``d``
      (or ``1 - Tr``) is the base colour's alpha. ``Pm`` / ``Pr`` give metallic / roughness;
      without ``Pr``, roughness is ``1 - sqrt(Ns / 1000)`` (Blender's mapping), else 0.8.
    - Texture references that are wrong in the file are searched for: as written, by file name
      next to the MTL/glTF, in a ``textures/`` folder beside it, in GSO's
      ``../materials/textures/``, and case-insensitively by file name next to the MTL.
    - Vertices stay as the file splits them (trimesh splits OBJ vertices per distinct
      position/UV/normal triple; glTF and STL as stored): `MeshPart` carries no normals, so the
      splits are what keeps authored hard edges hard for a renderer that averages face normals
      over shared vertices. Vertices that no face uses are dropped.

Up axis
    ``up_axis`` names the asset's up direction; `up_axis_matrix` rotates it onto +Y with a proper
    rotation (no mirroring). For ``"z"``: ``(x, y, z) -> (x, z, -y)``, i.e. -90 degrees about X,
    so a Z-up asset whose front faces -Y (Blender's convention) ends with its front at +Z, the
    object frame's front. See `up_axis_matrix` for the other axes.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from fourview.errors import InputError
from fourview.mesh import Material, MeshAsset, MeshPart, linear_to_srgb

MESH_SUFFIXES: tuple[str, ...] = (".obj", ".gltf", ".glb", ".ply", ".off", ".stl")
"""File suffixes `load_asset` reads (case-insensitive); a GSO folder is read too."""

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tga", ".tif", ".tiff", ".webp", ".gif")

# MTL texture options and how many arguments each takes (MTL spec, "Options for texture map
# statements"); `-o`, `-s`, `-t` take 1 to 3 numbers, handled where they are parsed.
_MTL_MAP_OPTIONS = {
    "-blendu": 1,
    "-blendv": 1,
    "-bm": 1,
    "-boost": 1,
    "-cc": 1,
    "-clamp": 1,
    "-imfchan": 1,
    "-mm": 2,
    "-texres": 1,
    "-type": 1,
}
_MTL_VECTOR_OPTIONS = ("-o", "-s", "-t")


def load_asset(
    path: str | os.PathLike,
    up_axis: str = "y",
    normalize: bool = True,
    name: str | None = None,
) -> MeshAsset:
    """Load a textured mesh file or a Google Scanned Objects folder into the object frame.

    Args:
        path: an ``.obj`` / ``.gltf`` / ``.glb`` / ``.ply`` / ``.off`` / ``.stl`` file, or a GSO
            folder (``DIR/meshes/model.obj``, texture ``DIR/materials/textures/texture.png``).
        up_axis: the asset's up direction, one of ``"y"``, ``"z"``, ``"x"``, ``"-y"``, ``"-z"``,
            ``"-x"`` (a leading ``+`` is allowed); it is rotated onto +Y (`up_axis_matrix`).
            Scanned objects (YCB, GSO) are usually ``"z"``; glTF is ``"y"`` by specification.
        normalize: centre the bounding box at the origin and scale so that the farthest vertex is
            at distance 1 (after the up-axis rotation). When False, positions keep the file's
            units (rotated only).
        name: the asset's name; `asset_name(path)` when None.

    Returns:
        A `MeshAsset` with one `MeshPart` per (mesh node, material) of the file: verts [V, 3]
        float32 in the object frame (+Y up), faces [F, 3] int64, uv [V, 2] float32 (OBJ
        convention) or None, vertex_colors [V, 3] float32 sRGB or None, and a `Material` whose
        texture is float32 sRGB [H, W, 3 or 4], row 0 at the top.

    Raises:
        InputError: the path does not exist, has an unsupported format, cannot be parsed, holds
            no triangle faces, has non-finite positions, or ``up_axis`` is unknown.

    Warns:
        UserWarning: a texture image or material library named by the file is missing (the
            material's colour is used instead).
    """
    path = Path(path)
    rotation = up_axis_matrix(up_axis)
    mesh_path = _mesh_file(path)
    messages: list[str] = []
    suffix = mesh_path.suffix.lower()
    if suffix == ".obj":
        parts = _load_obj(mesh_path, messages)
    else:
        parts = _load_trimesh_parts(mesh_path, suffix, messages)
    if not parts or sum(len(p.faces) for p in parts) == 0:
        raise InputError(f"no triangle faces in {mesh_path}")
    for part in parts:
        if not np.isfinite(part.verts).all():
            raise InputError(f"non-finite vertex positions in {mesh_path}")
    for message in messages:
        warnings.warn(message, stacklevel=2)

    asset = MeshAsset(name=asset_name(path) if name is None else name, parts=tuple(parts))
    matrix = rotation
    if normalize:
        matrix = normalization_matrix(asset.transformed(rotation), source=mesh_path) @ rotation
    if np.allclose(matrix, np.eye(4)):
        return asset
    return asset.transformed(matrix)  # float64 arithmetic, one float32 rounding


def asset_name(path: str | os.PathLike) -> str:
    """The name of an asset: the folder name for a GSO folder (or its ``meshes/model.obj``), else the file stem."""
    path = Path(path)
    if path.is_dir():
        return path.resolve().name
    if path.stem.lower() == "model" and path.parent.name == "meshes":
        return path.resolve().parent.parent.name
    return path.stem


def up_axis_matrix(up_axis: str) -> np.ndarray:
    """The rotation that turns an asset's up axis onto +Y, float64 [4, 4] (determinant +1).

    ====== ============================ ==================== ===================================
    up     (x, y, z) becomes            rotation             front (+Z in the object frame) was
    ====== ============================ ==================== ===================================
    y      (x, y, z)                    none                 +Z
    z      (x, z, -y)                   -90 deg about X      -Y (Blender / Z-up convention)
    -z     (x, -z, y)                   +90 deg about X      +Y
    x      (-y, x, z)                   +90 deg about Z      +Z
    -x     (y, -x, z)                   -90 deg about Z      +Z
    -y     (-x, -y, z)                  180 deg about Z      +Z
    ====== ============================ ==================== ===================================

    Args:
        up_axis: ``"y"``, ``"z"``, ``"x"``, ``"-y"``, ``"-z"`` or ``"-x"``; case and a leading
            ``+`` are ignored.

    Raises:
        InputError: for any other value.
    """
    key = str(up_axis).strip().lower().removeprefix("+")
    if key == "y":
        rows = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    elif key == "z":
        rows = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]
    elif key == "-z":
        rows = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
    elif key == "x":
        rows = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    elif key == "-x":
        rows = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]
    elif key == "-y":
        rows = [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]
    else:
        raise InputError(f"unknown up axis {up_axis!r}: expected one of y, z, x, -y, -z, -x")
    matrix = np.eye(4)
    matrix[:3, :3] = rows
    return matrix


def normalization_matrix(asset: MeshAsset, source: str | os.PathLike | None = None) -> np.ndarray:
    """The similarity that centres the asset's bounding box at the origin and puts its farthest vertex at distance 1.

    Args:
        asset: the asset, in any frame.
        source: file named in the error message, if any.

    Returns:
        float64 [4, 4]: uniform scale times translation (no rotation).

    Raises:
        InputError: the asset has no vertices or all its vertices coincide.
    """
    where = f" in {source}" if source is not None else f" in asset {asset.name!r}"
    if asset.num_verts == 0:
        raise InputError(f"no vertices{where}")
    verts = np.concatenate([p.verts for p in asset.parts], axis=0).astype(np.float64)  # [V, 3]
    centre = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
    radius = float(np.linalg.norm(verts - centre, axis=1).max())
    if not radius > 0.0 or not math.isfinite(radius):
        raise InputError(f"the mesh has zero extent (all vertices coincide){where}")
    matrix = np.eye(4)
    matrix[:3, :3] /= radius
    matrix[:3, 3] = -centre / radius
    return matrix


# ---------------------------------------------------------------------------------------------
# Paths and resolving referenced files


def _mesh_file(path: Path) -> Path:
    """The mesh file to read for ``path`` (a file, or a GSO folder's ``meshes/model.obj``)."""
    if path.is_dir():
        model = path / "meshes" / "model.obj"
        if not model.is_file():
            raise InputError(f"{path} is a folder but not a Google Scanned Objects folder (no meshes/model.obj)")
        return model
    if not path.exists():
        raise InputError(f"asset file not found: {path}")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise InputError(
            f"unsupported asset format {path.suffix or '(no suffix)'!r} for {path}: expected "
            f"{', '.join(MESH_SUFFIXES)} or a Google Scanned Objects folder"
        )
    if path.stat().st_size == 0:
        raise InputError(f"empty asset file: {path}")
    return path


def _find_referenced(base: Path, reference: str) -> Path | None:
    """Find a file that ``reference`` (as written in an MTL/OBJ/glTF next to ``base``) points at.

    Tried in order: as written; its file name in ``base``; in ``base/textures``; in GSO's
    ``base/../materials/textures``; its file name matched case-insensitively in ``base``.
    """
    written = reference.strip().strip('"').replace("\\", "/")
    if not written:
        return None
    file_name = written.rsplit("/", 1)[-1]
    candidates = [
        Path(written) if os.path.isabs(written) else base / written,
        base / file_name,
        base / "textures" / file_name,
        base.parent / "materials" / "textures" / file_name,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    try:
        lowered = file_name.lower()
        for entry in base.iterdir():
            if entry.name.lower() == lowered and entry.is_file():
                return entry
    except OSError:
        pass
    return None


class _Resolver(trimesh.resolvers.Resolver):
    """trimesh resolver that finds files with `_find_referenced` and records the ones it misses.

    trimesh 5's own `FilePathResolver` refuses references outside the file's folder (such as
    ``../textures/a.png``) and gives up on wrong paths; this one searches, and can also serve
    fixed bytes for a name (the OBJ loader uses that to hand trimesh all ``mtllib`` files at once).
    """

    def __init__(self, base: Path, skip_images: bool = False, served: dict[str, bytes] | None = None):
        self.base = base
        self.skip_images = skip_images
        self.served = dict(served or {})
        self.missing: list[str] = []

    def get(self, name: str) -> bytes:
        key = name.strip()
        if key in self.served:
            return self.served[key]
        if self.skip_images and key.lower().endswith(_IMAGE_SUFFIXES):
            raise FileNotFoundError(name)  # textures are read by _load_obj itself
        found = _find_referenced(self.base, key)
        if found is None:
            self.missing.append(key)
            raise FileNotFoundError(name)
        return found.read_bytes()

    def write(self, name, data):  # pragma: no cover - loading never writes
        raise NotImplementedError("a loading resolver does not write")

    def keys(self):  # pragma: no cover - not used by the loaders we call
        return iter(())

    def namespaced(self, namespace: str) -> _Resolver:  # pragma: no cover - zip/3mf only
        return _Resolver(self.base / namespace, self.skip_images)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _load_scene(mesh_path: Path, resolver: _Resolver) -> trimesh.Scene:
    """`trimesh.load_scene` (the non-deprecated ``trimesh.load(force=None)``) with errors as InputError."""
    try:
        with open(mesh_path, "rb") as f:
            return trimesh.load_scene(
                f, file_type=mesh_path.suffix.lower().lstrip("."), resolver=resolver, process=False
            )
    except InputError:
        raise
    except Exception as error:  # trimesh raises anything from ValueError to struct.error
        raise InputError(f"cannot read {mesh_path}: {_one_line(error)}") from error


# ---------------------------------------------------------------------------------------------
# Images


def _image_to_array(image: Image.Image) -> np.ndarray:
    """PIL image -> float32 [H, W, 3] or [H, W, 4] in [0, 1], row 0 at the top (alpha kept)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        scale = 1.0 if mode == "F" else 65535.0
        grey = np.clip(np.asarray(image, dtype=np.float32) / scale, 0.0, 1.0)  # [H, W]
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    array = np.asarray(image).astype(np.float32)  # [H, W, C] uint8 -> float32
    array *= 1.0 / 255.0
    return array


def _read_image(path: Path, cache: dict) -> np.ndarray | None:
    """Read a texture file, or None if PIL cannot decode it."""
    key = ("file", str(path))
    if key not in cache:
        try:
            with Image.open(path) as image:
                image.load()
                cache[key] = _image_to_array(image)
        except (OSError, ValueError, Image.DecompressionBombError):
            cache[key] = None
    return cache[key]


def _pil_to_array(image: Image.Image, cache: dict) -> np.ndarray | None:
    key = ("pil", id(image))
    if key not in cache:
        try:
            image.load()
            cache[key] = (image, _image_to_array(image))  # keep the image alive: its id is the key
        except (OSError, ValueError):
            cache[key] = (image, None)
    return cache[key][1]


# ---------------------------------------------------------------------------------------------
# OBJ + MTL


@dataclass(frozen=True)
class _MtlMaterial:
    """One ``newmtl`` block of an MTL file, as written."""

    name: str
    kd: tuple[float, float, float] | None = None
    dissolve: float | None = None
    map_kd: str | None = None
    ns: float | None = None
    pr: float | None = None
    pm: float | None = None


def _map_file_name(tokens: list[str]) -> str | None:
    """The file name of an MTL ``map_*`` statement, skipping texture options like ``-s 1 1 1``."""
    i = 0
    while i < len(tokens) and tokens[i].startswith("-") and len(tokens) - i > 1:
        option = tokens[i].lower()
        i += 1
        if option in _MTL_VECTOR_OPTIONS:
            taken = 0
            while taken < 3 and i < len(tokens) - 1 and _is_float(tokens[i]):
                i += 1
                taken += 1
        else:
            i += _MTL_MAP_OPTIONS.get(option, 1)
    name = " ".join(tokens[i:]).strip()
    return name or None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None  # e.g. "Kd spectral file.rfl"


def _parse_mtl(text: str) -> dict[str, _MtlMaterial]:
    """Parse MTL text into materials by name (the fields `_obj_material` uses)."""
    materials: dict[str, _MtlMaterial] = {}
    current: dict | None = None
    for line in text.splitlines():
        tokens = line.strip().split()
        if len(tokens) < 2 or tokens[0].startswith("#"):
            continue
        key, args = tokens[0].lower(), tokens[1:]
        if key == "newmtl":
            current = {"name": " ".join(args)}
            materials[current["name"]] = _MtlMaterial(**current)
            continue
        if current is None:
            continue
        values = _floats([a for a in args if a.lower() != "-halo"])
        if key == "kd" and values:
            current["kd"] = tuple((values * 3)[:3]) if len(values) == 1 else tuple(values[:3])
        elif key == "d" and values:
            current["dissolve"] = values[-1]  # "d -halo 0.5" ends with the value too
        elif key == "tr" and values and "dissolve" not in current:
            current["dissolve"] = 1.0 - values[0]
        elif key == "map_kd":
            current["map_kd"] = _map_file_name(args)
        elif key in ("ns", "pr", "pm") and values:
            current[key] = values[0]
        materials[current["name"]] = _MtlMaterial(**current)
    return materials


def _obj_material(
    entry: _MtlMaterial | None, mtl_dir: Path, obj_path: Path, cache: dict, messages: list[str]
) -> Material:
    """A `Material` from an MTL entry, reading its ``map_Kd`` texture (see the module docstring)."""
    if entry is None:
        return Material()
    texture = None
    if entry.map_kd is not None:
        found = _find_referenced(mtl_dir, entry.map_kd)
        if found is None:
            messages.append(
                f"texture file {entry.map_kd!r} of material {entry.name!r} in {obj_path} not found; "
                "using the material's Kd colour"
            )
        else:
            texture = _read_image(found, cache)
            if texture is None:
                messages.append(
                    f"cannot decode texture {found} of material {entry.name!r}; using the material's Kd colour"
                )
    rgb = (1.0, 1.0, 1.0) if texture is not None or entry.kd is None else entry.kd
    alpha = 1.0 if entry.dissolve is None else entry.dissolve
    if entry.pr is not None:
        roughness = entry.pr
    elif entry.ns is not None:
        roughness = 1.0 - math.sqrt(min(max(entry.ns, 0.0), 1000.0) / 1000.0)
    else:
        roughness = Material.roughness
    return Material(
        name=entry.name,
        base_color=tuple(float(np.clip(c, 0.0, 1.0)) for c in (*rgb, alpha)),
        texture=texture,
        metallic=float(np.clip(entry.pm if entry.pm is not None else 0.0, 0.0, 1.0)),
        roughness=float(np.clip(roughness, 0.0, 1.0)),
    )


_OBJ_VERTEX = re.compile(rb"^v[ \t]+([^\r\n]*)", re.MULTILINE)


def _obj_vertex_colors(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Positions float64 [N, 3] and sRGB colours float32 [N, 3] of ``v x y z r g b`` lines, or None without colours."""
    first = _OBJ_VERTEX.search(data)
    if first is None or len(first.group(1).split()) < 6:
        return None
    try:
        values = np.array([line.split()[:6] for line in _OBJ_VERTEX.findall(data)], dtype=np.float64)  # [N, 6]
    except ValueError:  # rows of different lengths: not every vertex has a colour
        return None
    colors = values[:, 3:6]
    if colors.max() > 1.0:  # some writers use 0-255
        colors = colors / 255.0
    return values[:, :3], np.clip(colors, 0.0, 1.0).astype(np.float32)


def _colors_at(positions: np.ndarray, table_positions: np.ndarray, table_colors: np.ndarray) -> np.ndarray | None:
    """Colours [V, 3] of the first table row at each position (exact float64 match), or None if one is missing."""
    n = len(table_positions)
    _, inverse = np.unique(np.concatenate([table_positions, positions]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    owner = np.full(inverse.max() + 1, -1, dtype=np.int64)
    owner[inverse[:n][::-1]] = np.arange(n)[::-1]  # reversed assignment: the first row wins
    index = owner[inverse[n:]]
    return None if (index < 0).any() else table_colors[index]


_MTLLIB = re.compile(rb"^[ \t]*mtllib[ \t]+(.+?)[ \t]*\r?$", re.MULTILINE)


def _load_obj(obj_path: Path, messages: list[str]) -> list[MeshPart]:
    """Read an OBJ: geometry and UVs through trimesh, materials from our own MTL parse."""
    try:
        data = obj_path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {obj_path}: {_one_line(error)}") from error
    lines = [m.group(1).decode("utf-8", "replace").strip() for m in _MTLLIB.finditer(data)]
    mtl_texts: list[tuple[Path, str]] = []
    for line in lines:
        # "mtllib a.mtl b.mtl" may name several files; a name with spaces is tried whole first.
        names = [line] if _find_referenced(obj_path.parent, line) else line.split()
        for mtl_name in names:
            found = _find_referenced(obj_path.parent, mtl_name)
            if found is None:
                messages.append(f"material library {mtl_name!r} of {obj_path} not found; using default materials")
                continue
            mtl_texts.append((found, found.read_text(encoding="utf-8", errors="replace")))
    mtl: dict[str, tuple[_MtlMaterial, Path]] = {}
    for mtl_file, text in mtl_texts:
        for key, entry in _parse_mtl(text).items():
            mtl.setdefault(key, (entry, mtl_file.parent))
    # trimesh reads only the first mtllib line: serve it every library we found, concatenated,
    # so that it names every material; it must not read textures (we do, with our own search).
    served = {lines[0]: "\n".join(t for _, t in mtl_texts).encode()} if lines else {}
    resolver = _Resolver(obj_path.parent, skip_images=True, served=served)
    scene = _load_scene(obj_path, resolver)
    # trimesh drops "v x y z r g b" colours of a mesh that has UVs or a material: find them again.
    vertex_table = _obj_vertex_colors(data)

    cache: dict = {}
    materials: dict[str, Material] = {}
    parts = []
    for geom, matrix in _scene_meshes(scene):
        material = Material()
        visual = geom.visual
        mat_name = getattr(getattr(visual, "material", None), "name", None)
        if isinstance(visual, trimesh.visual.texture.TextureVisuals) and mat_name in mtl:
            if mat_name not in materials:
                entry, mtl_dir = mtl[mat_name]
                materials[mat_name] = _obj_material(entry, mtl_dir, obj_path, cache, messages)
            material = materials[mat_name]
        colors = None
        if vertex_table is not None:  # exact values (trimesh's ColorVisuals would round to uint8)
            colors = _colors_at(np.asarray(geom.vertices, dtype=np.float64), *vertex_table)
        part = _part_from_geometry(geom, material, False, obj_path, messages, colors=colors)
        if part is not None:
            parts.append(part.transformed(matrix) if not np.allclose(matrix, np.eye(4)) else part)
    return parts


# ---------------------------------------------------------------------------------------------
# glTF / GLB / PLY / OFF / STL


def _gltf_header(mesh_path: Path) -> dict | None:
    """The JSON of a ``.gltf`` or the JSON chunk of a ``.glb``, or None if it cannot be read."""
    try:
        if mesh_path.suffix.lower() == ".gltf":
            return json.loads(mesh_path.read_text(encoding="utf-8"))
        with open(mesh_path, "rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:4] != b"glTF":
                return None
            length, kind = struct.unpack("<II", head[12:20])
            if kind != 0x4E4F534A:  # "JSON"
                return None
            return json.loads(f.read(length).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _base_color_images(header: dict | None) -> set[str]:
    """URIs of the images used as ``baseColorTexture`` in a glTF header."""
    if not header:
        return set()
    try:
        textures, images = header.get("textures", []), header.get("images", [])
        uris = set()
        for material in header.get("materials", []):
            ref = material.get("pbrMetallicRoughness", {}).get("baseColorTexture")
            if ref is None:
                continue
            source = textures[ref["index"]].get("source")
            if source is not None and "uri" in images[source]:
                uris.add(images[source]["uri"].strip())
        return uris
    except (KeyError, IndexError, TypeError, AttributeError):
        return set()


def _load_trimesh_parts(mesh_path: Path, suffix: str, messages: list[str]) -> list[MeshPart]:
    """Read glTF/GLB/PLY/OFF/STL through trimesh, flattening the scene graph."""
    resolver = _Resolver(mesh_path.parent)
    scene = _load_scene(mesh_path, resolver)
    is_gltf = suffix in (".gltf", ".glb")
    if resolver.missing:
        base_color_uris = _base_color_images(_gltf_header(mesh_path)) if is_gltf else set()
        for name in dict.fromkeys(resolver.missing):
            if name in base_color_uris:
                messages.append(
                    f"texture file {name!r} of {mesh_path} not found; using the material's base colour factor"
                )
            elif name.lower().endswith(_IMAGE_SUFFIXES):
                messages.append(f"texture file {name!r} of {mesh_path} not found; ignored")
    cache: dict = {}
    materials: dict[int, Material] = {}
    converted: dict[int, MeshPart | None] = {}
    parts = []
    for geom, matrix in _scene_meshes(scene):
        if id(geom) not in converted:  # one geometry instanced by several nodes converts once
            source_material = getattr(geom.visual, "material", None)
            material = Material()
            if source_material is not None and isinstance(geom.visual, trimesh.visual.texture.TextureVisuals):
                key = id(source_material)
                if key not in materials:
                    materials[key] = _trimesh_material(source_material, cache)
                material = materials[key]
            converted[id(geom)] = _part_from_geometry(
                geom, material, linear_colors=is_gltf, source=mesh_path, messages=messages
            )
        part = converted[id(geom)]
        if part is not None:
            parts.append(part.transformed(matrix) if not np.allclose(matrix, np.eye(4)) else part)
    return parts


def _channel_mean(image: Image.Image, channel: int) -> float | None:
    try:
        small = image.convert("RGB").reduce(max(1, max(image.size) // 256))  # mean of a 256 px copy
        return float(np.asarray(small, dtype=np.float32)[:, :, channel].mean() / 255.0)
    except (OSError, ValueError):
        return None


def _trimesh_material(source, cache: dict) -> Material:
    """Convert a trimesh `PBRMaterial` (glTF) or `SimpleMaterial` (textured PLY) to a `Material`."""
    name = str(getattr(source, "name", None) or "default")
    if isinstance(source, trimesh.visual.material.PBRMaterial):
        factor = source.baseColorFactor  # uint8 RGBA (trimesh quantises glTF's linear floats)
        base = (1.0, 1.0, 1.0, 1.0) if factor is None else tuple(float(c) / 255.0 for c in np.asarray(factor)[:4])
        image = source.baseColorTexture
        texture = _pil_to_array(image, cache) if image is not None else None
        metallic = 1.0 if source.metallicFactor is None else float(source.metallicFactor)
        roughness = 1.0 if source.roughnessFactor is None else float(source.roughnessFactor)
        mr_image = source.metallicRoughnessTexture
        if mr_image is not None:  # glTF: roughness in G, metallic in B
            mean_b, mean_g = _channel_mean(mr_image, 2), _channel_mean(mr_image, 1)
            metallic *= 1.0 if mean_b is None else mean_b
            roughness *= 1.0 if mean_g is None else mean_g
        return Material(
            name=name,
            base_color=base,
            texture=texture,
            metallic=float(np.clip(metallic, 0.0, 1.0)),
            roughness=float(np.clip(roughness, 0.0, 1.0)),
        )
    image = getattr(source, "image", None)
    texture = _pil_to_array(image, cache) if image is not None else None
    return Material(name=name, texture=texture)


# ---------------------------------------------------------------------------------------------
# trimesh geometry -> MeshPart


def _scene_meshes(scene: trimesh.Scene):
    """Yield (Trimesh, float64 [4, 4] world transform) for every mesh node of the scene graph."""
    for node in scene.graph.nodes_geometry:
        matrix, geom_name = scene.graph[node]
        geom = scene.geometry.get(geom_name)
        if isinstance(geom, trimesh.Trimesh):  # skip point clouds and paths
            yield geom, np.asarray(matrix, dtype=np.float64)


def _to_unit(colors: np.ndarray) -> np.ndarray:
    """Colour array of any dtype to float32 in [0, 1] (uint8 / uint16 normalised, floats clipped)."""
    colors = np.asarray(colors)
    if colors.dtype == np.uint8:
        return colors.astype(np.float32) / 255.0
    if colors.dtype == np.uint16:
        return colors.astype(np.float32) / 65535.0
    return np.clip(colors.astype(np.float32), 0.0, 1.0)


def _part_from_geometry(
    geom: trimesh.Trimesh,
    material: Material,
    linear_colors: bool,
    source: Path,
    messages: list[str],
    colors: np.ndarray | None = None,
) -> MeshPart | None:
    """Convert one trimesh geometry (in its own frame) to a `MeshPart`, or None if it has no faces.

    ``colors`` ([V, 3] float32 sRGB), when given, are the vertex colours (OBJ colours trimesh dropped).
    """
    verts = np.asarray(geom.vertices, dtype=np.float32)  # [V, 3]
    faces = np.asarray(geom.faces, dtype=np.int64).reshape(-1, 3)  # [F, 3]
    if len(faces) == 0 or len(verts) == 0:
        return None
    if faces.min() < 0 or faces.max() >= len(verts):
        raise InputError(f"face indices out of range in {source}")
    visual = geom.visual
    uv = None
    if isinstance(visual, trimesh.visual.texture.TextureVisuals):
        if visual.uv is not None and len(visual.uv) == len(verts):
            uv = np.asarray(visual.uv, dtype=np.float32)[:, :2]  # [V, 2]
        raw = visual.vertex_attributes.get("color") if hasattr(visual, "vertex_attributes") else None
        if colors is None and raw is not None and len(raw) == len(verts):
            colors = _to_unit(np.asarray(raw).reshape(len(verts), -1)[:, :3])  # glTF COLOR_0 with a material
    elif isinstance(visual, trimesh.visual.color.ColorVisuals) and colors is None:
        if visual.kind == "vertex":
            colors = _to_unit(visual.vertex_colors[:, :3])  # trimesh: uint8 RGBA
        elif visual.kind == "face":
            face_colors = _to_unit(visual.face_colors[:, :3])  # [F, 3]
            verts = verts[faces].reshape(-1, 3)  # [3F, 3]: each face gets its own corners
            faces = np.arange(len(verts), dtype=np.int64).reshape(-1, 3)
            colors = np.repeat(face_colors, 3, axis=0)  # [3F, 3]
    if colors is not None and linear_colors:
        colors = linear_to_srgb(colors)  # glTF COLOR_0 is linear; we store sRGB
    if material.texture is not None and uv is None:
        messages.append(f"a textured material {material.name!r} in {source} has no UV coordinates; texture dropped")
        material = replace(material, texture=None)
    return _compact(verts, faces, uv, colors, material)


def _compact(
    verts: np.ndarray, faces: np.ndarray, uv: np.ndarray | None, colors: np.ndarray | None, material: Material
) -> MeshPart:
    """A `MeshPart` without the vertices no face uses (order of the others kept)."""
    used = np.zeros(len(verts), dtype=bool)
    used[faces.ravel()] = True
    keep = np.flatnonzero(used)  # [K]
    remap = np.full(len(verts), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    return MeshPart(
        verts=np.ascontiguousarray(verts[keep], dtype=np.float32),
        faces=remap[faces],
        material=material,
        uv=None if uv is None else np.ascontiguousarray(uv[keep], dtype=np.float32),
        vertex_colors=None if colors is None else np.ascontiguousarray(colors[keep], dtype=np.float32),
    )
