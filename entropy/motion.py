"""Coding of a P-frame's motion field (one quarter-pel vector per 16x16 block).

Each component is predicted from its left neighbour (the first column from the vector above), so a
still or uniformly panning field leaves almost only zeros. The differences are sparse and
heavy-tailed, so they are coded under a zero-inflated two-sided geometric distribution,
P(0) = p0 and P(+-k) = (1 - p0) (1 - t) t^(k-1) / 2, from a fixed family of 16 x 8 (p0, t) pairs:
the encoder picks, per frame and component, the member that gives the fewest bits and writes its
index in one byte. A component whose differences are all zero costs only that byte (0xFF, no
symbols). Values beyond +-64 take the coder's escape. The integer CDF tables are built once
(`update()`), stored with the weights, and used by both sides, as CompressAI's are. Decoding is two
cumulative sums, vectorised: no symbol depends on the decoding of another.

Stream: index_x u8, index_y u8, then the rANS substream of the coded components' differences.
"""

from __future__ import annotations

import numpy as np
import torch
from compressai._CXX import pmf_to_quantized_cdf
from torch import nn

from nvc.entropy import coder
from nvc.errors import NvcError

ALL_ZERO = 0xFF
RANGE = 64  # differences in [-RANGE, RANGE] are in the tables; others escape
P_ZERO = np.linspace(0.05, 0.995, 16)
DECAY = np.linspace(0.3, 0.95, 8)
PRECISION = 16


def field_differences(mv: np.ndarray) -> np.ndarray:
    """(2, H, W) int -> differences from the left neighbour (first column: from the one above)."""
    d = mv.astype(np.int64).copy()
    d[:, :, 1:] = mv[:, :, 1:] - mv[:, :, :-1]
    d[:, 1:, 0] = mv[:, 1:, 0] - mv[:, :-1, 0]
    return d


def field_from_differences(d: np.ndarray) -> np.ndarray:
    mv = d.copy()
    mv[:, :, 0] = np.cumsum(d[:, :, 0], axis=1)
    return np.cumsum(mv, axis=2)


def _pmfs() -> np.ndarray:
    """(len(P_ZERO) * len(DECAY), 2 * RANGE + 1) probabilities of -RANGE..RANGE."""
    k = np.abs(np.arange(-RANGE, RANGE + 1))
    rows = []
    for p0 in P_ZERO:
        for t in DECAY:
            p = np.where(k == 0, p0, (1 - p0) * (1 - t) * t ** np.maximum(k - 1, 0) / 2)
            rows.append(p)
    return np.array(rows)


class MotionCoder(nn.Module):
    """The motion stream's entropy model; its integer tables are buffers saved with the weights."""

    def __init__(self):
        super().__init__()
        n = len(P_ZERO) * len(DECAY)
        self.register_buffer("_quantized_cdf", torch.zeros(n, 2 * RANGE + 3, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.zeros(n, dtype=torch.int32))
        self.register_buffer("_offset", torch.zeros(n, dtype=torch.int32))
        self._tables_cache = coder.TableCache()

    def update(self) -> None:
        pmfs = _pmfs()
        for i, p in enumerate(pmfs):
            tail = max(1.0 - p.sum(), 1e-9)
            cdf = pmf_to_quantized_cdf(torch.tensor(np.append(p, tail)).float().tolist(), PRECISION)
            self._quantized_cdf[i] = torch.tensor(cdf, dtype=torch.int32)
        self._cdf_length.fill_(2 * RANGE + 3)
        self._offset.fill_(-RANGE)

    def _tables(self) -> coder.CdfTables:
        return self._tables_cache.get(self._quantized_cdf, self._cdf_length, self._offset)

    def _bits(self, d: np.ndarray) -> np.ndarray:
        """Bits of the differences `d` under every member of the family (escapes counted roughly)."""
        pmfs = _pmfs()
        clipped = np.clip(d.reshape(-1), -RANGE, RANGE) + RANGE
        counts = np.bincount(clipped, minlength=2 * RANGE + 1)
        return -(np.log2(np.maximum(pmfs, 1e-12)) * counts).sum(1)

    def encode(self, mv: torch.Tensor) -> bytes:
        """mv: (1, 2, H, W) int32 quarter-pel field -> stream bytes."""
        d = field_differences(mv[0].cpu().numpy())
        head, symbols, indexes = bytearray(), [], []
        for comp in d:
            if not comp.any():
                head.append(ALL_ZERO)
                continue
            idx = int(self._bits(comp).argmin())
            head.append(idx)
            symbols.append(comp.reshape(-1).astype(np.int32))
            indexes.append(np.full(comp.size, idx, np.int32))
        if not symbols:
            return bytes(head)
        return bytes(head) + coder.encode(np.concatenate(symbols), np.concatenate(indexes), self._tables())

    def decode(self, data: bytes, shape: tuple[int, int]) -> torch.Tensor:
        """The field of `encode`, (1, 2, H, W) int32; malformed data raises NvcError."""
        h, w = shape
        if len(data) < 2:
            raise NvcError("truncated motion stream")
        head = data[:2]
        if any(i != ALL_ZERO and i >= len(self._cdf_length) for i in head):
            raise NvcError("malformed motion stream")
        coded = [c for c, i in enumerate(head) if i != ALL_ZERO]
        d = np.zeros((2, h, w), np.int64)
        if coded:
            indexes = np.concatenate([np.full(h * w, head[c], np.int32) for c in coded])
            d[coded] = coder.decode(data[2:], indexes, self._tables()).reshape(len(coded), h, w)
        elif len(data) > 2:
            raise NvcError("malformed motion stream")
        mv = field_from_differences(d)
        if np.abs(mv).max(initial=0) > 1 << 16:
            raise NvcError("malformed motion stream (vectors out of range)")
        return torch.from_numpy(mv.astype(np.int32))[None]
