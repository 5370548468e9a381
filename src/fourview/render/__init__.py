"""Differentiable rendering: nvdiffrast-style rasteriser ops (`fourview.render.raster`)."""

from fourview.render.raster import (
    TopologyHash,
    antialias,
    antialias_construct_topology_hash,
    interpolate,
    rasterize,
    texture,
)

__all__ = [
    "TopologyHash",
    "antialias",
    "antialias_construct_topology_hash",
    "interpolate",
    "rasterize",
    "texture",
]
