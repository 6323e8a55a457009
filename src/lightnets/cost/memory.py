"""Peak activation memory of a network under two execution models.

The network is traced with ``torch.fx`` into a graph of operations, shapes are
propagated on the meta device, and a liveness pass finds, for every operation, which
tensors must exist while it runs: its inputs, its output, and everything computed
earlier that a later operation still needs (a residual shortcut, say). The peak over
the graph is the memory needed to run it (MobileNetV2's Section 5 bound,
``max over ops of the total size of the live tensors``).

Two execution models:

* ``"layer"``: every layer is an operation and every layer's output is materialised;
* ``"block"``: each block (inverted residual, ShuffleNet unit, Fire module,
  depthwise-separable pair) is one operation whose inner tensors are disposable: the
  paper's assumption behind its Table 3, realised by computing the expanded tensor in
  chunks.

BatchNorm, activations, dropout and reshapes run in place on their input (as they do
once BatchNorm is folded and the activation fused) and allocate nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from .kinds import ACTIVATIONS, DROPOUTS, NORMS, RESHAPES
from .meta import check_input_size, meta_copy

EXECUTION_MODELS = ("layer", "block")

# Blocks that run as one operation under the "block" execution model: lightnets' own
# and the same blocks in torchvision / timm, matched by class name.
DEFAULT_BLOCKS = frozenset(
    {
        "InvertedResidual",
        "ShuffleUnit",
        "Fire",
        "DepthwiseSeparable",
        "DepthwiseSeparableConv",
        "Bottleneck",
        "BasicBlock",
    }
)

_IN_PLACE_MODULES = NORMS + ACTIVATIONS + DROPOUTS
_VIEW_MODULES = RESHAPES
_VIEW_METHODS = frozenset(
    {"view", "reshape", "flatten", "unflatten", "transpose", "permute", "contiguous", "squeeze", "unsqueeze"}
)
_VIEW_FUNCTIONS = frozenset({torch.flatten, torch.reshape, torch.transpose, torch.squeeze, torch.unsqueeze})
_IN_PLACE_FUNCTIONS = frozenset(
    {torch.relu, nn.functional.relu, nn.functional.relu6, nn.functional.dropout, nn.functional.hardtanh}
)
_IN_PLACE_METHODS = frozenset({"relu", "relu_", "clamp", "clamp_"})


@dataclass
class ResolutionRow:
    """The largest tensor materialised at one spatial size (MobileNetV2's Table 3 row)."""

    height: int
    width: int
    channels: int
    bytes: int
    tensor: str


@dataclass
class MemoryReport:
    """Activation memory of one execution model, for a batch of one."""

    execution: str
    bytes_per_element: int
    peak_bytes: int  # the most that is ever live at once
    peak_at: str  # the operation running at that moment
    rows: list[ResolutionRow] = field(default_factory=list)

    @property
    def max_tensor_bytes(self) -> int:
        """The largest single materialised tensor (Table 3's "max" row)."""
        return max((row.bytes for row in self.rows), default=0)

    def row(self, size: int) -> ResolutionRow | None:
        return next((r for r in self.rows if r.height == size and r.width == size), None)

    def to_dict(self) -> dict:
        return {**asdict(self), "max_tensor_bytes": self.max_tensor_bytes}


@dataclass
class MemoryAnalysis:
    """Both execution models side by side (what ``profile(memory=True)`` attaches)."""

    layer: MemoryReport
    block: MemoryReport

    def to_dict(self) -> dict:
        return {"layer": self.layer.to_dict(), "block": self.block.to_dict()}


class _BlockTracer(fx.Tracer):
    def __init__(self, blocks: frozenset[str]) -> None:
        super().__init__()
        self.blocks = blocks

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m).__name__ in self.blocks or super().is_leaf_module(m, module_qualified_name)


