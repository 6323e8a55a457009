"""PyTorch checkpoints of the same architectures from torchvision, timm or lightnets.

The model zoos name their tensors differently (torchvision's ``features.1.conv.0.0.weight``
is lightnets' ``features.1.depthwise.conv.weight``), but a model of the same
architecture holds the same tensors in the same order: every zoo defines a block's
layers in the order they run. So a checkpoint is mapped by position, and every pair is
checked to have the same shape and the same role (weight, bias, running mean ...).
Mapping back needs only the peer's key list, from a peer model or a peer checkpoint.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..store import WeightsError


def _role(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_by_position(
    source: Mapping[str, Tensor], target_keys: Sequence[str], target_shapes: Mapping[str, tuple], what: str
) -> dict[str, Tensor]:
    """Rename ``source``'s tensors to ``target_keys``, pairing them in order.

    Raises :class:`WeightsError` at the first pair whose shape or role differs.
    """
    source_items = list(source.items())
    if len(source_items) != len(target_keys):
        raise WeightsError(
            f"{what}: {len(source_items)} tensors where the model has {len(target_keys)}: another architecture"
        )
    mapped = {}
    for (key, tensor), target in zip(source_items, target_keys, strict=True):
        shape = tuple(target_shapes[target])
        if tuple(tensor.shape) != shape or _role(key) != _role(target):
            raise WeightsError(
                f"{what}: {key} {tuple(tensor.shape)} cannot be {target} {shape}: another architecture"
            )
        mapped[target] = tensor
    return mapped


def from_peer(model: nn.Module, state: Mapping[str, Tensor], what: str = "checkpoint") -> dict[str, Tensor]:
    """A state dict for ``model`` from a peer's state dict of the same architecture."""
    own = model.state_dict()
    if set(state) == set(own):  # already lightnets' names
        return dict(state)
    return map_by_position(state, list(own), {k: v.shape for k, v in own.items()}, what)


def to_peer(
    model: nn.Module, peer_keys: Sequence[str] | nn.Module | Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``model``'s tensors under a peer's names (given as keys, a peer model or its state dict)."""
    if isinstance(peer_keys, nn.Module):
        peer_keys = peer_keys.state_dict()
    if isinstance(peer_keys, Mapping):
        shapes = {k: tuple(v.shape) for k, v in peer_keys.items()}
        keys = list(peer_keys)
    else:
        keys = list(peer_keys)
        shapes = {k: tuple(v.shape) for k, v in zip(keys, model.state_dict().values(), strict=False)}
    return map_by_position(model.state_dict(), keys, shapes, "export")


def read_torch_state_dict(path: Path, model: nn.Module) -> dict[str, Tensor]:
    """A state dict for ``model`` from a ``torch.save`` file, loaded without unpickling code."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise WeightsError(f"{path}: cannot read ({error})") from None
    # torch.save writes a zip archive (since 1.6) or a bare pickle (protocol 2+: 0x80).
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise WeightsError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # The message's detail (e.g. "Unsupported global: GLOBAL posix.system") follows its preamble.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = next((line for line in lines if "unsupported" in line.lower()), lines[0] if lines else "")
        raise WeightsError(
            f"{path} refused: it is not a plain file of tensors; it holds Python objects or pickle "
            f"instructions that could run code when loaded ({detail})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint: {error}") from None
    except Exception as error:  # noqa: BLE001 - the restricted unpickler fails on garbage in any way
        raise WeightsError(
            f"{path} is not a readable PyTorch checkpoint (damaged: {type(error).__name__}: {error})"
        ) from None
    state = _unwrap(loaded, path)
    return from_peer(model, state, str(path))


def _unwrap(loaded: object, path: Path) -> dict[str, Tensor]:
    """The state dict inside a checkpoint (bare, or under 'state_dict' / 'model')."""
    if isinstance(loaded, Mapping):
        state: Mapping = loaded
        for key in ("state_dict", "model", "model_state_dict"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
        tensors = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise WeightsError(f"{path} holds no state dict of tensors")
