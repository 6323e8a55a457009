"""The .lnz container: bit-exact round trips, loading as weights, refusing bad files."""

import json

import numpy as np
import pytest
import torch

import lightnets
from lightnets.compress.authors_format import deep_compression_bytes
from lightnets.compress.pipeline import compress_model
from lightnets.compress.recovery import recovery_images
from lightnets.weights.container import (
    ContainerError,
    decode_container,
    encode_container,
    encode_tensor,
    read_container_metadata,
)
from lightnets.weights.importers.deep_compression import decode_net
from lightnets.weights.load import metadata_json


def metadata_of(model):
    return json.loads(metadata_json(model, model.model_name, model.model_kwargs))


@pytest.mark.parametrize("huffman", [True, False])
def test_every_encoding_decodes_bit_exactly(huffman):
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    sparse = dense * (rng.random(dense.shape) < 0.1)
    sparse[0, 0, 0, 0] = -0.0
    codebook = np.array([0, -0.5, 0.25, 1.0], dtype=np.float32)
    shared = codebook[rng.integers(0, 4, size=(300, 50))]
    shared[:, :40] = 0  # long runs of zeros need fillers
    tensors = [
        encode_tensor("a", dense, use_huffman=huffman),
        encode_tensor("b", sparse, use_huffman=huffman),
        encode_tensor("c", shared, codebook, bits=2, use_huffman=huffman),
        encode_tensor("d", shared, codebook, bits=2, sparse=False, use_huffman=huffman),
        encode_tensor("e", np.float32(3.5).reshape(()), use_huffman=huffman),
    ]
    decoded, header = decode_container(encode_container(tensors, {}))
    assert tensors[1].entry["encoding"] == "sparse" and tensors[2].entry["gap_bits"] > 0
    for name, array in zip(
        "abcde", [dense, sparse, shared, shared, np.float32(3.5).reshape(())], strict=True
    ):
        expected = np.where(array == 0, np.float32(0), array).astype(np.float32)
        assert decoded[name].tobytes() == expected.tobytes(), name


def test_values_outside_the_codebook_are_refused():
    with pytest.raises(ValueError, match="not in its codebook"):
        encode_tensor(
            "w", np.array([0.0, 0.3], dtype=np.float32), np.array([0.0, 0.5], dtype=np.float32), bits=1
        )


@pytest.fixture(scope="module")
def squeezenet_compressed(tmp_path_factory):
    from tests.conftest import WEIGHTS_ROOT

    if not WEIGHTS_ROOT.is_dir():
        pytest.skip("no weights")
    model = lightnets.create_model(
        "squeezenet1_1", weights="squeezenet1_1.gluon_npy", weights_root=WEIGHTS_ROOT
    )
    compressed = compress_model(model, sparsity=0.5, bits=5, use_huffman=True, progress=False)
    path = tmp_path_factory.mktemp("lnz") / "squeezenet1_1.lnz"
    size = compressed.save(path, metadata_of(model))
    return model, compressed, path, size


def test_squeezenet_round_trip_through_the_loader(squeezenet_compressed):
    model, compressed, path, size = squeezenet_compressed
    assert size < 4 * compressed.params / 8  # at least 8x smaller than float32
    loaded = lightnets.create_model("squeezenet1_1", weights=path)
    expected = compressed.model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert read_container_metadata(path)["model"] == "squeezenet1_1"
    assert lightnets.zoo.model_for_weights(path).model_name == "squeezenet1_1"


def test_squeezenet_authors_format_round_trip(squeezenet_compressed):
    model, compressed, path, size = squeezenet_compressed
    data = deep_compression_bytes(compressed.model, compressed.shared)
    convs = [m for m in compressed.model.modules() if isinstance(m, torch.nn.Conv2d)]
    layers = decode_net(data, [tuple(c.weight.shape) for c in convs])
    for conv, layer in zip(convs, layers, strict=True):
        assert layer.weight.tobytes() == conv.weight.detach().numpy().tobytes()
        assert layer.bias.tobytes() == conv.bias.detach().numpy().tobytes()


def test_a_model_with_batchnorm_loads_its_folded_weights(tmp_path):
    model = lightnets.create_model("mobilenet_v2", width=0.35, num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2)
    compressed = compress_model(model, sparsity=0.3, bits=8, progress=False)
    path = tmp_path / "m.lnz"
    compressed.save(path, metadata_of(model))
    loaded = lightnets.create_model("mobilenet_v2", weights=path).eval()
    x = torch.randn(2, 3, 96, 96)
    assert torch.allclose(loaded(x), compressed.model(x), atol=1e-4, rtol=1e-4)


def test_files_that_are_not_containers_are_refused(tmp_path, squeezenet_compressed):
    _, _, path, _ = squeezenet_compressed
    fake = tmp_path / "fake.lnz"
    fake.write_bytes(b"PK\x03\x04 not a container")
    with pytest.raises(ValueError, match="fake.lnz is not a lightnets container"):
        lightnets.create_model("squeezenet1_1", weights=fake)
    data = path.read_bytes()
    cut = tmp_path / "cut.lnz"
    cut.write_bytes(data[:-100])
    with pytest.raises(ContainerError, match="cut.lnz"):
        lightnets.create_model("squeezenet1_1", weights=cut)
    flipped = bytearray(data)
    flipped[-5000] ^= 0xFF
    damaged = tmp_path / "damaged.lnz"
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(ContainerError, match="sha256"):
        lightnets.create_model("squeezenet1_1", weights=damaged)
    with pytest.raises(ValueError):
        lightnets.create_model("mobilenet_v1", weights=path)


def test_a_recovery_folder_without_images_is_refused(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty holds no images"):
        recovery_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="no such folder"):
        recovery_images(tmp_path / "missing")
