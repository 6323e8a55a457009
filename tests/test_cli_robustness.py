"""Bad input to the commands ends in one line naming the problem, never a traceback;
class folders are scored against the model's own classes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import lightnets
from lightnets.classify import dataset_for, evaluate, predict, spread_over_classes
from lightnets.cli import main
from lightnets.data.transforms import EvalTransform
from lightnets.weights import PretrainedConfig


def run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    _, err = capsys.readouterr()
    return code, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (("predict", "x.jpg", "--weights", "w", "--topk", "0"), "--topk: 0 is out of range"),
        (("predict", "x.jpg", "--weights", "w", "--topk", "-1"), "--topk: -1 is out of range"),
        (("predict", "x.jpg", "--weights", "w", "--threads", "-3"), "--threads: -3 is out of range"),
        (("eval", "--data", "d", "--weights", "w", "--limit", "-1"), "--limit: -1 is out of range"),
        (("eval", "--data", "d", "--weights", "w", "--limit", "0"), "--limit: 0 is out of range"),
        (("eval", "--data", "d", "--weights", "w", "--batch-size", "x"), "'x' is not a whole number"),
        (("profile", "mobilenet_v2", "--resolution", "0"), "--resolution: 0 is out of range"),
        (("export", "mobilenet_v2", "-o", "m.onnx", "--opset", "9"), "--opset: 9 is out of range"),
        (("bench", "--runs", "3"), "--runs: 3 is out of range"),
        (("profile", "mobilenet_v2", "--max-pixels", "0"), "--max-pixels: 0 is out of range"),
    ],
)
def test_bad_numbers_are_refused_in_one_line(capsys, argv, message):
    code, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_an_unwritable_output_is_one_line(capsys, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    code, err = run(capsys, "export", "mobilenet_v2", "--width", "0.35", "-o", str(blocked / "m.onnx"))
    assert code == 2 and str(blocked) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="does not take --groups"):
        main(["profile", "mobilenet_v2", "--groups", "3", "--debug"])


def make_folders(root, names, per_class=2):
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def trained_on(classes):
    model = lightnets.create_model("mobilenet_v2", width=0.35, num_classes=len(classes))
    model.pretrained_cfg = PretrainedConfig("run", EvalTransform(size=32, resize=36), list(classes))
    return model


def test_class_folders_are_matched_to_the_models_own_classes(tmp_path):
    # ImageNet wnids, which the old mapping sent to ImageNet indices (0, 217, ...).
    classes = ["n02102040", "n01440764", "n02979186"]
    make_folders(tmp_path, ["n01440764", "n02979186"])
    dataset = dataset_for(trained_on(classes), tmp_path)
    assert sorted({label for _, label in dataset.samples}) == [1, 2]
    assert dataset.classes == classes
    result = evaluate(trained_on(classes), tmp_path, progress=False)
    assert result.n == 4 and set(result.per_class) == {1, 2}


def test_folders_the_model_does_not_know_are_refused_by_name(tmp_path):
    make_folders(tmp_path, ["cats", "dogs"])
    with pytest.raises(ValueError, match=r"the class folders dogs are not classes of the model"):
        dataset_for(trained_on(["cats", "birds"]), tmp_path)


def test_limit_spreads_over_the_classes():
    samples = [(f"{c}{i}", c) for c in range(3) for i in range(5)]
    chosen = spread_over_classes(samples, 7)
    assert [label for _, label in chosen] == [0, 1, 2, 0, 1, 2, 0]


def test_predict_takes_one_path_as_a_string(tmp_path):
    make_folders(tmp_path, ["a"], per_class=1)
    path = str(tmp_path / "a" / "0.png")
    predictions, skipped = predict(trained_on(["x", "y"]), path, topk=1)
    assert [p.path for p in predictions] == [path] and not skipped


def test_train_refuses_a_bad_option_through_the_main_command(capsys, tmp_path, imagenette):
    out = tmp_path / "run"
    code, err = run(
        capsys,
        "train",
        "--model",
        "mobilenet_v2",
        "--data",
        str(imagenette),
        "--out",
        str(out),
        "--label-smoothing",
        "2",
    )
    assert code == 2 and "--label-smoothing must be" in err and "Traceback" not in err
    assert not out.exists()


def test_max_pixels_sets_the_limit_of_the_command(capsys, monkeypatch):
    from lightnets.data import images

    monkeypatch.setattr(images, "_max_pixels", images.max_pixels())  # restored after the test
    monkeypatch.setenv(images.ENV_MAX_PIXELS, str(images.max_pixels()))
    code, _ = run(capsys, "profile", "mobilenet_v2", "--width", "0.35", "--max-pixels", "1000000")
    assert code == 0 and images.max_pixels() == 1_000_000


@pytest.mark.parametrize(
    ("text", "value"), [("50M", 50e6), ("1.5G", 1.5e9), ("300k", 300e3), ("2000", 2000.0)]
)
def test_amounts_take_decimal_suffixes(text, value):
    from lightnets.arguments import quantity

    assert quantity(text) == value


@pytest.mark.parametrize("text", ["5X", "0", "-1M", "M", "nanK"])
def test_bad_amounts_are_refused(text):
    import argparse

    from lightnets.arguments import quantity

    with pytest.raises(argparse.ArgumentTypeError):
        quantity(text)
