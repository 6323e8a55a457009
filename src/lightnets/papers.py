"""The figures the four papers report, as data, and how they compare with our models.

Each :class:`PaperFigure` is one row of a paper's table: the model it describes (a
registry name, keyword arguments and input size), the printed numbers as strings (so
their precision is kept: ``"569"`` means 568.5 <= x < 569.5, ``"4.2"`` means
4.15 <= x < 4.25) and, where the paper and a faithful model cannot agree, a note that
says why. ``lightnets compare`` prints these rows next to what :func:`profile`
measures; the tests check every one. :func:`report_sections` renders every reproduced
table (``lightnets report``, ``benchmarks/paper_tables.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .cost import profile
from .render import render
from .zoo import create_model


@dataclass(frozen=True)
class PaperFigure:
    label: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    resolution: int = 224
    madds: str | None = None  # millions of multiply-adds, as printed
    params: str | None = None  # millions of parameters, as printed
    top1: float | None = None  # reported ImageNet top-1 accuracy, percent
    source: str = ""
    counts_fc: bool = True  # False: the paper's complexity leaves out the FC layer
    ops_per_madd: int = 1  # 2: the paper counts the multiply and the add apart
    note: str = ""


V1 = "MobileNet v1"
V2 = "MobileNetV2"
SQ = "SqueezeNet"
SH = "ShuffleNet v1"

FIGURES: tuple[PaperFigure, ...] = (
    # MobileNet v1: Tables 6 and 7 (width, resolution), 4 and 5 (ablations), 8-10.
    PaperFigure("1.0 MobileNet-224", "mobilenet_v1", {}, 224, "569", "4.2", 70.6, f"{V1} Table 6/8"),
    PaperFigure(
        "0.75 MobileNet-224", "mobilenet_v1", {"width": 0.75}, 224, "325", "2.6", 68.4, f"{V1} Table 6"
    ),
    PaperFigure(
        "0.5 MobileNet-224", "mobilenet_v1", {"width": 0.5}, 224, "149", "1.3", 63.7, f"{V1} Table 6"
    ),
    PaperFigure(
        "0.25 MobileNet-224", "mobilenet_v1", {"width": 0.25}, 224, "41", "0.5", 50.6, f"{V1} Table 6"
    ),
    PaperFigure("1.0 MobileNet-192", "mobilenet_v1", {}, 192, "418", "4.2", 69.1, f"{V1} Table 7"),
    PaperFigure(
        "1.0 MobileNet-160",
        "mobilenet_v1",
        {},
        160,
        "290",
        "4.2",
        67.2,
        f"{V1} Table 7",
        note="the exact count is 290.68 M; the paper truncates instead of rounding",
    ),
    PaperFigure("1.0 MobileNet-128", "mobilenet_v1", {}, 128, "186", "4.2", 64.4, f"{V1} Table 7"),
    PaperFigure(
        "0.50 MobileNet-160",
        "mobilenet_v1",
        {"width": 0.5},
        160,
        "76",
        "1.32",
        60.2,
        f"{V1} Table 9",
        note="the exact count is 76.52 M; the paper truncates instead of rounding",
    ),
    PaperFigure(
        "Conv MobileNet",
        "mobilenet_v1",
        {"variant": "full"},
        224,
        "4866",
        "29.3",
        71.7,
        f"{V1} Table 4",
        note="the exact count is 4867.3 M (+0.03%); the paper's own layer sums give 4867",
    ),
    PaperFigure(
        "Shallow MobileNet", "mobilenet_v1", {"variant": "shallow"}, 224, "307", "2.9", 65.3, f"{V1} Table 5"
    ),
    # MobileNetV2: Table 4; the official release (TF-slim) where the paper disagrees.
    PaperFigure(
        "MobileNetV2 1.0-224",
        "mobilenet_v2",
        {},
        224,
        "300",
        "3.4",
        72.0,
        f"{V2} Table 4",
        note="exact: 300.77 M MAdds, 3.47 M params (3.49 M with BN folded into biases, as in "
        "the official .tflite); the paper truncates both",
    ),
    PaperFigure(
        "MobileNetV2 1.4-224",
        "mobilenet_v2",
        {"width": 1.4},
        224,
        "582",
        "6.06",
        74.7,
        "MobileNetV2 official release (paper Table 4: 585 M, 6.9 M)",
        note="the paper prints 585 M / 6.9 M; the released model, which this follows, has 582 M / 6.06 M",
    ),
    # SqueezeNet v1.0: Table 1 (params); compute as counted in the ShuffleNet and MobileNet papers.
    PaperFigure(
        "SqueezeNet 1.0",
        "squeezenet1_0",
        {},
        227,
        "833",
        "1.248424",
        57.5,
        f"{SQ} Table 1 (params), ShuffleNet Table 6 (833 M MFLOPs at 227)",
    ),
    PaperFigure(
        "SqueezeNet (MobileNet paper)",
        "squeezenet1_0",
        {},
        227,
        "1700",
        "1.25",
        57.5,
        f"{V1} Table 10",
        ops_per_madd=2,
        note="the MobileNet paper's 1700 M is twice the 833 M multiply-adds the SqueezeNet and "
        "ShuffleNet papers give: for this model it counts the multiply and the add apart; "
        "measured here the same way (2 x 832.7 M)",
    ),
    # SqueezeNet v1.0, Table 3: bypass connections (model sizes only, no counts printed).
    PaperFigure(
        "SqueezeNet 1.0, simple bypass",
        "squeezenet1_0",
        {"bypass": "simple"},
        227,
        None,
        None,
        60.4,
        f"{SQ} Table 3",
    ),
    PaperFigure(
        "SqueezeNet 1.0, complex bypass",
        "squeezenet1_0",
        {"bypass": "complex"},
        227,
        None,
        None,
        58.8,
        f"{SQ} Table 3",
    ),
    # ShuffleNet v1: Table 1 complexity (convolutions only), Tables 2, 5 and 6.
    *(
        PaperFigure(
            f"ShuffleNet 1x (g = {g}), conv only",
            "shufflenet_v1",
            {"groups": g},
            224,
            madds,
            None,
            None,
            f"{SH} Table 1",
            counts_fc=False,
        )
        for g, madds in ((1, "143"), (2, "140"), (3, "137"), (4, "133"), (8, "137"))
    ),
    PaperFigure(
        "ShuffleNet 1x (g = 3)", "shufflenet_v1", {"groups": 3}, 224, None, None, 67.4, f"{SH} Table 3"
    ),
    PaperFigure(
        "ShuffleNet 1x (g = 3, no shuffle)",
        "shufflenet_v1",
        {"groups": 3, "shuffle": False},
        224,
        None,
        None,
        65.5,
        f"{SH} Table 3",
    ),
    PaperFigure(
        "ShuffleNet 1x (g = 8)",
        "shufflenet_v1",
        {"groups": 8},
        224,
        "140",
        None,
        67.6,
        f"{SH} Table 2/5",
        note="Table 1 gives the same model 137 M (conv only); with the FC layer it is 138.4 M",
    ),
    PaperFigure(
        "ShuffleNet 0.5x (g = 4)",
        "shufflenet_v1",
        {"groups": 4, "scale": 0.5},
        224,
        "38",
        None,
        58.4,
        f"{SH} Table 2/5",
        note="0.5x g = 4 needs rounding the paper does not give (a 34-channel "
        "bottleneck cannot split into 4 groups); ours is 37.5 M (-1.4%)",
    ),
    PaperFigure(
        "ShuffleNet 0.25x (g = 8)",
        "shufflenet_v1",
        {"groups": 8, "scale": 0.25},
        224,
        "13",
        None,
        47.3,
        f"{SH} Table 2",
        note="a 6-channel stem cannot feed groups of 8; rounding it to 8 gives 12.4 M (-4.4%)",
    ),
    PaperFigure(
        "ShuffleNet 1.5x (g = 3)",
        "shufflenet_v1",
        {"groups": 3, "scale": 1.5},
        224,
        "292",
        "3.4",
        71.5,
        f"{V2} Table 4, {SH} Table 5",
        note="the released 1.5x model keeps the stem at 24 channels (292.4 M); scaling every "
        "channel by 1.5, as the paper describes, gives a 36-channel stem and 299.6 M (+2.6%)",
    ),
    PaperFigure(
        "ShuffleNet 2x (g = 3)",
        "shufflenet_v1",
        {"groups": 3, "scale": 2.0},
        224,
        "524",
        "5.4",
        73.7,
        f"{V2} Table 4, {SH} Table 5",
    ),
    # Reference models of the comparison tables. Parameters exclude BatchNorm, as for the
    # light models; the ResNet-50 and Inception v3 figures include it.
    PaperFigure(
        "GoogleNet",
        "googlenet",
        {},
        224,
        "1550",
        "6.8",
        69.8,
        f"{V1} Table 8",
        note="1582.7 M (+2.1%) and 7.00 M (+2.9%) with the 5x5 branches of the paper's Table 1, "
        "whose own rows do not add up: conv1 is printed as 2.7K params / 34 M ops where 7x7x3x64 "
        "filters give 9.4K / 118 M",
    ),
    PaperFigure(
        "VGG 16",
        "vgg16",
        {},
        224,
        "15300",
        "138",
        71.5,
        f"{V1} Table 8",
        note="configuration D has 15470 M multiply-adds (+1.1%)",
    ),
    PaperFigure(
        "AlexNet",
        "alexnet",
        {},
        227,
        "720",
        "60",
        57.2,
        f"{V1} Table 10",
        note="the two-GPU network at 227x227: 724.4 M (+0.6%) and 60.97 M (+1.6%); the paper "
        "rounds to 'about 60 million'",
    ),
    PaperFigure(
        "ResNet-50",
        "resnet50",
        {},
        224,
        "3870",
        "25.56",
        None,
        "reference table of the papers",
        note="v1 (stride on the first 1x1) has 3858 M (-0.3%); 25.50 M without BatchNorm, "
        "25.56 M with its 53,120 parameters",
    ),
    PaperFigure(
        "Inception v3",
        "inception_v3",
        {},
        299,
        "5720",
        "23.83",
        None,
        "reference table of the papers",
        note="5713 M (-0.1%); 23.80 M without BatchNorm, 23.83 M with its 34,432 parameters",
    ),
)


def within_printed_precision(printed: str, value: float) -> bool:
    """Whether ``value`` rounds to ``printed`` at the precision it is printed with."""
    exact = Decimal(printed)
    exponent = exact.as_tuple().exponent
    if not isinstance(exponent, int):  # "n", "N" or "F": NaN or infinity
        raise ValueError(f"{printed!r} is not a finite number")
    half = Decimal(1).scaleb(exponent) / 2
    return exact - half <= Decimal(repr(value)) < exact + half


@dataclass
class Comparison:
    figure: PaperFigure
    madds: float  # millions, counted as the paper counts them (with or without the FC layer)
    params: float  # millions
    total_madds: float  # millions, every multiply-add of the model counted once

    @property
    def madds_matches(self) -> bool | None:
        return None if self.figure.madds is None else within_printed_precision(self.figure.madds, self.madds)

    @property
    def params_matches(self) -> bool | None:
        if self.figure.params is None:
            return None
        return within_printed_precision(self.figure.params, self.params)

    @property
    def madds_diff(self) -> float | None:
        """Relative difference from the printed figure, percent."""
        return None if self.figure.madds is None else 100 * (self.madds / float(self.figure.madds) - 1)

    @property
    def params_diff(self) -> float | None:
        return None if self.figure.params is None else 100 * (self.params / float(self.figure.params) - 1)


def measure(figure: PaperFigure) -> Comparison:
    """Build the figure's model and count it the way its paper does."""
    report = profile(create_model(figure.model, **figure.kwargs), (3, figure.resolution, figure.resolution))
    madds = report.madds if figure.counts_fc else report.madds - report.kind("fully connected").madds
    return Comparison(figure, madds * figure.ops_per_madd / 1e6, report.params / 1e6, report.madds / 1e6)


