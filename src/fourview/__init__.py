"""fourview: text, a photo or four photos to a textured, game-ready 3D mesh.

Subpackages by stage: `mvgen` (multi-view generation), `recon` (triplane reconstruction),
`export` (meshes, textures, files), `data` (assets, synthetic world, dataset rendering,
filtering), `evaluation` (benchmark protocols and metrics) and `render` (the differentiable
rasteriser every stage draws with). The camera convention lives in `fourview.cameras`.

The pipeline object and the values it passes along are exported here::

    from fourview import FourViewPipeline
    asset = FourViewPipeline.from_pretrained().text_to_3d("a red mug")
    asset.save("out/mug")
"""

__version__ = "0.1.0"

_EXPORTS = {
    "FourViewPipeline": "fourview.pipeline",
    "SamplingSettings": "fourview.pipeline",
    "ExportSettings": "fourview.pipeline",
    "FitSettings": "fourview.pipeline",
    "Asset": "fourview.asset",
    "PosedViews": "fourview.views",
    "InputError": "fourview.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    # Resolved on first use, so that `import fourview` (and `fourview --help`) does not import torch.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fourview' has no attribute {name!r}")
