"""The fixed choices of the GSO benchmark protocol: its cameras, image sizes, point counts and thresholds.

Inputs are the four rig views (`fourview.cameras.orthogonal_rig`) at elevation 20. Novel views
are 24: elevations 0, 15 and 30 times 8 azimuths halfway between the inputs' and beside them
(22.5 + 45 k degrees), so no novel view repeats an input. Every camera has the rig's radius and
field of view (docs/conventions.md). Lengths are in the object frame (farthest vertex at 1)
unless a function says otherwise.
"""

from __future__ import annotations

from fourview.cameras import DEFAULT_ELEVATION_DEG, FOV_DEG, RADIUS, Camera, orthogonal_rig

INPUT_ELEVATION_DEG: float = DEFAULT_ELEVATION_DEG
"""Elevation of the four input views, degrees."""

NOVEL_ELEVATIONS_DEG: tuple[float, ...] = (0.0, 15.0, 30.0)
"""Elevations of the novel views, degrees."""

NOVEL_AZIMUTHS_DEG: tuple[float, ...] = tuple(22.5 + 45.0 * k for k in range(8))
"""Azimuths of the novel views, degrees: 22.5 + 45 k, offset from the inputs' 0/90/180/270."""

IMAGE_RESOLUTIONS: tuple[int, ...] = (128, 512)
"""Sides of the square images the image metrics are computed at, pixels."""

SURFACE_POINTS: int = 10_000
"""Points drawn over each surface for Chamfer distance and F-score."""

FSCORE_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.2)
"""Distance thresholds of the F-score, in the units of the frame the points are in."""

VOLUME_RESOLUTION: int = 64
"""Cells per side of the grid over the object cube [-1, 1]^3 that volume IoU is computed on."""


def input_cameras() -> list[Camera]:
    """The four input cameras: the rig at `INPUT_ELEVATION_DEG`, azimuths 0, 90, 180, 270 (grid order)."""
    return orthogonal_rig(INPUT_ELEVATION_DEG, RADIUS, FOV_DEG)


def novel_cameras() -> list[Camera]:
    """The 24 novel cameras, elevation-major: every azimuth of `NOVEL_AZIMUTHS_DEG` at 0, then at 15, then at 30."""
    return [Camera(az, el, RADIUS, FOV_DEG) for el in NOVEL_ELEVATIONS_DEG for az in NOVEL_AZIMUTHS_DEG]
