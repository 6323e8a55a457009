import pytest
import torch

import lightnets
from lightnets.cost import profile
from lightnets.models.squeezenet import SQUEEZENET_1_0, fire_rows

FAMILIES = ["mobilenet_v1", "mobilenet_v2", "squeezenet1_0", "squeezenet1_1", "shufflenet_v1"]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("mobilenet_v1", {"width": 0.5}),
        ("mobilenet_v1", {"variant": "full"}),
        ("mobilenet_v1", {"variant": "shallow"}),
        ("mobilenet_v2", {"width": 1.4}),
        ("shufflenet_v1", {"groups": 3, "scale": 0.5}),
        ("shufflenet_v1", {"groups": 8, "shuffle": False}),
        ("squeezenet1_0", {"bypass": "simple"}),
        ("squeezenet1_0", {"bypass": "complex"}),
        ("squeezenet1_1", {}),
    ],
)
def test_the_issues_calls_work_and_classify(name, kwargs):
    model = lightnets.create_model(name, num_classes=7, **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 7)


@pytest.mark.parametrize("name", FAMILIES)
def test_one_interface(name):
    model = lightnets.create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (1, model.num_features)
        assert torch.allclose(model.forward_head(features), model(x))
        model.reset_classifier(3)
        assert model(x).shape == (1, 3) and model.num_classes == 3
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)


def test_feature_info_matches_mobilenet_v2_table():
    model = lightnets.create_model("mobilenet_v2")
    # One level per stride: the last block at 2, 4, 8 and 16, the 1x1 conv to 1280 at 32.
    assert [(i.num_chs, i.reduction, i.module) for i in model.feature_info] == [
        (16, 2, "features.1"),
        (24, 4, "features.3"),
        (32, 8, "features.6"),
        (96, 16, "features.13"),
        (1280, 32, "features.18"),
    ]
    assert [(i.num_chs, i.reduction) for i in model.layer_info if i.index in (16, 17)] == [
        (160, 32),
        (320, 32),
    ]


def test_ssdlite_attaches_to_the_expansion_of_layer_15():
    # SSDLite (MobileNetV2 paper, Section 6.2): the first layer on the expansion of layer
    # 15 (output stride 16), the rest on the last layer (output stride 32). Layer 1 is the
    # stem, so layer 15 is the 14th bottleneck: features.14, the first 160-channel block.
    model = lightnets.create_model("mobilenet_v2")
    model.feature_location = "expansion"
    stride16, stride32 = model.feature_info[-2:]
    assert (stride16.module, stride16.num_chs, stride16.reduction) == ("features.14.expand", 576, 16)
    assert (stride32.module, stride32.num_chs, stride32.reduction) == ("features.18", 1280, 32)
    assert stride32.location == "output"
    with torch.no_grad():
        maps = model.eval().forward_intermediates(
            torch.randn(1, 3, 320, 320), [-2, -1], intermediates_only=True
        )
    assert [tuple(m.shape) for m in maps] == [(1, 576, 20, 20), (1, 1280, 10, 10)]


def test_dropout_and_num_classes_on_every_family():
    for name in FAMILIES:
        model = lightnets.create_model(name, num_classes=5, dropout=0.3)
        assert model.num_classes == 5
        assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in model.modules())


def test_mobilenet_v2_head_is_never_shrunk():
    for width in (0.35, 0.5, 0.75, 1.0):
        assert lightnets.create_model("mobilenet_v2", width=width).num_features == 1280
    assert lightnets.create_model("mobilenet_v2", width=1.4).num_features == 1792
    stem = lightnets.create_model("mobilenet_v2", width=1.4).features[0].conv.out_channels
    assert stem == 48


def test_mobilenet_v2_expansion_factor():
    model = lightnets.create_model("mobilenet_v2", expansion=4)
    assert model.features[2].hidden_channels == 64  # 16 * 4
    assert model.features[1].hidden_channels == 32  # the first block keeps t = 1


def test_mobilenet_v2_non_linear_bottleneck_adds_only_a_relu6_after_each_projection():
    linear = lightnets.create_model("mobilenet_v2")
    relu6 = lightnets.create_model("mobilenet_v2", bottleneck="relu6")
    blocks = [m for m in relu6.modules() if isinstance(m, lightnets.layers.InvertedResidual)]
    assert len(blocks) == 17
    assert all(isinstance(getattr(b.project, "act", None), torch.nn.ReLU6) for b in blocks)
    assert not any(
        isinstance(getattr(m.project, "act", None), torch.nn.ReLU6)
        for m in linear.modules()
        if isinstance(m, lightnets.layers.InvertedResidual)
    )
    assert profile(linear).params == profile(relu6).params
    x = torch.randn(1, 3, 96, 96)
    relu6.load_state_dict(linear.state_dict())
    with torch.no_grad():  # block 2 has no shortcut: its output is the projection's
        assert linear.eval().features[:3](x).min() < 0 <= relu6.eval().features[:3](x).min()


