"""Checkpoints: random states restored exactly, and atomic writes that survive a crash."""

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lightnets.train import checkpoint as ckpt


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_random_states_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    draws()
    ckpt.save_checkpoint({"rng": ckpt.rng_state()}, tmp_path / "c.pt")
    expected = draws()
    draws()
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "c.pt")["rng"])
    assert draws() == expected


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint({"step": 1, "weights": torch.arange(10.0)}, path)
    real_save = torch.save

    def half_then_crash(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"step": 2, "weights": torch.zeros(10)}, path)
    monkeypatch.undo()
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.arange(10.0))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_sigkill_while_writing_leaves_the_previous_checkpoint(tmp_path):
    """The process dies (SIGKILL) half-way through writing the second checkpoint."""
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from lightnets.train import checkpoint as ckpt
        path = {str(tmp_path / "checkpoint.pt")!r}
        ckpt.save_checkpoint({{"step": 1, "weights": torch.ones(1000)}}, path)
        real_save = torch.save
        def die_half_way(obj, handle, *args, **kwargs):
            handle.write(b"PK\\x03\\x04 half a checkpoint")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = die_half_way
        ckpt.save_checkpoint({{"step": 2, "weights": torch.zeros(1000)}}, path)
        """
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()
    leftovers = [p for p in tmp_path.iterdir() if p.name != "checkpoint.pt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".checkpoint.pt.")
    state = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 1 and torch.equal(state["weights"], torch.ones(1000))
    ckpt.remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_damaged_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint({"step": 1}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(path)
    torch.save({"model": {}}, path)
    with pytest.raises(ValueError, match="not a lightnets training checkpoint"):
        ckpt.load_checkpoint(path)
    with pytest.raises(ValueError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    assert os.path.exists(path)
