"""`fourview.pretrained`: the one resolver of ``demo`` / a folder / a hub id, and the hub's one-line errors."""

from __future__ import annotations

import logging
import warnings

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from fourview.errors import InputError
from fourview.pretrained import demo_folder, hub_error, quiet_hub_logs, resolve_weights

MARKERS = {"mvgen": "model_index.json", "student": "pytorch_lora_weights.safetensors", "recon": "config.json"}


@pytest.mark.parametrize("kind", ["mvgen", "student", "recon"])
def test_demo_is_the_shipped_folder(kind):
    if not (demo_folder(kind) / MARKERS[kind]).is_file():
        pytest.skip(f"shipped demo {kind} absent")
    source = resolve_weights("demo", kind)
    assert source == resolve_weights("demo", kind)
    assert (source.name, source.path, source.hub_id) == ("demo", demo_folder(kind), None)
    assert source.location == str(demo_folder(kind))


@pytest.mark.parametrize("kind", ["mvgen", "student", "recon"])
def test_a_folder_needs_its_kinds_marker_file(kind, tmp_path):
    with pytest.raises(InputError, match=f"weights must be a folder with {MARKERS[kind]}: "):
        resolve_weights(tmp_path, kind)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=f"weights must be a folder with {MARKERS[kind]}: .*file"):
        resolve_weights(tmp_path / "file", kind)
    (tmp_path / MARKERS[kind]).write_text("{}")
    source = resolve_weights(str(tmp_path), kind)
    assert (source.path, source.hub_id, source.location) == (tmp_path, None, str(tmp_path))


def test_hub_ids_and_names_that_are_neither():
    source = resolve_weights("owner/name", "recon")
    assert (source.path, source.hub_id, source.location) == (None, "owner/name", "owner/name")
    for bad in ("no-slash", "a/b/c", "./missing/folder", "owner/"):
        with pytest.raises(InputError, match=f"weights not found: {bad} is neither a folder nor a hub id"):
            resolve_weights(bad, "recon")


class RepositoryNotFoundError(OSError):
    """Stands in for huggingface_hub's (which needs an HTTP response); `hub_error` goes by the class name."""


def test_hub_errors_are_one_line_and_say_why():
    offline = LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder\nfor the revision")
    assert str(hub_error("reconstructor", "a/b", offline)) == (
        "cannot get reconstructor 'a/b' from the hub: no network connection and no cached copy found"
    )
    try:  # diffusers wraps the hub's error in an OSError of its own
        try:
            raise offline
        except LocalEntryNotFoundError as inner:
            raise OSError("Cannot load model a/b: the model is not fully cached locally") from inner
    except OSError as wrapped:
        assert "no network connection and no cached copy found" in str(hub_error("mvgen weights", "a/b", wrapped))
    missing = RepositoryNotFoundError("404 Client Error.\nRepository Not Found")
    assert str(hub_error("mvgen weights", "a/b", missing)) == (
        "cannot get mvgen weights 'a/b' from the hub: no such repository or revision on the hub, or no access to it"
    )
    other = hub_error("reconstructor", "a/b", ValueError("first line\nsecond line"))
    assert str(other) == "cannot get reconstructor 'a/b' from the hub: ValueError: first line"


def test_quiet_hub_logs_silences_and_restores():
    hub = logging.getLogger("huggingface_hub")
    before = hub.level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_hub_logs():
            warnings.warn("retrying", UserWarning, stacklevel=1)
            assert not hub.isEnabledFor(logging.WARNING)
        warnings.warn("after", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["after"] and hub.level == before
