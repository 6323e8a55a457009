"""Whole runs: learning, broken files, resume after SIGKILL, DDP vs one process, fine-tuning."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import tiny_config

import lightnets
from lightnets.train import SkippedImageWarning, train
from lightnets.train.cli import add_train_parser, config_from_args
from lightnets.train.distill import load_teacher


def records(out: Path, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def cli_args(**options) -> list[str]:
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False and value is not None:
            args += [flag, str(value)]
    return args


def test_loss_falls_on_a_small_real_subset(tiny_imagenette, tmp_path, one_thread):
    data = tiny_imagenette(classes=4, train=8, val=2)
    result = train(
        tiny_config(
            data,
            tmp_path / "run",
            epochs=8,
            batch_size=16,
            resolution=48,
            recipe="adamw",
            lr=1e-3,
            warmup_epochs=0,
            label_smoothing=0.0,
            ema_decay=0.0,
            crop_scale=1.0,
            hflip=0.0,
        )  # fmt: skip
    )
    losses = [r["train_loss"] for r in records(tmp_path / "run", "epoch")]
    assert len(losses) == 8 and result.steps == 16
    assert max(losses[-2:]) < 0.7 * losses[0], losses
    out = tmp_path / "run"
    for name in (
        "config.json",
        "checkpoint.pt",
        "metrics.csv",
        "curves.png",
        "summary.json",
        "model.safetensors",
    ):
        assert (out / name).is_file(), name
    assert (out / "metrics.csv").read_text().startswith("step,epoch,lr,train_loss")
    # The weights reload as an ordinary lightnets model with the run's classes and transform.
    model = lightnets.create_model("mobilenet_v2", weights=str(out / "model.safetensors"))
    assert model.num_classes == 4 and model.pretrained_cfg.transform.size == 48
    assert model.pretrained_cfg.categories == sorted(p.name for p in (data / "train").iterdir())


def test_a_corrupt_image_is_skipped_with_one_warning_naming_it(tiny_imagenette, tmp_path, one_thread):
    data = tiny_imagenette(classes=2, train=6, val=1)
    broken = data / "train" / sorted(p.name for p in (data / "train").iterdir())[1] / "broken.JPEG"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(tiny_config(data, tmp_path / "run", epochs=3))
    skipped = [w for w in caught if issubclass(w.category, SkippedImageWarning)]
    assert len(skipped) == 1 and "broken.JPEG" in str(skipped[0].message)
    assert result.steps == 9  # 13 files, 3 batches of 4 per epoch: the run went on
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["skipped_images"]) == 1 and "broken.JPEG" in summary["skipped_images"][0]


@pytest.mark.parametrize(
    "recipe_options",
    [{}, {"schedule": "onecycle", "mixup": 0.2, "cutmix": 1.0}],
    ids=["default", "onecycle_and_mixing"],
)
def test_resume_after_sigkill_gives_bit_identical_weights(
    recipe_options, tiny_imagenette, tmp_path, one_thread
):
    data = tiny_imagenette(classes=2, train=12, val=2)
    options = dict(
        **recipe_options,
        model="mobilenet_v2",
        width=0.35,
        data=data,
        epochs=4,
        batch_size=8,
        resolution=32,
        seed=7,
        recipe="sgd",
        threads=1,
        checkpoint_every=2,
        log_every=1,
        no_progress=True,
    )
    # Uninterrupted, in this process, without loader workers.
    reference = tmp_path / "reference"
    train(
        tiny_config(
            data,
            reference,
            epochs=4,
            batch_size=8,
            seed=7,
            recipe="sgd",
            checkpoint_every=2,
            **recipe_options,
        )
    )
    # Killed after its first checkpoint, in a subprocess with a loader worker, then resumed.
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "lightnets.train", *cli_args(**options, out=out, workers=1)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not (out / "checkpoint.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within the time limit"
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    killed_at = torch.load(out / "checkpoint.pt", weights_only=True)["progress"]["step"]
    assert killed_at < 12
    resumed = subprocess.run(
        [sys.executable, "-m", "lightnets.train", "--out", str(out), "--resume", "--workers", "0"],
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = tensors(reference / name), tensors(out / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # The records read as if the run had never stopped (timings apart).
    timeless = [
        {k: v for k, v in r.items() if k not in ("images_per_s", "wall_time")} for r in records(out, "step")
    ]
    assert timeless == [
        {k: v for k, v in r.items() if k not in ("images_per_s", "wall_time")}
        for r in records(reference, "step")
    ]
    assert len(records(out, "epoch")) == 4


def test_resume_refuses_changed_training_options(tiny_imagenette, tmp_path, one_thread):
    data = tiny_imagenette(classes=2, train=4, val=1)
    config = tiny_config(data, tmp_path / "run")
    train(config)
    with pytest.raises(ValueError, match="already holds a training run"):
        train(config)
    changed = tiny_config(data, tmp_path / "run", lr=0.5)
    with pytest.raises(ValueError, match="lr=0.5"):
        train(changed, resume=True)
    assert train(config, resume=True).steps == 2  # nothing left to do; the outputs are rewritten


def test_two_process_gloo_ddp_matches_one_process(tiny_imagenette, tmp_path, one_thread):
    """torchrun, 2 processes x 4 images against 1 process x 8 images, 6 steps.

    BatchNorm statistics are synchronised (the global batch's) and dropout (0.2, left on)
    is keyed to the image, so the two runs compute the same function. They run in
    float64: this tiny network trained from scratch on 8 images is chaotic enough that in
    float32 a mere change of thread count moves the loss by ~1e-3 within four steps
    (rounding differences grow ~100x per step), which would test float32 rounding, not
    the distributed computation.
    """
    data = tiny_imagenette(classes=2, train=8, val=2)
    common = dict(
        data=str(data), epochs=3, batch_size=8, resolution=64, seed=3, recipe="sgd", dtype="float64"
    )
    train(tiny_config(out=tmp_path / "one", **common))
    cli = cli_args(
        model="mobilenet_v2",
        width=0.35,
        **common,
        threads=1,
        log_every=1,
        no_progress=True,
        out=tmp_path / "two",
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    process = subprocess.run(
        [*command, "-m", "lightnets.train", *cli],
        capture_output=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    one, two = records(tmp_path / "one", "step"), records(tmp_path / "two", "step")
    assert len(one) == len(two) == 6
    assert len({round(r["loss"], 3) for r in one}) == 6  # the loss moves: the weights are trained
    for a, b in zip(one, two, strict=True):
        assert a["images"] == b["images"] == 8
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a["loss"], b["loss"])
    a, b = tensors(tmp_path / "one" / "model.safetensors"), tensors(tmp_path / "two" / "model.safetensors")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2


def test_fine_tuning_imported_weights_with_a_frozen_backbone(
    tiny_imagenette, tmp_path, weights_root, one_thread
):
    data = tiny_imagenette(classes=3, train=4, val=1)
    tag = "mobilenet_v2_100_224.tflite_uint8"
    before = lightnets.create_model("mobilenet_v2", weights=tag, num_classes=3)
    result = train(
        tiny_config(
            data,
            tmp_path / "ft",
            model_kwargs={},
            weights=tag,
            freeze_backbone=True,
            batch_size=6,
            resolution=64,
            lr=0.05,
            ema_decay=0.0,
        )  # fmt: skip
    )
    after = tensors(result.weights)
    start = before.state_dict()
    assert all(torch.equal(after[k], start[k]) for k in start if not k.startswith("head."))
    assert not torch.equal(after["head.fc.weight"], start["head.fc.weight"])
    reloaded = lightnets.create_model("mobilenet_v2", weights=str(result.weights))
    assert reloaded.padding == "tf_same" and reloaded.num_classes == 3
    assert reloaded.pretrained_cfg.transform.mean == (128.0, 128.0, 128.0)  # the weights' normalisation


def test_distillation_run_caches_teacher_logits(tiny_imagenette, tmp_path, one_thread):
    data = tiny_imagenette(classes=2, train=8, val=1)
    common = dict(data=str(data), batch_size=8)
    teacher = train(tiny_config(out=tmp_path / "teacher", model_kwargs={"width": 0.5}, **common))
    student = dict(
        **common, teacher=str(tmp_path / "teacher"), teacher_cache=str(tmp_path / "cache"), views=1
    )
    student["epochs"] = 2
    train(tiny_config(out=tmp_path / "s1", **student))
    first = json.loads((tmp_path / "s1" / "summary.json").read_text())["teacher_cache"]
    assert first == {"misses": 16, "hits": 16, "repaired": 0}  # epoch 2 repeats view 0: all cached
    train(tiny_config(out=tmp_path / "s2", **student))
    second = json.loads((tmp_path / "s2" / "summary.json").read_text())["teacher_cache"]
    assert second == {"misses": 0, "hits": 32, "repaired": 0}
    a, b = tensors(tmp_path / "s1" / "model.safetensors"), tensors(tmp_path / "s2" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # cached logits are the teacher's exactly
    # A checkpoint is a teacher too (here the one the teacher run ended with).
    from_checkpoint = load_teacher(str(tmp_path / "teacher" / "checkpoint.pt"), num_classes=2)
    saved = tensors(teacher.weights)
    assert all(torch.equal(from_checkpoint.state_dict()[k], saved[k]) for k in saved)


def test_cli_subcommand_builds_the_config(tmp_path):
    root = argparse.ArgumentParser()
    add_train_parser(root.add_subparsers(dest="command"))
    args = root.parse_args(
        ["train", "--model", "mobilenet_v2", "--width", "0.5", "--data", "d", "--out", str(tmp_path / "r")]
        + ["--recipe", "paper", "--expansion", "4", "--freeze-bn", "--epochs", "3"]
    )
    config, resume = config_from_args(args)
    assert not resume and config.model_kwargs == {"width": 0.5, "expansion": 4}
    assert (config.recipe, config.freeze_bn, config.epochs, config.batch_size) == ("paper", True, 3, 64)
    assert config.resolved().optimizer == "rmsprop"
    config.resolved().save(tmp_path / "r") if (tmp_path / "r").mkdir() is None else None
    args = root.parse_args(["train", "--out", str(tmp_path / "r"), "--resume", "--workers", "3"])
    config, resume = config_from_args(args)
    assert resume and config.workers == 3 and config.model_kwargs == {"width": 0.5, "expansion": 4}
    args = root.parse_args(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "9"])
    assert config_from_args(args)[0].epochs == 9  # a run can be extended
    args = root.parse_args(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "2"])
    with pytest.raises(ValueError, match="epochs=2 .*extended, not shortened"):
        config_from_args(args)
    args = root.parse_args(["train", "--out", str(tmp_path / "r"), "--resume", "--lr", "0.5"])
    with pytest.raises(ValueError, match="lr=0.5"):
        config_from_args(args)
    with pytest.raises(ValueError, match="--model and --data"):
        config_from_args(root.parse_args(["train", "--out", str(tmp_path / "x")]))
