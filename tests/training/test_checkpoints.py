"""Training checkpoints (`fourview.training.checkpoints`) with a tiny model and one process."""

from __future__ import annotations

import json

import pytest
import torch

from fourview.training import EMA, CheckpointLayout, Checkpoints, training_process


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


@pytest.fixture
def accelerator():
    from accelerate import Accelerator

    with training_process(None):  # Accelerate's settings are forgotten afterwards
        yield Accelerator()


def _train_step(model, optimizer) -> None:
    loss = model(torch.ones(2, 4)).square().mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def test_save_find_load_and_prune(accelerator, tmp_path):
    torch.manual_seed(0)  # the test's model, not library code
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema, counter = EMA(model.named_parameters(), 0.5), _Counter()
    accelerator.register_for_checkpointing(ema)
    accelerator.register_for_checkpointing(counter)
    checkpoints = Checkpoints(accelerator, tmp_path / "checkpoints", keep=2)
    assert checkpoints.latest() is None
    saved = {}
    for step in (1, 2, 3):
        _train_step(model, optimizer)
        ema.update()
        counter.value = 10 * step
        assert checkpoints.save(step) == tmp_path / "checkpoints" / f"step_{step:08d}"
        saved[step] = [p.detach().clone() for p in model.parameters()]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000002", "step_00000003"]  # keep 2, nothing else left (no temporaries)
    latest = checkpoints.latest()
    assert json.loads((latest / "loop_state.json").read_text()) == {"step": 3}
    assert (latest / "custom_checkpoint_0.pkl").is_file() and (latest / "custom_checkpoint_1.pkl").is_file()
    (tmp_path / "checkpoints" / "step_00000009").mkdir()  # no marker: not a checkpoint

    after = [p.detach().clone() for p in model.parameters()]
    _train_step(model, optimizer)
    ema.update()
    counter.value = -1
    assert checkpoints.load(checkpoints.latest()) == 3
    assert counter.value == 30 and ema.updates == 3
    for p, q in zip(model.parameters(), saved[3]):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    _train_step(model, optimizer)  # the optimizer's moments came back too: the same step again
    model2 = [p.detach().clone() for p in model.parameters()]
    checkpoints.load(checkpoints.latest())
    _train_step(model, optimizer)
    for p, q in zip(model.parameters(), model2):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert not all(torch.equal(p, q) for p, q in zip(after, model2))


def test_lora_only_checkpoints_hold_the_adapter_and_restore_it(accelerator, tmp_path):
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)  # the test's model, not library code
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model = inject_adapter_in_model(LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights="gaussian"), model)
    trained = [p for n, p in model.named_parameters() if "lora_" in n]
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    optimizer = torch.optim.AdamW(trained, lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    layout = CheckpointLayout(digits=6, marker="state.json", lora_file="adapter.safetensors")
    checkpoints = Checkpoints(accelerator, tmp_path, keep=1, layout=layout, lora_only=True)
    _train_step(model, optimizer)
    folder = checkpoints.save(1)
    assert folder.name == "step_000001" and (folder / "state.json").is_file()
    assert (folder / "adapter.safetensors").is_file() and not list(folder.glob("model*"))
    kept = [p.detach().clone() for p in model.parameters()]
    _train_step(model, optimizer)
    assert checkpoints.load(checkpoints.latest()) == 1
    for p, q in zip(model.parameters(), kept):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
