"""Coding of a P-frame's motion field (one quarter-pel vector per 16x16 block).

Blocks are coded in raster order, each as a *mode* (merge) symbol that names where its vector
comes from, as H.264's median prediction and HEVC's merge candidates do:

    MEDIAN  0   the component-wise median of the left, top and top-right neighbours (top-left where
                there is no top-right; the left one on the first row, the top one in the first column,
                zero for the first block)
    LEFT   +1   the left neighbour          TOP   +2   the top neighbour
    CORNER +3   the top-right (top-left)    ZERO  -2   the zero vector
    EXPLICIT -1 the median plus a coded residual (x, y)

The encoder takes the first of MEDIAN, LEFT, TOP, CORNER, ZERO that equals the vector, else
EXPLICIT. Smooth fields are mostly MEDIAN (under a bit a block), and a vector that continues a
neighbour across a motion edge costs a few bits instead of a residual. Mode symbols and residuals are
sparse and heavy-tailed, so both are coded under a zero-inflated two-sided geometric distribution,
P(0) = p0 and P(+-k) = (1 - p0) (1 - t) t^(k-1) / 2, from a fixed family of 16 x 8 (p0, t) pairs:
the encoder picks, per frame, the member that gives the fewest bits for the modes and for each
residual component, and writes its index in one byte. Residual values beyond +-64 take the coder's
escape. The integer CDF tables are built once (`update()`), stored with the weights, and used by
both sides, as CompressAI's are (the tables of the previous left-difference format, unchanged).

Stream:
    zero field:   0xFF 0xFF
    otherwise:    index_x u8, index_y u8   residual table per component; 0xFF: that component's
                                           residuals are all zero and not coded
                  index_modes u8, LEB128 length of the mode substream
                  rANS substream of the H x W mode symbols
                  rANS substream of the residuals (the coded components in turn, explicit blocks in
                  raster order)

Decoding is two vectorised rANS substreams, then one raster pass that rebuilds the vectors
(`field_from_modes`, done in C++ by `nvc.entropy.native.motion_field` when the extension is built).
"""

from __future__ import annotations

import numpy as np
import torch
from compressai._CXX import pmf_to_quantized_cdf
from torch import nn

from nvc.entropy import coder, native
from nvc.errors import NvcError

ALL_ZERO = 0xFF
RANGE = 64  # differences in [-RANGE, RANGE] are in the tables; others escape
P_ZERO = np.linspace(0.05, 0.995, 16)
DECAY = np.linspace(0.3, 0.95, 8)
PRECISION = 16
MEDIAN, LEFT, TOP, CORNER, ZERO, EXPLICIT = 0, 1, 2, 3, -2, -1
_MERGE_ORDER = (MEDIAN, LEFT, TOP, CORNER, ZERO)  # the encoder takes the first that matches


def field_differences(mv: np.ndarray) -> np.ndarray:
    """(2, H, W) int -> differences from the left neighbour (first column: from the one above): the
    predictor of the first motion format, kept as a reference point for the merge coding's gain."""
    d = mv.astype(np.int64).copy()
    d[:, :, 1:] = mv[:, :, 1:] - mv[:, :, :-1]
    d[:, 1:, 0] = mv[:, 1:, 0] - mv[:, :-1, 0]
    return d


def field_from_differences(d: np.ndarray) -> np.ndarray:
    mv = d.copy()
    mv[:, :, 0] = np.cumsum(d[:, :, 0], axis=1)
    return np.cumsum(mv, axis=2)


def _median(a: int, b: int, c: int) -> int:
    return max(min(a, b), min(max(a, b), c))


def _candidates(mv: list, y: int, x: int, w: int) -> dict:
    """The merge candidates of block (y, x) from the blocks before it in raster order (`mv`: rows of
    (x, y) tuples); an unavailable neighbour is absent."""
    left = mv[y][x - 1] if x > 0 else None
    top = mv[y - 1][x] if y > 0 else None
    corner = (mv[y - 1][x + 1] if x + 1 < w else mv[y - 1][x - 1] if x > 0 else None) if y > 0 else None
    if top is None:
        median = left if left is not None else (0, 0)
    elif left is None:
        median = top
    else:
        third = corner if corner is not None else top
        median = (_median(left[0], top[0], third[0]), _median(left[1], top[1], third[1]))
    return {MEDIAN: median, LEFT: left, TOP: top, CORNER: corner, ZERO: (0, 0)}


