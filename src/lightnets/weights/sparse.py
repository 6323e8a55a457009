"""Relative-index sparse encoding: positions of the stored entries as gaps of ``gap_bits``.

Deep Compression stores a pruned layer as the values of its non-zero weights and, for
each, the number of zeros before it since the previous stored entry (the *gap*). A gap
must fit in ``gap_bits`` bits; a longer run of zeros is bridged by *filler* entries: an
entry whose value is zero (codebook index 0) placed ``2**gap_bits - 1`` zeros after the
previous one. Entry ``i`` then sits at flat position ``cumsum(gaps + 1)[i] - 1``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["from_gaps", "to_gaps"]


def to_gaps(positions: np.ndarray, gap_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, is_filler) of the stored entries for these sorted non-zero ``positions``.

    The result holds one entry per non-zero plus the fillers, in position order;
    ``is_filler`` marks the fillers (their value is zero).
    """
    if not 1 <= gap_bits <= 16:
        raise ValueError(f"gap_bits must lie in 1..16, got {gap_bits}")
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    if (np.diff(positions) <= 0).any() or positions[0] < 0:
        raise ValueError("positions must be non-negative and strictly increasing")
    span = 1 << gap_bits  # an entry with the largest gap, 2**gap_bits - 1, covers this many positions
    gaps = np.diff(positions, prepend=-1) - 1
    fillers = gaps // span
    remainder = gaps - fillers * span
    per_entry = fillers + 1
    total = int(per_entry.sum())
    out_gaps = np.full(total, span - 1, dtype=np.int64)
    is_filler = np.ones(total, dtype=bool)
    last = np.cumsum(per_entry) - 1  # each non-zero comes after its fillers
    out_gaps[last] = remainder
    is_filler[last] = False
    return out_gaps, is_filler


def from_gaps(gaps: np.ndarray, size: int) -> np.ndarray:
    """The flat positions of entries with these gaps; ``ValueError`` if one falls past ``size``."""
    gaps = np.asarray(gaps, dtype=np.int64)
    if gaps.size and gaps.min() < 0:
        raise ValueError("gaps must be non-negative")
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and positions[-1] >= size:
        raise ValueError(f"the entries run to position {int(positions[-1]):,}, past the {size:,} weights")
    return positions
