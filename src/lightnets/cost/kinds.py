"""Layer kinds: how the cost reports group the leaf modules of any network."""

from __future__ import annotations

from torch import nn

# Layer kinds, in the order reports list them. MobileNet v1's Table 2 calls them
# "Conv 3x3", "Conv 1x1", "Conv DW 3x3" and "Fully Connected".
KINDS = (
    "conv",
    "pointwise",
    "depthwise",
    "group conv",
    "fully connected",
    "pool",
    "batchnorm",
    "activation",
    "add",
    "shuffle",
    "dropout",
    "reshape",
    "other",
)
# The kinds that cost multiply-adds or change the spatial size: a per-layer listing
# shows these and leaves out BatchNorm, activations, reshapes and the like.
COSTED_KINDS = ("conv", "pointwise", "depthwise", "group conv", "fully connected", "pool")

POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softmax,
    nn.LogSoftmax,
)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
RESHAPES = (nn.Flatten, nn.Unflatten, nn.Identity)


def layer_kind(module: nn.Module) -> str:
    """The kind of a leaf module, as the reports group layers."""
    if isinstance(module, nn.modules.conv._ConvNd):
        groups, in_ch = module.groups, module.in_channels
        if groups == 1:
            return "pointwise" if all(k == 1 for k in module.kernel_size) else "conv"
        return "depthwise" if groups == in_ch else "group conv"
    if isinstance(module, nn.Linear):
        return "fully connected"
    if isinstance(module, POOLS):
        return "pool"
    if isinstance(module, NORMS):
        return "batchnorm"
    if isinstance(module, ACTIVATIONS):
        return "activation"
    if isinstance(module, DROPOUTS):
        return "dropout"
    if isinstance(module, RESHAPES):
        return "reshape"
    name = type(module).__name__.lower()
    if name == "add":
        return "add"
    if "shuffle" in name:
        return "shuffle"
    return "other"
