"""Errors that reach the user.

`InputError` is raised for anything the user gave us that we cannot use (a missing file, an
unknown format, an empty mesh, a bad setting). The command line prints its message on one line
and exits with status 2; library callers can catch it (it is a `ValueError`).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a file, a format or a setting we cannot use. One-line message."""


class EmptySurfaceError(InputError):
    """A field without a surface inside the unit cube: nothing to extract."""
