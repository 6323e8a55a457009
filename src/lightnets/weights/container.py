"""The lightnets compressed-weights container (``.lnz``): read, write, load into a model.

The layout is written down in ``docs/compressed_format.md``. In short (little-endian)::

    b"LNZ\\x00"  magic            4 bytes
    uint16      version (1)
    uint16      flags (0)
    uint32      H: bytes of the compressed header
    H bytes     zlib-compressed UTF-8 JSON header: metadata and the tensor table
    payload     each tensor's sections, in table order, back to back

Every tensor is ``dense`` (float32 values), ``sparse`` (float32 values of the stored
entries, positions as gaps), ``shared`` (a float32 codebook whose entry 0 is 0.0, a
codebook index per stored entry, positions as gaps unless ``gap_bits`` is 0, meaning
every position is stored) or ``grid`` (a float32 scale per output channel and a signed
integer per value: quantisation-aware trained weights). Index and gap streams are
canonical Huffman codes (their code lengths stored as one byte per symbol) or fixed-width
codes.

Reading is as careful as for every other weights file: the sizes in the header are
checked against bounds and against the file before anything is allocated, the payload
has a sha256, streams must decode to exactly the declared counts and positions, and
nothing is unpickled. Decoding gives back the very float32 bits that were written.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..files import atomic_write
from . import huffman
from .sparse import from_gaps, to_gaps
from .store import WeightsError

__all__ = [
    "MAGIC",
    "SUFFIX",
    "ContainerError",
    "EncodedTensor",
    "decode_container",
    "encode_container",
    "encode_grid",
    "encode_tensor",
    "is_container",
    "read_container",
    "read_container_metadata",
    "state_for_model",
    "write_container",
]

MAGIC = b"LNZ\x00"
VERSION = 1
SUFFIX = ".lnz"
_PREFIX = struct.Struct("<4sHHI")

# Bounds on what a file may declare (it is untrusted input).
MAX_FILE_BYTES = 1 << 31
MAX_HEADER_BYTES = 16 << 20  # compressed
MAX_HEADER_JSON = 64 << 20  # decompressed
MAX_TENSORS = 100_000
MAX_TENSOR_ELEMENTS = 1 << 31
MAX_TOTAL_ELEMENTS = 1 << 31
MAX_DIMS = 8
MAX_BITS = 16
MAX_GAP_BITS = 16
ENCODINGS = ("dense", "sparse", "shared", "grid")


class ContainerError(WeightsError):
    """A file that is not a readable lightnets container; the message names it."""


@dataclass
class EncodedTensor:
    """One tensor's entry of the table and its payload sections."""

    entry: dict[str, Any]
    sections: list[bytes] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.sections)


# ---------------------------------------------------------------- encoding


def _fixed_lengths(bits: int) -> np.ndarray:
    return np.full(1 << bits, bits, dtype=np.int64)


def _symbol_stream(symbols: np.ndarray, alphabet_bits: int, use_huffman: bool) -> tuple[str, list[bytes]]:
    """(coding name, sections): Huffman lengths + stream, or the fixed-width stream."""
    if use_huffman and symbols.size:
        counts = np.bincount(symbols, minlength=1 << alphabet_bits)
        lengths = huffman.code_lengths(counts)
        return "huffman", [lengths.astype(np.uint8).tobytes(), huffman.encode(symbols, lengths)]
    return "fixed", [huffman.encode(symbols, _fixed_lengths(alphabet_bits)) if symbols.size else b""]


