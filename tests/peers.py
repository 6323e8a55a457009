"""Test-only access to reference ("peer") model definitions in torchvision and timm.

Never import this from the library: lightnets must not depend on torchvision or timm.

PyPI only ships CUDA builds of torchvision, whose compiled ``_C`` extension cannot load next to
the CPU torch we use.  torchvision then skips its C++ ops, except that ``import torchvision``
still calls ``torch.library.register_fake("torchvision::nms" / "::qnms")``, which fails because
those ops were never defined.  Declaring the two schemas ourselves first makes the import work.
The pure-Python model definitions (torchvision.models, timm) never call those ops; the detection
ops (torchvision.ops.nms, roi_align, ...) stay unusable and say so when called.

Setup (tests only; ``--no-deps`` keeps pip from replacing torch):
    pip install --no-deps torchvision==0.28.0 timm==1.0.31   # 0.28.0 pins torch==2.13.0
    pip install pyyaml huggingface_hub safetensors           # timm's deps, none need torch

Usage in a test:
    try:
        tvm = import_torchvision()
    except ImportError as e:
        pytest.skip(str(e))
"""

import importlib
import importlib.machinery
import importlib.util
import pathlib
import sys

import torch

# Schemas copied from torchvision 0.28's csrc (the ops its import registers fake kernels for).
_TV_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
# Kept at module level on purpose: a Library that is garbage-collected takes its definitions with it.
_tv_lib = None


def _op_defined(name: str) -> bool:
    return bool(torch._C._jit_get_schemas_for_operator(f"torchvision::{name}"))


def _declare_torchvision_ops(pkg_dir: pathlib.Path) -> None:
    global _tv_lib
    # If torchvision's own _C can load (a matching CPU build), let it define the real ops first;
    # defining them ourselves beforehand would clash with its registration.
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        so = pkg_dir / f"_C{suffix}"
        if so.exists():
            try:
                torch.ops.load_library(str(so))
            except OSError:
                pass  # the expected CUDA-build case: fall back to declaring schemas
            break
    missing = [n for n in _TV_SCHEMAS if not _op_defined(n)]
    if missing:
        # FRAGMENT, not DEF: adds to the namespace without claiming it, so it is safe to repeat.
        _tv_lib = _tv_lib or torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            _tv_lib.define(_TV_SCHEMAS[name])


def import_torchvision():
    """Return ``torchvision.models``; raise ImportError (with the reason) when it cannot be had."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise ImportError("torchvision is not installed (pip install --no-deps torchvision==0.28.0)")
    if "torchvision" not in sys.modules:
        _declare_torchvision_ops(pathlib.Path(spec.origin).parent)
    try:
        return importlib.import_module("torchvision.models")
    except Exception as e:  # e.g. a torchvision built for another torch: report, let tests skip
        raise ImportError(f"torchvision is installed but failed to import: {e!r}") from e


def import_timm():
    """Return the ``timm`` module (it imports torchvision, so that is prepared first)."""
    import_torchvision()
    if importlib.util.find_spec("timm") is None:
        raise ImportError("timm is not installed (pip install --no-deps timm==1.0.31)")
    try:
        return importlib.import_module("timm")
    except Exception as e:  # e.g. missing pyyaml / huggingface_hub / safetensors
        raise ImportError(f"timm is installed but failed to import: {e!r}") from e


def torchvision_or_skip():
    """``torchvision.models`` for a test, which is skipped (saying why) when it cannot be had."""
    import pytest

    try:
        return import_torchvision()
    except ImportError as error:
        pytest.skip(str(error))


def timm_or_skip():
    """``timm`` for a test, which is skipped (saying why) when it cannot be had."""
    import pytest

    try:
        return import_timm()
    except ImportError as error:
        pytest.skip(str(error))