def activation_memory(
    model: nn.Module,
    input_size: tuple[int, int, int] = (3, 224, 224),
    execution: str = "layer",
    bytes_per_element: int = 2,
    blocks: Iterable[type | str] | None = None,
    first_layer_trick: bool = False,
) -> MemoryReport:
    """Peak activation memory and the largest tensor at each spatial size.

    ``bytes_per_element`` defaults to 2 (16-bit activations, as MobileNetV2's Table 3
    assumes). ``blocks`` names the module classes that run as one operation under
    ``execution="block"``. ``first_layer_trick`` treats the first layer's output as
    computed piecewise and consumed at once (the paper's trick for the first layer of
    MobileNetV2 and ShuffleNet), so it is never materialised.
    """
    if execution not in EXECUTION_MODELS:
        raise ValueError(f"unknown execution model {execution!r}; expected one of {EXECUTION_MODELS}")
    if bytes_per_element <= 0:
        raise ValueError(f"bytes_per_element must be positive, got {bytes_per_element!r}")
    size = check_input_size(model, input_size)
    block_names: frozenset[str] = frozenset()
    if execution == "block":
        block_names = (
            DEFAULT_BLOCKS
            if blocks is None
            else frozenset(b if isinstance(b, str) else b.__name__ for b in blocks)
        )
    meta = meta_copy(model).eval()
    try:
        graph = _BlockTracer(block_names).trace(meta)
    except Exception as error:  # fx raises many types for untraceable code
        raise ValueError(
            f"activation memory needs a model torch.fx can trace; {type(model).__name__} "
            f"is not traceable: {error}"
        ) from error
    module = fx.GraphModule(meta, graph)
    ShapeProp(module).propagate(torch.empty((1, *size), device="meta"))
    return _liveness(module, execution, bytes_per_element, first_layer_trick)


def _is_alias(module: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` reuses its first input's memory instead of allocating."""
    if node.op == "call_module":
        sub = module.get_submodule(str(node.target))
        if isinstance(sub, _VIEW_MODULES):
            return True
        return isinstance(sub, _IN_PLACE_MODULES) and _single_user(node)
    if node.op == "call_method":
        if node.target in _VIEW_METHODS:
            return True
        return node.target in _IN_PLACE_METHODS and _single_user(node)
    if node.op == "call_function":
        if node.target in _VIEW_FUNCTIONS or node.target is operator.getitem:
            return True
        return node.target in _IN_PLACE_FUNCTIONS and _single_user(node)
    return False


def _single_user(node: fx.Node) -> bool:
    source = next((a for a in node.all_input_nodes), None)
    return source is not None and len(source.users) == 1


def _liveness(
    module: fx.GraphModule, execution: str, bytes_per_element: int, first_layer_trick: bool
) -> MemoryReport:
    nodes = list(module.graph.nodes)
    root: dict[fx.Node, fx.Node] = {}  # node -> the node that owns its memory
    size: dict[fx.Node, int] = {}  # owner -> bytes
    birth: dict[fx.Node, int] = {}
    death: dict[fx.Node, int] = {}
    first_layer_done = False
    for index, node in enumerate(nodes):
        meta = node.meta.get("tensor_meta")
        for source in node.all_input_nodes:
            if source in root:
                death[root[source]] = index
        if not isinstance(meta, TensorMetadata):
            continue
        if _is_alias(module, node) and node.all_input_nodes and node.all_input_nodes[0] in root:
            root[node] = root[node.all_input_nodes[0]]
            continue
        root[node] = node
        numel = 1
        for dim in meta.shape[1:]:
            numel *= int(dim)
        bytes_ = numel * int(meta.shape[0]) * bytes_per_element
        if first_layer_trick and not first_layer_done and node.op != "placeholder":
            bytes_ = 0  # computed piecewise and consumed at once: never materialised
            first_layer_done = True
        size[node] = bytes_
        birth[node] = index
        death.setdefault(node, index)

    peak, peak_at = 0, ""
    for index, node in enumerate(nodes):
        live = sum(size[o] for o in size if birth[o] <= index <= death[o])
        if live > peak:
            peak, peak_at = live, node.name

    rows: dict[tuple[int, int], ResolutionRow] = {}
    for owner, bytes_ in size.items():
        if bytes_ == 0:
            continue
        shape = owner.meta["tensor_meta"].shape
        if len(shape) == 4:
            channels, height, width = int(shape[1]), int(shape[2]), int(shape[3])
        elif len(shape) == 2:
            channels, height, width = int(shape[1]), 1, 1
        else:
            continue
        key = (height, width)
        if key not in rows or channels > rows[key].channels:
            rows[key] = ResolutionRow(height, width, channels, bytes_, owner.name)
    ordered = sorted(rows.values(), key=lambda r: (-r.height * r.width, -r.channels))
    return MemoryReport(execution, bytes_per_element, peak, peak_at, ordered)


def memory_report(
    model: nn.Module, input_size: tuple[int, int, int], bytes_per_element: int = 2
) -> MemoryAnalysis:
    """Both execution models for ``profile(memory=True)``."""
    return MemoryAnalysis(
        layer=activation_memory(model, input_size, "layer", bytes_per_element),
        block=activation_memory(model, input_size, "block", bytes_per_element),
    )
