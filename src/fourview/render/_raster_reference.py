"""Pure-torch reference rasteriser: dense, slow, obviously correct; for tests on small images.

Every triangle is evaluated at every pixel with the homogeneous edge functions of
`fourview.render._raster_cpu` (same coverage, tie and depth rules), without bounding boxes, fast
paths or clipping: those are what the fast kernel adds and what comparing the two tests.
"""

from __future__ import annotations

import torch


def rasterize_reference(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """Rasterise like `fourview.render.rasterize` (instanced mode), in float64.

    Args:
        pos: [B, V, 4] clip-space positions.
        tri: [F, 3] vertex indices.
        resolution: (H, W).

    Returns:
        [B, H, W, 4] float64 (u, v, z/w, triangle_id + 1), zero where empty, row 0 at clip y = -1.
        Equal depths keep the lower triangle index.
    """
    height, width = resolution
    px = (torch.arange(width, dtype=torch.float64) + 0.5) / width * 2.0 - 1.0  # [W]
    py = (torch.arange(height, dtype=torch.float64) + 0.5) / height * 2.0 - 1.0  # [H]
    py, px = torch.meshgrid(py, px, indexing="ij")  # [H, W]
    out = torch.zeros(pos.shape[0], height, width, 4, dtype=torch.float64)
    for b in range(pos.shape[0]):
        best = torch.full((height, width), torch.inf, dtype=torch.float64)
        for f in range(tri.shape[0]):
            v = pos[b, tri[f].long()].to(torch.float64)  # [3, 4]
            x, y, z, w = v.unbind(-1)  # [3]
            n = torch.stack(
                [torch.linalg.cross(v[(i + 1) % 3, [0, 1, 3]], v[(i + 2) % 3, [0, 1, 3]]) for i in range(3)]
            )  # [3, 3] (nx, ny, nw) per edge
            det = float(v[0, [0, 1, 3]] @ n[0])
            if det == 0.0 or det != det or abs(det) == float("inf"):
                continue
            if det < 0:
                n, det = -n, -det
            e = n[:, 0, None, None] * px + n[:, 1, None, None] * py + n[:, 2, None, None]  # [3, H, W]
            tie = (n[:, 0] > 0) | ((n[:, 0] == 0) & (n[:, 1] > 0))  # [3]
            inside = ((e > 0) | ((e == 0) & tie[:, None, None])).all(0)  # [H, W]
            zw = (e * z[:, None, None]).sum(0) / det
            draw = inside & (zw >= -1) & (zw <= 1) & (zw < best)
            s = e.sum(0)
            best = torch.where(draw, zw, best)
            out[b, ..., 0] = torch.where(draw, e[0] / s, out[b, ..., 0])
            out[b, ..., 1] = torch.where(draw, e[1] / s, out[b, ..., 1])
            out[b, ..., 2] = torch.where(draw, zw, out[b, ..., 2])
            out[b, ..., 3] = torch.where(draw, float(f + 1), out[b, ..., 3])
    return out
