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
EXPLICIT. Smooth fields are mostly MEDIAN, and a vector that continues a neighbour across a
motion edge costs a few bits instead of a residual. A field that the search made of 2^g x 2^g
groups of equal vectors (32x32 blocks at the lowest quality levels) is coded on that coarser grid,
one vector per group. Each mode is coded with a fixed table chosen by its context, the classes of
its left and top neighbours' modes (none, EXPLICIT, MEDIAN, another merge: 16 contexts), as CABAC
chooses its context from the neighbours' flags (Marpe et al., IEEE TCSVT 2003); the tables were
counted on the training clips (`python -m tools.fit_motion_contexts`). Residuals are sparse and
heavy-tailed: each component is coded under a zero-inflated two-sided geometric distribution,
P(0) = p0 and P(+-k) = (1 - p0) (1 - t) t^(k-1) / 2, from a fixed family of 16 x 8 (p0, t) pairs;
the encoder picks, per frame, the member that gives the fewest bits and writes its index in one
byte. Residual values beyond +-64 take the coder's escape. The integer CDF tables of the family are
built once (`update()`), stored with the weights, and used by both sides, as CompressAI's are; the
mode tables are integers computed exactly from the counts below.

Stream:
    zero field:   0xFF 0xFF
    otherwise:    0xF8 | g u8              format marker and grid: the field is coded one vector
                                           per 2^g x 2^g blocks (g <= 3)
                  index_x u8, index_y u8   residual table per component; 0xFF: that component's
                                           residuals are all zero and not coded
                  one rANS substream: the ceil(H / 2^g) x ceil(W / 2^g) modes in raster order, then
                  the residuals (the coded components in turn, explicit blocks in raster order)

The first format (before the marker; still decoded) coded every 16x16 block's mode under one
geometric family member per frame: index_x, index_y, index_modes u8, the LEB128 length of the
mode substream, the modes, then the residuals in a substream of their own. On the training clips the
contexts take 21-26 % off the mode bits, and the coarse grid halves the stream at the lowest levels.

