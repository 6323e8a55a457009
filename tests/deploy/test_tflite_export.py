"""TFLite export and the LiteRT runtime: real weights, real photographs, the official files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from lightnets.data.transforms import EvalTransform
from lightnets.deploy import calibration_files, prepare_images, top1_agreement
from lightnets.deploy import tflite as tflite_module
from lightnets.deploy.litert import LiteRTRuntime
from lightnets.deploy.tflite import _with_metadata, export_tflite, least_error_fraction, read_tflite_metadata
from lightnets.weights.spec import get_weights
from lightnets.weights.store import resolve
from lightnets.zoo import model_for_weights, transform_of

GLUON = "squeezenet1_1.gluon_npy"


@pytest.fixture(scope="module")
def squeezenet(weights_root):
    return model_for_weights(GLUON, weights_root=weights_root).eval()


@pytest.fixture(scope="module")
def photos(squeezenet, imagenet_sample):
    """Twelve real photographs spread over the sample, and the PyTorch model's logits."""
    images = prepare_images(calibration_files(imagenet_sample / "images", 12), transform_of(squeezenet))
    with torch.no_grad():
        return images, squeezenet(images)


@pytest.fixture(scope="module")
def exported(squeezenet, imagenette, tmp_path_factory):
    """The fp32 and int8 TFLite files of SqueezeNet 1.1 (int8 calibrated on 32 Imagenette photos)."""
    folder = tmp_path_factory.mktemp("tflite")
    fp32 = export_tflite(squeezenet, folder / "fp32.tflite")
    int8 = export_tflite(
        squeezenet, folder / "int8.tflite", int8=True, calibration=imagenette / "train", num_images=32
    )
    return fp32, int8


def test_fp32_file_gives_the_pytorch_answers_on_real_photos(exported, photos):
    images, reference = photos
    runtime = LiteRTRuntime(exported[0], threads=1)
    assert runtime.input["shape"].tolist() == [1, 224, 224, 3]  # NHWC, batch 1, as LiteRT users feed
    assert runtime.input["dtype"] == np.float32
    logits = runtime(images)
    assert top1_agreement(reference, logits) == 1.0
    assert float((logits - reference).abs().max()) < 1e-3


def test_metadata_round_trip(exported, squeezenet):
    meta = read_tflite_metadata(exported[0])
    assert meta.model_name == "squeezenet1_1" and meta.weights == GLUON
    assert meta.input_size == (3, 224, 224)
    assert meta.transform == transform_of(squeezenet)
    assert len(meta.class_names) == 1000 and meta.precision == "fp32"
    assert meta.extra["lightnets.layout"] == "NHWC"
    assert read_tflite_metadata(exported[1]).precision == "int8"


def test_int8_file_takes_integers_and_mostly_agrees(exported, photos):
    images, reference = photos
    runtime = LiteRTRuntime(exported[1], threads=1)
    # Integer input like the official files; the logits in float, so no two classes tie.
    assert runtime.input["dtype"] == np.int8 and runtime.output["dtype"] == np.float32
    scale, _ = runtime.input["quantization"]
    assert 0 < scale < 0.1  # the normalised image's range over 255 steps, not a pixel's
    # Quantisation moves the logits, not most answers: a broken calibration (the quantiser's
    # defaults keep about half of SqueezeNet's answers) fails this.
    assert top1_agreement(reference, runtime(images)) >= 9 / 12
    assert exported[1].stat().st_size < exported[0].stat().st_size / 3


