"""fourview: text, a photo or four photos to a textured, game-ready 3D mesh.

Subpackages by stage: `mvgen` (multi-view generation), `recon` (triplane reconstruction),
`export` (meshes, textures, files), `data` (assets, synthetic world, dataset rendering,
filtering), and `render` (the differentiable rasteriser every stage draws with). The camera
convention lives in `fourview.cameras`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
