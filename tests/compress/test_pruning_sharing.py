"""Magnitude pruning, masks through fine-tuning, k-means weight sharing."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lightnets.compress.pruning import (
    allocate_sparsities,
    check_sparsity,
    finish,
    gradual_sparsity,
    magnitude_mask,
    prune,
    read_sparsities,
)
from lightnets.compress.sharing import check_bits, codebooks, kmeans_1d, share_layer, share_weights


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 1), nn.Flatten(), nn.LazyLinear(4))


def net() -> nn.Module:
    model = small_net()
    model(torch.randn(1, 3, 6, 6))
    return model


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, math.nan, "0.5", True])
def test_sparsity_outside_range_is_refused(bad):
    with pytest.raises(ValueError, match="sparsity"):
        check_sparsity(bad)


@pytest.mark.parametrize("bad", [0, 17, -3, 2.5, True])
def test_bits_outside_range_are_refused(bad):
    with pytest.raises(ValueError, match="bits"):
        check_bits(bad)


def test_magnitude_mask_drops_the_smallest():
    weight = torch.tensor([[0.1, -5.0], [0.3, -0.2]])
    assert magnitude_mask(weight, 0.5).tolist() == [[False, True], [True, False]]


def test_prune_reaches_the_sparsity_and_masks_survive_training():
    model = net()
    masks = prune(model, sparsity=0.75)
    for name, mask in masks.items():
        assert 1 - mask.float().mean() == pytest.approx(0.75, abs=0.01), name
    optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    optimiser.step()
    finish(model)
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert (weight[~mask] == 0).all()
        assert not torch.signbit(weight[~mask]).any()  # +0.0, never -0.0


def test_gradual_pruning_only_removes_more():
    model = net()
    first = prune(model, sparsity=gradual_sparsity(0.8, 1, 3))["0"]
    second = prune(model, sparsity=gradual_sparsity(0.8, 3, 3))["0"]
    assert (second <= first).all() and second.float().mean() < first.float().mean()


def test_sparsity_files(tmp_path):
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps({"0": 0.5, "2.weight": 0.25}))
    as_csv = tmp_path / "s.csv"
    as_csv.write_text("layer,sparsity\n0,0.5\n2,0.25\n")
    assert read_sparsities(as_json) == {"0": 0.5, "2.weight": 0.25}
    assert read_sparsities(as_csv) == {"0": 0.5, "2": 0.25}
    assert prune(net(), sparsities=read_sparsities(as_json)).keys() == {"0", "2"}
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1.2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_sparsities(bad)
    with pytest.raises(ValueError, match="not a prunable layer"):
        prune(net(), sparsities={"nope": 0.5})


def test_allocate_prunes_insensitive_layers_more():
    scan = {"a": {0.5: 1.0, 0.9: 0.99}, "b": {0.5: 0.98, 0.9: 0.5}}
    table = allocate_sparsities(scan, {"a": 100, "b": 100}, 0.7)
    assert table == {"a": 0.9, "b": 0.5}


def test_kmeans_linear_init_keeps_extremes():
    values = np.concatenate([np.random.default_rng(0).normal(0, 0.1, 10000), [3.0, -3.0]])
    centroids = kmeans_1d(values, 15)
    assert centroids.max() == pytest.approx(3.0) and centroids.min() == pytest.approx(-3.0)


def test_kmeans_moves_empty_clusters_to_where_the_error_is():
    # Peaked weights with far outliers: an even spread leaves most centroids with no
    # members; moved, every centroid serves values and the error falls.
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.laplace(0, 0.05, 20000), [2.0, -2.5]])
    centroids = kmeans_1d(values, 31)
    nearest = centroids[np.abs(values[:, None] - centroids[None, :]).argmin(axis=1)]
    assert np.unique(nearest).size == 31
    assert centroids.max() == pytest.approx(2.0) and centroids.min() == pytest.approx(-2.5)
    spread = np.linspace(values.min(), values.max(), 31)
    evenly = spread[np.abs(values[:, None] - spread[None, :]).argmin(axis=1)]
    assert np.mean((values - nearest) ** 2) < 0.05 * np.mean((values - evenly) ** 2)


def test_share_layer_uses_at_most_two_to_the_bits_values():
    weight = torch.randn(16, 8, 3, 3)
    weight[weight.abs() < 0.5] = 0
    layer = share_layer(weight, 3)
    assert layer.codebook.size == 8 and layer.codebook[0] == 0
    assert np.array_equal(layer.weight() == 0, weight.numpy() == 0)
    assert np.unique(layer.weight()).size <= 8


def test_share_layer_keeps_a_layer_whose_values_fit_the_codebook_exactly():
    # A layer imported from an 8-bit release: 85 grid values, fewer than 255 centroids.
    # (k-means from an even spread lost half of them and made MobileNet v1 0.5 guess.)
    grid = np.linspace(-1.0, 1.5, 256, dtype=np.float32)
    weight = np.random.default_rng(0).choice(grid[::3], size=(16, 8, 3, 3)).astype(np.float32)
    assert np.unique(weight[weight != 0]).size == 85
    assert np.array_equal(share_layer(weight, 8).weight(), weight)
    assert np.unique(share_layer(weight, 6).weight()).size <= 64


def test_centroid_gradient_is_the_sum_over_its_members():
    model = net()
    prune(model, sparsity=0.5)
    share_weights(model, 2)
    x = torch.randn(2, 3, 6, 6)
    conv = model[2]
    with parametrize.cached():  # the weight the forward pass uses: codebook[codes]
        weight = conv.weight
        weight.retain_grad()
        model(x).sum().backward()
    parametrisation = conv.parametrizations.weight[0]
    codes = parametrisation.codes
    expected = torch.zeros(4).index_add_(0, codes.reshape(-1), weight.grad.reshape(-1))[1:]
    assert torch.allclose(parametrisation.centroids.grad, expected, atol=1e-5)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    shared = codebooks(model)
    finish(model)
    assert np.array_equal(model[2].weight.detach().numpy(), shared["2"].weight())


def test_least_squares_refit_brings_the_pruned_model_closer():
    from lightnets.compress.reconstruction import reconstruct

    teacher = net().eval()
    batches = [torch.randn(16, 3, 6, 6) for _ in range(2)]
    plain = net()
    prune(plain, sparsity=0.7)
    refit = net()
    prune(refit, sparsity=0.7)
    shared = reconstruct(refit, teacher, batches, bits=4, progress=False)
    assert set(shared) == {"0", "2", "4"}
    with torch.no_grad():
        x = torch.cat(batches)
        error_plain = (plain(x) - teacher(x)).pow(2).mean()
        error_refit = (refit(x) - teacher(x)).pow(2).mean()
    assert error_refit < error_plain
    finish(refit)
    assert (refit[0].weight == 0).float().mean() >= 0.69
