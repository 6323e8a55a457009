"""Structured pruning: whole inner channels removed, a smaller dense model everywhere."""

import copy
import json

import pytest
import torch
from random_statistics import randomise_batchnorm
from torch import nn
from weights_files import recorded, with_metadata

from lightnets import create_model
from lightnets.compress.channels import channel_scores, kept_width, prune_channels
from lightnets.cost import profile
from lightnets.models.slimming import (
    inner_layers,
    inner_widths,
    keep_inner_channels,
    narrow_to,
    narrowable_blocks,
)
from lightnets.weights import WeightsError, convert


def _model(name, **kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    randomise_batchnorm(model)
    return model.eval()


@pytest.mark.parametrize("name", ["mobilenet_v2", "squeezenet1_0", "squeezenet1_1"])
def test_dropping_only_dead_channels_keeps_the_outputs(name, one_thread):
    """Channels whose producing filter is zero contribute nothing: removing them (and
    only them) must leave the logits as they were, which checks that producer, depthwise
    layer, BatchNorm and readers are cut at the same indices."""
    model = _model(name)
    x = torch.randn(2, 3, 96, 96)
    for block in narrowable_blocks(model).values():
        dead = torch.arange(1, block.inner_channels, 3)
        producer, depthwise, _ = inner_layers(block)
        for unit in (producer, depthwise):  # zero what makes the channel: filter, bias, BatchNorm
            if unit is None:
                continue
            norm = getattr(unit, "bn", None)
            tensors = [unit.conv.weight, unit.conv.bias]
            tensors += [norm.weight, norm.bias] if isinstance(norm, nn.BatchNorm2d) else []
            with torch.no_grad():
                for tensor in tensors:
                    if tensor is not None:
                        tensor[dead] = 0
    before = model(x)
    widths = {}
    for name, block in narrowable_blocks(model).items():
        alive = [c for c in range(block.inner_channels) if c % 3 != 1]
        keep_inner_channels(block, alive)
        widths[name] = len(alive)
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    assert inner_widths(model) == widths


def test_scores_rank_small_filters_low():
    model = _model("mobilenet_v2")
    block = next(iter(narrowable_blocks(model).values()))
    with torch.no_grad():
        block.expand.conv.weight[5] *= 1e-3
    scores = channel_scores(block)
    assert scores.shape == (block.inner_channels,)
    assert int(scores.argmin()) == 5


@pytest.mark.parametrize(
    ("channels", "fraction", "kept"),
    [(96, 0.0, 96), (96, 0.25, 72), (96, 0.5, 48), (16, 0.9, 8), (100, 0.3, 72), (6, 0.5, 6)],
)
def test_kept_width_rounds_to_eight(channels, fraction, kept):
    assert kept_width(channels, fraction) == kept


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_a_bad_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match="fraction"):
        prune_channels(_model("squeezenet1_1"), fraction)


@pytest.mark.parametrize("name", ["mobilenet_v1", "shufflenet_v1_g3"])
def test_families_without_narrowable_blocks_are_refused(name):
    with pytest.raises(ValueError, match="no blocks whose inner channels"):
        prune_channels(_model(name), 0.25)


@pytest.mark.parametrize("name", ["mobilenet_v2", "squeezenet1_1"])
def test_a_pruned_model_is_smaller_and_round_trips_through_its_file(name, tmp_path, one_thread):
    model = _model(name)
    before = profile(model, (3, 224, 224))
    rows = prune_channels(model, 0.5)
    after = profile(model, (3, 224, 224))
    assert all(r.after < r.before or r.before <= 8 for r in rows)
    assert after.params < 0.85 * before.params and after.madds < 0.85 * before.madds
    path = tmp_path / "slim.safetensors"
    convert(model, path)
    again = create_model(name, weights=path).eval()
    assert inner_widths(again) == inner_widths(model)
    x = torch.randn(1, 3, 112, 112)
    torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)


def test_narrow_to_refuses_unknown_blocks_and_bad_widths():
    model = _model("squeezenet1_1")
    name = next(iter(narrowable_blocks(model)))
    with pytest.raises(ValueError, match="no narrowable block named nowhere"):
        narrow_to(model, {"nowhere": 8})
    for width in (0, 10_000, 2.5, True):
        with pytest.raises(ValueError, match=f"inner width of {name}"):
            narrow_to(model, {name: width})


