"""Canonical Huffman coding of small integer symbols (codebook indices, index gaps).

A code is described by one length per symbol (0 = the symbol does not occur); the codes
themselves follow from the lengths in the canonical order (shorter codes first, then by
symbol), so a file stores only the lengths. Lengths are limited to :data:`MAX_LENGTH`
bits, which bounds the decoder's lookup table. Bits are written most significant first
into bytes (``numpy.packbits`` order); the last byte is padded with zeros.

Encoding is vectorised with NumPy; decoding walks the stream once with a
``2**max_length`` lookup table.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["MAX_LENGTH", "HuffmanError", "code_lengths", "decode", "encode", "encoded_bits"]

MAX_LENGTH = 16  # longest code; the decoder's table has 2**MAX_LENGTH entries at most


class HuffmanError(ValueError):
    """A code or a stream that cannot be decoded (corrupt data)."""


def _lengths_unlimited(counts: np.ndarray) -> np.ndarray:
    used = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, dtype=np.int64)
    if used.size == 1:
        lengths[used[0]] = 1  # one symbol still needs one bit per occurrence
        return lengths
    # (count, tie-breaker, symbols under this node)
    heap: list[tuple[int, int, list[int]]] = [(int(counts[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    order = counts.size
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1:
            lengths[s] += 1
        for s in s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, order, s1 + s2))
        order += 1
    return lengths


def code_lengths(counts: np.ndarray, max_length: int = MAX_LENGTH) -> np.ndarray:
    """Huffman code lengths (``int64``, one per symbol) for symbol ``counts``.

    Symbols that never occur get length 0. Codes longer than ``max_length`` are avoided
    by flattening the counts (halving them, keeping every used symbol at 1 or more) until
    the longest code fits: slightly longer average codes, a bounded decoder.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative integers")
    if not counts.any():
        return np.zeros(counts.size, dtype=np.int64)
    if np.count_nonzero(counts) > 2**max_length:
        raise ValueError(f"{np.count_nonzero(counts)} symbols cannot have codes of at most {max_length} bits")
    work = counts.copy()
    while True:
        lengths = _lengths_unlimited(work)
        if lengths.max() <= max_length:
            return lengths
        work = np.where(work > 0, work // 2 + 1, 0)


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of every symbol (``int64``; meaningless where the length is 0)."""
    codes = np.zeros(lengths.size, dtype=np.int64)
    code = 0
    previous = 0
    for symbol in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (int(lengths[s]), s)):
        length = int(lengths[symbol])
        code <<= length - previous
        codes[symbol] = code
        code += 1
        previous = length
    return codes


def check_lengths(lengths: np.ndarray, max_length: int = MAX_LENGTH) -> None:
    """Raise :class:`HuffmanError` unless ``lengths`` describe a usable prefix code."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any() or (lengths > max_length).any():
        raise HuffmanError(f"code lengths must lie in 0..{max_length}")
    used = lengths[lengths > 0]
    if used.size and float(np.sum(2.0 ** (-used.astype(np.float64)))) > 1.0 + 1e-12:
        raise HuffmanError("the code lengths do not form a prefix code (Kraft sum above 1)")


def encoded_bits(symbols: np.ndarray, lengths: np.ndarray) -> int:
    """Bits :func:`encode` needs for ``symbols`` with these code lengths (before padding)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    return int(np.asarray(lengths, dtype=np.int64)[symbols].sum()) if symbols.size else 0


def encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """The bit stream of ``symbols`` (integers in ``0..len(lengths)-1``), padded to bytes."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    lengths = np.asarray(lengths, dtype=np.int64)
    if symbols.size == 0:
        return b""
    if symbols.min() < 0 or symbols.max() >= lengths.size or (lengths[symbols] == 0).any():
        raise ValueError("a symbol has no code (its count was 0, or it is out of range)")
    codes = _canonical_codes(lengths)
    sizes = lengths[symbols]
    values = codes[symbols]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    bits = np.zeros(int(ends[-1]), dtype=np.uint8)
    for j in range(int(sizes.max())):
        has = sizes > j
        bits[starts[has] + j] = (values[has] >> (sizes[has] - 1 - j)) & 1
    return np.packbits(bits).tobytes()


def decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """``count`` symbols (``int64``) decoded from ``data`` with the code of ``lengths``.

    Raises :class:`HuffmanError` for an invalid code, a stream too short for ``count``
    symbols, or bits that match no code.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    check_lengths(lengths)
    if count < 0:
        raise HuffmanError(f"cannot decode {count} symbols")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if not lengths.any():
        raise HuffmanError(f"{count} symbols to decode but the code has no symbols")
    if count > 8 * len(data):
        raise HuffmanError(f"{len(data)} bytes cannot hold {count:,} symbols")
    width = int(lengths.max())
    codes = _canonical_codes(lengths)
    # Table: every width-bit window -> (symbol, its length); -1 where no code starts.
    table_symbol = np.full(1 << width, -1, dtype=np.int64)
    table_length = np.zeros(1 << width, dtype=np.int64)
    for symbol in np.flatnonzero(lengths).tolist():
        length = int(lengths[symbol])
        first = int(codes[symbol]) << (width - length)
        table_symbol[first : first + (1 << (width - length))] = symbol
        table_length[first : first + (1 << (width - length))] = length
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    total = bits.size
    padded = np.concatenate([bits, np.zeros(width, dtype=np.uint8)]).astype(np.int64)
    out = np.empty(count, dtype=np.int64)
    position = 0
    i = 0
    chunk = 1 << 18
    while i < count:
        if position >= total:
            raise HuffmanError(f"the stream of {len(data)} bytes ends before {count:,} symbols")
        base = position
        stop = min(total, base + chunk)
        # The code starting at each bit of this chunk, looked up from its width-bit window.
        windows = np.zeros(stop - base, dtype=np.int64)
        for j in range(width):
            windows = (windows << 1) | padded[base + j : stop + j]
        symbol_at = table_symbol[windows].tolist()
        length_at = table_length[windows].tolist()
        decoded: list[int] = []
        offset = position - base
        limit = stop - base
        want = count - i
        while offset < limit and len(decoded) < want:
            symbol = symbol_at[offset]
            if symbol < 0:
                raise HuffmanError(f"bits at position {base + offset} match no code: a corrupt stream")
            decoded.append(symbol)
            offset += length_at[offset]
        out[i : i + len(decoded)] = decoded
        i += len(decoded)
        position = base + offset
    if position > total:
        raise HuffmanError(f"the stream of {len(data)} bytes ends before {count:,} symbols")
    return out
