"""The TFLite importer against the LiteRT interpreter running the same files.

Our float model gets the file's dequantised weights; LiteRT runs the integer model.
Both see the same pixels: the spec transform's uint8 crop, fed raw to LiteRT and
normalised for us. LiteRT's top-1 is read from its dequantised logits (the SOFTMAX
input); where its uint8 logits tie, any of the tied classes counts as its top-1.
"""

from __future__ import annotations

import csv
import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lightnets
from lightnets.data.images import load_image
from lightnets.data.transforms import EvalTransform
from lightnets.weights.importers.tflite import attach_activation_quantisation, import_tflite, read_tflite
from lightnets.weights.load import load_weights
from lightnets.weights.spec import get_weights, list_weights
from lightnets.weights.store import WeightsError, resolve

litert = pytest.importorskip("ai_edge_litert.interpreter")

TAGS = tuple(list_weights("*.tflite_*"))  # every TFLite weight set
V1_025, V1_050 = "mobilenet_v1_025_128.tflite_uint8", "mobilenet_v1_050_160.tflite_uint8"
V2_UINT8 = "mobilenet_v2_100_224.tflite_uint8"
FAST_STEP = 5  # the agreement tests use every 5th image: 100 images spread over all 500 classes
QUICK_STEP = 10  # the other comparisons: 50 images


