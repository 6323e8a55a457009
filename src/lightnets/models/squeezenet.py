"""SqueezeNet (Iandola et al., 2016), v1.0 from the paper's Table 1 and v1.1 from the
authors' later release.

A table is a list of rows: ``("conv", out, kernel, stride)`` for the first layer,
``"pool"`` for a 3x3/2 max pool, ``(s1x1, e1x1, e3x3)`` for a Fire module. The
paper's design-space knobs (its Section 5) regenerate the Fire rows:
``e_i = base_e + incr_e * floor(i / freq)``, ``e3x3 = pct3x3 * e_i``,
``s1x1 = SR * e_i``; the defaults give Table 1 back.

Pooling rounds up (Caffe's ``ceil`` mode), as in the released models: v1.0 then gives
13x13 maps before the classifier at both 224 and 227 inputs (v1.1: 13x13 and 14x14).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from ..layers import ConvBNAct, Fire
from .base import Classifier, ConvClassifierHead, FeatureStack
from .registry import register_model

POOL = "pool"

# Table 1: conv1 7x7/2 (96), then Fire modules (s1x1, e1x1, e3x3) with pools after
# conv1, fire4 and fire8.
SQUEEZENET_1_0 = (
    ("conv", 96, 7, 2),
    POOL,
    (16, 64, 64),  # fire2
    (16, 64, 64),  # fire3
    (32, 128, 128),  # fire4
    POOL,
    (32, 128, 128),  # fire5
    (48, 192, 192),  # fire6
    (48, 192, 192),  # fire7
    (64, 256, 256),  # fire8
    POOL,
    (64, 256, 256),  # fire9
)

# v1.1 (forresti/SqueezeNet, SqueezeNet_v1.1/README): a 3x3/2 conv with 64 filters and the
# pools moved earlier (after conv1, fire3, fire5): 2.4x less computation, same accuracy.
SQUEEZENET_1_1 = (
    ("conv", 64, 3, 2),
    POOL,
    (16, 64, 64),  # fire2
    (16, 64, 64),  # fire3
    POOL,
    (32, 128, 128),  # fire4
    (32, 128, 128),  # fire5
    POOL,
    (48, 192, 192),  # fire6
    (48, 192, 192),  # fire7
    (64, 256, 256),  # fire8
    (64, 256, 256),  # fire9
)

BYPASSES = (None, "simple", "complex")


def fire_rows(
    base_e: int = 128, incr_e: int = 128, freq: int = 2, pct3x3: float = 0.5, sr: float = 0.125
) -> list[tuple[int, int, int]]:
    """The eight Fire rows (s1x1, e1x1, e3x3) given the paper's design-space knobs."""
    if base_e <= 0 or incr_e < 0 or freq <= 0:
        raise ValueError(
            f"need base_e > 0, incr_e >= 0, freq > 0; got base_e={base_e}, incr_e={incr_e}, freq={freq}"
        )
    if not 0 <= pct3x3 <= 1:
        raise ValueError(f"pct3x3 must be in [0, 1], got {pct3x3!r}")
    if not 0 < sr <= 1:
        raise ValueError(f"squeeze ratio SR must be in (0, 1], got {sr!r}")
    rows = []
    for i in range(8):
        e = base_e + incr_e * (i // freq)
        e3 = round(e * pct3x3)
        rows.append((max(1, round(e * sr)), e - e3, e3))
    return rows


def with_fire_rows(table: tuple, rows: list[tuple[int, int, int]]) -> tuple:
    """``table`` with its Fire rows replaced, in order, by ``rows``."""
    rows_iter = iter(rows)
    return tuple(next(rows_iter) if isinstance(r, tuple) and len(r) == 3 else r for r in table)


def bypass_for(index: int, in_channels: int, out_channels: int, bypass: str | None) -> str | None:
    """The shortcut around Fire module ``index`` (0 = fire2) for a network-wide setting.

    Simple bypass (the paper's Figure 2, middle) wraps fire3, 5, 7 and 9, the modules
    whose input and output channels match. Complex bypass adds 1x1-conv shortcuts around
    the others as well.
    """
    if bypass is None:
        return None
    if in_channels == out_channels and index % 2 == 1:
        return "simple"
    return "complex" if bypass == "complex" else None


class SqueezeNet(Classifier):
    """SqueezeNet from a table of rows; see the module docstring."""

    def __init__(
        self,
        table: tuple,
        bypass: str | None = None,
        num_classes: int = 1000,
        dropout: float = 0.5,
        in_channels: int = 3,
    ) -> None:
        if bypass not in BYPASSES:
            raise ValueError(f"unknown bypass {bypass!r}; expected one of {BYPASSES}")
        stack = FeatureStack(in_channels)
        fire_index = 0
        for row in table:
            if row == POOL:
                stack.add(nn.MaxPool2d(3, 2, ceil_mode=True), stack.channels, 2)
            elif row[0] == "conv":
                _, out, kernel, stride = row
                stack.add(ConvBNAct(in_channels, out, kernel, stride, norm=False, padding=0), out, stride)
            else:
                squeeze, e1, e3 = row
                kind = bypass_for(fire_index, stack.channels, e1 + e3, bypass)
                stack.add(Fire(stack.channels, squeeze, e1, e3, kind), e1 + e3)
                fire_index += 1
        super().__init__(
            stack,
            ConvClassifierHead(stack.channels, num_classes, dropout),
            min_input_size=_min_input_size(table),
        )
        self.bypass = bypass


def _min_input_size(table: tuple) -> int:
    """The smallest input side that leaves at least one pixel after every layer."""
    size = 1
    for row in reversed(table):
        if row == POOL:  # ceil((n - 3) / 2) + 1 >= size  <=>  n >= 2 * size, and n >= 3
            size = max(3, 2 * size)
        elif row[0] == "conv":
            _, _, kernel, stride = row
            size = (size - 1) * stride + kernel
    return size


def _squeezenet(
    table: tuple,
    bypass: str | None,
    num_classes: int,
    dropout: float,
    in_channels: int,
    base_e: int | None,
    incr_e: int | None,
    freq: int | None,
    pct3x3: float | None,
    sr: float | None,
) -> SqueezeNet:
    if any(v is not None for v in (base_e, incr_e, freq, pct3x3, sr)):
        rows = fire_rows(
            base_e=128 if base_e is None else base_e,
            incr_e=128 if incr_e is None else incr_e,
            freq=2 if freq is None else freq,
            pct3x3=0.5 if pct3x3 is None else pct3x3,
            sr=0.125 if sr is None else sr,
        )
        table = with_fire_rows(table, rows)
    return SqueezeNet(table, bypass, num_classes, dropout, in_channels)


_BUILDER_ARGS = """
Args:
    bypass: shortcuts around the Fire modules (the paper's Section 6): None for none, 'simple' for identities around fire3, 5, 7 and 9, 'complex' for those plus 1x1-conv shortcuts around the other Fire modules.
    base_e: expand filters of the first Fire module (the paper's base_e), an integer > 0; None keeps the table's (128).
    incr_e: expand filters added every freq Fire modules (incr_e), an integer >= 0; None keeps the table's (128).
    freq: Fire modules between two increases of the expand filters (freq), an integer > 0; None keeps the table's (2).
    pct3x3: fraction of the expand filters that are 3x3 (pct_3x3), in [0, 1]; None keeps the table's (0.5).
    sr: squeeze ratio SR, squeeze filters over expand filters, in (0, 1]; None keeps the table's (0.125).
"""


def _squeezenet_builder(name: str, table: tuple, summary: str) -> Callable[..., SqueezeNet]:
    """The builder of one SqueezeNet table: same arguments for every version."""

    def builder(
        bypass: Literal["simple", "complex"] | None = None,
        num_classes: int = 1000,
        dropout: float = 0.5,
        in_channels: int = 3,
        base_e: int | None = None,
        incr_e: int | None = None,
        freq: int | None = None,
        pct3x3: float | None = None,
        sr: float | None = None,
    ) -> SqueezeNet:
        return _squeezenet(table, bypass, num_classes, dropout, in_channels, base_e, incr_e, freq, pct3x3, sr)

    # The registry, weight files and exports know a builder by its name.
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = summary + "\n" + _BUILDER_ARGS
    return builder


squeezenet1_0 = register_model(
    presets={
        "squeezenet1_0_simple_bypass": {"bypass": "simple"},
        "squeezenet1_0_complex_bypass": {"bypass": "complex"},
    },
    family="squeezenet",
)(
    _squeezenet_builder(
        "squeezenet1_0", SQUEEZENET_1_0, "SqueezeNet v1.0 (Iandola et al., 2016), the paper's Table 1."
    )
)

squeezenet1_1 = register_model(family="squeezenet")(
    _squeezenet_builder(
        "squeezenet1_1",
        SQUEEZENET_1_1,
        "SqueezeNet v1.1 (authors' release: 2.4x less computation than v1.0).",
    )
)
