"""Atrous backbones, the DeepLabv3 head, the registered segmentation models and their costs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightnets
from lightnets.cli import main
from lightnets.tasks import VOID, dilate, segmentation_loss
from lightnets.tasks.costs import cost_by_part, tf_atrous_madds, tf_atrous_positions

BACKBONES = {
    "mobilenet_v1_025": {},
    "mobilenet_v2_035": {},
    "shufflenet_v1_g8_025": {},
    "squeezenet1_1": {},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _small(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return lightnets.create_model(name, **kwargs).eval()


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_dilated_backbone_keeps_maps_at_the_output_stride(name, output_stride):
    model = _small(name)
    own_stride = model.total_stride
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dilate(model, output_stride)
    assert model.total_stride == min(output_stride, own_stride)
    assert max(info.reduction for info in model.layer_info) == model.total_stride
    assert model.feature_info[-1].reduction == model.total_stride
    # The weights are untouched: a loaded backbone stays loaded.
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        out = model.forward_features(torch.randn(1, 3, 96, 128))
    stride = model.total_stride
    assert out.shape[-2:] == (pytest.approx(96 / stride, abs=1), pytest.approx(128 / stride, abs=1))
    dilated = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.dilation != (1, 1)]
    assert bool(dilated) == (stride < own_stride)


def test_dilation_rates_follow_tf_slim():
    """The layer whose stride goes keeps the rate before it; the layers after it double it."""
    model = dilate(_small("mobilenet_v2_035"), 8)
    rates = [
        layer.depthwise.conv.dilation[0] if hasattr(layer, "depthwise") else None for layer in model.features
    ]
    strides = [
        layer.depthwise.conv.stride[0] if hasattr(layer, "depthwise") else None for layer in model.features
    ]
    assert strides[14] == strides[7] == 1
    # features.7 (first stride-16 block) loses its stride at rate 1; .8-.13 at 2; .14 loses
    # the stride-32 stride at rate 2; .15-.17 at 4.
    assert rates[7] == 1 and rates[8:14] == [2] * 6 and rates[14] == 2 and rates[15:18] == [4] * 3


def test_tf_same_padding_backbone_dilates():
    model = dilate(_small("mobilenet_v2_035", padding="tf_same"), 16)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 4


def test_dilate_refuses_a_bad_output_stride():
    with pytest.raises(ValueError, match="output_stride"):
        dilate(_small("mobilenet_v2_035"), 4)
    with pytest.raises(TypeError):
        dilate(nn.Conv2d(3, 3, 1), 16)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", lightnets.list_models("deeplabv3_*"))
def test_segmentation_models_score_every_pixel(name):
    model = _small(name, num_classes=3, **({"width": 0.35} if "mobilenet_v2" in name else {}))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 65, 97))
    assert out.shape == (2, 3, 65, 97)
    assert model.num_classes == 3


def test_mnet_v2_star_reads_the_last_bottleneck():
    model = lightnets.create_model("deeplabv3_mobilenet_v2")
    assert model.num_classes == 21 and model.output_stride == 16 and not model.aspp
    assert len(model.backbone.features) == 18  # the 1x1 conv to 1280 is not part of it
    assert model.head.in_channels == 320
    assert len(model.head.branches) == 2  # 1x1 conv and image pooling
    last = lightnets.create_model("deeplabv3_mobilenet_v2", head_input="last")
    assert last.head.in_channels == 1280


def test_aspp_rates_double_at_output_stride_8():
    assert lightnets.create_model("deeplabv3_mobilenet_v1").head.rates == (6, 12, 18)
    assert lightnets.create_model("deeplabv3_mobilenet_v1", output_stride=8).head.rates == (12, 24, 36)


def test_loss_ignores_the_void_label():
    scores = torch.randn(1, 2, 2, 2)
    target = torch.full((1, 2, 2), VOID)
    target[0, 0, 1] = 1
    want = nn.functional.cross_entropy(scores[:, :, 0, 1], torch.tensor([1]))
    assert torch.allclose(segmentation_loss(scores, target), want)


def test_reset_classifier_keeps_the_head():
    model = _small("deeplabv3_mobilenet_v2", width=0.35)
    project = model.head.project
    model.reset_classifier(2)
    assert model.num_classes == 2 and model.head.project is project
    with pytest.raises(ValueError):
        model.reset_classifier(0)


def test_tf_atrous_grid():
    assert (
        tf_atrous_positions(33, 3, 6)
        == tf_atrous_positions(33, 3, 12)
        == tf_atrous_positions(33, 3, 18)
        == 36
    )
    assert tf_atrous_positions(33, 3, 1) == 33 and tf_atrous_positions(33, 1, 6) == 33


# MobileNetV2's Table 7 (PASCAL VOC, output stride 16): params (M), MAdds (B).
TABLE_7 = [
    ("deeplabv3_mobilenet_v2", {"aspp": True}, 4.52, 5.8, 1),
    ("deeplabv3_mobilenet_v2", {"aspp": False}, 2.11, 2.75, 2),
    ("deeplabv3_mobilenet_v1", {"aspp": True}, 11.15, 14.25, 2),
]


@pytest.mark.parametrize(("name", "kwargs", "params", "madds", "digits"), TABLE_7)
def test_table_7(name, kwargs, params, madds, digits):
    """Counted as the official TensorFlow DeepLab ran (see lightnets.tasks.costs): the
    parameters with BatchNorm's gamma and beta, to the printed precision; the MAdds at
    DeepLab's 513x513 crop with atrous convolutions on TensorFlow's space_to_batch grid:
    5.8 B to the printed precision, 2.75 B and 14.25 B within 0.5 % (2.742 and 14.227: a
    few million multiply-adds the table counts and these layers do not)."""
    model = lightnets.create_model(name, **kwargs)
    report = lightnets.profile(model, (3, 513, 513))
    assert round((report.params + report.bn_params) / 1e6, 2) == params
    tf_madds = tf_atrous_madds(model, report) / 1e9
    if digits == 1:
        assert round(tf_madds, 1) == madds
    else:
        assert tf_madds == pytest.approx(madds, rel=0.005)


def test_profile_counts_head_apart_from_backbone(capsys):
    model = lightnets.create_model("deeplabv3_mobilenet_v2")
    report = lightnets.profile(model, (3, 512, 512))
    parts = {p.part: p for p in cost_by_part(report, model)}
    assert parts["backbone"].madds + parts["head"].madds == report.madds
    assert parts["backbone"].params + parts["head"].params == report.params
    assert parts["head"].params == 320 * 256 * 2 + 512 * 256 + 256 * 21 + 21
    assert main(["profile", "deeplabv3_mobilenet_v2", "--resolution", "512"]) == 0
    out = capsys.readouterr().out
    assert "backbone" in out and "head" in out


def test_onnx_export_gives_the_same_scores(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from lightnets.deploy import export_onnx

    model = _small("deeplabv3_mobilenet_v2", width=0.35, num_classes=2)
    path = export_onnx(model, tmp_path / "seg.onnx", input_size=64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 64, 64)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (2, 2, 64, 64)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_the_export_command_names_a_segmenters_classes(tmp_path, capsys):
    """A segmenter's scores are (N, classes, H, W): its classes are axis 1, not the width."""
    out = tmp_path / "seg.onnx"
    argv = ["export", "deeplabv3_mobilenet_v2", "--width", "0.35", "--num-classes", "2"]
    assert main([*argv, "--input-size", "96", "-o", str(out)]) == 0
    assert ", 2 classes;" in capsys.readouterr().out
