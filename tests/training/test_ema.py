"""The exponential moving average of trained weights (`fourview.training.ema`)."""

from __future__ import annotations

import torch

from fourview.training import EMA, averaged


def _linear(value: float) -> torch.nn.Linear:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_ema_average_and_swap():
    model = _linear(0.0)
    ema = EMA(model.named_parameters(), decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()  # effective decay min(0.5, 2 / 11) = 2/11
    expected = 1.0 - 2.0 / 11.0
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), expected))
    with ema.applied():
        assert torch.allclose(model.weight, torch.full((1, 2), expected))
    assert torch.allclose(model.weight, torch.ones(1, 2))
    restored = EMA(model.named_parameters(), 0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 1 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])


def test_decay_reaches_its_target_after_the_warm_up():
    model = _linear(0.0)
    ema = EMA(model.named_parameters(), decay=0.9)
    shadow = 0.0
    for n in range(1, 200):
        with torch.no_grad():
            model.weight.fill_(float(n))
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))
        shadow = d * shadow + (1 - d) * n
    torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), shadow), rtol=1e-5, atol=0)


def test_averaged_without_ema_changes_nothing():
    model = _linear(3.0)
    with averaged(None):
        assert torch.equal(model.weight, torch.full((1, 2), 3.0))
    ema = EMA(model.named_parameters(), 0.5)
    with torch.no_grad():
        model.weight.fill_(5.0)
    with averaged(ema):
        assert torch.equal(model.weight, torch.full((1, 2), 3.0))  # no update yet: the start values
    assert torch.equal(model.weight, torch.full((1, 2), 5.0))


def test_state_of_diffusers_ema_model_loads():
    """Older mvgen checkpoints hold ``diffusers.training_utils.EMAModel``'s state: its shadow and step count."""
    from diffusers.training_utils import EMAModel

    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    theirs = EMAModel(model.parameters(), decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    theirs.step(model.parameters())
    theirs.step(model.parameters())
    ours = EMA(model.named_parameters(), 0.9)
    ours.load_state_dict(theirs.state_dict())
    assert ours.updates == 2
    for (name, _), shadow in zip(model.named_parameters(), theirs.shadow_params):
        torch.testing.assert_close(ours.shadow[name], shadow.float(), rtol=0, atol=0)