def field_modes(mv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2, H, W) int field -> (H, W) mode symbols and (N, 2) residuals of its N explicit blocks."""
    h, w = mv.shape[1:]
    rows = [list(zip(*(r.tolist() for r in (mv[0, y], mv[1, y])))) for y in range(h)]
    modes = np.empty((h, w), np.int32)
    residuals = []
    for y in range(h):
        for x in range(w):
            v = rows[y][x]
            cands = _candidates(rows, y, x, w)
            for m in _MERGE_ORDER:
                if cands[m] == v:
                    modes[y, x] = m
                    break
            else:
                modes[y, x] = EXPLICIT
                residuals.append((v[0] - cands[MEDIAN][0], v[1] - cands[MEDIAN][1]))
    return modes, np.array(residuals, np.int64).reshape(-1, 2)


def field_from_modes(modes: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """The field of `field_modes`; a mode that names a missing neighbour raises NvcError.
    (`_candidates` inlined: only the candidate a block names is formed.)"""
    h, w = modes.shape
    res = iter(residuals.tolist())
    rows: list = []
    prev: list = []
    for y, line in enumerate(modes.tolist()):
        row: list = []
        left = None
        for x, m in enumerate(line):
            top = prev[x] if y else None
            if m == LEFT and left is not None:
                v = left
            elif m == TOP and top is not None:
                v = top
            elif m == ZERO:
                v = (0, 0)
            elif m == CORNER and y and w > 1:
                v = prev[x + 1] if x + 1 < w else prev[x - 1]
            elif m == MEDIAN or m == EXPLICIT:
                if top is None:
                    p = left if left is not None else (0, 0)
                elif left is None:
                    p = top
                else:
                    c = prev[x + 1] if x + 1 < w else prev[x - 1]
                    p = (max(min(left[0], top[0]), min(max(left[0], top[0]), c[0])),
                         max(min(left[1], top[1]), min(max(left[1], top[1]), c[1])))
                if m == EXPLICIT:
                    r = next(res)
                    p = (p[0] + r[0], p[1] + r[1])
                v = p
            else:
                raise NvcError("malformed motion stream (bad mode)")
            row.append(v)
            left = v
        rows.append(row)
        prev = row
    mv = np.array(rows, np.int64).reshape(h, w, 2).transpose(2, 0, 1)
    if np.abs(mv).max(initial=0) > 1 << 16:
        raise NvcError("malformed motion stream (vectors out of range)")
    return mv


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    for _ in range(4):
        if pos >= len(data):
            raise NvcError("truncated motion stream")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos
    raise NvcError("malformed motion stream (length)")


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
        modes, residuals = field_modes(mv[0].cpu().numpy())
        if not residuals.any():  # no explicit vector: the field is zero
            return bytes([ALL_ZERO, ALL_ZERO])
        head, symbols, indexes = bytearray(), [], []
        for comp in residuals.T:
            if not comp.any():
                head.append(ALL_ZERO)
                continue
            idx = int(self._bits(comp).argmin())
            head.append(idx)
            symbols.append(comp.astype(np.int32))
            indexes.append(np.full(comp.size, idx, np.int32))
        mode_idx = int(self._bits(modes).argmin())
        mode_stream = coder.encode(modes.reshape(-1).astype(np.int32), np.full(modes.size, mode_idx, np.int32),
                                   self._tables())
        residual_stream = coder.encode(np.concatenate(symbols), np.concatenate(indexes), self._tables())
        return bytes(head) + bytes([mode_idx]) + _leb128(len(mode_stream)) + mode_stream + residual_stream

    def decode(self, data: bytes, shape: tuple[int, int]) -> torch.Tensor:
        """The field of `encode`, (1, 2, H, W) int32; malformed data raises NvcError."""
        h, w = shape
        if len(data) < 2:
            raise NvcError("truncated motion stream")
        n_tables = len(self._cdf_length)
        head = data[:2]
        if any(i != ALL_ZERO and i >= n_tables for i in head):
            raise NvcError("malformed motion stream")
        coded = [c for c, i in enumerate(head) if i != ALL_ZERO]
        if not coded:
            if len(data) > 2:
                raise NvcError("malformed motion stream")
            return torch.zeros(1, 2, h, w, dtype=torch.int32)
        if len(data) < 4 or data[2] >= n_tables:
            raise NvcError("malformed motion stream")
        length, pos = _read_leb128(data, 3)
        if pos + length > len(data):
            raise NvcError("truncated motion stream")
        tables = self._tables()
        modes = coder.decode(data[pos : pos + length], np.full(h * w, data[2], np.int32), tables).reshape(h, w)
        explicit = int((modes == EXPLICIT).sum())
        if explicit == 0:
            raise NvcError("malformed motion stream (no explicit vector)")
        residuals = np.zeros((explicit, 2), np.int64)
        values = coder.decode(data[pos + length :], np.concatenate([np.full(explicit, head[c], np.int32) for c in coded]),
                              tables)
        residuals[:, coded] = values.reshape(len(coded), explicit).T
        if native.available():  # the same rebuild in C++ (~0.03 ms instead of 10-30 at 720p)
            try:
                mv = native.motion_field(modes, residuals)
            except ValueError as e:
                raise NvcError(str(e)) from None
        else:
            mv = field_from_modes(modes, residuals)
        return torch.from_numpy(mv.astype(np.int32, copy=False))[None]
