"""Low-rank factorisation: layers as two thin ones from their SVD, a smaller dense model."""

import json

import pytest
import torch
from random_statistics import randomise_batchnorm
from torch import nn
from weights_files import recorded, with_metadata

from lightnets import create_model
from lightnets.compress.low_rank import factorize, rank_for_energy
from lightnets.cost import profile
from lightnets.deploy import fold_batchnorm
from lightnets.models.low_rank import LowRank, factorize_to, low_ranks
from lightnets.weights import WeightsError, convert


def _low_rank_conv(in_channels, out_channels, kernel, rank, **options):
    """A convolution whose weight, as the (in k_h, out k_w) matrix the split works on, has
    rank ``rank``: its pair at that rank is the same layer."""
    torch.manual_seed(0)
    k_h, k_w = kernel
    matrix = torch.randn(in_channels * k_h, rank) @ torch.randn(rank, out_channels * k_w)
    conv = nn.Conv2d(in_channels, out_channels, kernel, **options)
    with torch.no_grad():
        conv.weight.copy_(matrix.reshape(in_channels, k_h, out_channels, k_w).permute(2, 0, 1, 3))
    return conv


@pytest.mark.parametrize(
    "kernel, options",
    [
        ((3, 3), {"stride": 2, "padding": 1}),
        ((3, 5), {"stride": (2, 1), "padding": (1, 2)}),
        ((3, 3), {"padding": 2, "dilation": 2}),
        ((1, 1), {}),
    ],
)
def test_a_layer_of_that_rank_is_split_exactly(kernel, options):
    conv = _low_rank_conv(32, 48, kernel, 4, **options)
    model = nn.Sequential(conv)
    x = torch.randn(2, 32, 15, 17)
    expected = model(x)
    (row,) = factorize(model, rank=4)
    assert isinstance(model[0], LowRank) and row.rank == 4 and row.energy == pytest.approx(1.0)
    assert row.params_after < row.params_before
    torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)
    if kernel != (1, 1):  # a k_h x 1 then a 1 x k_w convolution
        assert model[0][0].kernel_size == (kernel[0], 1) and model[0][1].kernel_size == (1, kernel[1])


def test_a_fully_connected_layer_keeps_the_best_approximation():
    torch.manual_seed(0)
    layer = nn.Linear(256, 300)
    model = nn.Sequential(layer)
    singular = torch.linalg.svdvals(layer.weight.detach().double())
    x = torch.randn(64, 256)
    expected = model(x)
    (row,) = factorize(model, rank=64)
    pair = model[0]
    product = pair[1].weight.detach().double() @ pair[0].weight.detach().double()
    # Eckart-Young: the error of the best rank-64 approximation is the norm of the rest.
    error = torch.linalg.matrix_norm(product - layer.weight.detach().double())
    assert float(error) == pytest.approx(float(singular[64:].square().sum().sqrt()), rel=1e-6)
    assert row.energy == pytest.approx(
        float(singular[:64].square().sum() / singular.square().sum()), rel=1e-6
    )
    assert model(x).shape == expected.shape


def test_rank_for_energy_keeps_the_fraction_asked():
    values = torch.tensor([4.0, 2.0, 1.0, 1.0])  # squares 16, 4, 1, 1: 22 in all
    assert rank_for_energy(values, 16 / 22) == 1
    assert rank_for_energy(values, 0.75) == 2
    assert rank_for_energy(values, 1.0) == 4
    with pytest.raises(ValueError, match="energy must be in"):
        rank_for_energy(values, 0.0)


def test_layers_the_pair_would_not_shrink_and_depthwise_ones_are_left_whole():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, groups=16), nn.Conv2d(16, 8, 1), nn.Linear(512, 1000))
    rows = factorize(model, energy=1.0)
    assert [r.name for r in rows] == ["1", "2"]  # the depthwise layer is not even considered
    assert rows[0].rank is None and isinstance(model[1], nn.Conv2d)  # 16 -> 8: no pair is smaller
    assert rows[1].rank is None  # a random 512 x 1000 weight needs its full rank