def figures_for(models: list[str] | None = None) -> list[PaperFigure]:
    """The figures about the given registry names or families (all when empty)."""
    if not models:
        return list(FIGURES)
    from .models import get_entry

    families = {get_entry(name).builder for name in models}
    return [f for f in FIGURES if get_entry(f.model).builder in families]


# MobileNet v1, Table 2: share of the 1.0-224 model's multiply-adds and parameters by
# layer kind, in percent: (kind, MAdds share, params share).
MOBILENET_V1_TABLE2 = (
    ("pointwise", "94.86", "74.59"),  # "Conv 1x1"
    ("depthwise", "3.06", "1.06"),  # "Conv DW 3x3"
    ("conv", "1.19", "0.02"),  # "Conv 3x3"
    ("fully connected", "0.18", "24.33"),
)
MOBILENET_V1_TABLE2_NOTE = (
    "Conv 3x3 MAdds: the paper prints 1.19%, which cannot be right: the stem's 10.84 M "
    "multiply-adds are 1.91% of 568.7 M, and only 1.91 makes the column add up to 100%. "
    "Params of Conv 1x1 / FC: 74.57% / 24.35% against 74.59% / 24.33%: the paper's total "
    "is 0.02 points different from any count of the released model."
)

# MobileNet v1, Table 3: one layer with D_K = 3, M = N = 512, D_F = 14, made cheaper step
# by step: (row, kind of layer, width multiplier, feature map side, MAdds M, params M).
MOBILENET_V1_TABLE3 = (
    ("Convolution", "full", 1.0, 14, "462", "2.36"),
    ("Depthwise Separable Conv", "separable", 1.0, 14, "52.3", "0.27"),
    ("alpha = 0.75", "separable", 0.75, 14, "29.6", "0.15"),
    ("rho = 0.714", "separable", 0.75, 10, "15.1", "0.15"),
)


