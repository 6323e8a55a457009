"""Finding a weight set's files: a local copy, the cache, or a verified download.

Order of search for each file of a spec:

1. an explicit ``root`` folder (``--weights-root`` on the command line);
2. ``$LIGHTNETS_WEIGHTS``, a folder laid out like the spec paths (e.g. a mirror of the
   original releases);
3. the cache, ``$LIGHTNETS_CACHE`` or ``~/.cache/lightnets`` (a damaged entry is fetched
   again);
4. the file's public URL, downloaded into the cache.

Every file is checked against its sha256 before use, wherever it came from; a download
is written to a temporary file and renamed only once it is complete and verified.
"""

from __future__ import annotations

import errno
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..files import atomic_write
from .spec import WeightFile, WeightSpec

ENV_ROOT = "LIGHTNETS_WEIGHTS"
ENV_CACHE = "LIGHTNETS_CACHE"
# Errors of the local disk while downloading: reported as such (OutputError), not as a
# network problem.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class WeightsError(ValueError):
    """A weight file is missing, corrupt, untrusted or does not fit the model."""


def cache_folder(name: str) -> Path:
    """lightnets' cache folder for one kind of file (``"weights"``, ``"onnx"`` ...):
    ``$LIGHTNETS_CACHE/<name>``, by default ``~/.cache/lightnets/<name>``. Not created."""
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"a cache folder is named by one plain name, not {name!r}")
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "lightnets") / name


def cache_dir() -> Path:
    """Where downloaded weight files are kept: ``cache_folder("weights")``."""
    return cache_folder("weights")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, file: WeightFile) -> None:
    """Raise :class:`WeightsError` unless ``path`` has the file's size and sha256."""
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        raise WeightsError(
            f"{path} has {size:,} bytes where {file.size:,} were expected: truncated or a different file"
        )
    actual = sha256_of(path)
    if actual != file.sha256:
        raise WeightsError(f"{path} fails its checksum: sha256 {actual}, expected {file.sha256}")


def resolve(spec: WeightSpec, root: str | Path | None = None, download: bool = True) -> list[Path]:
    """Local, verified paths of every file of ``spec`` (downloading what is missing)."""
    return [resolve_file(file, root, download) for file in spec.files]


def resolve_file(file: WeightFile, root: str | Path | None = None, download: bool = True) -> Path:
    roots = [Path(r) for r in (root, os.environ.get(ENV_ROOT)) if r]
    for folder in roots:
        candidate = folder / file.path
        if candidate.is_file():
            verify(candidate, file)  # the user's copy: report a bad one, never replace it
            return candidate
    cached = cache_dir() / file.path
    if cached.is_file():
        try:
            verify(cached, file)
            return cached
        except WeightsError:
            if not download:
                raise
            cached.unlink()  # a damaged cache entry is fetched again
    if not download:
        searched = ", ".join(str(r) for r in [*roots, cache_dir()])
        raise WeightsError(f"{file.path} not found (searched {searched}) and downloading is off")
    return fetch(file, cache_dir() / file.path)


def fetch(file: WeightFile, target: Path) -> Path:
    """Download ``file.url`` to ``target`` atomically, verifying size and sha256.

    The bytes go to a temporary file beside ``target`` that replaces it only once it is
    complete and verified; a failed or damaged download leaves nothing behind.
    """
    digest = hashlib.sha256()
    size = 0
    with atomic_write(target) as out:
        try:
            with urllib.request.urlopen(file.url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0) or file.size
                with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, leave=False) as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        out.write(block)
                        digest.update(block)
                        size += len(block)
                        bar.update(len(block))
        except OSError as error:
            if isinstance(error, urllib.error.URLError) or error.errno not in _DISK_ERRNOS:
                raise WeightsError(
                    f"could not download {file.url}: {error}. Offline? Put the file at "
                    f"${ENV_ROOT}/{file.path} or pass a weights root."
                ) from error
            raise
        if file.size is not None and size != file.size:
            raise WeightsError(
                f"download of {file.url} has {size:,} bytes where {file.size:,} were expected: truncated"
            )
        if digest.hexdigest() != file.sha256:
            raise WeightsError(
                f"download of {file.url} fails its checksum: sha256 {digest.hexdigest()}, expected {file.sha256}"
            )
    return target