def test_bad_requests_name_the_value_or_the_layer():
    model = nn.Sequential(nn.Conv2d(16, 32, 1), nn.Linear(64, 10))
    with pytest.raises(ValueError, match=r"rank 20 is above the full rank 16 of layer '0'"):
        factorize(model, rank=20, layers=["0"])
    with pytest.raises(ValueError, match="no layer to factorise matches head.fc"):
        factorize(model, rank=2, layers=["head.fc"])
    with pytest.raises(ValueError, match="not both"):
        factorize(model, rank=2, energy=0.9)
    with pytest.raises(ValueError, match="no layer 'nowhere'"):
        factorize_to(model, {"nowhere": 2})
    with pytest.raises(ValueError, match=r"layer '0': rank 40 is outside 1..16"):
        factorize_to(model, {"0": 40})


def test_folding_and_a_file_round_trip_keep_the_factorised_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width=0.5)
    randomise_batchnorm(model)
    model.eval()
    before = profile(model, (3, 160, 160))
    rows = factorize(model, rank=64, layers=["features.13.pointwise.conv", "head.fc"])
    assert [r.rank for r in rows] == [64, 64]
    after = profile(model, (3, 160, 160))
    assert after.params < before.params - 300_000 and after.madds < before.madds
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        expected = model(x)
        # The BatchNorm after the factorised pointwise layer folds into the pair's second half.
        folded = fold_batchnorm(model, strict=True)
        torch.testing.assert_close(folded(x), expected, atol=1e-4, rtol=1e-4)
    path = tmp_path / "low_rank.safetensors"
    convert(model, path)
    again = create_model("mobilenet_v1", weights=path).eval()
    assert low_ranks(again) == {"features.13.pointwise.conv": 64, "head.fc": 64}
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected, atol=0, rtol=0)
    assert recorded(path)["low_ranks"] == low_ranks(model)


@pytest.mark.parametrize(
    "ranks, message",
    [
        pytest.param({"head.fc": 10**9}, "must be a whole number", id="huge"),
        pytest.param({"head.fc": 600}, "rank 600 is outside", id="above the layer's"),
        pytest.param({"features.1.depthwise.conv": 2}, "cannot be factorised", id="depthwise"),
        pytest.param("sixteen", "'low_ranks' must be an object", id="not an object"),
    ],
)
def test_a_file_whose_ranks_do_not_fit_its_layers_is_a_weights_error(ranks, message, tmp_path):
    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width=0.25)
    factorize(model, rank=32, layers=["head.fc"])
    path = convert(model, tmp_path / "low_rank.safetensors")
    with pytest.raises(WeightsError, match=message):
        create_model(
            "mobilenet_v1", weights=with_metadata(path, tmp_path / "bad.safetensors", low_ranks=ranks)
        )


def factorise_conv10(*options: str) -> list[str]:
    """``lightnets compress`` of SqueezeNet 1.1's conv10 with the given rank options."""
    return ["compress", "--weights", "squeezenet1_1.gluon_npy", *options, "--rank-layers", "head.conv.conv"]


def test_the_command_writes_a_smaller_dense_file(cli, tmp_path, weights_root):
    out = tmp_path / "low_rank.safetensors"
    code, text, err = cli(*factorise_conv10("--energy", "0.9"), "-o", out, "--quiet")
    assert code == 0, err
    assert "head.conv.conv" in text and "parameters 1,235,496 -> " in text
    code, text, err = cli("profile", "--weights", str(out), "--format", "json")
    assert code == 0, err
    assert json.loads(text)["params"] < 1_235_496
    code, _, err = cli("compress", "--weights", "squeezenet1_1.gluon_npy", "--rank", "4", "--energy", "0.5",
                       "-o", str(tmp_path / "x.safetensors"))  # fmt: skip
    assert code != 0 and "not both" in err


def test_a_factorised_model_compresses_further_into_a_container(cli, tmp_path, weights_root):
    out = tmp_path / "low_rank.lnz"
    code, text, err = cli(
        *factorise_conv10("--rank", "128"), "--prune", "0.3", "--share-bits", "8", "-o", out, "--quiet"
    )
    assert code == 0, err
    assert "head.conv.conv  1000x512x1x1" in text and "written" in text  # the rank table, then the encoding
    again = create_model("squeezenet1_1", weights=out)
    assert low_ranks(again) == {"head.conv.conv": 128}
