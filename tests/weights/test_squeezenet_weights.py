"""The three SqueezeNet weight sets: Gluon .npy (v1.1), ncnn fp16 (v1.1), Deep Compression (v1.0).

Real files from ``$LIGHTNETS_WEIGHTS`` (``../shared/weights``) and the 500-image ImageNet
sample; skipped where those are absent.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lightnets
from lightnets.data.images import load_image
from lightnets.weights.importers.deep_compression import import_deep_compression, net_facts, read_header
from lightnets.weights.importers.gluon_npy import import_gluon_npy
from lightnets.weights.importers.ncnn import import_ncnn
from lightnets.weights.load import load_weights
from lightnets.weights.spec import get_weights
from lightnets.weights.store import WeightsError

GLUON = "squeezenet1_1.gluon_npy"
NCNN = "squeezenet1_1.ncnn_fp16"
DEEP = "squeezenet1_0.deep_compression"
GLUON_DIR = "squeezenet/squeezenet1_1-gluon-onnxzoo-npy"
NCNN_DIR = "squeezenet/squeezenet1_1-caffe-ncnn-fp16"
NET = "squeezenet/squeezenet1_0-caffe-deepcompression/compressed_SqueezeNet.net"

# Measured on the shared file (see benchmarks/results/squeezenet_weights.md).
STORED_ENTRIES = 422_083  # the header's sum: non-zeros plus zero fillers for gaps over 15
NONZEROS = 415_921
PAPER_NONZEROS = 421_098  # SqueezeNet paper, Table 1: parameters after pruning
NCNN_OBSERVED_TOP1 = 62.3  # PROVENANCE.md, on the 1000-image sample this one is drawn from


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def sample_rows(sample: Path, count: int | None) -> list[dict[str, str]]:
    with open(sample / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows[:count]


def topk_hits(model: torch.nn.Module, tag: str, sample: Path, rows: list[dict], k: int = 5) -> torch.Tensor:
    """(n, k) booleans: is the label the model's i-th guess, for each image of ``rows``."""
    transform = get_weights(tag).transform
    labels = torch.tensor([int(r["class_index"]) for r in rows])
    model = model.eval().to(memory_format=torch.channels_last)  # 1.5x faster on CPU
    guesses = []
    with torch.inference_mode():
        for start in range(0, len(rows), 50):
            images = [transform(load_image(sample / "images" / r["filename"])) for r in rows[start:][:50]]
            batch = torch.stack(images).to(memory_format=torch.channels_last)
            guesses.append(model(batch).topk(k, dim=1).indices)
    return torch.cat(guesses) == labels[:, None]


def top1(hits: torch.Tensor) -> float:
    return 100.0 * hits[:, 0].float().mean().item()


# -- Gluon .npy --------------------------------------------------------------------------


def test_gluon_reproduces_the_reference_pairs(weights_root):
    model = lightnets.create_model("squeezenet1_1", weights=GLUON).eval()
    for i in range(3):
        folder = weights_root / GLUON_DIR / "test_data_set" / str(i)
        x = np.load(folder / "input_0.npy", allow_pickle=False)
        expected = np.load(folder / "output_0.npy", allow_pickle=False)
        with torch.inference_mode():
            logits = model(torch.from_numpy(x)).numpy()
        assert logits.shape == expected.shape == (1, 1000)
        assert np.abs(logits - expected).max() <= 1e-3


def test_gluon_from_folder_equals_tag_and_leaves_model_alone(weights_root):
    by_tag = lightnets.create_model("squeezenet1_1", weights=GLUON).state_dict()
    model = lightnets.create_model("squeezenet1_1")
    before = snapshot(model)
    state = import_gluon_npy([weights_root / GLUON_DIR], model)
    assert_unchanged(model, before)
    assert list(state) == list(model.state_dict())
    assert all(torch.equal(state[k], by_tag[k]) for k in by_tag)
    load_weights(model, weights_root / GLUON_DIR)
    assert all(torch.equal(v, by_tag[k]) for k, v in model.state_dict().items())


