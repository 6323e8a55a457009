"""Weights files are untrusted: metadata checked against a schema, tensors and release
files checked against their hashes, configurations inferred from known release files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lightnets
from lightnets.weights import WeightsError, convert, load_weights
from lightnets.weights.lightnets_format import DIGEST_KEY, METADATA_KEY, parse_metadata
from lightnets.weights.load import (
    locate_weights,
    model_arguments_for,
    model_name_of_weights,
    release_of,
)
from lightnets.weights.spec import get_weights

V2_TAG = "mobilenet_v2_100_224.tflite_uint8"


def small_model():
    return lightnets.create_model("squeezenet1_1", num_classes=3)


def write_with_metadata(path: Path, metadata: object, model=None) -> Path:
    model = model or small_model()
    raw = metadata if isinstance(metadata, str) else json.dumps(metadata)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), {METADATA_KEY: raw})
    return path


GOOD = {"model": "squeezenet1_1", "model_kwargs": {}, "num_classes": 3}


@pytest.mark.parametrize(
    "metadata, words",
    [
        (
            {**GOOD, "transform": {"size": 100000, "resize": 100000}},
            "size must be a whole number in 16..4096",
        ),
        ({**GOOD, "transform": {"size": 224, "resize": 100000}}, "resize must be a whole number"),
        ({**GOOD, "transform": {"size": 224, "colour": "blue"}}, "unknown transform keys"),
        ({**GOOD, "transform": {"mean": [1, 2]}}, "three finite numbers"),
        ({**GOOD, "transform": "big"}, "must be a JSON object"),
        ({**GOOD, "model_kwargs": {"wings": 2}}, "squeezenet1_1 does not take wings"),
        ({**GOOD, "model_kwargs": {"bypass": ["x"]}}, "must be a number, string"),
        ({**GOOD, "model_kwargs": "x"}, "'model_kwargs' must be an object"),
        ({**GOOD, "num_classes": 10**9}, "num_classes must be a whole number"),
        ({**GOOD, "categories": ["a"] * 100_001}, "more than 100,000"),
        ({**GOOD, "categories": 5}, "'categories' must be"),
        ({**GOOD, "model": "resnet_9000"}, "unknown model"),
        ([1, 2, 3], "must be a JSON object, not list"),
        ('"just a string"', "must be a JSON object, not str"),
        ("{not json", "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_bad_metadata_is_a_weights_error_naming_the_file(tmp_path, metadata, words):
    path = write_with_metadata(tmp_path / "hostile.safetensors", metadata)
    for action in (
        lambda: load_weights(small_model(), path),
        lambda: lightnets.create_model("squeezenet1_1", weights=str(path)),
        lambda: model_name_of_weights(str(path)),
    ):
        with pytest.raises(WeightsError, match="hostile.safetensors") as caught:
            action()
        assert words in str(caught.value)


def test_parse_metadata_keeps_good_values_and_drops_unknown_keys(tmp_path):
    parsed = parse_metadata({**GOOD, "transform": {"size": 200, "resize": 230}, "extra": 1}, "f")
    assert parsed["transform"]["size"] == 200 and "extra" not in parsed


def test_sidecar_json_is_checked_too(tmp_path):
    torch.save(small_model().state_dict(), tmp_path / "m.pth")
    (tmp_path / "m.json").write_text(json.dumps({"model": "squeezenet1_1", "model_kwargs": {"wings": 1}}))
    with pytest.raises(WeightsError, match=r"m\.json: bad lightnets metadata"):
        lightnets.create_model("squeezenet1_1", weights=str(tmp_path / "m.pth"))


@pytest.mark.parametrize(
    "content, words",
    [
        (b"hello world\nthis is text\n", "not a PyTorch checkpoint"),
        (os.urandom(3000), "not a PyTorch checkpoint"),
        (b"\x80" + bytes(range(256)) * 10, "m.pth"),
        (b"PK\x03\x04" + os.urandom(500), "not a readable PyTorch checkpoint"),
    ],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_garbage_pth_is_a_weights_error(tmp_path, content, words):
    path = tmp_path / "m.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=words):
        load_weights(small_model(), path)


# -- dtypes ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_integer_state_dict_is_refused_naming_the_key(tmp_path, dtype):
    model = small_model()
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "ints.pth")
    target = small_model()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsError, match=r"not floating point.*first: features\.0\.") as caught:
        load_weights(target, tmp_path / "ints.pth")
    assert str(dtype).removeprefix("torch.") in str(caught.value)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_half_precision_is_still_converted(tmp_path):
    model = small_model()
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
        tmp_path / "half.pth",
    )
    loaded = load_weights(small_model(), tmp_path / "half.pth")
    assert next(loaded.parameters()).dtype == torch.float32


# -- tensor digest in lightnets' files ---------------------------------------------------


def test_written_files_record_a_tensor_digest_checked_on_load(tmp_path):
    path = convert(small_model(), tmp_path / "w.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    assert len(header[DIGEST_KEY]) == 64
    load_weights(small_model(), path)  # intact: loads

    state = load_file(str(path))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] += 1.0
    save_file(state, str(path), header)  # same header, one weight changed
    with pytest.raises(WeightsError, match=r"w\.safetensors is damaged or altered: its tensors hash"):
        load_weights(small_model(), path)


def test_flipped_byte_in_tensor_data_is_refused(tmp_path):
    path = convert(small_model(), tmp_path / "w.safetensors")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged or altered"):
        load_weights(small_model(), path)


def test_files_without_a_digest_still_load(tmp_path):
    path = write_with_metadata(tmp_path / "old.safetensors", GOOD)
    load_weights(small_model(), path)


# -- release files given by path ---------------------------------------------------------


def _release_copy(weights_root: Path, tmp_path: Path, tag: str = V2_TAG, name: str | None = None) -> Path:
    source = weights_root / get_weights(tag).files[0].path
    target = tmp_path / (name or source.name)
    shutil.copy(source, target)
    return target


def test_release_file_by_path_infers_its_configuration(weights_root, tmp_path):
    path = _release_copy(weights_root, tmp_path)
    assert model_name_of_weights(str(path)) == "mobilenet_v2"
    assert model_arguments_for("mobilenet_v2", str(path), {})["padding"] == "tf_same"
    model = lightnets.create_model("mobilenet_v2", weights=str(path))
    assert model.padding == "tf_same"
    assert model.pretrained_cfg.transform == get_weights(V2_TAG).transform
    renamed = tmp_path / "mine.tflite"
    path.rename(renamed)  # recognised by content
    assert release_of(renamed).tag == V2_TAG
    assert lightnets.create_model("mobilenet_v2", weights=str(renamed)).padding == "tf_same"


def test_release_file_with_flipped_byte_is_refused_naming_both_hashes(weights_root, tmp_path):
    path = _release_copy(weights_root, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    expected = get_weights(V2_TAG).files[0].sha256
    for action in (
        lambda: model_name_of_weights(str(path)),
        lambda: lightnets.create_model("mobilenet_v2", weights=str(path)),
        lambda: load_weights(lightnets.create_model("mobilenet_v2", padding="tf_same"), path),
    ):
        with pytest.raises(WeightsError, match="not its content") as caught:
            action()
        assert str(path) in str(caught.value) and expected in str(caught.value)


def test_release_file_for_another_model_is_refused(weights_root, tmp_path):
    path = _release_copy(weights_root, tmp_path)
    with pytest.raises(WeightsError, match="are for mobilenet_v2, not mobilenet_v1"):
        lightnets.create_model("mobilenet_v1", weights=str(path))


# -- run folders and tags ----------------------------------------------------------------


def test_run_folder_is_taken_as_its_model_safetensors(tmp_path):
    run = tmp_path / "run"
    convert(small_model(), run / "model.safetensors")
    assert locate_weights(str(run)) == run / "model.safetensors"
    assert model_name_of_weights(str(run)) == "squeezenet1_1"
    model = lightnets.create_model("squeezenet1_1", weights=str(run))
    assert model.num_classes == 3


def test_mistyped_tag_suggests_the_close_ones():
    with pytest.raises(
        WeightsError, match=r"unknown weights tag .*did you mean mobilenet_v2_100_224\.tflite_uint8"
    ):
        model_name_of_weights("mobilenet_v2_100_224.tflite_unit8")
    with pytest.raises(WeightsError, match="no such weights file or folder"):
        model_name_of_weights("runs/missing/model.safetensors")
    with pytest.raises(WeightsError, match="neither a known weights tag nor an existing file"):
        model_name_of_weights("zzz")
