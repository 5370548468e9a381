"""Training checkpoints: Accelerate's state of a run, one folder per saved step, for exact resume.

A checkpoint ``ROOT/step_NNNNNNNN`` is ``accelerate.Accelerator.save_state`` (the prepared models,
optimizers, the processes' RNG states, the objects registered with ``register_for_checkpointing``
in registration order: ``custom_checkpoint_0.pkl``, ...) plus a marker file ``{"step": N}``. It
is assembled in a temporary folder and renamed into place (`fourview.atomic.atomic_folder`), so
a folder named ``step_*`` is complete. With ``lora_only`` the models' LoRA weights (peft) replace
the whole models: the frozen base weights are not written again with every checkpoint.

The files other than the weights are pickles (``torch.save`` by Accelerate): resume only from
checkpoints you wrote.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from fourview.atomic import atomic_folder, write_text_atomic


@dataclass(frozen=True)
class CheckpointLayout:
    """Names inside a run's checkpoint folder (each trainer keeps the one its earlier runs wrote)."""

    digits: int = 8
    """Zero-padded width of the step in the folder name ``step_NNNNNNNN``."""
    marker: str = "loop_state.json"
    """The file holding ``{"step": N}``."""
    lora_file: str = "lora.safetensors"
    """With ``lora_only``: the LoRA weights of the first model (``STEM_1.safetensors`` for the second...)."""


class Checkpoints:
    """Saving, finding, loading and pruning a run's checkpoints (call every method on every process).

    Args:
        accelerator: the run's ``accelerate.Accelerator``; register the objects to save with it
            (``register_for_checkpointing``) in the same order whenever the run starts.
        root: the folder of the checkpoints (``OUT/checkpoints``).
        keep: how many of the newest checkpoints `save` leaves.
        layout: the names of folders and files (default: `CheckpointLayout()`).
        lora_only: save and load only the prepared models' LoRA weights (peft adapters). A
            checkpoint without the LoRA file (written with whole models) still loads.
    """

    def __init__(
        self, accelerator, root: Path, keep: int, layout: CheckpointLayout | None = None, lora_only: bool = False
    ) -> None:
        self.accelerator = accelerator
        self.root = Path(root)
        self.keep = max(1, keep)
        self.layout = layout or CheckpointLayout()
        if lora_only:
            _register_lora_only_hooks(accelerator, layout.lora_file)

    def folder(self, step: int) -> Path:
        return self.root / f"step_{step:0{self.layout.digits}d}"

    def _saved(self) -> list[tuple[int, Path]]:
        """Checkpoint folders by step, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(re.fullmatch(r"step_(\d+)", p.name), p) for p in self.root.iterdir() if p.is_dir()]
        return sorted((int(m[1]), p) for m, p in found if m)

    def latest(self) -> Path | None:
        """The newest complete checkpoint (one with its marker file), or None."""
        done = [p for _, p in self._saved() if (p / self.layout.marker).is_file()]
        return done[-1] if done else None

    def load(self, folder: Path) -> int:
        """Restore the state saved in ``folder`` (models, optimizers, RNGs, registered objects); returns its step."""
        self.accelerator.load_state(str(folder))
        return int(json.loads((folder / self.layout.marker).read_text())["step"])

    def save(self, step: int) -> Path:
        """Write the checkpoint of ``step`` (replacing one of the same step), then drop all but the newest ``keep``."""
        from accelerate.utils import broadcast_object_list  # heavy optional dependency

        acc = self.accelerator
        final = self.folder(step)

        def write(tmp: Path | None) -> None:
            # every process writes its RNG state into the same folder: main's temporary, by name
            (name,) = broadcast_object_list([None if tmp is None else str(tmp)])
            acc.save_state(name)
            acc.wait_for_everyone()
            if tmp is not None:
                write_text_atomic(tmp / self.layout.marker, json.dumps({"step": step}) + "\n")

        if acc.is_main_process:
            with atomic_folder(final, overwrite=True) as tmp:
                write(tmp)
            for _, old in self._saved()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        else:
            write(None)
        acc.wait_for_everyone()
        return final


def _lora_file(name: str, index: int) -> str:
    stem, _, suffix = name.rpartition(".")
    return name if index == 0 else f"{stem}_{index}.{suffix}"


def _register_lora_only_hooks(accelerator, file_name: str) -> None:
    """Make ``save_state`` write each model's LoRA weights instead of the model, and ``load_state`` read them."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict  # heavy optional dependencies
    from safetensors.torch import load_file, save_file

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for i, m in enumerate(models):
                state = get_peft_model_state_dict(accelerator.unwrap_model(m))
                state = {k: v.detach().contiguous() for k, v in state.items()}
                save_file(state, str(Path(output_dir) / _lora_file(file_name, i)))
        weights.clear()  # nothing else of the models is written

    def load_hook(models, input_dir):
        files = [Path(input_dir) / _lora_file(file_name, i) for i in range(len(models))]
        if not all(f.is_file() for f in files):
            return  # whole models (an older checkpoint): Accelerate loads them
        for m, f in zip(models, files):
            set_peft_model_state_dict(accelerator.unwrap_model(m), load_file(str(f)))
        models.clear()  # loaded: Accelerate skips them

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
