"""Deployment outputs are written whole or not at all; the runtime refuses raw pixels."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

import lightnets
from lightnets.deploy import export as export_module
from lightnets.deploy.export import OnnxMetadata, export_onnx
from lightnets.deploy.runtime import Runtime, _export_cache
from lightnets.files import OutputError
from lightnets.weights.store import cache_dir, cache_folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = lightnets.create_model("squeezenet1_1", num_classes=4).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", input_size=64)


def _disk_full_after_half(monkeypatch):
    import onnx

    real_save = onnx.save

    def half_then_full(proto, path, *args, **kwargs):
        real_save(proto, path, *args, **kwargs)
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", half_then_full)


def test_export_on_a_full_disk_keeps_the_old_file(exported, tmp_path, monkeypatch):
    model, good = exported
    target = tmp_path / "model.onnx"
    target.write_bytes(good.read_bytes())
    _disk_full_after_half(monkeypatch)
    with pytest.raises(OutputError, match=f"no space left on device writing {target}"):
        export_onnx(model, target, input_size=64)
    assert target.read_bytes() == good.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_save_onnx_read_only_folder(exported, tmp_path, monkeypatch):
    import onnx

    proto = onnx.load(str(exported[1]))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(onnx, "save", read_only)
    with pytest.raises(OutputError, match="read-only file system"):
        export_module.save_onnx(proto, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.int32, np.bool_])
def test_runtime_refuses_integer_input_naming_the_dtype(exported, dtype):
    runtime = Runtime(exported[1])
    batch = np.zeros((1, 3, 64, 64), dtype=dtype)
    with pytest.raises(ValueError, match=f"got {np.dtype(dtype).name}"):
        runtime.run(batch)
    with pytest.raises(ValueError, match="got int64"):
        runtime(torch.zeros(1, 3, 64, 64, dtype=torch.int64))


def test_runtime_takes_float_input_of_any_width(exported):
    model, path = exported
    runtime = Runtime(path)
    x = torch.randn(2, 3, 64, 64)
    expected = model(x).detach().numpy()
    assert np.allclose(runtime.run(x.double().numpy()), expected, atol=1e-3)
    assert np.allclose(runtime(x.half().float()).numpy(), model(x.half().float()).detach().numpy(), atol=1e-3)


@pytest.mark.parametrize(
    "props, key",
    [
        ({"lightnets.transform": '{"size": 100000, "resize": 100000}'}, "transform"),
        ({"lightnets.transform": "{nope"}, "transform"),
        ({"lightnets.input_size": "7"}, "input_size"),
        ({"lightnets.input_size": "[3, 100000000, 2]"}, "input_size"),
        ({"lightnets.model_kwargs": "[1]"}, "model_kwargs"),
        ({"lightnets.class_names": '{"a": 1}'}, "class_names"),
    ],
)
def test_hostile_onnx_metadata_is_a_value_error_naming_the_key(props, key):
    with pytest.raises(ValueError, match=f"bad lightnets metadata lightnets.{key}"):
        OnnxMetadata.from_props(props)


def test_named_cache_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "c"))
    assert cache_folder("onnx") == tmp_path / "c" / "onnx"
    assert cache_dir() == cache_folder("weights")
    assert _export_cache() == cache_folder("onnx")
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            cache_folder(bad)
