"""Atomic writing: a file or a folder appears complete or not at all, with the user's umask.

Everything the package writes goes through here. A file is written to a temporary beside its
target (same folder, so the rename is atomic on one file system), flushed and synced, given the
mode an ordinary ``open`` would give it (``0o666 & ~umask``; ``mkstemp`` alone makes 0600), and
renamed over the target. A folder is assembled in a temporary folder beside it (``0o777 &
~umask``) and renamed into place.

Temporaries are named ``.NAME.fourview-tmp-PID-HOST-RANDOM``. A process killed with SIGKILL
leaves its temporaries behind; `remove_stale_temporaries` (called before every new temporary in
the same folder) deletes those of this host whose process is gone (another node sharing the
folder may still be writing its own).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from fourview.errors import InputError

TMP_MARK = ".fourview-tmp-"
"""What every temporary's name holds between the target's name and the owning process id."""


def current_umask() -> int:
    """The process's umask (read by setting and restoring it; Python before 3.13 has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host() -> str:
    """This machine's name, reduced to what is safe in a file name."""
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32] or "host"


def _temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}-{_host()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporaries in ``folder`` left by processes that no longer run; returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        name = entry.name
        if not name.startswith(".") or TMP_MARK not in name:
            continue
        fields = name.rsplit(TMP_MARK, 1)[1].split("-")
        try:
            pid = int(fields[0])
        except ValueError:
            continue
        if len(fields) == 3 and fields[1] != _host():
            continue  # another node's: its process ids mean nothing here
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def _check_folder(target: Path) -> None:
    if not target.parent.is_dir():
        raise InputError(f"cannot write {target}: folder {target.parent} does not exist")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s contents to (by any library); renamed over ``path`` on success.

    Raises:
        InputError: the folder is missing or not writable (nothing is left behind).
    """
    target = Path(path)
    _check_folder(target)
    remove_stale_temporaries(target.parent)
    tmp = _temporary_name(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary of {target}")
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    except OSError as error:
        raise InputError(f"cannot write {target}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_file_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` by calling ``write(f)`` on an open binary temporary, then rename it into place."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_file_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_files_atomic(files: dict[Path, bytes]) -> None:
    """Write several files so that none is touched unless all of them could be written.

    Every temporary is complete and synced before the first rename; a failure before that point
    removes the temporaries and leaves every target as it was.

    Raises:
        InputError: a folder is missing or not writable (nothing is left behind).
    """
    with contextlib.ExitStack() as stack:
        temps = []
        for target, data in files.items():
            tmp = stack.enter_context(_synced_temporary(Path(target), data))
            temps.append((tmp, Path(target)))
        try:
            for tmp, target in temps:
                os.replace(tmp, target)
        except OSError as error:
            raise InputError(f"cannot write {', '.join(map(str, files))}: {error.strerror or error}") from error


@contextlib.contextmanager
def _synced_temporary(target: Path, data: bytes) -> Iterator[Path]:
    _check_folder(target)
    tmp = _temporary_name(target)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        yield tmp
    except OSError as error:
        raise InputError(f"cannot write {target}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder to assemble ``path`` in; renamed to ``path`` when the block succeeds.

    An existing ``path`` is an error unless it is an empty folder, or ``overwrite``: then it is
    replaced as a whole (renamed aside, the new folder renamed in, the old one deleted), so two
    runs' files never mix. On an error nothing is left behind.

    Raises:
        InputError: ``path`` is a file, or a non-empty folder without ``overwrite``; the parent
            cannot be created or written.
    """
    target = Path(path)
    check_output_folder(target, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create {target.parent}: {error.strerror or error}") from error
    remove_stale_temporaries(target.parent)
    tmp = _temporary_name(target)
    try:
        tmp.mkdir(mode=0o700)
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        _replace_folder(tmp, target)
    except OSError as error:
        raise InputError(f"cannot write {target}: {error.strerror or error}") from error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_folder(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an output folder that would mix two runs (see `atomic_folder`) or cannot be written, before any work.

    Stale temporaries beside it (of a run killed before it finished) are removed.

    Raises:
        InputError: ``path`` is a file, a non-empty folder and not ``overwrite``, or its folder
            cannot be created or written.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(f"output folder is a file: {target}")
    if target.is_dir() and not overwrite and any(target.iterdir()):
        raise InputError(f"output folder {target} is not empty; choose another or pass --overwrite to replace it")
    check_writable(target.parent, target)
    remove_stale_temporaries(target.parent)


def check_output_file(path: str | os.PathLike) -> None:
    """Refuse an output file that is a folder or whose folder cannot be created or written, before any work.

    Raises:
        InputError: one line naming ``path``.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"output file is a folder: {target}")
    check_writable(target.parent, target)


def check_writable(folder: str | os.PathLike, target: str | os.PathLike | None = None) -> None:
    """Refuse a folder to write in that cannot be written, or created where it does not exist yet.

    Tried, not guessed (permissions, read-only and special file systems, root): a temporary folder
    is made in the nearest part of the path that exists, and removed at once.

    Args:
        folder: the folder files will be written in.
        target: what the message names (the file or folder the user gave), if not ``folder``.

    Raises:
        InputError: one line naming ``target`` or ``folder``.
    """
    folder = Path(folder)
    shown = folder if target is None else Path(target)
    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise InputError(f"cannot write {shown}: {base} is not a folder")
    probe = _temporary_name(base / "probe")
    try:
        probe.mkdir(mode=0o700)
        probe.rmdir()
    except OSError as error:
        raise InputError(f"cannot write {shown}: cannot create files in {base} ({error.strerror or error})") from None


def _replace_folder(new: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        old = _temporary_name(target)
        os.replace(target, old)
        try:
            os.replace(new, target)
        except OSError:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
