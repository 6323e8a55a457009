"""BatchNorm whose batch statistics are those of the global batch, on any device.

Data-parallel training splits a global batch of B images into N slices of B/N. Plain
BatchNorm then normalises each slice by its own mean and variance, so N processes do
not compute what one process with batch B computes. Synchronising the statistics makes
them the same: each process sums its slice per channel, one all-reduce adds the sums,
and every process normalises with the global mean and variance. The all-reduce is part
of the autograd graph (its backward is again an all-reduce), so gradients are those of
the global batch too.

``torch.nn.SyncBatchNorm`` does this only for GPU tensors; this module also runs on
CPUs with gloo, and falls back to ordinary BatchNorm in evaluation mode and when there
is a single process. The state dict keys are those of ``nn.BatchNorm2d``, so weights
move freely between the two.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def _all_reduce(tensor: Tensor, group) -> Tensor:
    dist.all_reduce(tensor, group=group)
    return tensor


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch normalisation with statistics, and their gradients, summed over processes.

    The arithmetic follows PyTorch's CPU kernel step by step (float64 sums of float32
    values; the mean rounded to float32 before the variance pass; y = x * alpha + beta;
    the same backward formula), so that N processes round as one process with
    ``nn.BatchNorm2d`` does. That matters more than it seems: a channel whose values
    barely vary (few values per channel in small slices or 1x1 maps, a ReLU that is
    mostly off) divides by its deviation, and amplifies any rounding difference.
    Two all-reduces in the forward pass (sums, then squared deviations) and one in the
    backward; only ``x`` and per-channel vectors are kept, as in ordinary BatchNorm.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, module: SyncBatchNorm2d):
        channels = x.shape[1]
        dims = (0, 2, 3)
        group = module.group
        count = torch.tensor([x.numel() // channels], dtype=torch.float64, device=x.device)
        total = _all_reduce(torch.cat([x.sum(dims, dtype=torch.float64), count]), group)
        n = total[-1].clamp(min=1)
        mean = (total[:channels] / n).to(x.dtype)
        centred = x - mean.view(1, -1, 1, 1)
        var_sum = _all_reduce((centred * centred).sum(dims, dtype=torch.float64), group).to(x.dtype)
        del centred
        var = var_sum.to(torch.float64) / n
        invstd = torch.rsqrt(var + module.eps).to(x.dtype)
        if module.track_running_stats and module.running_mean is not None and module.running_var is not None:
            assert module.num_batches_tracked is not None
            module.num_batches_tracked.add_(1)
            factor = (
                module.momentum if module.momentum is not None else 1.0 / float(module.num_batches_tracked)
            )
            unbiased = var * (n / (n - 1).clamp(min=1))
            module.running_mean.mul_(1 - factor).add_(mean.to(module.running_mean.dtype), alpha=factor)
            module.running_var.mul_(1 - factor).add_(unbiased.to(module.running_var.dtype), alpha=factor)
        alpha = invstd * weight if weight is not None else invstd
        beta = bias - mean * alpha if bias is not None else -mean * alpha
        out = x * alpha.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.group = group
        ctx.count = n
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, invstd = ctx.saved_tensors
        channels = x.shape[1]
        dims = (0, 2, 3)
        xmu = x - mean.view(1, -1, 1, 1)
        sum_dy = grad_out.sum(dims, dtype=torch.float64)
        dotp = (grad_out * xmu).sum(dims, dtype=torch.float64)
        # The affine parameters see only this process's outputs; DDP averages their
        # gradients like any other parameter's.
        grad_weight = grad_bias = None
        if weight is not None:
            grad_weight = (dotp * invstd.to(torch.float64)).to(weight.dtype)
            grad_bias = sum_dy.to(weight.dtype)
        # The statistics depend on every process's inputs: their gradients are summed.
        total = _all_reduce(torch.cat([sum_dy, dotp]), ctx.group)
        n = ctx.count.to(x.dtype)
        k = total[channels:].to(x.dtype) * invstd * invstd / n
        grad_mean = (total[:channels] / ctx.count).to(x.dtype)
        grad_x = (grad_out - grad_mean.view(1, -1, 1, 1) - xmu * k.view(1, -1, 1, 1)) * invstd.view(
            1, -1, 1, 1
        )
        if weight is not None:
            grad_x = grad_x * weight.view(1, -1, 1, 1)
        return grad_x, grad_weight, grad_bias, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with statistics over the batches of all processes of ``group``."""

    def __init__(self, *args, group=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def _synchronised(self) -> bool:
        return self.training and dist.is_initialized() and dist.get_world_size(self.group) > 1

    def forward(self, x: Tensor) -> Tensor:
        if not self._synchronised():
            return super().forward(x)
        weight, bias = (self.weight, self.bias) if self.affine else (None, None)
        return _SyncBatchNormFunction.apply(x, weight, bias, self)


def convert_sync_batchnorm(module: nn.Module, group=None, device_type: str = "cpu") -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a :class:`SyncBatchNorm2d`
    (``torch.nn.SyncBatchNorm`` for ``device_type="cuda"``).

    Parameters and buffers are moved over (the same tensors), so an optimiser or EMA
    made afterwards sees them; build those after converting.
    """
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, group)
    if type(module) is nn.BatchNorm2d:
        sync = SyncBatchNorm2d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            group=group,
        )
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        sync.running_mean, sync.running_var = module.running_mean, module.running_var
        sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, group, device_type))
    return module
