"""An exponential moving average of a model's weights, evaluated beside the model.

Averaging the weights over the last few thousand steps smooths out the noise of the
final steps and usually scores higher than the weights themselves (the MobileNetV2 and
EfficientNet recipes evaluate the average). Buffers that are not floating point
(BatchNorm's batch counter) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimiser step.

    Early on the decay is ``(1 + n) / (10 + n)`` after ``n`` updates when that is
    smaller, so a short run is not dominated by its random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.current_decay()
        own = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = own[name]
            if target.is_floating_point():
                target.mul_(decay).add_(value.detach().to(target.dtype), alpha=1 - decay)
            else:
                target.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
