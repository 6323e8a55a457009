"""Where the benchmarks find what sits beside the repository, worked out once.

The weights and data sets live in ``../shared`` (next to the checkout); the weights
root can be moved with ``$LIGHTNETS_WEIGHTS``, as for lightnets itself. Scripts run
as ``python benchmarks/<name>.py`` import this module from their own folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The tests' helpers (peers.py: torchvision and timm as peers; random_statistics.py) serve
# the benchmarks too.
sys.path.append(str(REPO / "tests"))
SHARED = REPO.parent / "shared"
WEIGHTS = Path(os.environ.get("LIGHTNETS_WEIGHTS") or SHARED / "weights")
IMAGENET_SAMPLE = SHARED / "data" / "imagenet-sample"
IMAGENETTE = SHARED / "data" / "imagenette2-224-subset"
# The images compression recovers from (never the evaluation sample): Imagenette's training
# images, then the extra ones.
RECOVERY_IMAGES = [IMAGENETTE / "train", SHARED / "data" / "imagenette2-224-extra" / "train"]
CIFAR_JPEG = SHARED / "data" / "cifar10-jpg" / "CIFAR-10-images.tar.gz"


def use_shared_weights() -> Path:
    """Make the shared weights lightnets' default weights root (unless
    ``$LIGHTNETS_WEIGHTS`` names another) and return the root in use."""
    os.environ.setdefault("LIGHTNETS_WEIGHTS", str(WEIGHTS))
    return Path(os.environ["LIGHTNETS_WEIGHTS"])
