"""Mixup and CutMix: train on blends of two images against the blend of their labels.

Mixup (Zhang et al., 2018) takes ``lam * a + (1 - lam) * b`` of two images of the batch;
CutMix (Yun et al., 2019) pastes a box of ``b`` into ``a`` covering ``1 - lam`` of it. Either
way ``lam ~ Beta(alpha, alpha)``, the partner ``b`` of each image is a random permutation of
the batch, and the loss is ``lam * CE(a's label) + (1 - lam) * CE(b's label)``. With both on,
each batch takes one of the two at even odds (timm's default). Written here rather than
taken from timm, which would bring torchvision in with it; the draws come from a generator
seeded by the run's seed, the step and the process, so a resumed run mixes as the
uninterrupted one did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Mixing:
    """Mixup's and CutMix's ``alpha`` (0: off)."""

    mixup: float = 0.0
    cutmix: float = 0.0

    @property
    def on(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def mix(self, images: Tensor, seed: int, step: int, rank: int = 0) -> tuple[Tensor, Tensor, float]:
        """``(mixed images, partner index of each image, lam)``: the loss weighs each
        image's own label by ``lam`` and its partner's by ``1 - lam``."""
        rng = np.random.default_rng([seed, step, rank])
        partner = torch.from_numpy(rng.permutation(len(images))).to(images.device)
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or rng.random() < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(rng.beta(alpha, alpha))
        if not use_cutmix:
            return images * lam + images[partner] * (1 - lam), partner, lam
        height, width = images.shape[-2:]
        cut = np.sqrt(1 - lam)
        cy, cx = rng.integers(height), rng.integers(width)
        top, bottom = np.clip([cy - round(height * cut / 2), cy + round(height * cut / 2)], 0, height)
        left, right = np.clip([cx - round(width * cut / 2), cx + round(width * cut / 2)], 0, width)
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = images[partner][..., top:bottom, left:right]
        # The box may be clipped at the border: lam is the share of each image left as it was.
        return mixed, partner, 1 - float((bottom - top) * (right - left)) / (height * width)
