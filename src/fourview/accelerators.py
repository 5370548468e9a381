"""Optional GPU accelerators (nvdiffrast, kaolin, xformers): imported when present, never required.

A package that is installed but broken (built for another torch or CUDA, a missing shared
library) raises all kinds of exceptions on import, not only `ImportError`. Any of them means "not
available": the CPU path runs instead, and one warning per package says why.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType

logger = logging.getLogger(__name__)


@functools.cache
def optional_import(name: str) -> ModuleType | None:
    """The module ``name``, or None when it is missing or fails to import (warned once when broken)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):  # the package itself is not installed
            return None
        logger.warning("%s is installed but cannot be imported (%s); using the fallback path", name, error)
    except Exception as error:  # noqa: BLE001 - any failure of an optional extension means "absent"
        logger.warning("%s is installed but failed to import (%s: %s); using the fallback path", name,
                       type(error).__name__, " ".join(str(error).split())[:200])  # fmt: skip
    return None
