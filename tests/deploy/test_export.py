"""ONNX export and the ONNX Runtime wrapper: checked files, same logits, same preprocessing."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from deploy_models import FAMILY_CONFIGS, config_id, family_model

import lightnets
from lightnets.deploy import Runtime, deploy, export_onnx, read_metadata
from lightnets.deploy.export import MIN_OPSET, write_metadata

TOLERANCE = 1e-4  # max |logit difference|, fp32
PLAIN_OPS = {
    "Conv", "Relu", "Clip", "Add", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
    "Reshape", "Transpose", "Flatten", "Gemm", "MatMul", "Pad", "Identity", "Constant",
}  # fmt: skip

# Exported once per module: export takes seconds. Real weights where the family has them
# (TF "SAME" padding included), random weights with real BatchNorm statistics otherwise.
FAST = {
    "mobilenet_v2_tflite": ("weights", "mobilenet_v2_100_224.tflite_uint8"),
    "squeezenet1_1_gluon": ("weights", "squeezenet1_1.gluon_npy"),
    "shufflenet_g3": ("config", ("shufflenet_v1", {"groups": 3, "scale": 0.5})),
}


def build(kind: str, what) -> torch.nn.Module:
    if kind == "weights":
        return lightnets.create_model(lightnets.get_weights(what).model, weights=what).eval()
    return family_model(what)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (model, path of its ONNX export); built on first use."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            model = build(*FAST[name])
            path = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{name}.onnx")
            cache[name] = model, path
        return cache[name]

    return get


def check_export(model: torch.nn.Module, path: Path, images: torch.Tensor) -> Runtime:
    """Everything an export must satisfy; returns its Runtime."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= MIN_OPSET
    assert {n.op_type for n in proto.graph.node} <= PLAIN_OPS
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic batch
    runtime = Runtime(path, threads=1)
    with torch.no_grad():
        reference = model(images)
    for batch in (images[:1], images[:3]):
        logits = runtime.run(batch)
        assert logits.shape == (len(batch), model.num_classes)
        assert np.abs(logits - reference[: len(batch)].numpy()).max() <= TOLERANCE
    return runtime


@pytest.mark.parametrize("name", list(FAST))
def test_export_matches_pytorch_on_real_images(name, exported, real_batch, weights_root):
    model, path = exported(name)
    check_export(model, path, real_batch(model, 3))


def test_metadata_is_stored_and_read_back(exported, weights_root):
    model, path = exported("mobilenet_v2_tflite")
    meta = read_metadata(path)
    transform = model.pretrained_cfg.transform
    assert meta.model_name == "mobilenet_v2" and meta.model_kwargs["padding"] == "tf_same"
    assert meta.input_size == (3, 224, 224) and meta.transform == transform
    assert meta.weights == "mobilenet_v2_100_224.tflite_uint8" and meta.precision == "fp32"
    assert meta.class_names == lightnets.zoo.labels_of(model) and meta.class_names[1] == "goldfish"
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert (
        props["lightnets.mean"] == "[128.0, 128.0, 128.0]"
        and props["lightnets.std"] == "[128.0, 128.0, 128.0]"
    )
    runtime = Runtime(path)
    assert runtime.transform == transform and runtime.class_names == meta.class_names
    assert runtime.num_classes == 1000 and runtime.input_size == (3, 224, 224)


def test_runtime_preprocesses_as_pytorch_does(exported, image_files, weights_root):
    model, path = exported("squeezenet1_1_gluon")
    runtime = Runtime(path)
    assert runtime.transform == model.pretrained_cfg.transform
    via_runtime = runtime.classify(image_files)  # from the files, by the runtime's own preprocessing
    images = lightnets.deploy.prepare_images(image_files, model.pretrained_cfg.transform)
    with torch.no_grad():
        assert np.abs(via_runtime - model(images).numpy()).max() <= TOLERANCE
    ours, skipped = lightnets.predict(runtime, image_files, topk=3)
    theirs, _ = lightnets.predict(model, image_files, topk=3)
    assert not skipped and [p.classes for p in ours] == [p.classes for p in theirs]
    assert [p.names for p in ours] == [p.names for p in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_channel_shuffle_exports_as_reshape_transpose_with_symbolic_batch(exported, weights_root):
    _, path = exported("shufflenet_g3")
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("Transpose") == 16  # one shuffle per unit
    assert "Shape" not in ops and "Gather" not in ops  # no shape arithmetic left behind


def test_runtime_evaluates_like_the_model(exported, imagenet_sample, weights_root):
    model, path = exported("squeezenet1_1_gluon")
    ours = lightnets.evaluate(Runtime(path), imagenet_sample, limit=16, batch_size=8, progress=False)
    theirs = lightnets.evaluate(model, imagenet_sample, limit=16, batch_size=8, progress=False)
    assert ours.predictions == theirs.predictions and ours.top1 == theirs.top1


def test_a_file_without_metadata_gets_defaults(exported, tmp_path, weights_root):
    _, path = exported("squeezenet1_1_gluon")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    runtime = Runtime(bare)
    assert runtime.model_name is None and runtime.input_size == (3, 224, 224)
    assert runtime.transform.size == 224 and runtime.class_names[:2] == ["0", "1"]
    assert runtime.run(np.zeros((2, 3, 224, 224), np.float32)).shape == (2, 1000)
    with pytest.raises(ValueError, match="expected a batch"):
        runtime.run(np.zeros((1, 3, 200, 200), np.float32))


def test_write_metadata_replaces_keys():
    proto = onnx.ModelProto()
    write_metadata(proto, {"a": "1", "b": "2"})
    write_metadata(proto, {"a": "3"})
    assert {p.key: p.value for p in proto.metadata_props} == {"a": "3", "b": "2"}


def test_export_refuses_old_opsets(tmp_path):
    with pytest.raises(ValueError, match="opset 13"):
        export_onnx(family_model(("squeezenet1_1", {})), tmp_path / "m.onnx", opset=13)


@pytest.mark.slow
@pytest.mark.parametrize("config", FAMILY_CONFIGS, ids=config_id)
def test_every_family_exports_and_matches(config, tmp_path, real_batch):
    model = family_model(config)
    path = export_onnx(model, tmp_path / "model.onnx", input_size=224)
    check_export(model, path, real_batch(model, 3))


@pytest.mark.slow
@pytest.mark.parametrize("tag", ["mobilenet_v1_050_160.tflite_uint8", "squeezenet1_0.deep_compression"])
def test_real_weights_export_and_match(tag, tmp_path, real_batch, weights_root):
    model = build("weights", tag)
    runtime = check_export(model, export_onnx(model, tmp_path / "model.onnx"), real_batch(model, 3))
    assert runtime.transform == model.pretrained_cfg.transform


@pytest.mark.slow
def test_a_deployed_model_exports_too(tmp_path, real_batch):
    model = family_model(("mobilenet_v2", {"width": 0.35, "padding": "tf_same"}))
    path = export_onnx(deploy(model), tmp_path / "model.onnx", input_size=160)
    images = torch.nn.functional.interpolate(real_batch(model, 3), size=160)
    check_export(model, path, images)
