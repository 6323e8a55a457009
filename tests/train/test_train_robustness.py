"""``lightnets train`` against hostile use: moved and copied run folders, concurrent
resumes, refused options that must leave nothing behind, diverging runs, full and
read-only disks, damaged caches, unreadable data and mismatched teachers.

Every refusal is a ``ValueError`` (``lightnets train: error: ...``, exit status 2) naming
the value or file, never a traceback.
"""

import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest
import tiny_runs
import torch

from lightnets.train import TeacherCache, TrainConfig, train
from lightnets.train import checkpoint as ckpt
from lightnets.train.checkpoint import RunLock, RunLockedError
from lightnets.train.cli import main as train_main
from lightnets.train.distill import TeacherCacheWarning
from lightnets.train.records import MetricsLog

TINY = [
    "--model", "mobilenet_v2", "--width", "0.35", "--resolution", "32", "--batch-size", "4",
    "--epochs", "1", "--limit-per-class", "2", "--val-limit-per-class", "1", "--threads", "1",
    "--no-progress", "--log-every", "1",
]  # fmt: skip


def tiny_config(data, out, **options) -> TrainConfig:
    """The tiny run of ``TINY`` (two training images per class)."""
    return tiny_runs.tiny_config(data, out, **{"limit_per_class": 2, "val_limit_per_class": 1, **options})


def run_cli(capsys, *args) -> tuple[int, str]:
    """``lightnets train ARGS`` in this process: (exit status, standard error)."""
    status = train_main([str(a) for a in args])
    err = capsys.readouterr().err
    return status, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lightnets train: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def strict_json_lines(path) -> list[dict]:
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.fixture
def data(tiny_imagenette):
    return tiny_imagenette(classes=2, train=2, val=1)


