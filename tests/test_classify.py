"""Predicting and evaluating with real weights on real images."""

import json
import shutil

import pytest
import torch
from PIL import Image

import lightnets
from lightnets.cli import main

GLUON = "squeezenet1_1.gluon_npy"


@pytest.fixture
def odd_images(tmp_path, imagenet_sample):
    """One real photo in several awkward forms, plus a broken file."""
    photo = Image.open(imagenet_sample / "images" / "n01443537_goldfish.JPEG").convert("RGB")
    folder = tmp_path / "odd"
    folder.mkdir()
    photo.convert("L").save(folder / "grey.jpg")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    rgba = photo.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(folder / "alpha.png")
    photo.resize((4000, 3000)).save(folder / "huge.jpg", quality=80)
    photo.resize((32, 24)).save(folder / "tiny.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return folder


def test_predict_handles_awkward_images_and_skips_broken_ones(odd_images, weights_root):
    model = lightnets.create_model("squeezenet1_1", weights=GLUON)
    predictions, skipped = lightnets.predict(model, [odd_images], topk=5)
    assert len(predictions) == 5 and len(skipped) == 1 and "broken.jpg" in skipped[0]
    for p in predictions:
        assert len(p.classes) == 5 and p.probabilities == sorted(p.probabilities, reverse=True)
        if "tiny" not in p.path:  # a 32x24 goldfish is too little to recognise
            assert "goldfish" in p.names, p


def test_predict_cli(capsys, odd_images, weights_root):
    code = main(["predict", str(odd_images / "cmyk.jpg"), str(odd_images / "broken.jpg"), "--weights", GLUON,
                 "--topk", "3", "--format", "json"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "skipped" in err and "broken.jpg" in err
    [prediction] = json.loads(out)
    assert prediction["names"][0] == "goldfish" and len(prediction["classes"]) == 3


def test_eval_cli_json(capsys, imagenet_sample, weights_root):
    code = main(["eval", "--data", str(imagenet_sample), "--weights", GLUON, "--limit", "64", "--format", "json",
                 "--per-class"])  # fmt: skip
    out, _ = capsys.readouterr()
    result = json.loads(out)
    assert code == 0 and result["n"] == 64
    assert 40 <= result["top1"] <= 100 and result["top5"] >= result["top1"]
    assert len(result["per_class"]) == 64


def test_eval_skips_an_unreadable_image_and_goes_on(tmp_path, imagenet_sample, weights_root):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    lines = (imagenet_sample / "labels.csv").read_text().splitlines()[:9]
    for line in lines[1:]:
        name = line.split(",")[0]
        shutil.copy(imagenet_sample / "images" / name, data / "images" / name)
    (data / "images" / lines[1].split(",")[0]).write_bytes(b"corrupt")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    result = lightnets.evaluate(lightnets.create_model("squeezenet1_1", weights=GLUON), data, progress=False)
    assert result.n == 7 and len(result.skipped) == 1


def test_convert_round_trip_is_bit_exact(tmp_path, weights_root, capsys):
    out = tmp_path / "squeezenet.safetensors"
    assert main(["convert", "--weights", GLUON, "-o", str(out)]) == 0
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert metadata["model"] == "squeezenet1_1" and metadata["converted_from"] == GLUON
    original = lightnets.create_model("squeezenet1_1", weights=GLUON).eval()
    again = lightnets.create_model("squeezenet1_1", weights=str(out)).eval()
    assert again.pretrained_cfg.transform == original.pretrained_cfg.transform
    x = torch.randn(2, 3, 224, 224)
    assert torch.equal(original(x), again(x))
    # The converted file alone tells the CLI which model it is.
    assert main(["eval", "--data", str(tmp_path), "--weights", str(out)]) == 2
    assert "holds no labels.csv" in capsys.readouterr().err


def test_fine_tuning_head(weights_root):
    model = lightnets.create_model("squeezenet1_1", weights=GLUON, num_classes=10)
    assert model.num_classes == 10
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 10)
