"""Native rANS coder (`nvc.entropy._rans`, built from entropy/rans.cpp): the interface of
`nvc.entropy.coder` on numpy arrays, without the GIL, and with many substreams on threads.

The bytes are CompressAI's (`RansEncoder.encode_with_indexes` / `RansDecoder.decode_with_indexes`),
or with `compact` those of container version 5 on (the state starts at 1, not 2^31; a stream that is
only its final state keeps its significant bytes):
rANS (Duda 2013, arXiv:1311.2540) with ryg_rans' 64-bit state, 32-bit little-endian words and
16-bit CDFs; values outside a CDF row code its escape symbol followed by 4-bit bypass digits. A
stream is [state low word, state high word, renormalisation words]; entropy/rans.cpp describes the
format in full. The decoder is stricter than CompressAI's: it also requires every word of a stream
to be consumed and the final state to be the initial one, so most corrupt streams are detected.

Three decoding loops run here too, without the GIL: `scale_indexes` (the table index of each
symbol, as `torch.bucketize`), `decode_motion` (a motion stream's merge modes, each coded with
the CDF row of its neighbours' modes, and residuals) and `motion_field` (the merge-mode rebuild);
both of `nvc.entropy.motion`.

Errors (corrupt or truncated streams, table indexes out of range, mismatched lengths, bad tables)
raise ValueError; wrong dtypes or shapes raise TypeError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:
    from nvc.entropy import _rans
except ImportError as exc:  # not built (e.g. no compiler at install time)
    _rans = None
    _REASON = f"nvc.entropy._rans is not importable ({exc}); reinstall nvc with a C++17 compiler"
else:
    _REASON = None


def available() -> bool:
    """Whether the native coder can be used; `unavailable_reason()` says why not."""
    return _rans is not None


def unavailable_reason() -> str | None:
    return _REASON


def _lib():
    if _rans is None:
        raise RuntimeError(_REASON)
    return _rans


@dataclass(frozen=True)
class NativeTables:
    """`CdfTables` as arrays: cdfs (rows, max length) int32 zero-padded, lengths and offsets (rows,)."""

    cdfs: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_cdf_tables(cls, tables) -> "NativeTables":
        lengths = np.asarray(tables.lengths, dtype=np.int32).reshape(-1)
        cdfs = np.zeros((len(tables.cdfs), max((len(r) for r in tables.cdfs), default=0)), np.int32)
        for row, cdf in zip(cdfs, tables.cdfs):
            row[:len(cdf)] = cdf
        return cls(cdfs, lengths, np.asarray(tables.offsets, dtype=np.int32).reshape(-1))

    def _args(self) -> tuple:
        return self.cdfs, self.lengths, self.offsets


def _i32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int32).reshape(-1)


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: NativeTables, compact: bool = False) -> bytes:
    """Code int32 `symbols` with per-symbol table `indexes` (both 1-D); empty input -> b"".
    `compact`: the stream of container version 5 on (`nvc.entropy.coder`), else CompressAI's bytes."""
    return _lib().encode(_i32(symbols), _i32(indexes), *tables._args(), compact)


def decode(data: bytes, indexes: np.ndarray, tables: NativeTables, compact: bool = False) -> np.ndarray:
    """The symbols of `encode`, given the same indexes (int32 array) and form."""
    return _lib().decode(data, _i32(indexes), *tables._args(), compact)


def encode_many(symbols: list, indexes: list, tables: NativeTables, threads: int = 1,
                compact: bool = False) -> list[bytes]:
    """Independent substreams, coded on up to `threads` threads."""
    return _lib().encode_many([_i32(s) for s in symbols], [_i32(i) for i in indexes], *tables._args(), threads,
                              compact)


def decode_many(data: list, indexes: list, tables: NativeTables, threads: int = 1,
                compact: bool = False) -> list[np.ndarray]:
    """Independent substreams, decoded on up to `threads` threads."""
    return _lib().decode_many(list(data), [_i32(i) for i in indexes], *tables._args(), threads, compact)


def scale_indexes(values: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """#{j : boundaries[j] < v} for each value, int32 (`torch.bucketize(v, boundaries)`; NaN -> len)."""
    return _lib().scale_indexes(np.ascontiguousarray(values, np.float32).reshape(-1),
                                np.ascontiguousarray(boundaries, np.float32).reshape(-1))


def motion_field(modes: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """(2, H, W) int32 field from merge modes (H, W) and explicit residuals (N, 2); ValueError if malformed."""
    modes = np.ascontiguousarray(modes, np.int32)
    out = _lib().motion_field(modes, np.ascontiguousarray(residuals, np.int32).reshape(-1, 2))
    return out.reshape(2, *modes.shape)


def decode_motion(data: bytes, h: int, w: int, res_rows: list[int], tables: NativeTables,
                  compact: bool = False) -> np.ndarray:
    """A motion stream's symbols (`nvc.entropy.motion`): h*w merge modes coded in raster order, each
    with row 4 * class(left) + class(top) of `tables`, then one residual per EXPLICIT block for each
    row of `res_rows`; int32, modes first. ValueError if the stream is corrupt."""
    return _lib().decode_motion(data, h, w, _i32(res_rows), *tables._args(), compact)
