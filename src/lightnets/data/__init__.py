"""Images in, tensors out: loading, evaluation transforms, labelled image sets."""

from .images import UnreadableImage, load_image
from .transforms import EvalTransform

__all__ = ["EvalTransform", "UnreadableImage", "load_image"]
