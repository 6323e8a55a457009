"""Fine-tuning: start from trained weights, train a new head, keep or adapt the backbone.

Every lightnets model is ``features`` (the backbone) then ``head``; the classifier is
replaced with ``reset_classifier`` (``create_model(name, weights=..., num_classes=N)``
does it). The backbone may be frozen (only the head learns: a linear probe), or train
with a lower learning rate (``backbone_lr_scale`` in :func:`.recipes.parameter_groups`).

BatchNorm needs a thought of its own. ``freeze_bn`` keeps every BatchNorm layer in
evaluation mode: it normalises with the loaded statistics and does not update them.
That is the right choice for small batches, and for weights whose BatchNorm was folded
into the convolutions (the TFLite releases: each BatchNorm is loaded as an identity plus
bias, and batch statistics would change what the network computes). A frozen backbone
freezes its BatchNorm statistics as well. With folded weights and ``freeze_bn`` nothing
normalises the activations any more, so the network wants a learning rate about ten
times smaller than with BatchNorm: MobileNetV2 from the TFLite release fine-tunes well
with SGD at 0.001 and dies (every ReLU6 off, the loss stuck at ln(classes)) at 0.01.
"""

from __future__ import annotations

from torch import nn

HEAD = "head"


def in_head(name: str) -> bool:
    return name == HEAD or name.startswith(HEAD + ".")


def freeze_backbone(model: nn.Module) -> int:
    """Stop gradients everywhere but the head; returns how many parameters still train."""
    if not hasattr(model, HEAD):
        raise ValueError(f"{type(model).__name__} has no 'head' module; cannot tell backbone from head")
    trainable = 0
    for name, param in model.named_parameters():
        keep = in_head(name)
        param.requires_grad_(keep)
        trainable += param.numel() if keep else 0
    return trainable


def set_train_mode(model: nn.Module, freeze_bn: bool = False, frozen_backbone: bool = False) -> None:
    """``model.train()``, then BatchNorm layers that must keep their statistics back to eval."""
    model.train()
    if not (freeze_bn or frozen_backbone):
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (freeze_bn or not in_head(name)):
            module.eval()