@dataclass(frozen=True)
class LayerComparison:
    """One row of MobileNet v1's Table 3, measured next to the printed figures."""

    label: str
    madds: float  # millions, measured
    params: float  # millions, measured
    printed_madds: str  # millions, as printed
    printed_params: str  # millions, as printed


def mobilenet_v1_table3() -> list[LayerComparison]:
    """Measure each row of Table 3 (one 14x14x512 layer made cheaper step by step)."""
    from .layers import ConvBNAct, DepthwiseSeparable

    rows = []
    for label, kind, width, side, madds, params in MOBILENET_V1_TABLE3:
        channels = int(512 * width)
        layer = ConvBNAct(channels, channels, 3) if kind == "full" else DepthwiseSeparable(channels, channels)
        report = profile(layer, (channels, side, side))
        rows.append(LayerComparison(label, report.madds / 1e6, report.params / 1e6, madds, params))
    return rows


@dataclass(frozen=True)
class MemoryFigure:
    """One cell of MobileNetV2's Table 3: max channels / memory (KB, 16-bit) at a size.

    ``size`` None is the column's "max" row (the largest tensor anywhere), which prints
    kilobytes only.
    """

    column: str
    size: int | None
    channels: int | None
    kilobytes: str  # as printed; the paper's KB are 1000 bytes


