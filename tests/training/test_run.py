"""The run settings every trainer shares (`fourview.training.run`)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fourview.errors import InputError
from fourview.training import RunConfig, training_process, warmup_cosine


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Trainer(RunConfig):
    data: str
    steps: int = 30  # this trainer's default


def test_a_trainer_config_is_flat_keyword_only_and_keeps_its_defaults(tmp_path):
    cfg = _Trainer(data="d", out="o")
    assert cfg.steps == 30 and cfg.lr == RunConfig(out="o").lr
    names = [f.name for f in dataclasses.fields(_Trainer)]
    assert names.count("steps") == 1 and "out" in names and names[-1] == "data"
    with pytest.raises(TypeError, match="positional argument"):
        _Trainer("d", "o")  # type: ignore[misc]  # keyword-only: no field order to get wrong
    cfg.write_json(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text()) == dataclasses.asdict(cfg)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(steps=0), "--steps must be >= 1"),
        (dict(keep_checkpoints=0), "--keep-checkpoints must be >= 1"),
        (dict(lr=-1.0), "--lr must be >= 0"),
        (dict(min_lr_ratio=1.5), "--min-lr-ratio must be in"),
        (dict(ema_decay=1.0), "--ema-decay must be in"),
        (dict(mixed_precision="fp8"), "--mixed-precision must be"),
        (dict(stop_after_steps=0), "--stop-after-steps must be >= 1"),
        (dict(num_threads=-1), "--num-threads must be >= 0"),
    ],
)
def test_bad_settings_are_rejected(bad, message):
    with pytest.raises(InputError, match=message):
        _Trainer(data="d", out="o", **bad)


def test_schedule_checkpoints_and_validations_by_step():
    cfg = RunConfig(out="o", steps=10, lr=2e-3, warmup_steps=2, min_lr_ratio=0.5, checkpoint_every=4,
                    validate_every=3, stop_after_steps=5)  # fmt: skip
    assert [cfg.lr_at(s) for s in range(10)] == [
        warmup_cosine(s, warmup_steps=2, total_steps=10, min_lr_ratio=0.5, peak=2e-3) for s in range(10)
    ]
    assert cfg.end_step(0) == 5 and cfg.end_step(7) == 10
    assert [s for s in range(1, 11) if cfg.checkpoint_due(s, end=5)] == [4, 5, 8]
    assert [s for s in range(1, 11) if cfg.validation_due(s)] == [3, 6, 9, 10]
    never = dataclasses.replace(cfg, checkpoint_every=0, validate_every=0)
    assert [s for s in range(1, 11) if never.checkpoint_due(s, end=10) or never.validation_due(s)] == [10]


def test_training_process_sets_and_restores_the_threads():
    before = torch.get_num_threads()
    with training_process(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with training_process(None):
        assert torch.get_num_threads() == before
