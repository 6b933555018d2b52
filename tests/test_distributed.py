"""The launcher: real gloo ranks on localhost (file rendezvous), results by rank, failures named."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from unlearnrec.distributed import DistributedError, launch


def _sum_of_ranks(ctx, scale: float) -> tuple[int, float]:
    t = torch.tensor([float(ctx.rank + 1)])
    dist.all_reduce(t)
    return ctx.rank, float(t) * scale


def _fails_on_rank_one(ctx) -> int:
    if ctx.rank == 1:
        raise ValueError("planted failure")
    return ctx.rank


def test_launch_runs_a_real_all_reduce_and_returns_results_by_rank():
    out = launch(_sum_of_ranks, 2, 10.0, timeout_s=120)
    assert out == [(0, 30.0), (1, 30.0)]  # 1 + 2 summed across both ranks


def test_a_failing_rank_is_reported_with_its_rank_and_cause():
    with pytest.raises(DistributedError, match=r"rank 1 failed: ValueError: planted failure"):
        launch(_fails_on_rank_one, 2, timeout_s=120)


def _returns_a_tensor(ctx) -> torch.Tensor:
    return torch.full((1000,), float(ctx.rank))


def test_ranks_can_return_tensors():
    """Tensors come back as shared memory the worker serves: it must outlive the parent's read."""
    out = launch(_returns_a_tensor, 2, timeout_s=120)
    assert [float(t.sum()) for t in out] == [0.0, 1000.0]
