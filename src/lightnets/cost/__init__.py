"""Cost analysis of any ``nn.Module``: parameters, multiply-adds, activation memory."""

from .profile import CostReport, KindCost, LayerCost, layer_kind, profile

__all__ = ["CostReport", "KindCost", "LayerCost", "layer_kind", "profile"]
