"""lightnets.files: whole files appear complete or not at all; disk failures are named."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from lightnets import files
from lightnets.files import OutputError, append_line, atomic_path, atomic_write, write_bytes, write_json


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as handle:
        handle.write(b"new contents")
        assert target.read_bytes() == b"old"  # not visible until the block ends
    assert target.read_bytes() == b"new contents"
    assert _leftovers(tmp_path) == []


def test_atomic_write_mode_follows_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644


def test_failure_in_block_keeps_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old model")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old model"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "code, words",
    [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only"), (errno.EACCES, "permission")],
)
def test_disk_errors_in_block_become_output_error(tmp_path, code, words):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(OutputError) as caught:
        with atomic_write(target, "w") as handle:
            handle.write("partial")
            raise OSError(code, os.strerror(code))
    message = str(caught.value)
    assert words in message and str(target) in message
    assert isinstance(caught.value, ValueError)
    assert caught.value.errno == code
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_enospc_at_fsync_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OutputError, match=f"no space left on device writing {target}"):
        files.write_text(target, "new")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_erofs_at_create_is_output_error(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", read_only)
    with pytest.raises(OutputError, match="read-only file system writing"):
        write_bytes(tmp_path / "x.bin", b"1")


def test_failing_rename_keeps_old_and_cleans(tmp_path, monkeypatch):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")

    def no_rename(src, dst):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files.os, "replace", no_rename)
    with pytest.raises(OutputError, match="permission denied"):
        write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_other_oserrors_of_the_block_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "o.bin") as handle:
            handle.write((tmp_path / "missing-input").read_bytes())
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    files.write_text(target, "hello")
    assert target.read_text() == "hello"


def test_atomic_path_for_libraries_keeps_suffix(tmp_path):
    target = tmp_path / "plot.png"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".png"
        temporary.write_bytes(b"png")
    assert target.read_bytes() == b"png"
    assert _leftovers(tmp_path) == []


def test_atomic_path_failure_keeps_old(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match="no space left on device"):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"trunc")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_write_json_is_strict_and_writes_null_for_nan(tmp_path):
    np = pytest.importorskip("numpy")
    target = tmp_path / "r.json"
    write_json(target, {"loss": float("nan"), "acc": [1.0, float("inf"), np.float32(0.5)], "n": np.int64(3)})
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("\n")
    assert json.loads(text) == {"loss": None, "acc": [1.0, None, 0.5], "n": 3}


def test_append_line_whole_lines_from_threads(tmp_path):
    log = tmp_path / "log.jsonl"

    def writer(k):
        for i in range(200):
            append_line(log, json.dumps({"writer": k, "i": i, "pad": "x" * 100}))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = log.read_text().splitlines()
    assert len(lines) == 800
    assert all(json.loads(line)["pad"] == "x" * 100 for line in lines)


def test_append_line_rejects_several_lines_and_names_disk_errors(tmp_path, monkeypatch):
    log = tmp_path / "log.txt"
    append_line(log, "one\n")
    assert log.read_text() == "one\n"
    with pytest.raises(ValueError, match="one line"):
        append_line(log, "two\nthree")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(OutputError, match=f"no space left on device writing {log}"):
        append_line(log, "four")
