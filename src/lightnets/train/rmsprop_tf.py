"""RMSprop as TensorFlow computes it, which the MobileNet papers trained with.

PyTorch's ``RMSprop`` differs from TensorFlow's in three ways that matter at the papers'
learning rate of 0.045: TensorFlow starts the mean square at 1 (PyTorch at 0, so the
first steps divide by almost nothing), adds epsilon inside the square root, and applies
the learning rate before the momentum accumulation (so a learning-rate drop does not
rescale the momentum already gathered). The update, per parameter::

    ms  <- decay * ms + (1 - decay) * g^2
    mom <- momentum * mom + lr * g / sqrt(ms + eps)
    p   <- p - mom

with ``g`` the gradient plus ``weight_decay * p`` (an L2 penalty, as TF-slim's
regulariser adds to the loss).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class RMSpropTF(Optimizer):
    """TensorFlow's RMSprop (``tf.train.RMSPropOptimizer``) with L2 weight decay.

    Defaults are TF-slim's ``train_image_classifier`` flags: decay 0.9, momentum 0.9,
    epsilon 1.0.
    """

    def __init__(
        self,
        params,
        lr: float = 0.045,
        decay: float = 0.9,
        momentum: float = 0.9,
        eps: float = 1.0,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or not 0 <= decay < 1 or not 0 <= momentum < 1 or eps <= 0 or weight_decay < 0:
            raise ValueError(
                f"invalid RMSpropTF settings: lr={lr}, decay={decay}, momentum={momentum}, "
                f"eps={eps}, weight_decay={weight_decay}"
            )
        super().__init__(
            params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=weight_decay)
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                square_avg, buf = state["square_avg"], state["momentum_buffer"]
                square_avg.mul_(group["decay"]).addcmul_(grad, grad, value=1 - group["decay"])
                update = grad / square_avg.add(group["eps"]).sqrt_()
                buf.mul_(group["momentum"]).add_(update, alpha=group["lr"])
                p.sub_(buf)
        return loss
