"""The evaluation subset of real scans: a seeded rule on the object's name, the same in every folder.

An object is held out for evaluation when the first 8 bytes of ``sha256("fourview-gso-eval-v1:" +
name)``, read as a big-endian integer over 2**64, fall below `EVAL_FRACTION`. The rule needs no
list, so it applies unchanged to any folder of scans (``shared/data/gso`` holds 67 evaluation
objects of 300 under it) and no training run can pick up an evaluation object by accident:
`fourview data render --subset train` renders only the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

EVAL_SALT: str = "fourview-gso-eval-v1"
"""Prefix hashed with the name; changing it draws a new subset."""
EVAL_FRACTION: float = 0.2
"""Expected share of objects held out for evaluation."""


def is_evaluation_object(name: str) -> bool:
    """True when the object named ``name`` belongs to the evaluation subset (never trained on)."""
    digest = hashlib.sha256(f"{EVAL_SALT}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < EVAL_FRACTION


def split_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(train, evaluation)`` names, each sorted."""
    names = sorted(set(names))
    return [n for n in names if not is_evaluation_object(n)], [n for n in names if is_evaluation_object(n)]
