"""The shared bookkeeping of the attack core: active rows, best over restarts, one Adam step."""

from __future__ import annotations

import math

import torch

from advimage.attacks.adam import AdamState, adam_step
from advimage.attacks.restarts import ActiveRows, BestSoFar, attack_remaining


def test_active_rows_retire_and_finish() -> None:
    x0 = torch.zeros(4, 2)
    rows = ActiveRows(x0)
    keep = rows.retire(torch.tensor([False, True, False, True]), torch.ones(4, 2),
                       torch.arange(4.0))
    assert keep.tolist() == [0, 2] and rows.idx.tolist() == [0, 2]
    assert rows.success.tolist() == [False, True, False, True]
    assert rows.loss[1] == 1.0 and rows.loss[3] == 3.0
    rows.finish(torch.full((2, 2), 5.0), torch.tensor([7.0, 8.0]))
    assert rows.x[:, 0].tolist() == [5.0, 1.0, 5.0, 1.0]
    assert rows.loss.tolist() == [7.0, 1.0, 8.0, 3.0]
    assert torch.equal(x0, torch.zeros(4, 2))  # the start is copied, not written


def test_active_rows_record_keeps_the_first_success() -> None:
    rows = ActiveRows(torch.zeros(3, 1))
    rows.record(torch.tensor([True, False, False]), torch.full((3, 1), 1.0))
    rows.record(torch.tensor([True, True, False]), torch.full((3, 1), 2.0))
    rows.finish(torch.full((3, 1), 9.0))
    assert rows.x[:, 0].tolist() == [1.0, 2.0, 9.0]  # successes keep their first point
    assert rows.success.tolist() == [True, True, False]


def test_restarts_attack_only_rows_not_yet_fooled() -> None:
    best = BestSoFar(torch.zeros(3, 1), done=torch.tensor([True, False, False]))
    seen: list[list[int]] = []

    def run(idx: torch.Tensor):  # noqa: ANN202
        seen.append(idx.tolist())
        ok = idx == 1 if len(seen) == 2 else torch.zeros(len(idx), dtype=torch.bool)
        return torch.full((len(idx), 1), float(len(seen))), ok, torch.full((len(idx),), 1.0)

    attack_remaining(best, run, restarts=3)
    assert seen == [[1, 2], [1, 2], [2]]  # row 0 was done; row 1 succeeded in restart 2
    assert best.x[:, 0].tolist() == [0.0, 2.0, 1.0]  # row 2: later runs had no higher loss
    assert best.done.tolist() == [True, True, False]


def test_best_so_far_keeps_the_higher_loss() -> None:
    best = BestSoFar(torch.zeros(2, 1))
    best.merge(torch.tensor([0, 1]), torch.ones(2, 1), torch.tensor([False, False]),
               torch.tensor([2.0, 1.0]))
    best.merge(torch.tensor([0, 1]), torch.full((2, 1), 2.0), torch.tensor([False, False]),
               torch.tensor([1.0, 3.0]))
    assert best.x[:, 0].tolist() == [1.0, 2.0]
    assert best.loss.tolist() == [2.0, 3.0] and not bool(best.done.any())
    best.merge(torch.tensor([1]), torch.full((1, 1), 3.0), torch.tensor([True]))  # no loss
    assert best.x[:, 0].tolist() == [1.0, 3.0] and best.done.tolist() == [False, True]


def test_chunks_bound_each_run() -> None:
    best = BestSoFar(torch.zeros(5, 1))
    sizes: list[int] = []

    def run(idx: torch.Tensor):  # noqa: ANN202
        sizes.append(len(idx))
        return torch.ones(len(idx), 1), torch.ones(len(idx), dtype=torch.bool), None

    attack_remaining(best, run, restarts=2, chunk_size=2)
    assert sizes == [2, 2, 1] and bool(best.done.all())  # all fooled: no second restart


def test_adam_step_matches_torch_optim() -> None:
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 3, generator=gen)
    grads = [torch.randn(4, 3, generator=gen) for _ in range(5)]
    p = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=0.01)
    w, state = w0.clone(), AdamState.zeros_like(w0)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        w, state = adam_step(w, g, state, 0.01)
    assert state.t == 5
    torch.testing.assert_close(w, p.detach(), rtol=1e-5, atol=1e-6)
    assert math.isfinite(float(w.abs().max()))
