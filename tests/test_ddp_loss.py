"""Gathered negatives across ranks: two gloo ranks at batch B == one process at batch 2B."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest
import torch
import torch.distributed as dist
from helpers import free_port
from torch.nn.parallel import DistributedDataParallel

from sparsecse.model.loss import simcse_loss

WORLD, BATCH, FEATURES = 2, 3, 8


def model_and_inputs(views: int) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Linear(FEATURES, 5), torch.randn(views, WORLD * BATCH, FEATURES)  # (V, 2B, F)


def loss_and_grads(model: torch.nn.Module, loss: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


def one_process(views: int, weight: float) -> tuple[float, list[torch.Tensor]]:
    model, inputs = model_and_inputs(views)
    return loss_and_grads(model, simcse_loss(model(inputs), 0.05, weight))


def rank_worker(rank: int, port: int, views: int, weight: float, gather: bool, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    model, inputs = model_and_inputs(views)
    ddp = DistributedDataParallel(model)
    local = inputs[:, rank * BATCH : (rank + 1) * BATCH]  # (V, B, F): this rank's share
    loss, grads = loss_and_grads(model, simcse_loss(ddp(local), 0.05, weight, gather_negatives=gather))
    mean_loss = torch.tensor(loss)
    dist.all_reduce(mean_loss)
    # numpy arrays travel by value; tensors would be shared memory this process frees on exit
    queue.put((rank, mean_loss.item() / WORLD, [g.numpy() for g in grads]))
    dist.barrier()
    os._exit(0)  # the results are sent; skip interpreter shutdown, where gloo's threads can hang


def two_ranks(views: int, weight: float, gather: bool) -> list[tuple[float, list[torch.Tensor]]]:
    context = mp.get_context("spawn")
    queue, port = context.SimpleQueue(), free_port()
    procs = [context.Process(target=rank_worker, args=(rank, port, views, weight, gather, queue))
             for rank in range(WORLD)]  # fmt: skip
    for proc in procs:
        proc.start()
    results = {}
    for _ in range(WORLD):
        rank, loss, grads = queue.get()
        results[rank] = (loss, [torch.from_numpy(g) for g in grads])
    for proc in procs:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
        assert proc.exitcode == 0, f"rank exited with {proc.exitcode}"
    return [results[rank] for rank in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize(("views", "weight"), [(2, 0.0), (3, 0.0), (3, 0.7)],
                         ids=["unsupervised", "hard-negatives", "hard-negatives-weighted"])  # fmt: skip
def test_two_ranks_at_batch_b_equal_one_process_at_2b(views, weight):
    loss, grads = one_process(views, weight)
    for rank_loss, rank_grads in two_ranks(views, weight, gather=True):
        assert rank_loss == pytest.approx(loss, rel=1e-6)
        for got, expected in zip(rank_grads, grads):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_without_gathering_each_rank_sees_only_its_own_negatives():
    loss, _ = one_process(3, 0.0)
    (rank_loss, _), _ = two_ranks(3, 0.0, gather=False)
    model, inputs = model_and_inputs(3)
    with torch.no_grad():
        per_rank = [simcse_loss(model(inputs[:, r * BATCH : (r + 1) * BATCH]), 0.05) for r in range(WORLD)]
    assert rank_loss == pytest.approx(float(sum(per_rank)) / WORLD, rel=1e-6)
    assert rank_loss != pytest.approx(loss, rel=1e-3)
