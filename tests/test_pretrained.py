"""`fourview.pretrained`: the one resolver of ``demo`` / a folder / a hub id, and the hub's one-line errors."""

from __future__ import annotations

import logging
import warnings

import huggingface_hub.constants
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file

from fourview.errors import InputError
from fourview.pretrained import demo_folder, hub_error, quiet_hub_logs, resolve_lora, resolve_weights

MARKERS = {"mvgen": "model_index.json", "student": "pytorch_lora_weights.safetensors", "recon": "config.json"}
WEIGHTS = {"mvgen": None, "student": "pytorch_lora_weights.safetensors", "recon": "model.safetensors"}


def _write_marker(folder, kind):
    """The kind's marker file and its one weights file (a valid safetensors file)."""
    if MARKERS[kind].endswith(".json"):
        (folder / MARKERS[kind]).write_text("{}")
    if WEIGHTS[kind] is not None:
        save_file({"w": torch.zeros(2)}, str(folder / WEIGHTS[kind]))


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
    _write_marker(tmp_path, kind)
    source = resolve_weights(str(tmp_path), kind)
    assert (source.path, source.hub_id, source.location) == (tmp_path, None, str(tmp_path))


def test_hub_ids_and_names_that_are_neither(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # online: the loader downloads it
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


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt", ".pkl"])
def test_pickled_weights_are_refused_by_name_and_never_read(suffix, tmp_path, monkeypatch):
    import pickle

    def never(*args, **kwargs):
        raise AssertionError("a pickle was read")

    monkeypatch.setattr(torch, "load", never)
    monkeypatch.setattr(pickle, "load", never)
    recon = tmp_path / "recon"
    recon.mkdir()
    (recon / "config.json").write_text("{}")
    (recon / f"model{suffix}").write_bytes(b"not even a pickle")
    convert = rf"convert it with: python -c .*torch.load\('{recon}/model\{suffix}', .*'{recon}/model.safetensors'\)"
    with pytest.raises(InputError, match=rf"^{recon}/model\{suffix} is a pickled weights file .*{convert}"):
        resolve_weights(recon, "recon")
    with pytest.raises(InputError, match=r"is a pickled weights file"):
        resolve_weights(recon / f"model{suffix}", "recon")
    mvgen = tmp_path / "mvgen"
    (mvgen / "unet").mkdir(parents=True)
    (mvgen / "model_index.json").write_text("{}")
    (mvgen / "unet" / f"diffusion_pytorch_model{suffix}").write_bytes(b"not even a pickle")
    with pytest.raises(InputError, match=r"unet/diffusion_pytorch_model.safetensors'\)\"$"):
        resolve_weights(mvgen, "mvgen")
    save_file({"w": torch.zeros(2)}, str(mvgen / "unet" / "diffusion_pytorch_model.safetensors"))
    assert resolve_weights(mvgen, "mvgen").path == mvgen  # with safetensors beside it: the loaders take those


def test_weights_files_are_checked_before_loading(tmp_path):
    recon = tmp_path / "recon"
    recon.mkdir()
    (recon / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"^reconstructor weights must be a folder with model.safetensors: "):
        resolve_weights(recon, "recon")
    save_file({"w": torch.zeros(1000)}, str(recon / "model.safetensors"))
    data = (recon / "model.safetensors").read_bytes()
    (recon / "model.safetensors").write_bytes(data[: len(data) // 2])  # cut short
    with pytest.raises(InputError, match=r"^cannot read reconstructor weights .*model.safetensors: [^\n]*$"):
        resolve_weights(recon, "recon")


def test_lora_weights_are_safetensors_files_or_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "lora.bin").write_bytes(b"not even a pickle")
    with pytest.raises(InputError, match=r"lora.bin is a pickled weights file .*lora.safetensors'\)\"$"):
        resolve_lora(tmp_path / "lora.bin")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "pytorch_lora_weights.bin").write_bytes(b"not even a pickle")
    with pytest.raises(InputError, match=r"pytorch_lora_weights.bin is a pickled weights file"):
        resolve_lora(tmp_path / "folder")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"^LoRA weights must be a .safetensors file or a folder holding one"):
        resolve_lora(tmp_path / "notes.txt")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "lora.safetensors"))
    assert resolve_lora(tmp_path / "lora.safetensors") == str(tmp_path / "lora.safetensors")
    with pytest.raises(InputError, match=r"^cannot get LoRA weights 'owner/lora' from the hub: offline"):
        resolve_lora("owner/lora")
    with pytest.raises(InputError, match=r"^LoRA weights not found: nowhere is neither a file, a folder nor a hub id"):
        resolve_lora("nowhere")


def test_an_offline_hub_id_without_a_cached_copy_is_one_line_naming_it(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for kind, what in (("mvgen", "mvgen"), ("recon", "reconstructor")):
        with pytest.raises(InputError) as e:
            resolve_weights("nobody/nothing", kind)
        reason = "offline (HF_HUB_OFFLINE) and no cached copy found"
        assert str(e.value) == f"cannot get {what} weights 'nobody/nothing' from the hub: {reason}"