@functools.cache
def _images(root: Path, transform: EvalTransform, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 crops and their class indices."""
    with open(root / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[::step]
    crops = np.stack([transform.to_uint8(load_image(root / "images" / row["filename"])) for row in rows])
    return crops, np.array([int(row["class_index"]) for row in rows])


@functools.cache
def _litert_logits(path: Path, crops_key: tuple, crops_bytes: bytes) -> np.ndarray:
    """LiteRT's dequantised logits (background dropped) for a batch of uint8 crops."""
    crops = np.frombuffer(crops_bytes, np.uint8).reshape(crops_key)
    logits_index = read_tflite(path).logits_index
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging"
        interpreter = litert.Interpreter(
            model_path=str(path), num_threads=2, experimental_preserve_all_tensors=True
        )
    interpreter.allocate_tensors()
    (details,) = interpreter.get_input_details()
    (logits_details,) = [d for d in interpreter.get_tensor_details() if d["index"] == logits_index]
    scale, zero_point = logits_details["quantization"]
    out = []
    for crop in crops:
        interpreter.set_tensor(details["index"], crop[None])
        interpreter.invoke()
        out.append(interpreter.get_tensor(logits_index)[0].astype(np.float32))
    return (np.stack(out) - zero_point)[:, 1:] * scale


def _run(tag: str, root: Path, step: int, model: torch.nn.Module | None = None):
    """(our logits, LiteRT's logits, labels) on every ``step``-th sample image."""
    spec = get_weights(tag)
    crops, labels = _images(root, spec.transform, step)
    model = lightnets.create_model(spec.model, weights=tag) if model is None else model
    model.eval()
    x = torch.stack([spec.transform.normalise(crop) for crop in crops])
    with torch.no_grad():
        ours = torch.cat([model(batch) for batch in x.split(100)]).numpy()
    theirs = _litert_logits(resolve(spec)[0], crops.shape, crops.tobytes())
    return ours, theirs, labels


def _agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(our top-1 is LiteRT's top-1, tied classes included; LiteRT's top-1 in our top-5)."""
    rows = np.arange(len(ours))
    top1 = float(np.mean(theirs[rows, ours.argmax(1)] == theirs.max(1)))
    top5 = np.argsort(-ours, axis=1)[:, :5]
    in_top5 = float(np.mean([t in five for t, five in zip(theirs.argmax(1), top5, strict=True)]))
    return top1, in_top5


def _check_agreement(tag: str, root: Path, step: int) -> None:
    ours, theirs, _ = _run(tag, root, step)
    assert ours.shape == theirs.shape == (len(ours), 1000)
    top1, in_top5 = _agreement(ours, theirs)
    assert top1 >= 0.95, f"{tag}: top-1 agreement with LiteRT {top1:.1%}"
    assert in_top5 >= 0.99, f"{tag}: LiteRT's top-1 in our top-5 for only {in_top5:.1%}"


@pytest.mark.parametrize("tag", TAGS)
def test_agrees_with_litert(tag, weights_root, imagenet_sample):
    _check_agreement(tag, imagenet_sample, FAST_STEP)


@pytest.mark.slow
@pytest.mark.parametrize("tag", TAGS)
def test_agrees_with_litert_all_images(tag, weights_root, imagenet_sample):
    _check_agreement(tag, imagenet_sample, 1)


def test_activation_quantisation_follows_litert_closer(weights_root, imagenet_sample):
    """Rounding the activations as the integer model does shrinks the logit differences."""
    ours, theirs, _ = _run(V1_025, imagenet_sample, QUICK_STEP)
    model = lightnets.create_model("mobilenet_v1", weights=V1_025)
    handles = attach_activation_quantisation(model, resolve(get_weights(V1_025))[0])
    quantised, _, _ = _run(V1_025, imagenet_sample, QUICK_STEP, model)
    assert np.abs(quantised - theirs).max() < 0.5 * np.abs(ours - theirs).max()
    assert _agreement(quantised, theirs)[0] >= _agreement(ours, theirs)[0]
    for handle in handles:
        handle.remove()
    again, _, _ = _run(V1_025, imagenet_sample, QUICK_STEP, model)
    np.testing.assert_array_equal(again, ours)


@pytest.mark.parametrize("tag", TAGS)
def test_weights_are_litert_dequantised(tag, weights_root):
    """Every weight equals LiteRT's own tensor dequantised with LiteRT's parameters."""
    spec = get_weights(tag)
    path = resolve(spec)[0]
    model = lightnets.create_model(spec.model, weights=tag)
    interpreter = litert.Interpreter(model_path=str(path))
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    weights = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    layers = read_tflite(path).layers
    assert len(layers) == len(weights)
    for layer, module in zip(layers, weights, strict=True):
        q = interpreter.get_tensor(layer.weight_index).astype(np.float64)
        params = details[layer.weight_index]["quantization_parameters"]
        axis = params["quantized_dimension"]
        view = [-1 if i == axis else 1 for i in range(q.ndim)]
        real = params["scales"].reshape(view) * (q - params["zero_points"].reshape(view))
        if layer.op == "DEPTHWISE_CONV_2D":
            real = real[0].transpose(2, 0, 1)[:, None]
        else:
            real = real.transpose(0, 3, 1, 2)
        if isinstance(module, torch.nn.Linear):
            real = real[1:, :, 0, 0]  # 1x1 conv to 1001 classes -> Linear to 1000
        np.testing.assert_allclose(module.weight.detach().numpy(), real, rtol=1e-6, atol=1e-7)


def test_batchnorm_is_identity_plus_bias(weights_root):
    model = lightnets.create_model("mobilenet_v2", weights="mobilenet_v2_100_224.tflite_int8_ptq").eval()
    layer = read_tflite(resolve(get_weights("mobilenet_v2_100_224.tflite_int8_ptq"))[0]).layers[0]
    bn = model.features[0].bn
    assert torch.equal(bn.bias.detach(), torch.from_numpy(layer.bias))
    x = torch.randn(2, bn.num_features, 5, 5) * 10
    with torch.no_grad():
        assert torch.equal(bn(x), x + bn.bias[:, None, None])


def test_importer_returns_the_full_state_dict_and_leaves_the_model(weights_root):
    spec = get_weights(V1_025)
    model = lightnets.create_model("mobilenet_v1", **spec.model_kwargs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = import_tflite(resolve(spec), model)
    assert list(state) == list(model.state_dict())
    assert all(state[k].shape == v.shape for k, v in before.items())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert state["head.fc.weight"].shape == (1000, 256)


def _assert_unchanged(model, before):
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert getattr(model, "pretrained_cfg", None) is None


@pytest.mark.parametrize("keep", [0, 7, 64, 4096, "half", -1])
def test_truncated_file_is_refused(weights_root, tmp_path, keep):
    source = resolve(get_weights(V1_025))[0]
    data = source.read_bytes()
    keep = {"half": len(data) // 2, -1: len(data) - 1}.get(keep, keep)
    cut = tmp_path / source.name
    cut.write_bytes(data[:keep])
    model = lightnets.create_model("mobilenet_v1", width=0.25, act="relu6", padding="tf_same")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError):
        load_weights(model, cut)
    _assert_unchanged(model, before)


def test_corrupt_file_is_refused(weights_root, tmp_path):
    source = resolve(get_weights(V1_025))[0]
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(0)
    model = lightnets.create_model("mobilenet_v1", width=0.25, act="relu6", padding="tf_same")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for trial in range(20):  # scribble over the tables at the start, keep the identifier
        damaged = bytearray(data)
        start = int(rng.integers(8, 4096))
        damaged[start : start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        path = tmp_path / f"damaged{trial}.tflite"
        path.write_bytes(bytes(damaged))
        try:
            import_tflite([path], model)
        except WeightsError:
            pass  # refused; anything else (a crash) fails the test
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x1c\x00\x00\x00TFL3" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(WeightsError):
        load_weights(model, garbage)
    _assert_unchanged(model, before)


def test_v1_file_into_v2_model_is_refused(weights_root):
    v1_file = resolve(get_weights(V1_025))[0]
    model = lightnets.create_model("mobilenet_v2", padding="tf_same")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match="does not fit|weight layers"):
        load_weights(model, v1_file)
    with pytest.raises(WeightsError, match="for mobilenet_v1"):
        load_weights(model, V1_025)
    with pytest.raises(WeightsError, match="for mobilenet_v1"):
        lightnets.create_model("mobilenet_v2", weights=V1_025)
    _assert_unchanged(model, before)
    v2_file = resolve(get_weights(V2_UINT8))[0]
    v1 = lightnets.create_model("mobilenet_v1", act="relu6", padding="tf_same")
    with pytest.raises(WeightsError):
        import_tflite([v2_file], v1)


def test_other_width_is_refused(weights_root):
    file_050 = resolve(get_weights(V1_050))[0]
    model = lightnets.create_model("mobilenet_v1", width=0.25, act="relu6", padding="tf_same")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=r"features\.0\.conv.*\[16, 3, 3, 3\].*\[8, 3, 3, 3\]"):
        load_weights(model, file_050)
    with pytest.raises(WeightsError, match="width"):
        load_weights(model, V1_050)
    _assert_unchanged(model, before)


def test_wrong_activation_is_refused(weights_root):
    path = resolve(get_weights(V1_025))[0]
    model = lightnets.create_model("mobilenet_v1", width=0.25, act="relu", padding="tf_same")
    with pytest.raises(WeightsError, match="relu6"):
        import_tflite([path], model)


def test_symmetric_padding_is_refused(weights_root):
    """The files pad stride-2 convolutions as TF "SAME": a symmetric model is refused."""
    model = lightnets.create_model("mobilenet_v1", width=0.25, act="relu6", padding="symmetric")
    with pytest.raises(WeightsError, match="padding"):
        load_weights(model, V1_025)  # check_architecture
    with pytest.raises(WeightsError, match="padding='tf_same'"):
        load_weights(model, resolve(get_weights(V1_025))[0])  # the importer
    with pytest.raises(WeightsError, match="padding"):
        lightnets.create_model("mobilenet_v1", weights=V1_025, padding="symmetric")


def test_symmetric_padding_breaks_agreement(weights_root, imagenet_sample):
    """Why the check matters: the same weights with symmetric padding drift from LiteRT."""
    loaded = lightnets.create_model("mobilenet_v1", weights=V1_025)
    symmetric = lightnets.create_model("mobilenet_v1", width=0.25, act="relu6", padding="symmetric")
    symmetric.load_state_dict(loaded.state_dict())
    ours, theirs, _ = _run(V1_025, imagenet_sample, QUICK_STEP, symmetric)
    top1, _ = _agreement(ours, theirs)
    assert top1 < 0.6, f"symmetric padding still agrees {top1:.0%}"