def _stream_bytes(symbols: np.ndarray, alphabet_bits: int, use_huffman: bool) -> int:
    if not symbols.size:
        return 0
    if use_huffman:
        counts = np.bincount(symbols, minlength=1 << alphabet_bits)
        lengths = huffman.code_lengths(counts)
        return (1 << alphabet_bits) + -(-int((counts * lengths).sum()) // 8)
    return -(-symbols.size * alphabet_bits // 8)


def _codes_of(flat: np.ndarray, codebook: np.ndarray, name: str) -> np.ndarray:
    """The codebook index of every value (exact float32 equality; zeros -> index 0)."""
    if codebook.size == 0 or codebook[0] != 0.0:
        raise ValueError(f"{name}: a codebook must start with 0.0 (the value of pruned weights)")
    values, inverse = np.unique(flat, return_inverse=True)
    order = np.argsort(codebook[1:], kind="stable") + 1
    sorted_book = codebook[order]
    at = np.searchsorted(sorted_book, values)
    at = np.minimum(at, sorted_book.size - 1) if sorted_book.size else at
    index = np.where(values == 0.0, 0, order[at] if sorted_book.size else 0)
    bad = (values != 0.0) & ((sorted_book.size == 0) | (codebook[index] != values))
    if bad.any():
        raise ValueError(
            f"{name}: {int(bad.sum())} distinct values are not in its codebook "
            f"(first: {float(values[bad][0])!r}); share the weights before encoding"
        )
    return index[inverse].astype(np.int64)


def encode_grid(
    name: str, array: np.ndarray, scales: np.ndarray, bits: int, use_huffman: bool = True
) -> EncodedTensor:
    """Encode weights that are ``integer * scale`` per output channel (axis 0), the integers
    in ``-(2**(bits-1))..2**(bits-1) - 1``: the scales, then one ``bits``-bit symbol
    (integer + ``2**(bits-1)``) per value. ``ValueError`` if a value is off its grid."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"{name}: bits must lie in 1..{MAX_BITS}, got {bits}")
    array = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    scales = np.asarray(scales, dtype=np.float32).reshape(-1)
    if (
        array.ndim < 1
        or scales.size != array.shape[0]
        or not (np.isfinite(scales).all() and (scales > 0).all())
    ):
        raise ValueError(f"{name}: needs one positive scale per output channel ({array.shape[0]})")
    rows = array.reshape(array.shape[0], -1)
    offset = 1 << (bits - 1)
    integers = np.rint(rows / scales[:, None])
    if (
        integers.min(initial=0) < -offset
        or integers.max(initial=0) >= offset
        or not np.array_equal(
            (integers.astype(np.float32) * scales[:, None]).astype(np.float32), np.where(rows == 0, 0, rows)
        )
    ):
        raise ValueError(f"{name}: its values are not {bits}-bit integers times their channel's scale")
    symbols = (integers.astype(np.int64) + offset).reshape(-1)
    coding, streams = _symbol_stream(symbols, bits, use_huffman)
    entry = {
        "name": name,
        "shape": [int(d) for d in array.shape],
        "nonzeros": int(np.count_nonzero(rows)),
        "encoding": "grid",
        "bits": bits,
        "stored": int(symbols.size),
        "index_code": coding,
    }
    return EncodedTensor(entry, [scales.astype("<f4").tobytes(), *streams])


def encode_tensor(
    name: str,
    array: np.ndarray,
    codebook: np.ndarray | None = None,
    bits: int | None = None,
    sparse: bool | None = None,
    use_huffman: bool = True,
) -> EncodedTensor:
    """Encode one tensor.

    Without ``codebook`` the values are float32: ``dense``, or ``sparse`` (stored values
    plus gaps) when ``sparse`` is true or, if ``None``, when that is smaller. With a
    ``codebook`` (float32, entry 0 = 0.0, at most ``2**bits`` entries) every value must
    be one of its entries; the layout (dense indices, or sparse with the best gap width
    from 1 to 8 bits) is the smallest. ``use_huffman`` Huffman-codes the index and gap
    streams; otherwise they are fixed-width, as in the authors' format.
    """
    array = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    # -0.0 decodes as +0.0: store +0.0 so that decoding is bit-exact.
    flat = np.where(array.reshape(-1) == 0.0, np.float32(0.0), array.reshape(-1)).astype(np.float32)
    shape = [int(d) for d in array.shape]
    size = flat.size
    nonzero = np.flatnonzero(flat)
    entry: dict[str, Any] = {"name": name, "shape": shape, "nonzeros": int(nonzero.size)}
    if codebook is None:
        dense_bytes = 4 * size
        best = None
        if sparse is not False:
            for gap_bits in range(1, 9):
                gaps, _ = to_gaps(nonzero, gap_bits)
                total = 4 * gaps.size + _stream_bytes(gaps, gap_bits, use_huffman)
                if best is None or total < best[0]:
                    best = (total, gap_bits)
        if best is None or (sparse is None and best[0] >= dense_bytes):
            entry["encoding"] = "dense"
            return EncodedTensor(entry, [flat.astype("<f4").tobytes()])
        gap_bits = best[1]
        gaps, filler = to_gaps(nonzero, gap_bits)
        positions = from_gaps(gaps, size)
        coding, streams = _symbol_stream(gaps, gap_bits, use_huffman)
        entry.update(encoding="sparse", stored=int(gaps.size), gap_bits=gap_bits, gap_code=coding)
        values = flat[positions].astype("<f4").tobytes()
        return EncodedTensor(entry, [values, *streams])

    codebook = np.asarray(codebook, dtype=np.float32).reshape(-1)
    if bits is None:
        bits = max(1, int(np.ceil(np.log2(max(codebook.size, 2)))))
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"{name}: bits must lie in 1..{MAX_BITS}, got {bits}")
    if codebook.size > 1 << bits:
        raise ValueError(
            f"{name}: a {bits}-bit codebook holds at most {1 << bits} entries, got {codebook.size}"
        )
    book = np.zeros(1 << bits, dtype=np.float32)
    book[: codebook.size] = codebook
    codes = _codes_of(flat, book[: codebook.size], name)
    # Candidates: every position stored (gap_bits 0), or sparse with 1..8-bit gaps.
    candidates = [(_stream_bytes(codes, bits, use_huffman), 0)]
    if sparse is not False:
        for gap_bits in range(1, 9):
            gaps, filler = to_gaps(nonzero, gap_bits)
            symbols = np.where(filler, 0, codes[from_gaps(gaps, size)])
            total = _stream_bytes(symbols, bits, use_huffman) + _stream_bytes(gaps, gap_bits, use_huffman)
            candidates.append((total, gap_bits))
    if sparse is True:
        candidates = candidates[1:]
    _, gap_bits = min(candidates)
    sections = [book.astype("<f4").tobytes()]
    entry.update(encoding="shared", bits=bits, gap_bits=gap_bits)
    if gap_bits == 0:
        entry["stored"] = size
        index_coding, index_streams = _symbol_stream(codes, bits, use_huffman)
        entry["index_code"] = index_coding
        sections += index_streams
    else:
        gaps, filler = to_gaps(nonzero, gap_bits)
        symbols = np.where(filler, 0, codes[from_gaps(gaps, size)])
        index_coding, index_streams = _symbol_stream(symbols, bits, use_huffman)
        gap_coding, gap_streams = _symbol_stream(gaps, gap_bits, use_huffman)
        entry.update(stored=int(gaps.size), index_code=index_coding, gap_code=gap_coding)
        sections += index_streams + gap_streams
    return EncodedTensor(entry, sections)


def encode_container(tensors: list[EncodedTensor], metadata: dict[str, Any]) -> bytes:
    """The bytes of a container holding these encoded tensors and ``metadata``."""
    names = [t.entry["name"] for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("a container cannot hold two tensors of the same name")
    payload = b"".join(s for t in tensors for s in t.sections)
    table = []
    for t in tensors:
        entry = dict(t.entry)
        entry["sections"] = [len(s) for s in t.sections]
        table.append(entry)
    header = {
        "format": "lightnets-compressed",
        "version": VERSION,
        "metadata": metadata,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "tensors": table,
    }
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    packed = zlib.compress(text, 9)
    return _PREFIX.pack(MAGIC, VERSION, 0, len(packed)) + packed + payload


def write_container(path: str | Path, tensors: list[EncodedTensor], metadata: dict[str, Any]) -> Path:
    """Write a container atomically (a failure leaves no partial file); returns the path."""
    data = encode_container(tensors, metadata)
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


# ---------------------------------------------------------------- decoding


def is_container(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts with the container's magic bytes."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == MAGIC
    except OSError:
        return False


def _header(data: bytes, source: str) -> tuple[dict[str, Any], int]:
    if len(data) < _PREFIX.size:
        raise ContainerError(f"{source} is not a lightnets container ({len(data)} bytes, too short)")
    magic, version, flags, header_bytes = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ContainerError(f"{source} is not a lightnets container (it does not start with {MAGIC!r})")
    if version != VERSION or flags != 0:
        raise ContainerError(f"{source}: container version {version} (flags {flags}) is not supported")
    if header_bytes > MAX_HEADER_BYTES or _PREFIX.size + header_bytes > len(data):
        raise ContainerError(f"{source}: its header claims {header_bytes:,} bytes: truncated or corrupt")
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data[_PREFIX.size : _PREFIX.size + header_bytes], MAX_HEADER_JSON)
    except zlib.error as error:
        raise ContainerError(f"{source}: its header does not decompress ({error})") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise ContainerError(f"{source}: its header is incomplete or above {MAX_HEADER_JSON:,} bytes")
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ContainerError(f"{source}: its header is not valid JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != "lightnets-compressed":
        raise ContainerError(f"{source}: its header does not describe a lightnets container")
    return header, _PREFIX.size + header_bytes


def _int(value: Any, low: int, high: int, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ContainerError(f"{source}: {what} must be a whole number in {low}..{high}, got {value!r}")
    return value


def _check_entry(entry: Any, source: str) -> tuple[str, tuple[int, ...], int]:
    if not isinstance(entry, dict):
        raise ContainerError(f"{source}: a tensor entry is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 1000:
        raise ContainerError(f"{source}: a tensor has no valid name")
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise ContainerError(f"{source}: {name}: shape must be a list of at most {MAX_DIMS} sizes")
    dims = tuple(_int(d, 0, MAX_TENSOR_ELEMENTS, f"{name} shape", source) for d in shape)
    size = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if size > MAX_TENSOR_ELEMENTS:
        raise ContainerError(f"{source}: {name} declares {size:,} elements, above {MAX_TENSOR_ELEMENTS:,}")
    if entry.get("encoding") not in ENCODINGS:
        raise ContainerError(f"{source}: {name}: unknown encoding {entry.get('encoding')!r}")
    return name, dims, size


def _decode_stream(
    sections: list[bytes], coding: Any, alphabet_bits: int, count: int, what: str, source: str
) -> np.ndarray:
    """Symbols of one stream; pops its sections (lengths table + stream, or stream)."""
    if coding == "huffman":
        if len(sections) < 2:
            raise ContainerError(f"{source}: {what}: missing sections")
        table, stream = sections.pop(0), sections.pop(0)
        if len(table) != 1 << alphabet_bits:
            raise ContainerError(
                f"{source}: {what}: the code table has {len(table)} entries, not {1 << alphabet_bits}"
            )
        lengths = np.frombuffer(table, dtype=np.uint8).astype(np.int64)
    elif coding == "fixed":
        if not sections:
            raise ContainerError(f"{source}: {what}: missing sections")
        stream = sections.pop(0)
        lengths = _fixed_lengths(alphabet_bits)
        if len(stream) != -(-count * alphabet_bits // 8):
            raise ContainerError(
                f"{source}: {what}: {len(stream)} bytes for {count:,} {alphabet_bits}-bit codes"
            )
    else:
        raise ContainerError(f"{source}: {what}: unknown coding {coding!r}")
    try:
        return huffman.decode(stream, lengths, count)
    except huffman.HuffmanError as error:
        raise ContainerError(f"{source}: {what}: {error}") from None


def _decode_tensor(entry: dict, sections: list[bytes], source: str) -> np.ndarray:
    name, shape, size = _check_entry(entry, source)
    encoding = entry["encoding"]
    sections = list(sections)
    if encoding == "dense":
        if len(sections) != 1 or len(sections[0]) != 4 * size:
            raise ContainerError(
                f"{source}: {name}: a dense tensor of {size:,} values needs {4 * size:,} bytes"
            )
        return np.frombuffer(sections[0], dtype="<f4").astype(np.float32).reshape(shape)
    stored = _int(entry.get("stored"), 0, size, f"{name} stored", source)
    nonzeros = _int(entry.get("nonzeros"), 0, size, f"{name} nonzeros", source)
    if encoding == "grid":
        values = _grid_values(entry, sections, name, shape, size, stored, source)
        gaps = np.zeros(stored, dtype=np.int64)  # every position, in order
    elif encoding == "sparse":
        gap_bits = _int(entry.get("gap_bits"), 1, MAX_GAP_BITS, f"{name} gap_bits", source)
        values_bytes = sections.pop(0) if sections else b""
        if len(values_bytes) != 4 * stored:
            raise ContainerError(
                f"{source}: {name}: {len(values_bytes)} bytes of values for {stored:,} entries"
            )
        values = np.frombuffer(values_bytes, dtype="<f4").astype(np.float32)
        gaps = _decode_stream(sections, entry.get("gap_code"), gap_bits, stored, f"{name} gaps", source)
    else:
        bits = _int(entry.get("bits"), 1, MAX_BITS, f"{name} bits", source)
        gap_bits = _int(entry.get("gap_bits"), 0, MAX_GAP_BITS, f"{name} gap_bits", source)
        book_bytes = sections.pop(0) if sections else b""
        if len(book_bytes) != 4 << bits:
            raise ContainerError(f"{source}: {name}: a {bits}-bit codebook needs {4 << bits} bytes")
        book = np.frombuffer(book_bytes, dtype="<f4").astype(np.float32)
        if book[0] != 0.0 or not np.isfinite(book).all():
            raise ContainerError(f"{source}: {name}: its codebook must start with 0.0 and be finite")
        if gap_bits == 0 and stored != size:
            raise ContainerError(f"{source}: {name}: without gaps every one of {size:,} positions is stored")
        codes = _decode_stream(sections, entry.get("index_code"), bits, stored, f"{name} indices", source)
        values = book[codes]
        gaps = (
            np.zeros(stored, dtype=np.int64)
            if gap_bits == 0
            else _decode_stream(sections, entry.get("gap_code"), gap_bits, stored, f"{name} gaps", source)
        )
    if sections:
        raise ContainerError(f"{source}: {name}: {len(sections)} sections left over")
    try:
        positions = from_gaps(gaps, size)
    except ValueError as error:
        raise ContainerError(f"{source}: {name}: {error}") from None
    flat = np.zeros(size, dtype=np.float32)
    flat[positions] = values
    if not np.isfinite(flat).all():
        raise ContainerError(f"{source}: {name} holds non-finite values")
    if int(np.count_nonzero(flat)) != nonzeros:
        raise ContainerError(
            f"{source}: {name} decodes to {np.count_nonzero(flat):,} non-zeros, not {nonzeros:,}"
        )
    return flat.reshape(shape)


def _grid_values(
    entry: dict, sections: list[bytes], name: str, shape: tuple[int, ...], size: int, stored: int, source: str
) -> np.ndarray:
    """The values of a ``grid`` tensor, flat: its integers times their channel's scale."""
    bits = _int(entry.get("bits"), 1, MAX_BITS, f"{name} bits", source)
    if not shape or stored != size:
        raise ContainerError(f"{source}: {name}: a grid tensor stores each of its {size:,} values")
    scale_bytes = sections.pop(0) if sections else b""
    if len(scale_bytes) != 4 * shape[0]:
        raise ContainerError(f"{source}: {name}: needs {shape[0]} float32 scales, one per output channel")
    scales = np.frombuffer(scale_bytes, dtype="<f4").astype(np.float32)
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise ContainerError(f"{source}: {name}: its scales must be finite and positive")
    symbols = _decode_stream(sections, entry.get("index_code"), bits, stored, f"{name} integers", source)
    integers = (symbols - (1 << (bits - 1))).astype(np.float32).reshape(shape[0], -1)
    return (integers * scales[:, None]).astype(np.float32).reshape(-1)  # 0 * scale is +0.0, as encoded


def decode_container(data: bytes, source: str = "the container") -> tuple[dict[str, np.ndarray], dict]:
    """(tensors by name as float32 arrays, the header) of a container's bytes."""
    if len(data) > MAX_FILE_BYTES:
        raise ContainerError(
            f"{source}: {len(data):,} bytes is above the {MAX_FILE_BYTES:,} a container may have"
        )
    header, start = _header(data, source)
    table = header.get("tensors")
    if not isinstance(table, list) or len(table) > MAX_TENSORS:
        raise ContainerError(f"{source}: its tensor table must be a list of at most {MAX_TENSORS:,} entries")
    payload = data[start:]
    if header.get("payload_bytes") != len(payload):
        raise ContainerError(
            f"{source}: the payload has {len(payload):,} bytes, the header says {header.get('payload_bytes')!r} "
            "(truncated or extended)"
        )
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise ContainerError(f"{source}: the payload fails its sha256 (damaged)")
    total = 0
    offsets = []
    position = 0
    for entry in table:
        _, _, size = _check_entry(entry, source)
        total += size
        if total > MAX_TOTAL_ELEMENTS:
            raise ContainerError(f"{source} declares more than {MAX_TOTAL_ELEMENTS:,} values in all")
        lengths = entry.get("sections")
        if not isinstance(lengths, list) or len(lengths) > 8:
            raise ContainerError(f"{source}: {entry['name']}: bad section list")
        parts = []
        for length in lengths:
            length = _int(length, 0, len(payload), f"{entry['name']} section size", source)
            parts.append((position, length))
            position += length
        offsets.append(parts)
    if position != len(payload):
        raise ContainerError(
            f"{source}: the sections add up to {position:,} bytes, the payload has {len(payload):,}"
        )
    tensors: dict[str, np.ndarray] = {}
    for entry, parts in zip(table, offsets, strict=True):
        if entry["name"] in tensors:
            raise ContainerError(f"{source}: {entry['name']} appears twice")
        sections = [payload[a : a + n] for a, n in parts]
        tensors[entry["name"]] = _decode_tensor(entry, sections, source)
    metadata = header.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ContainerError(f"{source}: its metadata must be an object")
    return tensors, header


def _checked_metadata(metadata: dict, source: str) -> dict:
    try:
        from ..weights.lightnets_format import parse_metadata
    except ImportError:  # an older weights package: keep the keys with the expected types
        kept = {
            k: v
            for k, v in metadata.items()
            if k in ("model", "model_kwargs", "num_classes", "transform", "categories", "converted_from")
        }
        if not isinstance(kept.get("model", ""), str) or not isinstance(kept.get("model_kwargs", {}), dict):
            raise ContainerError(f"{source}: bad lightnets metadata") from None
        return kept
    return parse_metadata(metadata, source)


def read_container(path: str | Path) -> tuple[dict[str, np.ndarray], dict, dict]:
    """(tensors, checked metadata, header) of a container file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ContainerError(
                f"{path}: {size:,} bytes is above the {MAX_FILE_BYTES:,} a container may have"
            )
        data = path.read_bytes()
    except OSError as error:
        raise ContainerError(f"{path}: cannot read it ({error.strerror or error})") from None
    tensors, header = decode_container(data, str(path))
    return tensors, _checked_metadata(header.get("metadata") or {}, str(path)), header


def read_container_metadata(path: str | Path) -> dict:
    """The checked metadata of a container (model, arguments, transform, categories)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(_PREFIX.size)
            if len(prefix) == _PREFIX.size:
                header_bytes = _PREFIX.unpack(prefix)[3]
                prefix += handle.read(min(header_bytes, MAX_HEADER_BYTES))
    except OSError as error:
        raise ContainerError(f"{path}: cannot read it ({error.strerror or error})") from None
    header, _ = _header(prefix, str(path))
    return _checked_metadata(header.get("metadata") or {}, str(path))


# ---------------------------------------------------------------- into a model

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """``conv name -> BatchNorm name`` for every BatchNorm that directly follows a layer
    in an ``nn.Sequential`` (what BatchNorm folding folds)."""
    pairs = {}
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (first_name, first), (name, second) in zip(children, children[1:], strict=False):
            if isinstance(second, _BATCHNORMS) and isinstance(
                first, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear
            ):
                prefix = f"{parent_name}." if parent_name else ""
                pairs[prefix + first_name] = prefix + name
    return pairs


def state_for_model(tensors: dict[str, np.ndarray], model: nn.Module, source: str) -> dict[str, Tensor]:
    """A state dict for ``model`` from a container's tensors.

    The container holds the BatchNorm-folded model: a convolution followed by a
    BatchNorm appears with the folded weight and a bias. Such a BatchNorm is set to the
    exact identity plus that bias (mean 0, variance 1, weight ``sqrt(1 + eps)``), as the
    TFLite importer does for BatchNorm that a release file folded.
    """
    own = model.state_dict()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors.items() if k in own}
    for conv, bn_name in _conv_bn_pairs(model).items():
        bias_key = f"{conv}.bias"
        if bias_key not in tensors or f"{bn_name}.running_mean" in tensors:
            continue
        bn = model.get_submodule(bn_name)
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)  # _conv_bn_pairs names BatchNorms
        channels = bn.num_features
        bias = torch.from_numpy(np.array(tensors[bias_key], dtype=np.float32))
        if tuple(bias.shape) != (channels,):
            raise ContainerError(
                f"{source}: {bias_key} has shape {tuple(bias.shape)}, {bn_name} has {channels} channels"
            )
        if bias_key in own:  # the layer has its own bias: it carries the folded one
            state[bias_key] = bias
            bias = torch.zeros(channels)
        state[f"{bn_name}.running_mean"] = torch.zeros(channels)
        state[f"{bn_name}.running_var"] = torch.ones(channels)
        state[f"{bn_name}.weight"] = torch.full((channels,), float(np.sqrt(1.0 + bn.eps)))
        state[f"{bn_name}.bias"] = bias
        if f"{bn_name}.num_batches_tracked" in own:
            state[f"{bn_name}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    unexpected = [
        k for k in tensors if k not in own and not any(k == f"{c}.bias" for c in _conv_bn_pairs(model))
    ]
    if unexpected:
        raise ContainerError(
            f"{source} holds tensors {type(model).__name__} does not have (first: {', '.join(unexpected[:3])}): "
            "weights for another model or configuration"
        )
    return state


def import_container(paths: list[Path], model: nn.Module) -> dict[str, Tensor]:
    """The importer interface: a state dict for ``model`` from one container file."""
    if len(paths) != 1:
        raise ContainerError(f"a lightnets container is one file, got {len(paths)} paths")
    tensors, _, _ = read_container(paths[0])
    return state_for_model(tensors, model, str(paths[0]))
