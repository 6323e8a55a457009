"""Writing output files so that a reader never sees half of one.

Every file lightnets writes whole (weights, ONNX models, reports, plots, run records)
goes through :func:`atomic_write` or :func:`atomic_path`: the bytes go to a temporary
file in the same folder, are flushed to disk, and only then replace the target with
``os.replace``. A full disk, a read-only mount or a crash in the middle therefore leaves
the previous file as it was and no partial output behind. Logs that grow a line at a
time use :func:`append_line` instead.

Failures of the file system (no space, read-only, no permission, ...) are raised as
:class:`OutputError`, a ``ValueError`` whose message names the file and the cause, so a
command can print it instead of a traceback.
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "OutputError",
    "append_line",
    "atomic_path",
    "atomic_write",
    "finite_json",
    "write_bytes",
    "write_figure",
    "write_json",
    "write_text",
]

# OSErrors that mean "this output cannot be written here"; raised inside the body of
# atomic_write they become OutputError, other OSErrors of the body (e.g. a missing input
# file read while writing) pass through unchanged.
_OUTPUT_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
    errno.ENOTDIR: "a parent of the path is not a folder",
    errno.EISDIR: "the path is a folder",
    errno.ENAMETOOLONG: "file name too long",
}


class OutputError(ValueError):
    """An output file could not be written; the message names the file and the cause."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, errno_: int | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.errno = errno_


def _output_error(error: OSError, path: Path, doing: str = "writing") -> OutputError:
    cause = _OUTPUT_ERRNOS.get(error.errno or 0) or error.strerror or str(error)
    result = OutputError(f"{cause} {doing} {path}", path, error.errno)
    result.__cause__ = error
    return result


def _is_output_error(error: OSError) -> bool:
    return error.errno in _OUTPUT_ERRNOS


def _temporary_name(path: Path) -> Path:
    # Same folder (os.replace must not cross file systems), hidden, and ending in the
    # target's suffix so libraries that pick a format from the name (savefig) still can.
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.part{path.suffix}")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every platform or file system allows it."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _output_error(error, path, "creating the folder for") from error


def _create_temporary(path: Path) -> tuple[int, Path]:
    # os.open with 0o666 lets the umask decide the final mode (0644 under umask 022), as
    # for any file a program creates; tempfile.mkstemp would leave 0600.
    for _ in range(100):
        temporary = _temporary_name(path)
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        except OSError as error:
            raise _output_error(error, path) from error
        return fd, temporary
    raise OutputError(f"could not create a temporary file beside {path}", path)


def _remove_quietly(temporary: Path) -> None:
    try:
        temporary.unlink()
    except OSError:
        pass


def _commit(temporary: Path, path: Path) -> None:
    try:
        os.replace(temporary, path)
    except OSError as error:
        raise _output_error(error, path) from error
    _fsync_folder(path.parent)


@contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` only when the block ends without error.

    ``mode`` is ``"wb"`` or ``"w"`` (text; ``encoding`` defaults to UTF-8). The temporary
    file lives in the target's folder (created if missing), is flushed and fsynced, then
    renamed over ``path``. On any exception the temporary file is removed and an existing
    ``path`` is left untouched. File-system failures raise :class:`OutputError`.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    _make_parent(path)
    fd, temporary = _create_temporary(path)
    try:
        handle: IO[Any]
        try:
            if "b" in mode:
                handle = os.fdopen(fd, "wb")
            else:
                handle = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
        except BaseException:
            os.close(fd)
            raise
        with handle:
            try:
                yield handle
            except OSError as error:
                if _is_output_error(error):
                    raise _output_error(error, path) from error
                raise
            try:
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as error:
                raise _output_error(error, path) from error
        # closing flushes too: a failure there (ENOSPC at close) lands in the except below
        _commit(temporary, path)
    except OSError as error:
        _remove_quietly(temporary)
        if _is_output_error(error):
            raise _output_error(error, path) from error
        raise
    except BaseException:
        _remove_quietly(temporary)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path for libraries that insist on writing to a file name themselves.

    ``with atomic_path(out) as tmp: onnx.save(proto, tmp)`` writes ``tmp`` (same folder,
    same suffix), fsyncs it and renames it over ``out`` when the block succeeds; on any
    exception, or if nothing was written, ``tmp`` is removed and ``out`` is untouched.
    """
    path = Path(path)
    _make_parent(path)
    fd, temporary = _create_temporary(path)
    os.close(fd)  # created here so the name is ours; the library truncates and rewrites it
    try:
        try:
            yield temporary
        except OSError as error:
            if _is_output_error(error):
                raise _output_error(error, path) from error
            raise
        if not temporary.is_file():
            raise OutputError(f"nothing was written to {path}", path)
        try:
            fd = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise _output_error(error, path) from error
        _commit(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_figure(fig: Any, path: str | os.PathLike, dpi: float | None = None) -> Path:
    """Save a matplotlib figure to ``path`` atomically (the format from its suffix, PNG
    without one) and close it, even when saving fails; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as temporary:
            fig.savefig(temporary, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (JSON ``null``).

    Strict JSON has no NaN; a reader such as ``JSON.parse`` or ``jq`` rejects Python's
    ``NaN`` token. NumPy scalars become plain numbers; tuples become lists.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def write_json(
    path: str | os.PathLike,
    value: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Any = None,
) -> Path:
    """Write ``value`` as strict JSON (NaN/inf written as ``null``) atomically, newline-ended."""
    text = json.dumps(
        finite_json(value), indent=indent, sort_keys=sort_keys, allow_nan=False, default=default
    )
    return write_text(path, text + "\n")


def append_line(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Append ``text`` as one line to the log ``path`` with a single write.

    The line goes out in one ``write`` on a file opened with ``O_APPEND``, so lines of
    concurrent writers do not interleave and a reader sees whole lines only (short of a
    full disk, which raises :class:`OutputError`). ``text`` must be one line; a trailing
    newline is optional. ``fsync=True`` also forces it to disk.
    """
    path = Path(path)
    line = text[:-1] if text.endswith("\n") else text
    if "\n" in line or "\r" in line:
        raise ValueError(f"append_line writes one line; the text for {path} holds a line break")
    data = (line + "\n").encode("utf-8")
    _make_parent(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as error:
        raise _output_error(error, path) from error
    try:
        written = os.write(fd, data)
        while written < len(data):  # rare (signals, pipes): finish the line
            written += os.write(fd, data[written:])
        if fsync:
            os.fsync(fd)
    except OSError as error:
        raise _output_error(error, path) from error
    finally:
        os.close(fd)
