"""The resumable benchmarks' bookkeeping: settings checks, records read back, the machine, peak memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from fourview.errors import InputError
from fourview.evaluation.run_record import check_settings, machine_record, peak_rss_mb, read_record


@dataclass(frozen=True)
class _Record:
    name: str
    score: float


def test_settings_are_written_once_then_refused_when_they_differ(tmp_path):
    path = tmp_path / "settings.json"
    check_settings(path, {"a": 1, "b": [1, 2]})
    assert json.loads(path.read_text()) == {"a": 1, "b": [1, 2]}
    check_settings(path, {"a": 1, "b": [1, 2]})  # the same settings resume
    with pytest.raises(InputError, match=r"holds results made with other settings \(b, c\); use another output"):
        check_settings(path, {"a": 1, "b": [2], "c": 0})
    path.write_text("{not json")
    with pytest.raises(InputError, match="cannot read .*settings.json"):
        check_settings(path, {"a": 1})


def test_records_read_back_or_name_the_file_to_delete(tmp_path):
    assert read_record(tmp_path / "none.json", lambda r: _Record(**r), "object") is None
    (tmp_path / "a.json").write_text(json.dumps({"name": "a", "score": 0.5}))
    assert read_record(tmp_path / "a.json", lambda r: _Record(**r), "object") == _Record("a", 0.5)
    (tmp_path / "b.json").write_text(json.dumps({"name": "b"}))
    with pytest.raises(InputError, match=r"cannot read the record .*b.json: .*; delete it to redo the prompt"):
        read_record(tmp_path / "b.json", lambda r: _Record(**r), "prompt")


def test_the_machine_and_the_peak_memory():
    info = machine_record("cpu")
    assert info["device"] == "cpu" and info["cpu_count"] >= 1 and "gpu" not in info
    status = Path("/proc/self/status")
    if not status.is_file():
        pytest.skip("no /proc (not Linux)")
    hwm_kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
    assert peak_rss_mb() == pytest.approx(hwm_kib / 1024.0, rel=0.05)  # the kernel's own peak resident size
