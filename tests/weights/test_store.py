"""Finding weight files: local roots, the cache, and verified downloads (from a local server)."""

import functools
import hashlib
import http.server
import threading

import pytest

from lightnets.weights import WeightFile, WeightsError
from lightnets.weights.spec import WEIGHTS
from lightnets.weights.store import cache_dir, resolve, resolve_file


@pytest.fixture
def served(tmp_path):
    """An HTTP server on loopback serving tmp_path/www; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def spec_file(data: bytes, url: str, path: str = "set/model.bin") -> WeightFile:
    return WeightFile(path, url, hashlib.sha256(data).hexdigest(), len(data))


def test_download_goes_to_the_cache_verified_and_atomically(served):
    www, base = served
    data = bytes(range(256)) * 100
    (www / "model.bin").write_bytes(data)
    file = spec_file(data, f"{base}/model.bin")
    path = resolve_file(file)
    assert path == cache_dir() / "set/model.bin" and path.read_bytes() == data
    assert not list(path.parent.glob(".*part"))  # no partial file left behind
    (www / "model.bin").unlink()
    assert resolve_file(file) == path  # the cached copy is used, and verified again


def test_a_corrupt_download_is_refused_and_not_kept(served):
    www, base = served
    data = b"genuine weights" * 50
    (www / "model.bin").write_bytes(b"tampered weights" * 50)
    file = WeightFile("set/model.bin", f"{base}/model.bin", hashlib.sha256(data).hexdigest(), None)
    with pytest.raises(WeightsError, match="fails its checksum"):
        resolve_file(file)
    assert not (cache_dir() / "set/model.bin").exists()


def test_no_network_says_where_to_put_the_file(tmp_path):
    file = spec_file(b"x", "http://127.0.0.1:9/none.bin")  # nothing listens on port 9
    with pytest.raises(WeightsError, match=r"could not download .* \$LIGHTNETS_WEIGHTS/set/model.bin"):
        resolve_file(file)
    with pytest.raises(WeightsError, match="downloading is off"):
        resolve_file(file, download=False)


def test_local_copies_are_checked_too(tmp_path):
    data = b"weights" * 10
    file = spec_file(data, "http://127.0.0.1:9/x")
    (tmp_path / "set").mkdir()
    (tmp_path / "set/model.bin").write_bytes(data[:-5])
    with pytest.raises(WeightsError, match="truncated or a different file"):
        resolve_file(file, root=tmp_path)
    (tmp_path / "set/model.bin").write_bytes(data)
    assert resolve_file(file, root=tmp_path) == tmp_path / "set/model.bin"


@pytest.mark.parametrize("tag", sorted(WEIGHTS))
def test_every_spec_matches_the_shared_release_files(tag, weights_root):
    """Checksums and sizes in the specs are those of the original files."""
    for path in resolve(WEIGHTS[tag], root=weights_root, download=False):
        assert path.is_file()
