import pytest
from torch import nn

import lightnets
from lightnets.cost.memory import activation_memory
from lightnets.layers import InvertedResidual
from peers import torchvision_or_skip


def test_a_chain_needs_its_largest_input_plus_output():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 3x16x16 in, 8x16x16 out
        nn.BatchNorm2d(8),  # in place: no new tensor
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, stride=2, padding=1),  # 8x16x16 in, 4x8x8 out
    )
    report = activation_memory(model, (3, 16, 16), bytes_per_element=4)
    assert report.peak_bytes == 4 * (3 * 256 + 8 * 256)
    assert [(r.height, r.channels) for r in report.rows] == [(16, 8), (8, 4)]


def test_a_shortcut_stays_live_through_the_block():
    block = nn.Sequential(InvertedResidual(16, 16, 1, 96))  # the block inside a network
    layer = activation_memory(block, (16, 8, 8), "layer", bytes_per_element=1)
    # During the depthwise conv: the block input (kept for the add), the 96-channel
    # expanded tensor and the depthwise output.
    assert layer.peak_bytes == 64 * (16 + 96 + 96)
    block_mode = activation_memory(block, (16, 8, 8), "block", bytes_per_element=1)
    assert block_mode.peak_bytes == 64 * (16 + 16)  # the inner tensors are disposable


def test_mobilenet_v2_block_execution_is_the_papers_bound():
    model = lightnets.create_model("mobilenet_v2")
    layer = activation_memory(model, execution="layer")
    block = activation_memory(model, execution="block")
    trick = activation_memory(model, execution="block", first_layer_trick=True)
    # Layer by layer: block 2's depthwise conv, 96 channels at 112x112 in, 96 at 56x56 out.
    assert layer.peak_bytes == 2 * (112 * 112 * 96 + 56 * 56 * 96)
    # Blocks as single operations: the first block, 32 channels in, 16 out at 112x112.
    assert block.peak_bytes == 2 * 112 * 112 * (32 + 16)
    # With the first-layer trick the largest is block 2: 16 channels at 112 in, 24 at 56 out.
    assert trick.peak_bytes == 2 * (112 * 112 * 16 + 56 * 56 * 24)
    assert trick.max_tensor_bytes == 2 * 112 * 112 * 16  # Table 3's "400K"


def test_peer_blocks_are_recognised_by_class_name():
    tvm = torchvision_or_skip()
    ours = activation_memory(lightnets.create_model("mobilenet_v2"), execution="block")
    theirs = activation_memory(tvm.mobilenet_v2(), execution="block")
    assert (ours.peak_bytes, [(r.height, r.channels) for r in ours.rows]) == (
        theirs.peak_bytes,
        [(r.height, r.channels) for r in theirs.rows],
    )


def test_execution_models_are_named_and_checked():
    model = lightnets.create_model("squeezenet1_1")
    with pytest.raises(ValueError, match="unknown execution model 'chunked'"):
        activation_memory(model, execution="chunked")
    with pytest.raises(ValueError, match="bytes_per_element must be positive"):
        activation_memory(model, bytes_per_element=0)


def test_untraceable_models_get_a_clear_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # control flow on values: torch.fx cannot trace it
                return x
            return -x

    with pytest.raises(ValueError, match="needs a model torch.fx can trace"):
        activation_memory(nn.Sequential(nn.Conv2d(3, 3, 1), DataDependent()), (3, 8, 8))


def test_profile_attaches_both_execution_models():
    report = lightnets.cost.profile(lightnets.create_model("shufflenet_v1"), memory=True)
    assert report.memory.block.peak_bytes < report.memory.layer.peak_bytes
    assert set(report.to_dict()["memory"]) == {"layer", "block"}