# ----------------------------------------------------------------------- 1. the run folder
def test_resume_follows_out_when_the_folder_is_copied_moved_or_reached_from_elsewhere(
    data, tmp_path, monkeypatch, capsys, one_thread
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    status, err = run_cli(capsys, *TINY, "--data", os.path.relpath(data, work), "--out", "runs/a")
    assert status == 0, err
    stored = json.loads((work / "runs/a/config.json").read_text())
    assert "out" not in stored and stored["data"] == str(data)  # no path to the folder itself
    before = {p.name: p.read_bytes() for p in (work / "runs/a").iterdir()}

    # A copy resumed (and extended) under its own name leaves the original alone.
    shutil.copytree(work / "runs/a", work / "runs/b")
    status, err = run_cli(capsys, "--out", "runs/b", "--resume", "--epochs", "2")
    assert status == 0, err
    assert {p.name: p.read_bytes() for p in (work / "runs/a").iterdir()} == before
    assert torch.load(work / "runs/b/checkpoint.pt", weights_only=True)["progress"]["epoch"] == 2
    assert json.loads((work / "runs/b/config.json").read_text())["epochs"] == 2
    changes = [r for r in strict_json_lines(work / "runs/b/metrics.jsonl") if r["kind"] == "resume"]
    assert changes == [{"kind": "resume", "step": 1, "changed": {"epochs": [1, 2]}}]

    # Moved, and resumed from another working folder with an absolute --out.
    (work / "runs/b").rename(work / "runs/c")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    status, err = run_cli(capsys, "--out", work / "runs/c", "--resume", "--epochs", "3")
    assert status == 0, err
    assert torch.load(work / "runs/c/checkpoint.pt", weights_only=True)["progress"]["epoch"] == 3
    assert not (work / "runs/b").exists() and not list(elsewhere.iterdir())
    assert {p.name: p.read_bytes() for p in (work / "runs/a").iterdir()} == before

    # Shortening, or changing what the run learns, is refused naming the option.
    status, err = run_cli(capsys, "--out", work / "runs/c", "--resume", "--epochs", "1")
    assert status == 2 and "epochs=1" in error_line(err) and "not shortened" in err
    status, err = run_cli(capsys, "--out", work / "runs/c", "--resume", "--lr", "0.3")
    assert status == 2 and "lr=0.3" in error_line(err)


def test_a_checkpoint_from_another_run_is_refused_naming_the_difference(data, tmp_path, one_thread):
    train(tiny_config(data, tmp_path / "a", lr=0.01, checkpoint_every=1))
    train(tiny_config(data, tmp_path / "b", lr=0.02))
    shutil.copy(tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt")
    with pytest.raises(
        ValueError, match=r"checkpoint.pt belongs to another run: lr=0.01 \(the run has 0.02\)"
    ):
        train(tiny_config(data, tmp_path / "b", lr=0.02), resume=True)
    assert not (tmp_path / "b" / "train.lock").exists()


def test_a_live_lock_refuses_and_a_dead_one_is_taken_over(data, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    train(tiny_config(data, out))
    assert not (out / "train.lock").exists()  # released at the end
    host = socket.gethostname()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / "train.lock").write_text(json.dumps({"pid": holder.pid, "host": host}))
        status, err = run_cli(capsys, "--out", out, "--resume")
        assert status == 2
        assert f"process {holder.pid} on {host}" in error_line(err) and "train.lock" in err
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale and taken over, with a warning.
    with pytest.warns(UserWarning, match=f"process {holder.pid} on {host} is no longer running"):
        assert train(tiny_config(data, out), resume=True).steps == 1
    assert not (out / "train.lock").exists()
    # A lock held by another host cannot be checked from here: refused.
    (out / "train.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(RunLockedError, match="process 1 on elsewhere.example"):
        train(tiny_config(data, out), resume=True)


def test_two_locks_on_one_folder_exclude_each_other(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"process {os.getpid()} on {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: free again
        pass


def test_a_killed_holders_forked_child_does_not_keep_its_lock(tmp_path):
    """A data-loader worker (a forked child) outlives its killed trainer for a while; the
    lock must not go on with it, or a resume started at once is refused."""
    holder = (
        "import os, signal, sys, time\n"
        "from lightnets.train.checkpoint import RunLock\n"
        f"lock = RunLock({str(tmp_path)!r}).acquire()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    quiet = os.open(os.devnull, os.O_WRONLY)\n"
        "    os.dup2(quiet, 1), os.dup2(quiet, 2)\n"
        "    time.sleep(120)\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", holder], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    orphan = int(killed.stdout)
    try:
        os.kill(orphan, 0)  # the forked child still runs
        with pytest.warns(UserWarning, match="is no longer running; taking over its lock"):
            RunLock(tmp_path).acquire().release()
    finally:
        os.kill(orphan, signal.SIGKILL)


# ------------------------------------------------------- 2. refused starts write nothing
def test_a_refused_start_writes_nothing_and_the_corrected_command_runs(data, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    empty = tmp_path / "empty"
    (empty / "train" / "cls").mkdir(parents=True)
    refused = [
        (["--data", data, "--lr", "-1"], "--lr must be a number > 0"),
        ([], "--data"),
        (["--data", tmp_path / "missing"], "missing: no such file or folder"),
        (["--data", empty], "hold no images"),
        (["--data", data, "--model", "mobilenet_v9"], "unknown model 'mobilenet_v9'"),
        (["--data", data, "--resolution", "7"], "--resolution 7 does not fit mobilenet_v2"),
        (["--data", data, "--num-classes", "5"], "--num-classes 5 does not match the 2 classes"),
        (["--data", data, "--width", "-1"], "width must be in (0, 2], got -1.0"),
        (["--data", data, "--batch-size", "64"], "do not fill one batch of 64"),
        (["--data", data, "--teacher", tmp_path / "no-run"], "no-run"),
    ]
    for extra, message in refused:
        status, err = run_cli(capsys, *TINY, *extra, "--out", out)
        assert status == 2 and message in error_line(err), (extra, err)
        assert not out.exists(), extra
    status, err = run_cli(capsys, *TINY, "--data", data, "--out", out)
    assert status == 0, err


def test_a_folder_of_unreadable_images_is_refused_naming_it(data, tmp_path, capsys):
    broken = tmp_path / "broken"
    for folder in (data / "train").iterdir():
        (broken / folder.name).mkdir(parents=True)
        for i in range(3):
            (broken / folder.name / f"{i}.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG at all")
    status, err = run_cli(capsys, *TINY, "--data", broken, "--out", tmp_path / "run")
    line = error_line(err)
    assert status == 2 and f"none of the 4 training images in {broken} can be read" in line
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------- 3. non-finite runs
def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    data, tmp_path, capsys, one_thread
):
    out = tmp_path / "run"
    status, err = run_cli(
        capsys,
        *TINY,
        "--data",
        data,
        "--out",
        out,
        "--lr",
        "1e12",
        "--warmup-epochs",
        "0",
        "--checkpoint-every",
        "1",
        "--epochs",
        "3",
    )
    line = error_line(err)
    # The loss or gradient of step N, or the weights an update left after step N.
    found = re.search(
        r"(loss|gradient norm) is not finite \(\w+\) at step (\d+)|weights are not finite after step (\d+)",
        line,
    )
    assert status == 2 and found, line
    failed_at = int(found.group(2) or found.group(3))
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert state["progress"]["step"] == failed_at - 1  # the last good state
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (out / "model.safetensors").exists() and not (out / "train.lock").exists()
    records = strict_json_lines(out / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) in (failed_at - 1, failed_at)


def test_logs_write_null_for_non_finite_numbers_one_whole_line_at_a_time(tmp_path):
    log = MetricsLog(tmp_path)
    log.write({"kind": "step", "step": 1, "loss": float("nan"), "lr": float("inf")})
    log.write({"kind": "epoch", "step": 1, "train_loss": float("nan"), "val_top1": 50.0})
    log.write({"kind": "epoch", "step": 2, "train_loss": 1.5, "val_top1": 60.0})
    records = strict_json_lines(tmp_path / "metrics.jsonl")
    assert records[0] == {"kind": "step", "step": 1, "loss": None, "lr": None}
    assert (tmp_path / "metrics.csv").read_text() == "step,train_loss,val_top1\n1,,50.0\n2,1.5,60.0\n"
    log.truncate(2)
    assert len(strict_json_lines(tmp_path / "metrics.jsonl")) == 2
    assert (tmp_path / "metrics.csv").read_text() == "step,train_loss,val_top1\n1,,50.0\n"


def test_run_files_are_written_whole_with_the_usual_permissions(data, tmp_path, one_thread):
    old = os.umask(0o022)
    try:
        train(tiny_config(data, tmp_path / "run", checkpoint_every=1))
    finally:
        os.umask(old)
    # model_last.* are written too when the EMA scores higher and becomes model.safetensors.
    optional = {"model_last.json", "model_last.safetensors"}
    names = sorted(p.name for p in (tmp_path / "run").iterdir() if p.name not in optional)
    assert names == sorted(
        ["checkpoint.pt", "config.json", "curves.png", "metrics.csv", "metrics.jsonl", "model.json",
         "model.safetensors", "model_ema.json", "model_ema.safetensors", "summary.json"]
    )  # fmt: skip
    for path in (tmp_path / "run").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


# ------------------------------------------------------------------ 5. options and disks
@pytest.mark.parametrize(
    "option, value, accepted",
    [
        ("--threads", "-3", ">= 1"),
        ("--label-smoothing", "2", "in [0, 1)"),
        ("--checkpoint-every", "-1", ">= 0"),
        ("--epochs", "0", ">= 1"),
        ("--workers", "-1", ">= 0"),
        ("--momentum", "1.5", "in [0, 1)"),
        ("--weight-decay", "-0.1", ">= 0"),
        ("--hflip", "1.5", "in [0, 1]"),
        ("--ema-decay", "nan", "in [0, 1)"),
        ("--warmup-epochs", "inf", ">= 0"),
        ("--seed", "-1", "in [0,"),
        ("--limit-per-class", "0", ">= 1"),
        ("--lr-decay", "0", "in (0, 1]"),
    ],
)
def test_numeric_options_out_of_range_are_refused_naming_value_and_range(
    option, value, accepted, data, tmp_path, capsys
):
    status, err = run_cli(capsys, *TINY, "--data", data, "--out", tmp_path / "run", option, value)
    line = error_line(err)
    assert status == 2 and option in line and accepted in line and value in line, line
    assert not (tmp_path / "run").exists()


def test_a_full_disk_during_a_checkpoint_keeps_the_old_one(
    tiny_imagenette, tmp_path, monkeypatch, one_thread
):
    data = tiny_imagenette(classes=2, train=4, val=1)
    out = tmp_path / "run"
    real_save = torch.save
    calls = []

    def fill_the_disk(obj, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, handle, *args, **kwargs)
        handle.write(b"a first part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", fill_the_disk)
    with pytest.raises(ValueError) as caught:
        train(tiny_config(data, out, checkpoint_every=1, limit_per_class=4))
    message = str(caught.value)
    assert "\n" not in message
    assert f"no space left on device writing {out / 'checkpoint.pt'}" in message
    assert "the previous checkpoint is kept" in message
    monkeypatch.undo()
    assert ckpt.load_checkpoint(out / "checkpoint.pt")["progress"]["step"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial file
    assert not (out / "train.lock").exists()
    assert train(tiny_config(data, out, checkpoint_every=1, limit_per_class=4), resume=True).steps == 2


@pytest.mark.parametrize(
    "code, cause", [(errno.EROFS, "read-only file system"), (errno.EACCES, "ermission denied")]
)
def test_an_unwritable_out_is_a_one_line_error(code, cause, data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_mkdir, real_open = os.mkdir, os.open

    def refuse_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(out)):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    def refuse_open(path, *args, **kwargs):
        if str(path).startswith(str(out)):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refuse_mkdir)
    status, err = run_cli(capsys, *TINY, "--data", data, "--out", out)
    line = error_line(err)
    assert status == 2 and str(out) in line and cause in line.lower()
    # The folder exists but cannot be written in.
    monkeypatch.undo()
    out.mkdir()
    monkeypatch.setattr(os, "open", refuse_open)
    status, err = run_cli(capsys, *TINY, "--data", data, "--out", out)
    line = error_line(err)
    assert status == 2 and str(out) in line and cause in line.lower()
    assert not list(out.iterdir())


# ----------------------------------------------------------------- 4. the teacher cache
def test_damaged_teacher_cache_entries_are_recomputed_with_a_warning(tmp_path):
    key = "c" * 64
    cache = TeacherCache(tmp_path, num_images=6, num_classes=3, key=key)
    logits = torch.randn(6, 3)
    cache.store(0, list(range(6)), logits)
    cache.store(0, [5], torch.full((1, 3), float("nan")))  # never cached as NaN
    cache.flush()
    folder = tmp_path / key[:16]
    table = np.memmap(folder / "view00000.logits", np.float32, "r+", shape=(6, 3))
    table[1] = 0.0  # an entry read back as zeros (its data never reached the disk)
    table.flush()
    del table

    again = TeacherCache(tmp_path, num_images=6, num_classes=3, key=key)
    assert torch.equal(again.lookup(0, [0, 2]), logits[[0, 2]])
    with pytest.warns(TeacherCacheWarning, match="1 damaged teacher-logit entries"):
        assert again.lookup(0, [0, 1]) is None
    assert again.lookup(0, [1]) is None  # marked empty: an ordinary miss now
    again.store(0, [1], logits[[1]])
    assert torch.equal(again.lookup(0, [0, 1]), logits[[0, 1]])

    # An entry full of NaN with a matching checksum (written by a broken teacher).
    nan_row = np.full((1, 3), np.nan, dtype=np.float32)
    table = np.memmap(folder / "view00000.logits", np.float32, "r+", shape=(6, 3))
    sums = np.memmap(folder / "view00000.sums", np.uint64, "r+", shape=(6,))
    table[2] = nan_row[0]
    sums[2] = TeacherCache._checksums(nan_row)[0]
    table.flush()
    sums.flush()
    del table, sums
    third = TeacherCache(tmp_path, num_images=6, num_classes=3, key=key)
    with pytest.warns(TeacherCacheWarning, match="non-finite"):
        assert third.lookup(0, [2, 3]) is None

    # A file cut short: resized, and the lost rows are computed again.
    with open(folder / "view00000.logits", "r+b") as handle:
        handle.truncate(4 * 3 * 3)
    with pytest.warns(TeacherCacheWarning, match="has 36 bytes instead of 72"):
        fourth = TeacherCache(tmp_path, num_images=6, num_classes=3, key=key)
        assert torch.equal(fourth.lookup(0, [0, 1]), logits[[0, 1]])
    with pytest.warns(TeacherCacheWarning, match="damaged"):
        assert fourth.lookup(0, [3, 4]) is None


# ------------------------------------------------------------------------ 6. distillation
def test_a_teacher_trained_on_other_classes_is_refused(data, tmp_path, capsys, one_thread):
    train(tiny_config(data, tmp_path / "teacher"))
    other = tmp_path / "other"
    for split in ("train", "val"):
        for i, folder in enumerate(sorted((data / split).iterdir())):
            shutil.copytree(folder, other / split / f"class_{i}")
    out = tmp_path / "student"
    status, err = run_cli(capsys, *TINY, "--data", other, "--teacher", tmp_path / "teacher", "--out", out)
    line = error_line(err)
    assert status == 2 and "trained on other classes than the student's data" in line
    assert "class_0" in line and not out.exists()
    # The same classes are accepted, from the run folder or its checkpoint.
    for teacher in (tmp_path / "teacher", tmp_path / "teacher" / "checkpoint.pt"):
        result = train(tiny_config(data, tmp_path / f"s_{teacher.name}", teacher=str(teacher)))
        assert result.steps == 1


def test_moved_data_resumes_only_if_it_holds_the_same_images(tiny_imagenette, tmp_path, capsys, one_thread):
    data = tiny_imagenette(classes=2, train=2, val=1)
    out = tmp_path / "run"
    train(tiny_config(data, out))
    moved = tmp_path / "moved"
    data.rename(moved)
    status, err = run_cli(capsys, "--out", out, "--resume", "--epochs", "2")
    assert status == 2 and f"{data}: no such file or folder (if the run's data moved" in error_line(err)
    status, err = run_cli(capsys, "--out", out, "--resume", "--epochs", "2", "--data", moved)
    assert status == 0, err
    resumed = [r for r in strict_json_lines(out / "metrics.jsonl") if r["kind"] == "resume"]
    assert resumed[0]["changed"]["data"] == [str(data), str(moved)]
    other = tiny_imagenette(classes=3, train=2, val=1)
    status, err = run_cli(capsys, "--out", out, "--resume", "--epochs", "3", "--data", other)
    assert status == 2 and "belongs to another run: data=" in error_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_this_machine_lacks_is_refused(data, tmp_path, capsys):
    status, err = run_cli(capsys, *TINY, "--data", data, "--out", tmp_path / "run", "--device", "cuda:0")
    assert status == 2 and "--device cuda:0: no CUDA device" in error_line(err)
    assert not (tmp_path / "run").exists()


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_a_new_start(
    data, tmp_path, monkeypatch, one_thread
):
    out = tmp_path / "run"
    cross_entropy = torch.nn.functional.cross_entropy
    calls = []

    def nan_from_the_second_step(*args, **kwargs):
        calls.append(1)
        loss = cross_entropy(*args, **kwargs)
        return loss if len(calls) == 1 else loss * float("nan")

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "cross_entropy", nan_from_the_second_step)
        with pytest.raises(ValueError, match=r"loss is not finite \(nan\) at step 2 .*no checkpoint"):
            train(tiny_config(data, out, batch_size=2))
    assert (out / "config.json").is_file() and not (out / "checkpoint.pt").exists()
    assert train(tiny_config(data, out, lr=0.01)).steps == 1
    assert json.loads((out / "config.json").read_text())["lr"] == 0.01
    with pytest.raises(ValueError, match="already holds a training run"):
        train(tiny_config(data, out, lr=0.01))


def test_a_run_started_meanwhile_in_the_same_folder_is_not_overwritten(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    acquire = RunLock.acquire

    def another_run_gets_there_first(self):
        ckpt.save_checkpoint({"step": 7}, out / "checkpoint.pt")
        return acquire(self)

    monkeypatch.setattr(RunLock, "acquire", another_run_gets_there_first)
    with pytest.raises(ValueError, match="already holds a training run"):
        train(tiny_config(data, out))
    assert not (out / "config.json").exists() and not (out / "train.lock").exists()


def test_config_json_stores_paths_inside_the_run_relative_and_others_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "teacher.safetensors").write_bytes(b"")
    config = TrainConfig(
        model="mobilenet_v2",
        data="data",
        out="runs/a",
        teacher="teacher.safetensors",
        teacher_cache="runs/a/cache",
        teacher_weights=None,
        weights="mobilenet_v2_100_224.tflite_uint8",  # a tag, not a path
    )
    (tmp_path / "runs/a").mkdir(parents=True)
    config.save("runs/a")
    stored = json.loads((tmp_path / "runs/a/config.json").read_text())
    assert "out" not in stored and stored["teacher_cache"] == "cache"
    assert stored["data"] == str(tmp_path / "data")
    assert stored["teacher"] == str(tmp_path / "teacher.safetensors")
    assert stored["weights"] == "mobilenet_v2_100_224.tflite_uint8"
    (tmp_path / "runs/a").rename(tmp_path / "moved")
    loaded = TrainConfig.load(tmp_path / "moved")
    assert loaded.out == str(tmp_path / "moved") and loaded.teacher_cache == str(tmp_path / "moved/cache")
    assert loaded.data == str(tmp_path / "data") and loaded.weights == "mobilenet_v2_100_224.tflite_uint8"
    # A configuration written before runs were folder-relative: its paths were the caller's.
    legacy = {**stored, "out": "runs/a", "data": "data", "teacher_cache": "runs/a/cache"}
    (tmp_path / "moved/config.json").write_text(json.dumps(legacy))
    loaded = TrainConfig.load(tmp_path / "moved")
    assert loaded.out == str(tmp_path / "moved") and loaded.data == str(tmp_path / "data")
    (tmp_path / "moved/config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not a readable run configuration"):
        TrainConfig.load(tmp_path / "moved")
