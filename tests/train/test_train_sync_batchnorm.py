"""Synchronised BatchNorm on CPU (gloo): two half batches normalise as one whole batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lightnets.train.sync_batchnorm import SyncBatchNorm2d, convert_sync_batchnorm

SHAPE = (6, 5, 3, 2)


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=generator) * 3 + 1
    return x, torch.randn(SHAPE, generator=generator)


def affine(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, SHAPE[1]))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, SHAPE[1]))
    return bn


def half(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        x, g = inputs()
        rows = slice(rank * 3, rank * 3 + 3)
        bn = affine(SyncBatchNorm2d(SHAPE[1])).train()
        part = x[rows].clone().requires_grad_()
        out = bn(part)
        (out * g[rows]).sum().backward()
        # DDP would average the affine gradients; summing two halves gives the whole.
        dist.all_reduce(bn.weight.grad)
        dist.all_reduce(bn.bias.grad)
        state = (out.detach(), part.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var)
        torch.save(state, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_halves_normalise_and_differentiate_as_the_whole_batch(tmp_path):
    x, g = inputs()
    bn = affine(nn.BatchNorm2d(SHAPE[1])).train()
    whole = x.clone().requires_grad_()
    out = bn(whole)
    (out * g).sum().backward()

    context = mp.get_context("fork")
    port = free_port()
    processes = [context.Process(target=half, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    if any(p.exitcode != 0 for p in processes):
        pytest.fail(f"a process failed: exit codes {[p.exitcode for p in processes]}")
    halves = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.allclose(torch.cat([halves[0][0], halves[1][0]]), out.detach(), atol=1e-6)
    assert torch.allclose(torch.cat([halves[0][1], halves[1][1]]), whole.grad, atol=1e-6)
    for r in range(2):
        assert torch.allclose(halves[r][2], bn.weight.grad, atol=1e-5)
        assert torch.allclose(halves[r][3], bn.bias.grad, atol=1e-5)
        assert torch.allclose(halves[r][4], bn.running_mean, atol=1e-6)
        assert torch.allclose(halves[r][5], bn.running_var, atol=1e-6)


def test_conversion_keeps_parameters_and_state_dict_keys():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    before = model.state_dict()
    weight = model[1].weight
    convert_sync_batchnorm(model)
    assert isinstance(model[1], SyncBatchNorm2d) and isinstance(model[2][0], SyncBatchNorm2d)
    assert model[1].weight is weight and model.state_dict().keys() == before.keys()
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    assert model(x).shape == (2, 4, 6, 6)  # no process group: ordinary BatchNorm