# -- ncnn fp16 ---------------------------------------------------------------------------


def test_ncnn_loads_fp16_weights(weights_root):
    model = lightnets.create_model("squeezenet1_1", weights=NCNN)
    state = model.state_dict()
    weights = [v for k, v in state.items() if k.endswith("weight")]
    assert len(weights) == 26
    for w in weights:  # stored as float16: exactly representable
        assert torch.equal(w.half().float(), w)
    first = weights[0].flatten()[:4]
    raw = (weights_root / NCNN_DIR / "squeezenet_v1.1.bin").read_bytes()
    assert raw[:4] == bytes.fromhex("476b3001")  # the fp16 tag
    assert torch.equal(first, torch.from_numpy(np.frombuffer(raw, "<f2", 4, 4).astype(np.float32)))
    assert model.pretrained_cfg.transform.channel_order == "BGR"


def test_ncnn_top1_on_the_first_100_images(imagenet_sample):
    model = lightnets.create_model("squeezenet1_1", weights=NCNN)
    hits = topk_hits(model, NCNN, imagenet_sample, sample_rows(imagenet_sample, 100))
    # 100 images: one standard deviation is about 5 points. Measured: 70.0 (61.6 on all 500).
    assert abs(top1(hits) - NCNN_OBSERVED_TOP1) <= 10.0, top1(hits)


# -- Deep Compression --------------------------------------------------------------------


def test_deep_compression_decodes_as_its_header_says(weights_root):
    path = weights_root / NET
    model = lightnets.create_model("squeezenet1_0")
    facts = net_facts(path, model)
    header = read_header(path, len(facts))
    assert [f.stored for f in facts] == header
    assert sum(header) == STORED_ENTRIES
    assert all(f.codebook_size == 256 for f in facts)  # 8 bits everywhere, as the file size requires
    assert all(f.nonzero_codes_used <= 255 and f.codes_used <= 256 for f in facts)
    assert all(f.nonzeros <= f.stored <= f.weights for f in facts)
    state = import_deep_compression([path], model)
    weights = [v for k, v in state.items() if k.endswith("weight")]
    assert [int(torch.count_nonzero(w)) for w in weights] == [f.nonzeros for f in facts]
    assert [len(torch.unique(w)) - 1 for w in weights] == [f.nonzero_codes_used for f in facts]
    total = sum(f.nonzeros for f in facts)
    assert total == NONZEROS
    assert abs(total - PAPER_NONZEROS) / PAPER_NONZEROS < 0.015  # 1.2% fewer than the paper says


def _deep_vs_gluon(sample: Path, count: int | None) -> tuple[float, float]:
    rows = sample_rows(sample, count)
    deep = top1(topk_hits(lightnets.create_model("squeezenet1_0", weights=DEEP), DEEP, sample, rows))
    gluon = top1(topk_hits(lightnets.create_model("squeezenet1_1", weights=GLUON), GLUON, sample, rows))
    return deep, gluon


def test_deep_compression_matches_gluon_float_on_200_images(imagenet_sample, weights_root):
    deep, gluon = _deep_vs_gluon(imagenet_sample, 200)  # measured: 64.5 and 64.0
    assert abs(deep - gluon) <= 2.0, (deep, gluon)


@pytest.mark.slow
def test_deep_compression_matches_gluon_float_on_all_images(imagenet_sample, weights_root):
    deep, gluon = _deep_vs_gluon(imagenet_sample, None)  # measured: 58.4 and 58.2
    assert abs(deep - gluon) <= 2.0, (deep, gluon)


@pytest.mark.slow
def test_ncnn_top1_on_all_images(imagenet_sample):
    model = lightnets.create_model("squeezenet1_1", weights=NCNN)
    hits = topk_hits(model, NCNN, imagenet_sample, sample_rows(imagenet_sample, None))
    assert abs(top1(hits) - NCNN_OBSERVED_TOP1) <= 5.0, top1(hits)  # measured: 61.6


