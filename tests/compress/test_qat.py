"""Quantisation-aware training: weights on per-channel grids, 8-bit activations, the ``grid``
encoding, and the int8 export keeping the trained weights exactly."""

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from lightnets import create_model
from lightnets.compress.pipeline import Recovery, compress_model
from lightnets.compress.qat import (
    ActivationQuantizer,
    check_qat_bits,
    finish_qat,
    least_error_scales,
    prepare_qat,
    set_observing,
)
from lightnets.compress.recovery import recovery_images
from lightnets.deploy import fold_batchnorm
from lightnets.weights.container import (
    ContainerError,
    decode_container,
    encode_container,
    encode_grid,
    read_container,
)
from lightnets.weights.load import metadata_json
from lightnets.zoo import transform_of


@pytest.mark.parametrize("bits", [1, 9, 0, 2.0, True, "8"])
def test_bits_outside_2_to_8_are_named(bits):
    with pytest.raises(ValueError, match=f"2..8 bits.*got {bits!r}"):
        check_qat_bits(bits)


def test_low_bit_scales_clip_the_largest_weights_for_less_error():
    torch.manual_seed(0)
    weight = torch.randn(16, 64)  # Gaussian rows: a few large values
    for bits, qmax, gain in ((2, 1, 0.8), (4, 7, 0.95)):
        scale = least_error_scales(weight, bits)
        peak = weight.abs().amax(dim=1) / qmax
        assert (scale <= peak).all() and (scale < peak).float().mean() > 0.5

        def error(s, qmax=qmax):
            q = (weight / s[:, None]).round().clamp(-qmax, qmax) * s[:, None]
            return (q - weight).pow(2).sum()

        assert error(scale) < gain * error(peak)


def _small_model():
    torch.manual_seed(0)
    return fold_batchnorm(create_model("mobilenet_v2", width=0.35, num_classes=10).eval())


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_every_weight_lies_on_its_channels_grid_and_inputs_on_256_levels(bits):
    model = _small_model()
    rows = prepare_qat(model, bits)
    assert len(rows) == len([m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)])
    qmax = (1 << (bits - 1)) - 1
    seen = []
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.register_forward_hook(lambda m, i, o: seen.append(m.input_quantizer(i[0])))
    model(torch.randn(2, 3, 64, 64))
    assert torch.unique(seen[0]).numel() <= 256
    grids = finish_qat(model)
    for name, (grid_bits, scales) in grids.items():
        weight = model.get_submodule(name).weight.detach().numpy()
        integers = weight.reshape(weight.shape[0], -1) / scales[:, None]
        assert grid_bits == bits
        np.testing.assert_allclose(integers, np.round(integers), atol=1e-3)
        assert np.abs(integers).max() <= qmax + 1e-3
    assert not any(isinstance(m, ActivationQuantizer) for m in model.modules())
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_activation_ranges_stop_moving_when_observing_stops():
    quantizer = ActivationQuantizer()
    quantizer(torch.linspace(-1, 3, 100))
    assert float(quantizer.low) == -1 and float(quantizer.high) == 3
    set_observing(nn.Sequential(quantizer), False)
    out = quantizer(torch.linspace(-10, 30, 100))
    assert float(quantizer.high) == 3 and abs(out.max() - 3) < 4 / 255 and abs(out.min() + 1) < 4 / 255


def test_a_layer_the_int8_path_cannot_run_is_named():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    with pytest.raises(ValueError, match=r"QAT cannot quantise 1 \(GroupNorm\)"):
        prepare_qat(model, 8)
    unfolded = create_model("mobilenet_v2", width=0.35, num_classes=10)
    with pytest.raises(ValueError, match=r"features.0.bn \(BatchNorm2d\)"):
        prepare_qat(unfolded, 8)