@dataclass(frozen=True)
class MemoryComparison:
    """A :class:`MemoryFigure` next to what the block execution model measures."""

    figure: MemoryFigure
    channels: int  # of the largest tensor at that size; 0 when none is materialised
    kilobytes: float


# MobileNetV2, Table 3, as printed (first row after the paper's first-layer trick).
MEMORY_COLUMNS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "MobileNetV1": ("mobilenet_v1", {}, False),
    "MobileNetV2": ("mobilenet_v2", {}, True),
    # The paper's column says 2x, g = 3 but its channels (400, 800, 1600) are those of
    # 2x with g = 2 (Table 1: 200 at 1x); 2x g = 3 has 480, 960, 1920.
    "ShuffleNet (2x, g=2)": ("shufflenet_v1", {"groups": 2, "scale": 2.0}, True),
}
_V1M, _V2M, _SHM = MEMORY_COLUMNS
MEMORY_TABLE3 = (
    MemoryFigure(_V1M, 112, 64, "1600"),
    MemoryFigure(_V1M, 56, 128, "800"),
    MemoryFigure(_V1M, 28, 256, "400"),
    MemoryFigure(_V1M, 14, 512, "200"),
    MemoryFigure(_V1M, 7, 1024, "199"),
    MemoryFigure(_V1M, 1, 1024, "2"),
    MemoryFigure(_V2M, 112, 16, "400"),
    MemoryFigure(_V2M, 56, 32, "200"),
    MemoryFigure(_V2M, 28, 64, "100"),
    MemoryFigure(_V2M, 14, 160, "62"),
    MemoryFigure(_V2M, 7, 320, "32"),
    MemoryFigure(_V2M, 1, 1280, "2"),
    MemoryFigure(_SHM, 112, 32, "800"),
    MemoryFigure(_SHM, 56, 48, "300"),
    MemoryFigure(_SHM, 28, 400, "600"),
    MemoryFigure(_SHM, 14, 800, "310"),
    MemoryFigure(_SHM, 7, 1600, "156"),
    MemoryFigure(_SHM, 1, 1600, "3"),
    # The "max" row.
    MemoryFigure(_V1M, None, None, "1600"),
    MemoryFigure(_V2M, None, None, "400"),
    MemoryFigure(_SHM, None, None, "600"),
)


