"""The deploy stage's command-line pieces: `lightnets export` and `--backend onnxruntime`."""

import argparse
import shutil

import pytest

import lightnets
from lightnets.deploy import Runtime, read_metadata
from lightnets.deploy.cli import add_backend_options, add_export_parser, model_for_backend

GLUON = "squeezenet1_1.gluon_npy"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lightnets")
    sub = parser.add_subparsers(dest="command", required=True)
    add_export_parser(sub)
    predict = sub.add_parser("predict")
    predict.add_argument("inputs", nargs="+")
    predict.add_argument("--weights", required=True)
    predict.add_argument("--model")
    predict.add_argument("--weights-root")
    add_backend_options(predict)
    return parser.parse_args(list(argv))


@pytest.fixture
def few_images(tmp_path, imagenet_sample):
    folder = tmp_path / "calibration"
    folder.mkdir()
    for path in sorted((imagenet_sample / "images").iterdir())[100:132]:
        shutil.copy(path, folder / path.name)
    return folder


def test_export_command_writes_a_checked_file(tmp_path, capsys, imagenet_sample, weights_root):
    out = tmp_path / "squeezenet.onnx"
    args = parse(
        "export", "--weights", GLUON, "-o", str(out), "--verify", str(imagenet_sample), "--verify-images", "8"
    )
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "squeezenet1_1, input 3x224x224 (NCHW), fp32, 1000 classes; onnx.checker passed" in text
    assert "top-1 agreement 100.0%" in text
    assert read_metadata(out).weights == GLUON


def test_export_command_int8(tmp_path, capsys, few_images, weights_root):
    out = tmp_path / "int8.onnx"
    args = parse("export", "--weights", GLUON, "-o", str(out), "--int8", "--calibration", str(few_images))
    assert args.func(args) == 0
    assert "int8" in capsys.readouterr().out and Runtime(out).precision == "int8"


def test_export_command_builds_random_models_and_refuses_bad_requests(tmp_path, capsys):
    out = tmp_path / "shufflenet.onnx"
    args = parse(
        "export", "shufflenet_v1", "--groups", "8", "--scale", "0.25", "--input-size", "128", "-o", str(out)
    )
    assert args.func(args) == 0
    meta = read_metadata(out)
    assert (
        meta.model_kwargs["groups"] == 8 and meta.input_size == (3, 128, 128) and meta.transform.size == 128
    )
    for argv, message in (
        (("export", "-o", str(out)), "give a MODEL"),
        (("export", "mobilenet_v1", "-o", str(tmp_path / "x.pt")), "must end in .onnx"),
        (("export", "mobilenet_v1", "-o", str(out), "--int8"), "needs --calibration"),
    ):
        with pytest.raises(ValueError, match=message):
            parse(*argv).func(parse(*argv))


def test_predict_with_the_onnxruntime_backend(tmp_path, imagenet_sample, weights_root):
    goldfish = str(imagenet_sample / "images" / "n01443537_goldfish.JPEG")
    # Weights tag: exported on the fly and cached.
    runtime = model_for_backend(
        parse("predict", goldfish, "--weights", GLUON, "--backend", "onnxruntime"), None
    )
    assert isinstance(runtime, Runtime) and runtime.path.is_file()
    again = model_for_backend(
        parse("predict", goldfish, "--weights", GLUON, "--backend", "onnxruntime"), None
    )
    assert again.path == runtime.path  # from the cache
    predictions, _ = lightnets.predict(runtime, [goldfish], topk=3)
    model = model_for_backend(parse("predict", goldfish, "--weights", GLUON), lambda a: lightnets.create_model(
        "squeezenet1_1", weights=a.weights))  # fmt: skip
    expected, _ = lightnets.predict(model, [goldfish], topk=3)
    assert predictions[0].classes == expected[0].classes and predictions[0].names[0] == "goldfish"
    # An .onnx file implies the onnxruntime backend, and cannot run on pytorch.
    from_file = model_for_backend(
        parse("predict", goldfish, "--weights", str(runtime.path), "--threads", "1"), None
    )
    assert isinstance(from_file, Runtime) and from_file.threads == 1
    with pytest.raises(ValueError, match="--backend onnxruntime"):
        model_for_backend(
            parse("predict", goldfish, "--weights", str(runtime.path), "--backend", "pytorch"), None
        )
