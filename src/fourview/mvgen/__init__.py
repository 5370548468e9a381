"""Stage 1: the multi-view generator (an SDXL-architecture pipeline drawing a 2x2 grid of views).

See docs/architecture.md; `MultiViewPipeline` is the entry point.
"""

from fourview.mvgen.pipeline import MultiViewOutput, MultiViewPipeline

__all__ = ["MultiViewOutput", "MultiViewPipeline"]
