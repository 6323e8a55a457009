import pytest
import torch
from torch import nn

import lightnets
from lightnets.cost import layer_kind, profile
from lightnets.cost.meta import meta_copy
from peers import timm_or_skip, torchvision_or_skip


def test_profile_counts_a_plain_module_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),  # 27*8 params, 16*16*8*27 MAdds
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 72 + 8 params
        nn.Conv2d(8, 16, 1, groups=2),  # group conv: 64 + 16 params
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    report = profile(model, (3, 32, 32))
    assert report.params == 216 + 80 + 80 + 170
    assert report.bn_params == 16
    assert report.madds == 256 * 8 * 27 + 256 * 8 * 9 + 256 * 16 * 4 + 160
    kinds = [layer.kind for layer in report.layers]
    assert kinds == [
        "conv", "batchnorm", "activation", "depthwise", "group conv", "pool", "reshape", "fully connected"
    ]  # fmt: skip
    first = report.layers[0]
    assert (first.input_shape, first.output_shape, first.activations) == ((3, 32, 32), (8, 16, 16), 2048)


def test_layer_kinds():
    assert layer_kind(nn.Conv2d(4, 4, 1)) == "pointwise"
    assert layer_kind(nn.Conv2d(4, 8, 3, groups=4)) == "depthwise"  # channel multiplier 2
    assert layer_kind(nn.Conv2d(4, 8, 1, groups=2)) == "group conv"
    assert layer_kind(nn.MaxPool2d(2)) == "pool"


def test_profile_leaves_the_model_untouched():
    model = lightnets.create_model("mobilenet_v2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model)
    assert all(v.device.type == "cpu" for v in model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_meta_copy_does_not_copy_storage():
    model = lightnets.create_model("vgg16")
    meta = meta_copy(model)
    assert all(p.is_meta for p in meta.parameters())
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in model.parameters())


def test_a_module_called_twice_is_counted_twice_but_its_weights_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1, bias=False)

        def forward(self, x):
            return self.conv(self.conv(x))

    report = profile(Twice(), (4, 8, 8))
    assert report.params == 16 and report.madds == 2 * 64 * 16
    assert [layer.name for layer in report.layers] == ["conv", "conv#2"]


def test_bad_input_sizes():
    model = lightnets.create_model("mobilenet_v1")
    with pytest.raises(ValueError, match=r"three positive integers \(C, H, W\)"):
        profile(model, (224, 224))
    with pytest.raises(
        ValueError, match="input_size has 1 channels but the model's first convolution takes 3"
    ):
        profile(model, (1, 224, 224))
    with pytest.raises(ValueError, match="input size 16x16 is too small"):
        profile(model, (3, 16, 16))
    # A third-party model without a size check: the layer's own error, as a ValueError.
    with pytest.raises(ValueError, match="does not fit this model"):
        profile(nn.Sequential(nn.Conv2d(3, 4, 7)), (3, 4, 4))


# Same architecture, other authors: the analyser must give the same totals.
TORCHVISION_TWINS = [
    ("mobilenet_v2", {}, "mobilenet_v2", {}),
    ("squeezenet1_0", {}, "squeezenet1_0", {}),
    ("squeezenet1_1", {}, "squeezenet1_1", {}),
    ("mobilenet_v2", {"width": 0.5}, "mobilenet_v2", {"width_mult": 0.5}),
]


@pytest.mark.parametrize("ours, our_kwargs, theirs, their_kwargs", TORCHVISION_TWINS)
def test_same_totals_as_torchvision(ours, our_kwargs, theirs, their_kwargs):
    tvm = torchvision_or_skip()
    mine = profile(lightnets.create_model(ours, **our_kwargs))
    other = profile(getattr(tvm, theirs)(**their_kwargs))
    assert (mine.params, mine.madds, mine.bn_params) == (other.params, other.madds, other.bn_params)
    assert [(k.kind, k.params, k.madds) for k in mine.by_kind() if k.madds] == [
        (k.kind, k.params, k.madds) for k in other.by_kind() if k.madds
    ]


@pytest.mark.parametrize(
    "ours, our_kwargs, theirs",
    [("mobilenet_v1", {}, "mobilenetv1_100"), ("mobilenet_v2", {}, "mobilenetv2_100")],
)
def test_same_totals_as_timm(ours, our_kwargs, theirs):
    timm = timm_or_skip()
    mine = profile(lightnets.create_model(ours, **our_kwargs))
    other = profile(timm.create_model(theirs, pretrained=False))
    assert (mine.params, mine.madds, mine.bn_params) == (other.params, other.madds, other.bn_params)


def test_cost_modules_import_downwards_only():
    """kinds and meta are the bottom; memory never imports profile (no import cycle)."""
    import ast
    from pathlib import Path

    import lightnets.cost as cost

    folder = Path(cost.__file__).parent
    imports = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        imports[path.stem] = {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
        }
    assert imports["kinds"] == imports["meta"] == set()
    assert imports["memory"] <= {"kinds", "meta"}
    assert "profile" not in imports["memory"]
