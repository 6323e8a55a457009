"""Safe loading: other architectures, truncated files, pickles with code, peer checkpoints."""

import os
import pickle

import pytest
import torch

import lightnets
from lightnets.weights import WeightsError, convert, load_weights
from lightnets.weights.importers.torch_peers import to_peer
from peers import timm_or_skip, torchvision_or_skip


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, before):
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_round_trip_through_safetensors_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = lightnets.create_model("shufflenet_v1", groups=8, scale=0.5, num_classes=7).eval()
    path = convert(model, tmp_path / "shufflenet.safetensors")
    assert path.with_suffix(".json").is_file()
    again = lightnets.create_model("shufflenet_v1", weights=str(path)).eval()
    assert (again.groups, again.scale, again.num_classes) == (8, 0.5, 7)
    x = torch.randn(2, 3, 96, 96)
    assert torch.equal(model(x), again(x))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_with_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"weight": Exploit()}, handle)
    model = lightnets.create_model("mobilenet_v2")
    before = snapshot(model)
    with pytest.raises(WeightsError, match="could run code"):
        load_weights(model, path)
    assert not (tmp_path / "pwned").exists() and unchanged(model, before)


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(lightnets.create_model("mobilenet_v1").state_dict(), tmp_path / "v1.pth")
    model = lightnets.create_model("mobilenet_v2")
    before = snapshot(model)
    with pytest.raises(WeightsError, match="another architecture"):
        load_weights(model, tmp_path / "v1.pth")
    assert unchanged(model, before)
    narrow = lightnets.create_model("mobilenet_v2", width=0.5)
    convert(narrow, tmp_path / "narrow.safetensors")
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_weights(model, tmp_path / "narrow.safetensors")
    assert unchanged(model, before)


def test_a_truncated_file_is_refused(tmp_path):
    path = convert(lightnets.create_model("squeezenet1_1"), tmp_path / "sq.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    model = lightnets.create_model("squeezenet1_1")
    before = snapshot(model)
    with pytest.raises(WeightsError, match="sq.safetensors"):
        load_weights(model, path)
    assert unchanged(model, before)
    torch.save(model.state_dict(), tmp_path / "sq.pth")
    (tmp_path / "sq.pth").write_bytes((tmp_path / "sq.pth").read_bytes()[:1000])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_weights(model, tmp_path / "sq.pth")


def test_unknown_tag_and_bad_kwargs():
    with pytest.raises(ValueError, match="neither a known weights tag nor an existing file"):
        lightnets.create_model("mobilenet_v2", weights="mobilenet_v2_imagenet")
    with pytest.raises(ValueError, match="are for mobilenet_v1, not mobilenet_v2"):
        lightnets.create_model("mobilenet_v2", weights="mobilenet_v1_025_128.tflite_uint8")
    with pytest.raises(ValueError, match=r"need width=0.25, but width=0.5 was asked for"):
        lightnets.create_model("mobilenet_v1", width=0.5, weights="mobilenet_v1_025_128.tflite_uint8")


@pytest.mark.parametrize(
    "ours, kwargs, make_theirs",
    [
        ("mobilenet_v2", {}, lambda tv, timm: tv.mobilenet_v2()),
        ("mobilenet_v2", {"width": 0.5}, lambda tv, timm: tv.mobilenet_v2(width_mult=0.5)),
        ("squeezenet1_0", {}, lambda tv, timm: tv.squeezenet1_0()),
        ("squeezenet1_1", {}, lambda tv, timm: tv.squeezenet1_1()),
        # timm's MobileNet v1 uses ReLU6 (the paper: ReLU); a plain checkpoint cannot say so.
        ("mobilenet_v1", {"act": "relu6"}, lambda tv, timm: timm.create_model("mobilenetv1_100")),
        ("mobilenet_v2", {}, lambda tv, timm: timm.create_model("mobilenetv2_100")),
    ],
)
def test_peer_checkpoints_round_trip(tmp_path, ours, kwargs, make_theirs):
    tv, timm = torchvision_or_skip(), timm_or_skip()
    torch.manual_seed(0)
    theirs = make_theirs(tv, timm).eval()
    for module in theirs.modules():  # non-trivial statistics, so a misplaced tensor shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(theirs.state_dict(), tmp_path / "peer.pth")
    model = lightnets.create_model(ours, weights=str(tmp_path / "peer.pth"), **kwargs).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-4, atol=1e-4)
    back = to_peer(model, theirs)
    assert list(back) == list(theirs.state_dict())
    assert all(torch.equal(back[k], v) for k, v in theirs.state_dict().items())
