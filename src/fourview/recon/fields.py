"""What a reconstruction is, to everything downstream: a field over the object frame.

A `SurfaceField` gives a signed distance (negative inside, object-frame units) and a colour
(sRGB-encoded in [0, 1], as images) at any points of the object frame's cube [-1, 1]^3. The
export stage extracts meshes and bakes textures from any such field; the trained reconstructor's
triplane field and the analytic fields below are interchangeable there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SurfaceField(Protocol):
    """A signed distance and colour field over the object frame."""

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] object-frame points -> [N] signed distance (negative inside)."""
        ...

    def color(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] object-frame points -> [N, 3] sRGB colour in [0, 1]."""
        ...


@dataclass(frozen=True)
class SphereField:
    """A sphere of ``radius`` at ``center`` with colour bands along Y (a test and benchmark field).

    The colour is ``base`` modulated by ``0.5 + 0.5 * sin(frequency * pi * y)`` on the red channel,
    so orientation errors show.
    """

    radius: float = 0.6
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    frequency: float = 3.0

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        c = torch.tensor(self.center, dtype=xyz.dtype, device=xyz.device)
        return (xyz - c).norm(dim=-1) - self.radius

    def color(self, xyz: torch.Tensor) -> torch.Tensor:
        return _banded_color(xyz, self.frequency)


@dataclass(frozen=True)
class TorusField:
    """A torus around the Y axis (major radius ``major``, tube radius ``minor``) with colour bands."""

    major: float = 0.55
    minor: float = 0.22
    frequency: float = 3.0

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        ring = torch.sqrt(xyz[..., 0] ** 2 + xyz[..., 2] ** 2) - self.major
        return torch.sqrt(ring**2 + xyz[..., 1] ** 2) - self.minor

    def color(self, xyz: torch.Tensor) -> torch.Tensor:
        return _banded_color(xyz, self.frequency)


def _banded_color(xyz: torch.Tensor, frequency: float) -> torch.Tensor:
    """Smooth colour pattern: red varies with y, green with x, blue with z; all in [0.1, 0.9]."""
    r = 0.5 + 0.4 * torch.sin(frequency * math.pi * xyz[..., 1])
    g = 0.5 + 0.4 * torch.cos(frequency * math.pi * xyz[..., 0])
    b = 0.5 + 0.4 * torch.sin(frequency * math.pi * xyz[..., 2] + 1.0)
    return torch.stack([r, g, b], dim=-1)
