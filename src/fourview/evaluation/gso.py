"""Google Scanned Objects (GSO) for evaluation: finding objects in a folder, object lists, loading.

An object is a folder ``NAME/`` holding ``meshes/model.obj``; its MTL's ``map_Kd texture.png``
names a texture that lies in ``NAME/materials/textures/`` (the original release's layout) or
beside the OBJ. `fourview.data.assets.load_asset` finds it in either place. Scans are Z-up
(`GSO_UP_AXIS`) and are loaded into the object frame (+Y up, farthest vertex at 1).

Nothing here depends on particular names: any folder of GSO-layout objects works. The
evaluation subset is `fourview.data.splits`' seeded rule on the names, the same in every folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fourview.data.assets import load_asset
from fourview.data.splits import is_evaluation_object
from fourview.errors import InputError
from fourview.mesh import MeshAsset

GSO_UP_AXIS: str = "z"
"""The scans' up axis (`fourview.data.assets.up_axis_matrix`)."""


@dataclass(frozen=True)
class GsoObject:
    """One GSO-layout object.

    Attributes:
        name: the folder's name.
        folder: the object's folder (holding ``meshes/model.obj``).
    """

    name: str
    folder: Path

    @property
    def mesh_file(self) -> Path:
        return self.folder / "meshes" / "model.obj"


def find_gso_objects(root: str | os.PathLike) -> list[GsoObject]:
    """The GSO-layout objects in the folders directly under ``root``, sorted by name (hidden folders skipped).

    Raises:
        InputError: ``root`` is not a folder or holds no object.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"GSO root is not a folder: {root}")
    objects = [
        GsoObject(child.name, child)
        for child in sorted(root.iterdir())
        if child.is_dir() and not child.name.startswith(".") and (child / "meshes" / "model.obj").is_file()
    ]
    if not objects:
        raise InputError(f"no GSO objects (NAME/meshes/model.obj) in {root}")
    return objects


def read_object_list(path: str | os.PathLike) -> list[str]:
    """Object names from a text file: one per line; ``#`` starts a comment; blank lines are skipped.

    Raises:
        InputError: the file cannot be read, or names an object twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read object list {path}: {getattr(error, 'strerror', None) or error}") from None
    names: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name in seen:
            raise InputError(f"object list {path} names {name!r} twice (line {number})")
        seen.add(name)
        names.append(name)
    return names


def select_objects(objects: list[GsoObject], names: list[str]) -> list[GsoObject]:
    """The objects named in ``names``, in that order.

    Raises:
        InputError: a name has no object (the message lists up to five of them).
    """
    by_name = {o.name: o for o in objects}
    missing = [n for n in names if n not in by_name]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"{len(missing)} listed objects are not in the folder: {', '.join(missing[:5])}{more}")
    return [by_name[n] for n in names]


def evaluation_objects(objects: list[GsoObject]) -> list[GsoObject]:
    """The objects of the evaluation subset (`fourview.data.splits.is_evaluation_object`), never trained on."""
    return [o for o in objects if is_evaluation_object(o.name)]


def load_gso_object(obj: GsoObject, normalize: bool = True) -> MeshAsset:
    """The scan as a `MeshAsset` in the object frame (Z-up turned to +Y up; normalised unless ``normalize`` is False).

    Raises:
        InputError: the mesh cannot be read, or a part's texture was not found (a scan without its
            texture would be scored against wrong colours).
    """
    asset = load_asset(obj.folder, up_axis=GSO_UP_AXIS, normalize=normalize, name=obj.name)
    untextured = [part.material.name for part in asset.parts if part.material.texture is None]
    if untextured:
        raise InputError(
            f"GSO object {obj.name}: no texture found for material(s) {', '.join(untextured)} "
            f"(looked beside {obj.mesh_file.name} and in materials/textures/)"
        )
    return asset
