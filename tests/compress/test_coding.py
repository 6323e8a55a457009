"""Huffman codes and the relative-index sparse encoding."""

import numpy as np
import pytest

from lightnets.weights import huffman
from lightnets.weights.sparse import from_gaps, to_gaps


@pytest.mark.parametrize("alphabet", [2, 16, 256])
def test_huffman_round_trip(alphabet):
    rng = np.random.default_rng(alphabet)
    symbols = np.minimum(rng.geometric(0.2, size=5000) - 1, alphabet - 1)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
    data = huffman.encode(symbols, lengths)
    assert len(data) == -(-huffman.encoded_bits(symbols, lengths) // 8)
    assert np.array_equal(huffman.decode(data, lengths, symbols.size), symbols)


def test_huffman_is_shorter_than_fixed_width_for_skewed_symbols():
    symbols = np.array([0] * 900 + [1] * 50 + [2] * 30 + [3] * 20)
    lengths = huffman.code_lengths(np.bincount(symbols))
    assert huffman.encoded_bits(symbols, lengths) < 2 * symbols.size


def test_one_symbol_gets_one_bit():
    lengths = huffman.code_lengths(np.array([0, 7, 0]))
    assert lengths.tolist() == [0, 1, 0]
    assert huffman.decode(huffman.encode(np.full(7, 1), lengths), lengths, 7).tolist() == [1] * 7


def test_lengths_are_limited():
    counts = np.array([2**i for i in range(30)])  # a Fibonacci-like skew wants 29-bit codes
    lengths = huffman.code_lengths(counts, max_length=12)
    assert lengths.max() <= 12
    huffman.check_lengths(lengths, 12)


def test_corrupt_codes_and_streams_are_refused():
    with pytest.raises(huffman.HuffmanError, match="Kraft"):
        huffman.decode(b"\x00", np.array([1, 1, 1]), 1)
    lengths = huffman.code_lengths(np.array([5, 3, 1, 1]))
    data = huffman.encode(np.array([0, 1, 2, 3] * 10), lengths)
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(data[:2], lengths, 40)


def test_gaps_with_fillers_round_trip():
    positions = np.array([0, 3, 40, 41, 100, 5000])
    gaps, filler = to_gaps(positions, 4)
    assert gaps.max() <= 15
    decoded = from_gaps(gaps, 5001)
    assert np.array_equal(decoded[~filler], positions)
    assert filler.sum() == sum(g // 16 for g in np.diff(positions, prepend=-1) - 1)


def test_gaps_past_the_tensor_are_refused():
    with pytest.raises(ValueError, match="past"):
        from_gaps(np.array([3, 3]), 5)