def test_mobilenet_v2_without_shortcuts_only_drops_the_additions():
    with_shortcuts = lightnets.create_model("mobilenet_v2")
    without = lightnets.create_model("mobilenet_v2", shortcut="none")
    blocks = [m for m in with_shortcuts.modules() if isinstance(m, lightnets.layers.InvertedResidual)]
    assert sum(b.use_shortcut for b in blocks) == 10  # Table 2: n - 1 repeats of each sequence
    assert not any(isinstance(m, lightnets.layers.Add) for m in without.modules())
    assert profile(with_shortcuts).params == profile(without).params
    without.load_state_dict(with_shortcuts.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():  # blocks 1-2 have no shortcut either way; block 3 (16 -> 24 ... 24) has one
        assert torch.equal(with_shortcuts.eval().features[:3](x), without.eval().features[:3](x))
        assert not torch.equal(with_shortcuts.features[:4](x), without.features[:4](x))
    with pytest.raises(ValueError, match="unknown shortcut 'expanded'.*'expansion'"):
        lightnets.create_model("mobilenet_v2", shortcut="expanded")


def test_mobilenet_v2_shortcuts_between_expansions_move_the_additions_to_the_wide_tensors():
    torch.manual_seed(0)
    between = lightnets.create_model("mobilenet_v2", shortcut="expansion", width=0.5)
    without = lightnets.create_model("mobilenet_v2", shortcut="none", width=0.5)
    bottleneck = lightnets.create_model("mobilenet_v2", width=0.5)
    # The same layers in the same order (only the grouping and the additions differ) ...
    assert [p.shape for p in between.parameters()] == [p.shape for p in without.parameters()]
    assert (profile(between).madds, profile(between).params) == (
        profile(without).madds,
        profile(without).params,
    )
    with torch.no_grad():
        for a, b in zip(between.parameters(), without.parameters(), strict=True):
            a.copy_(b)
    units = [m for m in between.modules() if isinstance(m, lightnets.layers.ExpansionShortcut)]
    joined = [u for u in units if u.add is not None]
    # ... as many additions as between the bottlenecks, each on an expanded tensor (t x a bottleneck's width).
    assert len(joined) == 10
    hidden = {
        b.hidden_channels for b in bottleneck.modules() if isinstance(b, lightnets.layers.InvertedResidual)
    }
    assert all(u.in_channels == u.out_channels and u.in_channels in hidden for u in joined)
    x = torch.randn(2, 3, 96, 96)
    between.eval(), without.eval()
    with torch.no_grad():
        assert not torch.allclose(between(x), without(x))
        for unit in joined:
            unit.add = None
        assert torch.equal(between(x), without(x))


def test_squeezenet_1_0_per_layer_parameters_equal_table_1():
    model = lightnets.create_model("squeezenet1_0")
    table1 = {
        "conv1": 14_208,
        "fire2": 11_920,
        "fire3": 12_432,
        "fire4": 45_344,
        "fire5": 49_440,
        "fire6": 104_880,
        "fire7": 111_024,
        "fire8": 188_992,
        "fire9": 197_184,
        "conv10": 513_000,
    }
    layers = [m for m in model.features if sum(p.numel() for p in m.parameters())]
    names = ["conv1"] + [f"fire{i}" for i in range(2, 10)]
    measured = {n: sum(p.numel() for p in m.parameters()) for n, m in zip(names, layers, strict=True)}
    measured["conv10"] = sum(p.numel() for p in model.head.parameters())
    assert measured == table1
    assert sum(table1.values()) == 1_248_424 == profile(model).params


def test_squeezenet_design_space_knobs_regenerate_table_1():
    fires = [row for row in SQUEEZENET_1_0 if isinstance(row, tuple) and len(row) == 3]
    assert fire_rows() == fires
    # SR = 0.25 doubles every squeeze layer; pct3x3 = 0.25 moves expand filters to 1x1.
    assert fire_rows(sr=0.25)[0] == (32, 64, 64)
    assert fire_rows(pct3x3=0.25)[-1] == (64, 384, 128)
    model = lightnets.create_model("squeezenet1_0", sr=0.75, base_e=64, incr_e=64, freq=4)
    assert model.features[3].squeeze.conv.out_channels == 48
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_squeezenet_1_1_is_2_4_times_cheaper():
    ratio = (
        profile(lightnets.create_model("squeezenet1_0")).madds
        / profile(lightnets.create_model("squeezenet1_1")).madds
    )
    # The v1.1 release says "2.4x less computation"; the exact ratio at 224 is 2.345 (-2.3%).
    assert round(ratio, 3) == 2.345


def test_simple_bypass_wraps_fire_3_5_7_9_and_complex_all():
    simple = lightnets.create_model("squeezenet1_0", bypass="simple")
    fires = [m for m in simple.features if type(m).__name__ == "Fire"]
    assert [type(f.bypass).__name__ for f in fires] == ["NoneType", "Identity"] * 4
    complex_ = lightnets.create_model("squeezenet1_0", bypass="complex")
    fires = [m for m in complex_.features if type(m).__name__ == "Fire"]
    assert [type(f.bypass).__name__ for f in fires] == ["ConvBNAct", "Identity"] * 4


def test_shufflenet_table_1_channels():
    for groups, stage2 in ((1, 144), (2, 200), (3, 240), (4, 272), (8, 384)):
        model = lightnets.create_model("shufflenet_v1", groups=groups)
        assert model.feature_strides() == [2, 4, 8, 16, 32]
        assert [i.num_chs for i in model.layer_info if i.index in (2, 6, 14)] == [
            stage2,
            2 * stage2,
            4 * stage2,
        ]
        assert model.features[2].compress.conv.groups == 1  # stage 2's first pointwise is not grouped
        assert model.features[3].compress.conv.groups == groups


def test_shufflenet_without_shuffle_differs_only_by_the_shuffle():
    on = lightnets.create_model("shufflenet_v1", groups=3)
    off = lightnets.create_model("shufflenet_v1", groups=3, shuffle=False)
    off.load_state_dict(on.state_dict())
    x = torch.randn(1, 3, 64, 64)
    on.eval(), off.eval()
    assert not torch.allclose(on(x), off(x))
    assert profile(on).madds == profile(off).madds


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("mobilenet_v1", {"width": 0}, r"width \(alpha\) must be in \(0, 2\], got 0"),
        ("mobilenet_v1", {"width": -0.5}, r"must be in \(0, 2\], got -0.5"),
        ("mobilenet_v1", {"width": 2.5}, r"got 2.5"),
        ("mobilenet_v1", {"variant": "deep"}, r"unknown MobileNet v1 variant 'deep'"),
        ("mobilenet_v2", {"width": 0.0}, r"width must be in \(0, 2\], got 0.0"),
        ("mobilenet_v2", {"expansion": 0.5}, r"expansion factor t must be >= 1, got 0.5"),
        ("mobilenet_v2", {"bottleneck": "relu"}, r"unknown bottleneck 'relu'; expected one of"),
        ("shufflenet_v1", {"groups": 5}, r"groups must be one of \[1, 2, 3, 4, 8\] \(Table 1\), got 5"),
        ("shufflenet_v1", {"scale": 0}, r"scale must be in \(0, 2\]"),
        ("squeezenet1_0", {"bypass": "full"}, r"unknown bypass 'full'"),
        ("squeezenet1_0", {"pct3x3": 1.5}, r"pct3x3 must be in \[0, 1\], got 1.5"),
        ("squeezenet1_0", {"sr": 0}, r"squeeze ratio SR must be in \(0, 1\], got 0"),
        ("mobilenet_v2", {"num_classes": -1}, r"num_classes must be an integer >= 0"),
        ("mobilenet_v2", {"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ("mobilenet_v1", {"groups": 3}, r"mobilenet_v1 does not take groups; it takes: width"),
    ],
)
def test_bad_hyper_parameters_name_the_value_and_the_range(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lightnets.create_model(name, **kwargs)


def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"unknown model 'mobilenet_v3'; did you mean .*mobilenet_v2"):
        lightnets.create_model("mobilenet_v3")


@pytest.mark.parametrize("name", FAMILIES)
def test_input_smaller_than_the_total_stride_is_refused(name):
    model = lightnets.create_model(name)
    small = model.min_input_size - 1
    with pytest.raises(
        ValueError, match=rf"input size {small}x{small} is too small .* at least {model.min_input_size}"
    ):
        model(torch.randn(1, 3, small, small))
    with pytest.raises(ValueError, match="too small"):
        profile(model, (3, small, small))
    model.eval()(torch.randn(1, 3, model.min_input_size, model.min_input_size))  # the minimum works


def test_list_models_by_pattern():
    assert lightnets.list_models("shufflenet*")[0] == "shufflenet_v1"
    assert all(n.startswith("shufflenet") for n in lightnets.list_models("shufflenet*"))
    required = {
        "mobilenet_v1",
        "mobilenet_v2",
        "squeezenet1_0",
        "squeezenet1_1",
        "shufflenet_v1",
        "alexnet",
        "vgg16",
        "googlenet",
        "resnet50",
        "inception_v3",
    }
    assert required <= set(lightnets.list_models())
    assert lightnets.list_models("nothing*") == []
