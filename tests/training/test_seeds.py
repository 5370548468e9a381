"""Seeds of a run's random draws (`fourview.training.seeds`)."""

from __future__ import annotations

import torch

from fourview.training import derive_seed, seeded_initialisation, step_generator


def test_derived_seeds_are_stable_and_differ_by_part():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert len({derive_seed(0, step, 0) for step in range(100)}) == 100
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert all(0 <= derive_seed(s, 7) < 2**63 for s in range(20))
    assert torch.equal(torch.rand(3, generator=step_generator(4, 5)), torch.rand(3, generator=step_generator(4, 5)))


def test_seeded_initialisation_repeats_and_leaves_the_callers_rng_alone():
    torch.random.manual_seed(123)  # the test's own global state, to check it is untouched
    before = torch.random.get_rng_state()
    with seeded_initialisation(7):
        a = torch.nn.Linear(4, 3).weight.detach().clone()
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.rand(5)  # other draws in between change nothing inside
    with seeded_initialisation(7):
        b = torch.nn.Linear(4, 3).weight.detach().clone()
    with seeded_initialisation(8):
        c = torch.nn.Linear(4, 3).weight.detach().clone()
    assert torch.equal(a, b) and not torch.equal(a, c)