def memory_table3() -> list[MemoryComparison]:
    """Measure every printed cell of Table 3 under the block execution model, 16-bit
    activations, in the table's order."""
    from .cost.memory import activation_memory

    reports = {
        column: activation_memory(
            create_model(name, **kwargs), (3, 224, 224), "block", 2, first_layer_trick=trick
        )
        for column, (name, kwargs, trick) in MEMORY_COLUMNS.items()
    }
    out = []
    for figure in MEMORY_TABLE3:
        report = reports[figure.column]
        if figure.size is None:
            out.append(MemoryComparison(figure, 0, report.max_tensor_bytes / 1000))
            continue
        row = report.row(figure.size)
        channels, kilobytes = (row.channels, row.bytes / 1000) if row else (0, 0.0)
        out.append(MemoryComparison(figure, channels, kilobytes))
    return out


COMPARISON_HEADERS = (
    "model",
    "input",
    "paper MAdds (M)",
    "measured MAdds (M)",
    "same",
    "paper params (M)",
    "measured params (M)",
    "same",
    "paper top-1 %",
    "source",
)


def comparison_rows(comparisons: list[Comparison]) -> list[tuple]:
    """One row under :data:`COMPARISON_HEADERS` per comparison."""

    def mark(ok: bool | None) -> str:
        return "" if ok is None else ("yes" if ok else "no")

    rows = []
    for c in comparisons:
        f = c.figure
        rows.append(
            (
                f.label,
                f.resolution,
                f.madds or "",
                round(c.madds, 2),
                mark(c.madds_matches),
                f.params or "",
                round(c.params, 3),
                mark(c.params_matches),
                "" if f.top1 is None else str(f.top1),
                f.source,
            )
        )
    return rows


def report_sections(fmt: str = "markdown") -> list[tuple[str, str]]:
    """Every reproduced paper table, rendered in ``fmt``: (title, text) pairs."""
    comparisons = [measure(f) for f in FIGURES]
    sections = [
        ("Multiply-adds and parameters", render(COMPARISON_HEADERS, comparison_rows(comparisons), fmt))
    ]
    notes = "\n".join(f"- {c.figure.label}: {c.figure.note}" for c in comparisons if c.figure.note)
    sections.append(("Where the papers and a faithful model differ", notes))

    v1 = profile(create_model("mobilenet_v1"))
    rows = [
        (kind, madds, round(v1.kind(kind).madds_share, 2), params, round(v1.kind(kind).params_share, 2))
        for kind, madds, params in MOBILENET_V1_TABLE2
    ]
    text = render(("layer kind", "paper MAdds %", "measured", "paper params %", "measured"), rows, fmt)
    sections.append(
        ("MobileNet v1, Table 2: resources per layer kind", text + "\n\n" + MOBILENET_V1_TABLE2_NOTE)
    )

    rows = [
        (r.label, r.printed_madds, round(r.madds, 2), r.printed_params, round(r.params, 3))
        for r in mobilenet_v1_table3()
    ]
    sections.append(
        (
            "MobileNet v1, Table 3: one 14x14x512 layer made cheaper",
            render(("layer", "paper MAdds (M)", "measured", "paper params (M)", "measured"), rows, fmt),
        )
    )

    def printed_cell(f: MemoryFigure) -> str:
        return f.kilobytes if f.size is None else f"{f.channels}/{f.kilobytes}"

    def measured_cell(m: MemoryComparison) -> str:
        if m.figure.size is None:
            return f"{m.kilobytes:.1f}"
        return f"{m.channels}/{m.kilobytes:.1f}" if m.channels else "not materialised (first-layer trick)"

    memory_rows = [
        (
            m.figure.column,
            "max" if m.figure.size is None else f"{m.figure.size}x{m.figure.size}",
            printed_cell(m.figure),
            measured_cell(m),
        )
        for m in memory_table3()
    ]
    sections.append(
        (
            "MobileNetV2, Table 3: largest tensor per spatial size, channels/KB "
            "(16-bit activations, each block one operation)",
            render(("network", "size", "paper", "measured"), memory_rows, fmt),
        )
    )
    return sections
