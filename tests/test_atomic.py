import os
import stat
import subprocess
import sys

import pytest

from fourview.atomic import (
    TMP_MARK,
    atomic_folder,
    remove_stale_temporaries,
    write_bytes_atomic,
    write_files_atomic,
)
from fourview.errors import InputError


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_get_the_umask(tmp_path, umask_027):
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    with atomic_folder(tmp_path / "out") as tmp:
        (tmp / "inner.txt").write_text("y")
    assert _mode(tmp_path / "a.bin") == 0o640 and _mode(tmp_path / "out") == 0o750
    assert (tmp_path / "out" / "inner.txt").read_text() == "y"


def test_several_files_are_written_all_or_none(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(InputError, match="does not exist"):
        write_files_atomic({tmp_path / "keep.txt": b"new", tmp_path / "missing" / "b.txt": b"b"})
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]  # no temporary left


def test_an_output_folder_never_mixes_two_runs(tmp_path):
    out = tmp_path / "out"
    with atomic_folder(out) as tmp:
        (tmp / "first.txt").write_text("1")
    with pytest.raises(InputError, match="not empty"):
        with atomic_folder(out):
            pass
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "second.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["second.txt"]
    with pytest.raises(InputError, match="boom"):
        with atomic_folder(tmp_path / "failed"):
            raise InputError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_temporaries_of_dead_processes_on_this_host_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    from fourview.atomic import _host

    stale = tmp_path / f".x{TMP_MARK}{dead_pid}-{_host()}-abcd1234"
    old_style = tmp_path / f".y{TMP_MARK}{dead_pid}-abcd1234"
    live = tmp_path / f".z{TMP_MARK}{os.getpid()}-{_host()}-abcd1234"
    other_host = tmp_path / f".w{TMP_MARK}{dead_pid}-elsewhere-abcd1234"
    for p in (stale, old_style, live, other_host):
        p.mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, old_style])
    assert live.exists() and other_host.exists() and not stale.exists()