def test_grid_tensors_round_trip_bit_exactly_and_refuse_values_off_their_grid():
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.001, 0.1, 6).astype(np.float32)
    integers = rng.integers(-7, 8, (6, 3, 3, 3)).astype(np.float32)
    weight = (integers * scales[:, None, None, None]).astype(np.float32)
    encoded = encode_grid("w", weight, scales, 4)
    assert encoded.entry["encoding"] == "grid" and encoded.nbytes < 6 * 4 + 6 * 27
    tensors, _ = decode_container(encode_container([encoded], {"model": "x"}))
    assert tensors["w"].tobytes() == weight.tobytes()
    with pytest.raises(ValueError, match="not 4-bit integers"):
        encode_grid("w", weight + 1e-4, scales, 4)
    with pytest.raises(ValueError, match="not 3-bit integers"):
        encode_grid("w", weight, scales, 3)  # 7 steps do not fit in 3 bits
    with pytest.raises(ValueError, match="one positive scale per output channel"):
        encode_grid("w", weight, scales[:5], 4)
    damaged = encoded.entry | {"shape": [5, 3, 3, 3], "stored": 135, "nonzeros": 0}
    bad = encode_container([type(encoded)(damaged, encoded.sections)], {})
    with pytest.raises(ContainerError, match="w: needs 5 float32 scales"):
        decode_container(bad)


def test_qat_without_training_writes_a_file_every_command_reads(tmp_path):
    model = create_model("mobilenet_v2", width=0.35, num_classes=10).eval()
    compressed = compress_model(model, qat_bits=4, progress=False)
    path = tmp_path / "q.lnz"
    size = compressed.save(path, json.loads(metadata_json(model, "mobilenet_v2", model.model_kwargs)))
    tensors, _, _ = read_container(path)
    grid = [t for t in compressed.tensors if t.entry["encoding"] == "grid"]
    assert len(grid) == len(compressed.grids) > 0
    # About 4 bits a weight (plus scales and Huffman tables), against 32.
    weights = sum(int(np.prod(t.entry["shape"])) for t in grid)
    assert sum(t.nbytes for t in grid) < weights * 4.5 / 8 + 4 * 2000 + 16 * len(grid)
    loaded = create_model("mobilenet_v2", weights=path).eval()
    x = torch.randn(2, 3, 96, 96)
    torch.testing.assert_close(loaded(x), compressed.model(x), atol=1e-4, rtol=1e-4)
    assert size == path.stat().st_size
    # Each step's time and the process's peak resident memory during it (Linux reports it).
    assert set(compressed.timings) == {"fold", "quantisers", "encode (Huffman)"}
    if sys.platform == "linux":
        assert set(compressed.peak_memory) == set(compressed.timings)
        assert all(50 << 20 < peak < 8 << 30 for peak in compressed.peak_memory.values())


def test_quantisation_aware_training_refuses_pruning_and_sharing():
    model = _small_model()
    with pytest.raises(ValueError, match="replaces pruning and weight sharing"):
        compress_model(model, sparsity=0.5, qat_bits=8, progress=False)
    with pytest.raises(ValueError, match="replaces pruning and weight sharing"):
        compress_model(model, bits=6, qat_bits=8, progress=False)


def test_trained_8_bit_weights_survive_the_int8_export_exactly(tmp_path, imagenet_sample):
    """QAT shares the post-training int8 export: the exporter finds each trained layer's
    grid and keeps its weights as they were trained."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import numpy_helper

    from lightnets.deploy import quantize_onnx
    from lightnets.deploy.quantize import quantization_info

    model = create_model("mobilenet_v2", width=0.35, num_classes=10).eval()
    recovery = Recovery(recovery_images(imagenet_sample, 16), transform_of(model), steps=2, batch_size=8)
    compressed = compress_model(model, qat_bits=8, recovery=recovery, progress=False)
    assert len(compressed.losses) == 2
    path = quantize_onnx(compressed.model, tmp_path / "q.onnx", imagenet_sample, num_images=8)
    initializers = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    state = compressed.model.state_dict()
    checked = 0
    for layer in compressed.grids:
        key = f"{layer}.weight"
        if f"{key}_quantized" not in initializers:
            continue  # a layer the quantiser keeps in float
        integers, scale = initializers[f"{key}_quantized"], initializers[f"{key}_scale"]
        dequantised = integers.astype(np.float32) * scale.reshape(-1, *[1] * (integers.ndim - 1))
        np.testing.assert_array_equal(dequantised, state[key].numpy())
        checked += 1
    assert checked >= len(compressed.grids) - 1
    assert quantization_info(path)["weights"].startswith("int8 symmetric")
