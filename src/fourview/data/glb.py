"""Binary glTF files of `MeshAsset`s through trimesh, for the synthetic world's objects.

A stop-gap below the export stage (which `fourview.data` may not import): a floor-level GLB
writer will replace it.
"""

from __future__ import annotations

import os

import numpy as np
import trimesh
from PIL import Image
from trimesh.visual.material import PBRMaterial
from trimesh.visual.texture import TextureVisuals

from fourview.atomic import write_bytes_atomic
from fourview.mesh import MeshAsset


def export_glb(asset: MeshAsset, path: str | os.PathLike) -> None:
    """Write an asset as binary glTF: one node per part, PBR material with a base colour texture.

    Every part needs a texture and UVs (as `fourview.data.synthetic.build_asset` makes them). The
    bytes are a function of the asset alone (no time stamps), so a seed gives the same file.
    """
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
    write_bytes_atomic(path, scene.export(file_type="glb"))