def test_a_file_whose_widths_do_not_fit_its_model_is_a_weights_error(tmp_path):
    model = _model("squeezenet1_1")
    prune_channels(model, 0.5)
    path = tmp_path / "slim.safetensors"
    convert(model, path)
    block = next(iter(recorded(path)["inner_widths"]))
    for widths, message in (
        ({"features.99": 8}, "no narrowable block named features.99"),
        ({block: 10**9}, "must be a whole number"),
        ("sixteen", "'inner_widths' must be an object"),
    ):
        bad = with_metadata(path, tmp_path / "bad.safetensors", inner_widths=widths)
        with pytest.raises(WeightsError, match=message):
            create_model("squeezenet1_1", weights=bad)


def test_the_command_writes_a_dense_file_profile_reads_as_smaller(cli, tmp_path, weights_root):
    out = tmp_path / "slim.safetensors"
    code, text, err = cli(
        "compress",
        "--weights",
        "squeezenet1_1.gluon_npy",
        "--channels",
        "0.5",
        "-o",
        str(out),
        "--quiet",
    )
    assert code == 0, err
    assert "parameters 1,235,496 -> " in text and out.is_file()
    code, text, err = cli("profile", "--weights", str(out), "--format", "json")
    assert code == 0, err
    slim = json.loads(text)
    code, text, _ = cli("profile", "squeezenet1_1", "--format", "json")
    full = json.loads(text)
    assert slim["params"] < full["params"] and slim["madds"] < full["madds"]


@pytest.mark.parametrize("extra", [(), ("--prune", "0.5"), ("--channels", "0.25", "--share-bits", "4")])
def test_a_safetensors_output_is_only_for_a_dense_model(cli, tmp_path, extra):
    out = tmp_path / "x.safetensors"
    code, _, err = cli("compress", "--weights", "squeezenet1_1.gluon_npy", *extra, "-o", str(out))
    assert code != 0 and "a .safetensors output holds a dense model made by --channels, --rank" in err
    assert not out.exists()


def test_feature_info_follows_the_narrowed_expansions_and_keeps_the_dtype():
    model = create_model("mobilenet_v2", width=0.35).double()
    model.feature_location = "expansion"
    prune_channels(model, 0.5)
    level = model.feature_info[3]  # stride 16: features.14.expand
    block = model.get_submodule(level.module.rsplit(".", 1)[0])
    assert level.num_chs == block.inner_channels < 6 * 32
    maps = model.forward_intermediates(
        torch.zeros(1, 3, 64, 64, dtype=torch.float64), intermediates_only=True
    )
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    assert all(p.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "weights"),
    [("mobilenet_v2", "mobilenet_v2_100_224.tflite_uint8"), ("squeezenet1_1", "squeezenet1_1.gluon_npy")],
)
def test_mean_compensation_and_the_variation_criterion_keep_the_predictions_closer(
    name, weights, weights_root, imagenet_sample, one_thread
):
    from lightnets.compress.recovery import load_batches, recovery_images
    from lightnets.zoo import transform_of

    original = create_model(name, weights=weights).eval()
    paths = recovery_images(imagenet_sample, limit=96)
    calibration = load_batches(paths[:64], transform_of(original))
    held_out = torch.cat(load_batches(paths[64:], transform_of(original)))
    with torch.no_grad():
        reference = original(held_out)
    errors = {}
    for recipe, options in {
        "l1": {},
        "l1, compensated": {"calibration": calibration, "criterion": "l1"},
        "variation, compensated": {"calibration": calibration},
    }.items():
        model = copy.deepcopy(original)
        prune_channels(model, 0.25, **options)
        with torch.no_grad():
            logits = model(held_out)
        errors[recipe] = float((logits - reference).pow(2).mean())
    # When written: compensation MobileNetV2 < 0.7x, SqueezeNet 0.8x of the plain error.
    assert errors["l1, compensated"] < 0.9 * errors["l1"], errors
    assert errors["variation, compensated"] < errors["l1, compensated"], errors
    with pytest.raises(ValueError, match="'variation' needs calibration images"):
        prune_channels(copy.deepcopy(original), 0.25, criterion="variation")
