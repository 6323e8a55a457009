"""Checkpoints that lose nothing, written so that a crash cannot damage them.

A checkpoint holds everything the next step depends on: model, optimiser, schedule,
EMA, gradient scaler, the random states of Python, NumPy and PyTorch, and the data
position (epoch and batch within it; the sampler needs nothing else). It is written to
a temporary file in the same folder, flushed to disk, and renamed over the previous
one: ``os.replace`` is atomic, so at any moment the name points at a whole checkpoint,
the old or the new one, even if the process is killed mid-write (SIGKILL included).

A run folder is used by one training process at a time: :class:`RunLock` holds
``train.lock`` (the holder's PID and host) while a run is going.

Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers are
unpickled, never code; the random states are therefore stored as plain values.
"""

from __future__ import annotations

import json
import os
import random
import socket
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import OutputError, atomic_write

try:  # POSIX; elsewhere the lock relies on the PID alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT = "lightnets-train-checkpoint"
VERSION = 1
LATEST = "checkpoint.pt"
LOCK = "train.lock"


def rng_state() -> dict[str, Any]:
    """The random states of Python, NumPy and PyTorch (CPU and CUDA), as plain values."""
    version, internal, gauss = random.getstate()
    legacy = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "bit_generator": legacy["bit_generator"],
            "key": torch.from_numpy(legacy["state"]["key"].astype(np.int64)),
            "pos": int(legacy["state"]["pos"]),
            "has_gauss": int(legacy["has_gauss"]),
            "gauss": float(legacy["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename, fsync folder).

    A file-system failure (full disk, read-only, no permission) raises
    :class:`~lightnets.files.OutputError` (a ``ValueError``) naming the file and saying
    that the previous checkpoint is kept."""
    path = Path(path)
    try:
        with atomic_write(path, "wb") as handle:
            torch.save({"format": FORMAT, "version": VERSION, **state}, handle)
    except OutputError as error:
        kept = "the previous checkpoint is kept" if path.is_file() else "no checkpoint was written"
        raise OutputError(f"{error}; {kept}", error.path, error.errno) from error
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; ``ValueError`` if it is not one."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such checkpoint") from None
    except Exception as error:  # a truncated or foreign file: say which and why
        raise ValueError(f"{path} is not a readable checkpoint: {error}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a lightnets training checkpoint")
    if state.get("version") != VERSION:
        raise ValueError(
            f"{path} has checkpoint version {state.get('version')}; this lightnets reads {VERSION}"
        )
    return state


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete temporary files a killed run left behind (they were never renamed into place).

    Only with the folder's :class:`RunLock` held: no other run can be writing them."""
    folder = Path(folder)
    for pattern in (".*.tmp", ".*.part", ".*.part.*"):
        for leftover in folder.glob(pattern):
            leftover.unlink(missing_ok=True)


class RunLockedError(ValueError):
    """Another process is using the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    return True


def _close_in_forked_children(lock: RunLock) -> None:
    """Close ``lock``'s descriptor in every child forked while it is held.

    A forked child (a data-loader worker) shares the open file and so the ``flock``:
    were the trainer killed, an orphaned worker would hold the lock until it noticed,
    and a resume started at once would be refused. The children never need the lock.
    """
    reference = weakref.ref(lock)

    def close() -> None:
        held = reference()
        if held is not None and held.fd is not None:
            os.close(held.fd)  # the child's copy only: the parent's flock stays
            held.fd = None

    os.register_at_fork(after_in_child=close)


class RunLock:
    """``folder/train.lock``: held by one training process, naming its PID and host.

    The lock is an ``flock`` on the file (released by the kernel when the holder dies)
    and the file's content (``{"pid": ..., "host": ...}``). A lock whose holder is alive
    (the ``flock`` is held, or the PID still runs on this host) refuses with a message
    naming it; one left by a dead process on this host is taken over with a warning; one
    from another host is refused (its process cannot be checked from here).
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK
        self.fd: int | None = None

    def _describe(self, holder: dict | None) -> str:
        if holder is None:
            return "another process"
        return f"process {holder.get('pid')} on {holder.get('host')}"

    def _refuse(self, holder: dict | None) -> RunLockedError:
        return RunLockedError(
            f"{self.path.parent} is in use by {self._describe(holder)} (lock file {self.path}); "
            "wait for that run to end, or delete the lock file if it is gone"
        )

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                raise OutputError(
                    f"{error.strerror or error} creating {self.path}", self.path, error.errno
                ) from None
            try:
                holder = self._read(fd)
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        raise self._refuse(holder) from None
                    # The holder may have removed the file between our open and flock.
                    try:
                        if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                            os.close(fd)
                            continue
                    except FileNotFoundError:
                        os.close(fd)
                        continue
                    holder = self._read(fd)
                if holder is not None:
                    pid, host = holder.get("pid"), holder.get("host")
                    if host != me["host"]:
                        raise self._refuse(holder)
                    if isinstance(pid, int) and _alive(pid):
                        raise self._refuse(holder)
                    warnings.warn(
                        f"{self.path}: process {pid} on {host} is no longer running; taking over its lock",
                        stacklevel=2,
                    )
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
                os.fsync(fd)
            except OSError as error:
                os.close(fd)
                raise OutputError(
                    f"{error.strerror or error} writing {self.path}", self.path, error.errno
                ) from None
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
            _close_in_forked_children(self)
            return self
        raise self._refuse(None)

    @staticmethod
    def _read(fd: int) -> dict | None:
        # Empty or garbled: a holder killed while writing it (or writing it right now,
        # which the flock tells apart).
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return holder if isinstance(holder, dict) else None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
