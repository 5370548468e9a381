import logging

from fourview.accelerators import optional_import


def test_a_missing_package_is_absent_without_a_word(caplog):
    with caplog.at_level(logging.WARNING):
        assert optional_import("fourview_no_such_accelerator") is None
    assert not caplog.records


def test_a_broken_package_is_absent_with_one_warning(tmp_path, monkeypatch, caplog):
    (tmp_path / "fourview_broken_ext.py").write_text("raise RuntimeError('built for another CUDA')\n")
    (tmp_path / "fourview_fine_ext.py").write_text("VALUE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert optional_import("fourview_broken_ext") is None
        assert optional_import("fourview_broken_ext") is None  # looked up once
    assert len(caplog.records) == 1 and "built for another CUDA" in caplog.text
    assert optional_import("fourview_fine_ext").VALUE == 3