def test_int8_class_scores_are_float_from_the_last_weighted_layer(exported):
    """SqueezeNet's scores are conv10's output averaged over the image: conv10 itself
    computes in float (int8 weights), so the average is not taken of int8 scores."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(exported[1].read_bytes(), 0)
    names = tflite_module.operator_names(model)
    graph = model.subgraphs[0]
    producer = {out: op for op in graph.operators for out in op.outputs}
    op = producer[graph.outputs[0]]
    assert names[op.opcodeIndex] == "MEAN"
    conv = producer[op.inputs[0]]
    assert names[conv.opcodeIndex] == "CONV_2D"
    types = [graph.tensors[i].type for i in (conv.inputs[0], conv.inputs[1], conv.outputs[0])]
    assert types == [schema.TensorType.FLOAT32, schema.TensorType.INT8, schema.TensorType.FLOAT32]


def test_activation_ranges_are_narrowed_only_where_that_lowers_the_error():
    rng = np.random.default_rng(0)
    # Mostly small values and a long thin tail: a finer step for the many is worth clipping
    # the few.
    tail = rng.lognormal(-1.0, 1.0, 50_000)
    assert least_error_fraction(tail, 0.0, float(tail.max())) < 1.0
    # Values spread evenly over their range: nothing to gain.
    assert least_error_fraction(rng.uniform(-2, 6, 20_000), -2.0, 6.0) == 1.0
    assert least_error_fraction(np.zeros(10), 0.0, 0.0) == 1.0


def test_runtime_takes_the_official_files(weights_root):
    (path,) = resolve(get_weights("mobilenet_v2_100_224.tflite_int8_ptq"))
    runtime = LiteRTRuntime(path, threads=1)
    assert runtime.num_classes == 1001 and runtime.input_size == (3, 224, 224)
    assert read_tflite_metadata(path).model_name is None  # foreign: nothing of ours
    logits = runtime(torch.zeros(2, 3, 224, 224))
    assert logits.shape == (2, 1001) and logits.dtype == torch.float32  # dequantised


def test_runtime_refuses_pixels_and_wrong_shapes(exported):
    runtime = LiteRTRuntime(exported[0], threads=1)
    with pytest.raises(ValueError, match="floating-point"):
        runtime(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        runtime(torch.zeros(1, 3, 200, 200))
    with pytest.raises(ValueError, match="no such TFLite file"):
        LiteRTRuntime(exported[0].with_name("missing.tflite"))


def test_untrusted_metadata_is_refused(exported, tmp_path):
    data = exported[0].read_bytes()
    for props, message in (
        ({"lightnets.input_size": "[3, -1, 224]"}, "input_size"),
        ({"lightnets.class_names": '{"a": 1}'}, "class_names"),
    ):
        path = tmp_path / "bad.tflite"
        path.write_bytes(_with_metadata(data, props))
        with pytest.raises(ValueError, match=message):
            read_tflite_metadata(path)
    with pytest.raises(ValueError, match="not a TFLite file"):
        read_tflite_metadata(b"\x00" * 64)


def test_metadata_that_is_not_an_object_of_strings_is_refused(exported, monkeypatch):
    monkeypatch.setattr(tflite_module.json, "dumps", lambda value, **_: json.JSONEncoder().encode([1, 2]))
    data = _with_metadata(exported[0].read_bytes(), {})
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not an object of strings"):
        read_tflite_metadata(data)


class _Decomposes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.qr(x.flatten(1)[:, :4].reshape(-1, 2, 2))[0]


def test_an_operator_the_converter_cannot_lower_is_named_with_its_layer(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _Decomposes()).eval()
    with pytest.raises(ValueError, match=r"cannot lower.*linalg_qr in 1\b"):
        export_tflite(
            model, tmp_path / "x.tflite", input_size=16, transform=EvalTransform(16, 16), class_names=[]
        )
    assert not (tmp_path / "x.tflite").exists()


def test_int8_needs_calibration_and_a_missing_extra_is_named(squeezenet, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="calibration"):
        export_tflite(squeezenet, tmp_path / "x.tflite", int8=True)
    monkeypatch.setattr(tflite_module, "_importable", lambda module: module != "litert_torch")
    with pytest.raises(ValueError, match=r'litert-torch.*pip install "lightnets\[tflite\]"'):
        export_tflite(squeezenet, tmp_path / "x.tflite")


def test_export_command_writes_tflite_and_predict_runs_it(tmp_path, cli, imagenet_sample):
    out = tmp_path / "squeezenet.tflite"
    code, text, _ = cli(
        "export", "--weights", GLUON, "-o", str(out), "--verify", str(imagenet_sample), "--verify-images", "6"
    )
    assert code == 0
    assert "squeezenet1_1, input 3x224x224 (NHWC), fp32, 1000 classes; LiteRT loads it" in text
    assert "top-1 agreement 100.0%" in text
    photo = str(calibration_files(imagenet_sample / "images", 1)[0])
    code, by_file, _ = cli("predict", photo, "--weights", str(out), "--topk", "1")
    assert code == 0
    code, by_torch, _ = cli("predict", photo, "--weights", GLUON, "--topk", "1")
    assert by_file.split("\n")[-2:] == by_torch.split("\n")[-2:]


def test_export_command_refuses_onnx_only_options_for_tflite(tmp_path, cli):
    code, _, err = cli("export", "squeezenet1_1", "-o", str(tmp_path / "x.tflite"), "--reduce-range")
    assert code != 0 and "--reduce-range apply to ONNX files" in err
    code, _, err = cli("predict", "x.jpg", "--weights", str(tmp_path / "x.tflite"), "--backend", "pytorch")
    assert code != 0 and "use --backend litert" in err


def test_auto_measures_once_and_again_on_another_machine(monkeypatch, weights_root):
    from lightnets.deploy import auto

    calls = []
    real = auto._median_latencies

    def timed(runners, image, rounds):
        calls.append(sorted(runners))
        return real(runners, image, rounds)

    monkeypatch.setattr(auto, "_median_latencies", timed)
    chosen, runner = auto.fastest_runtime(GLUON, weights_root=weights_root, threads=1, rounds=3)
    assert calls == [["litert", "onnxruntime", "pytorch"]] and chosen in auto.CONTENDERS
    assert runner(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    again, _ = auto.fastest_runtime(GLUON, weights_root=weights_root, threads=1, rounds=3)
    assert again == chosen and len(calls) == 1  # from the cache
    monkeypatch.setattr(auto, "cpu_model", lambda: "another CPU")
    auto.fastest_runtime(GLUON, weights_root=weights_root, threads=1, rounds=3)
    assert len(calls) == 2  # a choice made elsewhere is measured again


def test_a_corrupt_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(b"not a model at all, just bytes" * 4)
    with pytest.raises(ValueError, match=r"corrupt\.tflite: not a TFLite file"):
        LiteRTRuntime(path)


@pytest.mark.parametrize(("name", "side"), [("ssdlite_mobilenet_v2", 320), ("deeplabv3_mobilenet_v2", 256)])
def test_task_models_export_to_tflite(name, side, tmp_path):
    from lightnets import create_model

    model = create_model(name).eval()
    runtime = LiteRTRuntime(export_tflite(model, tmp_path / f"{name}.tflite", input_size=side), threads=1)
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        reference = model(x)
    reference = reference[-1] if isinstance(reference, tuple | list) else reference  # a detector's scores
    torch.testing.assert_close(runtime(x), reference, rtol=1e-3, atol=1e-5)
