"""The task training loop: a detection run through ``lightnets train``, its plan, and exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from lightnets.tasks import task_training
from lightnets.tasks.dettrain import DetectionTask, EvaluatedOnTrainingDataWarning
from lightnets.tasks.task_training import TaskRun, train_task

pytestmark = pytest.mark.usefixtures("one_thread")


def make_yolo(root: Path, photos: int = 8, side: int = 96) -> Path:
    """A YOLO folder of noise photos, each with one bright square and its box (class 0)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(photos):
        photo = rng.integers(0, 80, (side, side, 3), dtype=np.uint8)
        x, y, w = (int(v) for v in rng.integers(10, 40, 3))
        photo[y : y + w, x : x + w] = 230
        Image.fromarray(photo).save(root / "images" / f"p{k}.png")
        cx, cy = (x + w / 2) / side, (y + w / 2) / side
        (root / "labels" / f"p{k}.txt").write_text(f"0 {cx} {cy} {w / side} {w / side}\n")
    (root / "classes.txt").write_text("square\n")
    return root


def _run(root: Path, out: Path, **changes) -> TaskRun:
    settings = dict(model="ssdlite_mobilenet_v2", data=str(root), out=str(out), resolution=96, batch_size=4,
                    epochs=3, lr=1e-3, model_kwargs={"width": 0.35})  # fmt: skip
    return TaskRun(**(settings | changes))


class Crash(Exception):
    pass


class CrashingTask(DetectionTask):
    """A detection task whose loss fails at step ``at`` (a kill in the middle of an epoch)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def loss(self, model, batch, autocast):
        self.calls += 1
        if self.calls == self.at:
            raise Crash
        return super().loss(model, batch, autocast)


@pytest.mark.filterwarnings("ignore::lightnets.tasks.dettrain.EvaluatedOnTrainingDataWarning")
def test_a_resumed_run_ends_with_the_uninterrupted_runs_weights(tmp_path, monkeypatch, cli):
    monkeypatch.setattr(task_training, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint at every epoch's end
    root = make_yolo(tmp_path / "data")
    whole = train_task(_run(root, tmp_path / "whole"), DetectionTask(), progress=False)
    assert whole["steps"] == 6 and not (tmp_path / "whole" / "checkpoint.pt").exists()

    with pytest.raises(Crash):  # in epoch 1 (steps 3 and 4), after epoch 0's checkpoint
        train_task(_run(root, tmp_path / "killed"), CrashingTask(at=4), progress=False)
    assert (tmp_path / "killed" / "checkpoint.pt").exists()
    with pytest.raises(ValueError, match="holds an unfinished run"):  # a new run would lose it
        train_task(_run(root, tmp_path / "killed"), DetectionTask(), progress=False)
    code, out, err = cli(
        "train", "--out", tmp_path / "killed", "--resume", "--format", "json"
    )  # the task from run.json
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["steps"] == 6 and resumed["val"] == whole["val"]
    first = lightnets.create_model("ssdlite_mobilenet_v2", weights=whole["weights"]).state_dict()
    second = lightnets.create_model("ssdlite_mobilenet_v2", weights=resumed["weights"]).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)

    def losses(run: str) -> list[float]:
        return [
            json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        ]

    assert losses("killed") == losses("whole")


def test_lightnets_train_task_detection(tmp_path, cli):
    root = make_yolo(tmp_path / "data")
    with pytest.warns(EvaluatedOnTrainingDataWarning, match="scored on its training photos"):
        code, out, err = cli("train", "--task", "detection", "--model", "ssdlite_mobilenet_v2", "--width", "0.35",
                             "--data", root, "--out", tmp_path / "run", "--resolution", 96, "--batch-size", 4,
                             "--epochs", 2, "--format", "json")  # fmt: skip
    assert code == 0, err
    assert "no --backbone-weights" in err
    summary = json.loads(out)
    assert summary["task"] == "detection" and summary["steps"] == 4 and summary["val_images"] == 8
    assert summary["run"]["lr"] == 2e-3  # the detection default, not classification's
    assert set(summary["val"]["per_class_AP"]) == {"square"}
    model = lightnets.create_model("ssdlite_mobilenet_v2", weights=summary["weights"])
    assert model.num_classes == 2 and model.pretrained_cfg.categories == ["square"]
    assert model.pretrained_cfg.transform.size == 96


def test_a_budgeted_run_plans_its_steps_and_keeps_within_the_budget(tmp_path):
    root = make_yolo(tmp_path / "data", photos=4)
    run = _run(
        root, tmp_path / "run", batch_size=2, epochs=None, minutes=8 / 60, options={"val_data": str(root)}
    )
    summary = train_task(run, DetectionTask(), progress=False)
    assert summary["steps"] > task_training.PROBE_STEPS and summary["plan"]["seconds_per_step"] > 0
    assert summary["seconds"]["total"] < 8 + 2  # the plan's estimates are a little off
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lrs) == summary["steps"] and lrs[-1] < 0.1 * max(lrs)  # decayed to the end of the plan


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "mobilenet_v2"], "mobilenet_v2 is not a detector"),
        (["--model", "ssdlite_mobilenet_v2", "--scale-range", "1", "2"], "does not take --scale-range"),
        (["--model", "ssdlite_mobilenet_v2", "--teacher", "mobilenet_v2"], "does not take --teacher"),
        (["--model", "ssdlite_mobilenet_v2", "--amp", "fp16"], "amp='fp16'"),
        (["--model", "ssdlite_mobilenet_v2", "--resume"], "continues the run as it was set: drop --data, --model"),
    ],
)  # fmt: skip
def test_lightnets_train_task_detection_refuses_what_it_does_not_do(tmp_path, cli, argv, message):
    code, _, err = cli("train", "--task", "detection", "--data", tmp_path, "--out", tmp_path / "run", *argv)
    assert code == 2 and message in err, err
    assert not (tmp_path / "run").exists()


def test_resume_needs_a_run_to_resume(tmp_path, cli):
    code, _, err = cli("train", "--task", "detection", "--out", tmp_path, "--resume")
    assert code == 2 and "no segmentation or detection run to resume there" in err, err


def test_two_processes_share_a_detection_run(tmp_path):
    root = make_yolo(tmp_path / "data")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "lightnets",
    ]
    process = subprocess.run(
        [*command, "train", "--task", "detection", "--model", "ssdlite_mobilenet_v2", "--width", "0.35",
         "--data", str(root), "--out", str(tmp_path / "run"), "--resolution", "96", "--batch-size", "4",
         "--epochs", "2", "--threads", "1", "--format", "json"],
        capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    summary = json.loads(process.stdout)  # rank 0 alone reports
    assert summary["machine"]["processes"] == 2 and summary["steps"] == 4
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    lightnets.create_model("ssdlite_mobilenet_v2", weights=summary["weights"])