Decoding is one pass over the substream (sequential: a mode's table depends on the modes before
it; in C++ by `nvc.entropy.native.decode_motion`), then one raster pass that rebuilds the vectors
(`field_from_modes`, in C++ by `nvc.entropy.native.motion_field`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from compressai._CXX import pmf_to_quantized_cdf
from torch import nn

from nvc.entropy import coder, native, pyrans
from nvc.errors import NvcError

ALL_ZERO = 0xFF
FORMAT_MARKER = 0xF8  # | grid; the first format started with a residual table index (< 128) or ALL_ZERO
MAX_GRID = 3  # coded grids of 16x16 .. 128x128 blocks
RANGE = 64  # differences in [-RANGE, RANGE] are in the tables; others escape
P_ZERO = np.linspace(0.05, 0.995, 16)
DECAY = np.linspace(0.3, 0.95, 8)
PRECISION = 16
MEDIAN, LEFT, TOP, CORNER, ZERO, EXPLICIT = 0, 1, 2, 3, -2, -1
_MERGE_ORDER = (MEDIAN, LEFT, TOP, CORNER, ZERO)  # the encoder takes the first that matches
# How often each mode (ZERO, EXPLICIT, MEDIAN, LEFT, TOP, CORNER: values -2..3) follows each context
# 4 * class(left) + class(top), class 0 no neighbour, 1 EXPLICIT, 2 MEDIAN, 3 another merge; counted
# by `python -m tools.fit_motion_contexts` (17 frames a clip) on the training clips (both grids together).
MODE_COUNTS = (
    (1, 192, 418, 1, 1, 1),
    (56, 1080, 1968, 1, 1, 107),
    (205, 1886, 14076, 1, 1, 348),
    (20, 138, 576, 1, 1, 6),
    (371, 2052, 3792, 1, 1, 1),
    (69, 3806, 3747, 3882, 768, 138),
    (358, 10146, 12467, 40591, 275, 565),
    (80, 2604, 2915, 8576, 356, 126),
    (787, 4020, 22325, 1, 1, 1),
    (302, 6785, 45331, 3635, 4123, 350),
    (2265, 29737, 867626, 16000, 404, 3973),
    (246, 5019, 108109, 799, 2004, 590),
    (1, 114, 1039, 1, 1, 1),
    (159, 4625, 12985, 3091, 1233, 160),
    (1277, 23609, 35732, 44196, 881, 1764),
    (139, 4064, 6882, 7223, 849, 208),
)
MODE_ROWS = len(MODE_COUNTS)  # a stream's table rows: the mode contexts, then the residual family (MODE_ROWS + index)


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


def mode_contexts(modes: np.ndarray) -> np.ndarray:
    """(H, W) modes -> the context of each, 4 * class(left) + class(top) (see MODE_COUNTS)."""
    cls = np.where(modes == EXPLICIT, 1, np.where(modes == MEDIAN, 2, 3)).astype(np.int32)
    context = np.zeros_like(cls)
    context[:, 1:] += 4 * cls[:, :-1]
    context[1:, :] += cls[:-1, :]
    return context


def _quantized_cdf(counts) -> list[int]:
    """A 16-bit CDF over the counted values and an escape (frequency 1), in integers only: every
    value gets at least one slot and the largest takes the rounding remainder."""
    slots = (1 << PRECISION) - 1 - len(counts)
    freqs = [1 + c * slots // sum(counts) for c in counts]
    freqs[int(np.argmax(counts))] += (1 << PRECISION) - 1 - sum(freqs)
    return [0] + np.cumsum(freqs + [1]).tolist()


@functools.cache
def mode_tables() -> coder.CdfTables:
    """One CDF row per context, over the modes ZERO..CORNER (offset ZERO) and an escape."""
    rows = [_quantized_cdf(c) for c in MODE_COUNTS]
    return coder.CdfTables(rows, [len(r) for r in rows], [ZERO] * len(rows))


def decode_motion_python(data: bytes, h: int, w: int, res_rows: list[int], tables: coder.CdfTables,
                         compact: bool) -> np.ndarray:
    """`nvc.entropy.native.decode_motion` without the extension, the modes one symbol at a time:
    `nvc.entropy.pyrans` for a compact stream, CompressAI's rANS decoder for the older form."""
    if compact:
        decoder = pyrans.Decoder(data, compact)

        def decode_row(r: int, n: int) -> list[int]:
            return [decoder.symbol(tables, r) for _ in range(n)]
    else:
        if len(data) < 8:
            raise ValueError("truncated motion stream")
        from compressai.ans import RansDecoder

        decoder = RansDecoder()
        decoder.set_stream(data)

        def decode_row(r: int, n: int) -> list[int]:
            return decoder.decode_stream([r] * n, tables.cdfs, tables.lengths, tables.offsets)
    modes = np.zeros((h, w), np.int32)
    cls = {EXPLICIT: 1, MEDIAN: 2}
    for y in range(h):
        for x in range(w):
            context = 4 * cls.get(modes[y, x - 1], 3) * (x > 0) + cls.get(modes[y - 1, x], 3) * (y > 0)
            modes[y, x] = decode_row(int(context), 1)[0]
    n = int((modes == EXPLICIT).sum())
    if n == 0:
        raise NvcError("malformed motion stream (no explicit vector)")
    values = [decode_row(r, n) for r in res_rows]
    if compact:
        decoder.finish()
    return np.concatenate([modes.reshape(-1)] + [np.asarray(v, np.int32) for v in values])


def coded_grid(field: np.ndarray) -> int:
    """The largest g <= MAX_GRID such that the (2, H, W) field is made of 2^g x 2^g groups of equal
    vectors (the last row and column of groups may be cut)."""
    for g in range(MAX_GRID, 0, -1):
        if np.array_equal(expand_field(field[:, :: 1 << g, :: 1 << g], g, field.shape[1:]), field):
            return g
    return 0


def coded_modes(field: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(grid, modes, residuals) of a (2, H, W) field as a stream codes it: on its `coded_grid`."""
    grid = coded_grid(field)
    return (grid, *field_modes(np.ascontiguousarray(field[:, :: 1 << grid, :: 1 << grid])))


def expand_field(coarse: np.ndarray, grid: int, shape: tuple[int, int]) -> np.ndarray:
    """The (2, H, W) field of a field coded one vector per 2^grid x 2^grid blocks."""
    r = 1 << grid
    return coarse.repeat(r, axis=1).repeat(r, axis=2)[:, : shape[0], : shape[1]]


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
    """The motion stream's entropy model: the residual family's integer tables are buffers saved with
    the weights; the mode tables are constants (`MODE_COUNTS`)."""

    def __init__(self):
        super().__init__()
        n = len(P_ZERO) * len(DECAY)
        self.register_buffer("_quantized_cdf", torch.zeros(n, 2 * RANGE + 3, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.zeros(n, dtype=torch.int32))
        self.register_buffer("_offset", torch.zeros(n, dtype=torch.int32))
        self._tables_cache = coder.TableCache()
        self._motion_tables_of: tuple | None = None  # (residual tables, mode + residual tables)

    def update(self) -> None:
        pmfs = _pmfs()
        for i, p in enumerate(pmfs):
            tail = max(1.0 - p.sum(), 1e-9)
            cdf = pmf_to_quantized_cdf(torch.tensor(np.append(p, tail)).float().tolist(), PRECISION)
            self._quantized_cdf[i] = torch.tensor(cdf, dtype=torch.int32)
        self._cdf_length.fill_(2 * RANGE + 3)
        self._offset.fill_(-RANGE)

    def _tables(self) -> coder.CdfTables:
        return self._tables_cache.of(self)

    def _bits(self, d: np.ndarray) -> np.ndarray:
        """Bits of the differences `d` under every member of the family (escapes counted roughly)."""
        pmfs = _pmfs()
        clipped = np.clip(d.reshape(-1), -RANGE, RANGE) + RANGE
        counts = np.bincount(clipped, minlength=2 * RANGE + 1)
        return -(np.log2(np.maximum(pmfs, 1e-12)) * counts).sum(1)

    def encode(self, mv: torch.Tensor) -> bytes:
        """mv: (1, 2, H, W) int32 quarter-pel field -> stream bytes."""
        grid, modes, residuals = coded_modes(mv[0].cpu().numpy())
        if not residuals.any():  # no explicit vector: the field is zero
            return bytes([ALL_ZERO, ALL_ZERO])
        head = bytearray([FORMAT_MARKER | grid])
        symbols, indexes = [modes.reshape(-1).astype(np.int32)], [mode_contexts(modes).reshape(-1)]
        for comp in residuals.T:
            if not comp.any():
                head.append(ALL_ZERO)
                continue
            idx = int(self._bits(comp).argmin())
            head.append(idx)
            symbols.append(comp.astype(np.int32))
            indexes.append(np.full(comp.size, MODE_ROWS + idx, np.int32))
        return bytes(head) + coder.encode(np.concatenate(symbols), np.concatenate(indexes), self._motion_tables())

    def decode(self, data: bytes, shape: tuple[int, int]) -> torch.Tensor:
        """The field of `encode` (or of the first format), (1, 2, H, W) int32; malformed data raises
        NvcError."""
        if len(data) < 2:
            raise NvcError("truncated motion stream")
        if data[0] & ~MAX_GRID != FORMAT_MARKER:
            return self._decode_first_format(data, shape)
        grid, coded = data[0] & MAX_GRID, self._coded_components(data[1:3])
        if len(data) < 3 or not coded:
            raise NvcError("malformed motion stream")
        h, w = (-(-n // (1 << grid)) for n in shape)
        rows = [MODE_ROWS + data[1 + c] for c in coded]
        tables, (stream, compact) = self._motion_tables(), coder.readable(data[3:])
        try:
            if tables.native is not None:
                out = native.decode_motion(stream, h, w, rows, tables.native, compact)
            else:
                out = decode_motion_python(stream, h, w, rows, tables, compact)
        except ValueError as e:
            raise NvcError(f"corrupt motion stream ({e})") from None
        modes = out[: h * w].reshape(h, w)
        residuals = np.zeros(((len(out) - h * w) // len(coded), 2), np.int64)
        residuals[:, coded] = out[h * w :].reshape(len(coded), -1).T
        field = self._field(modes, residuals)
        return torch.from_numpy(np.ascontiguousarray(expand_field(field, grid, shape), np.int32))[None]

    def _decode_first_format(self, data: bytes, shape: tuple[int, int]) -> torch.Tensor:
        h, w = shape
        coded = self._coded_components(data[:2])
        if not coded:
            if len(data) > 2:
                raise NvcError("malformed motion stream")
            return torch.zeros(1, 2, h, w, dtype=torch.int32)
        if len(data) < 4 or data[2] >= len(self._cdf_length):
            raise NvcError("malformed motion stream")
        length, pos = _read_leb128(data, 3)
        if pos + length > len(data):
            raise NvcError("truncated motion stream")
        modes = coder.decode(data[pos : pos + length], np.full(h * w, data[2], np.int32), self._tables()).reshape(h, w)
        explicit = int((modes == EXPLICIT).sum())
        if explicit == 0:
            raise NvcError("malformed motion stream (no explicit vector)")
        residuals = np.zeros((explicit, 2), np.int64)
        values = coder.decode(data[pos + length :], np.concatenate([np.full(explicit, data[c], np.int32) for c in coded]),
                              self._tables())
        residuals[:, coded] = values.reshape(len(coded), explicit).T
        return torch.from_numpy(self._field(modes, residuals).astype(np.int32, copy=False))[None]

    def _coded_components(self, head: bytes) -> list[int]:
        """The components (0: x, 1: y) whose residuals the stream codes, from their table indexes."""
        if any(i != ALL_ZERO and i >= len(self._cdf_length) for i in head):
            raise NvcError("malformed motion stream")
        return [c for c, i in enumerate(head) if i != ALL_ZERO]

    def _motion_tables(self) -> coder.CdfTables:
        """The rows a stream codes with: the MODE_ROWS mode contexts, then the residual family."""
        family = self._tables()
        if self._motion_tables_of is None or self._motion_tables_of[0] is not family:
            modes = mode_tables()
            self._motion_tables_of = (family, coder.CdfTables(modes.cdfs + family.cdfs, modes.lengths + family.lengths,
                                                              modes.offsets + family.offsets))
        return self._motion_tables_of[1]

    @staticmethod
    def _field(modes: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """The (2, H, W) field of decoded modes and the residuals (N, 2) of their EXPLICIT blocks."""
        if native.available():  # the same rebuild in C++ (~0.03 ms instead of 10-30 at 720p)
            try:
                return native.motion_field(modes, residuals)
            except ValueError as e:
                raise NvcError(str(e)) from None
        return field_from_modes(modes, residuals)