# -- Bad input ---------------------------------------------------------------------------


def _copy_ncnn(weights_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    for name in ("squeezenet_v1.1.param", "squeezenet_v1.1.bin"):
        shutil.copy(weights_root / NCNN_DIR / name, tmp_path / name)
    return tmp_path / "squeezenet_v1.1.param", tmp_path / "squeezenet_v1.1.bin"


def _refused(model: torch.nn.Module, weights: Path, match: str) -> None:
    before = snapshot(model)
    with pytest.raises(WeightsError, match=match):
        load_weights(model, weights)
    assert_unchanged(model, before)


def test_truncated_ncnn_bin_is_refused(weights_root, tmp_path):
    param, binary = _copy_ncnn(weights_root, tmp_path)
    data = binary.read_bytes()
    binary.write_bytes(data[:-1000])
    _refused(lightnets.create_model("squeezenet1_1"), param, "truncated")
    binary.write_bytes(data + b"\0" * 8)
    _refused(lightnets.create_model("squeezenet1_1"), param, "bytes after the last layer")
    binary.write_bytes(b"\x00\x01\x02\x03" + data[4:])
    _refused(lightnets.create_model("squeezenet1_1"), param, "storage tag")


def test_truncated_net_is_refused(weights_root, tmp_path):
    net = tmp_path / "compressed_SqueezeNet.net"
    data = (weights_root / NET).read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 50):
        net.write_bytes(data[:cut])
        _refused(lightnets.create_model("squeezenet1_0"), net, "bytes")


def test_missing_or_truncated_npy_is_refused(weights_root, tmp_path):
    folder = tmp_path / "gluon"
    shutil.copytree(weights_root / GLUON_DIR, folder)
    (folder / "weights" / "squeezenet0_conv7_bias.npy").unlink()
    _refused(lightnets.create_model("squeezenet1_1"), folder, "conv7_bias")
    model = lightnets.create_model("squeezenet1_1")
    files = [weights_root / f.path for f in get_weights(GLUON).files]
    with pytest.raises(WeightsError, match="conv12_weight"):
        import_gluon_npy([p for p in files if p.name != "squeezenet0_conv12_weight.npy"], model)
    shutil.copy(weights_root / GLUON_DIR / "weights" / "squeezenet0_conv7_bias.npy", folder / "weights")
    weight = folder / "weights" / "squeezenet0_conv3_weight.npy"
    weight.write_bytes(weight.read_bytes()[:-64])
    _refused(lightnets.create_model("squeezenet1_1"), folder, "truncated or corrupt")


def test_other_networks_files_are_refused(weights_root):
    v1_1, v1_0 = lightnets.create_model("squeezenet1_1"), lightnets.create_model("squeezenet1_0")
    _refused(v1_1, weights_root / NET, "another network")
    _refused(v1_0, weights_root / NCNN_DIR / "squeezenet_v1.1.param", "does not fit")
    _refused(v1_0, weights_root / GLUON_DIR, "a different network")
    with pytest.raises(WeightsError):
        lightnets.create_model("squeezenet1_1", weights=DEEP)
    # The importers themselves, without the tag's architecture check in front of them:
    with pytest.raises(WeightsError, match="another network"):
        import_deep_compression([weights_root / NET], v1_1)
    with pytest.raises(WeightsError, match="num_output 64 \\(model 96\\)"):
        import_ncnn([weights_root / NCNN_DIR / f"squeezenet_v1.1.{ext}" for ext in ("param", "bin")], v1_0)
    # Four more (bypass) convolutions than the file has layers.
    with pytest.raises(WeightsError, match="another network"):
        import_deep_compression(
            [weights_root / NET], lightnets.create_model("squeezenet1_0", bypass="complex")
        )
    with pytest.raises(WeightsError, match="has 26 convolutions, 30 expected"):
        import_gluon_npy(
            [weights_root / GLUON_DIR], lightnets.create_model("squeezenet1_1", bypass="complex")
        )
