"""Cost analysis of any ``nn.Module``: parameters, multiply-adds, activation memory."""

from .kinds import COSTED_KINDS, KINDS, layer_kind
from .memory import MemoryAnalysis, MemoryReport, activation_memory
from .profile import CostReport, KindCost, LayerCost, profile

__all__ = [
    "COSTED_KINDS",
    "KINDS",
    "CostReport",
    "KindCost",
    "LayerCost",
    "MemoryAnalysis",
    "MemoryReport",
    "activation_memory",
    "layer_kind",
    "profile",
]
