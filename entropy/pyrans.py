"""The native rANS coder (entropy/rans.cpp) in plain Python, for machines where the extension is not
built: the same bytes, far slower. Used for compact streams (container version 5 on), which
CompressAI's coder, the fallback for the older streams, cannot read or write.

A row r of the tables is a 16-bit CDF `cdfs[r]` (`lengths[r]` entries, the last symbol an escape)
with value offset `offsets[r]`; values outside the row code the escape and then 4-bit bypass digits.
See entropy/rans.cpp for the format; `compact` streams start from state 1 instead of L = 2^31 and,
when the state is all there is, end in its significant bytes.
"""

from __future__ import annotations

import bisect

import numpy as np

PRECISION = 16
RANS_L = 1 << 31
BYPASS_BITS = 4
BYPASS_MAX = (1 << BYPASS_BITS) - 1
MAX_DIGITS = 8


class Decoder:
    """One substream, decoded symbol by symbol (the motion field's rows depend on earlier symbols)."""

    def __init__(self, data: bytes, compact: bool):
        self.compact = compact
        if compact and len(data) <= 8:
            self.x, self.words = int.from_bytes(data, "little"), []
        elif len(data) < 8 or len(data) % 4:
            raise ValueError("truncated stream (length must be a multiple of 4, at least 8)")
        else:
            self.x = int.from_bytes(data[:8], "little")
            self.words = [int.from_bytes(data[i : i + 4], "little") for i in range(len(data) - 4, 7, -4)]

    def _renormalise(self) -> None:
        if self.x < RANS_L:
            if self.words:
                self.x = self.x << 32 | self.words.pop()
            elif not self.compact or self.x == 0:
                raise ValueError("truncated or corrupt stream (read past the end)")

    def _bits(self) -> int:
        v = self.x & BYPASS_MAX
        self.x >>= BYPASS_BITS
        self._renormalise()
        return v

    def symbol(self, tables, r: int) -> int:
        """The next symbol, coded with row r of `tables` (`nvc.entropy.coder.CdfTables`)."""
        cdf, length = tables.cdfs[r], tables.lengths[r]  # rows may be padded beyond their length
        slot = self.x & ((1 << PRECISION) - 1)
        s = bisect.bisect_right(cdf, slot, 0, length) - 1
        self.x = (cdf[s + 1] - cdf[s]) * (self.x >> PRECISION) + slot - cdf[s]
        self._renormalise()
        offset = tables.offsets[r]
        if s != length - 2:
            return s + offset
        v = digits = self._bits()
        while v == BYPASS_MAX and digits <= MAX_DIGITS:
            v = self._bits()
            digits += v
        if digits > MAX_DIGITS:
            raise ValueError("corrupt stream (escape too long)")
        raw = sum(self._bits() << (BYPASS_BITS * j) for j in range(digits))
        value = (-(raw >> 1) - 1 if raw & 1 else (raw >> 1) + s) + offset
        if not -(2**31) <= value < 2**31:
            raise ValueError("corrupt stream (escaped value out of int32 range)")
        return value

    def finish(self) -> None:
        if self.words:
            raise ValueError("corrupt stream (data left after the last symbol)")
        if self.x != (1 if self.compact else RANS_L):
            raise ValueError("corrupt stream (bad final state)")


def encode(symbols: np.ndarray, indexes: np.ndarray, tables, compact: bool) -> bytes:
    """Code int symbols with per-symbol rows of `tables` (`nvc.entropy.coder.CdfTables`)."""
    x, words = (1 if compact else RANS_L), []

    def put(start: int, freq: int, bits: int) -> None:
        nonlocal x
        if x >= ((RANS_L >> bits) << 32) * freq:
            words.append(x & 0xFFFFFFFF)
            x >>= 32
        x = (x // freq << bits) + x % freq + start

    for symbol, r in zip(symbols[::-1].tolist(), indexes[::-1].tolist()):
        cdf, escape = tables.cdfs[r], tables.lengths[r] - 2
        value = symbol - tables.offsets[r]
        if value < 0 or value >= escape:
            raw = -2 * value - 1 if value < 0 else 2 * (value - escape)
            digits = (raw.bit_length() + BYPASS_BITS - 1) // BYPASS_BITS
            for j in reversed(range(digits)):
                put(raw >> (BYPASS_BITS * j) & BYPASS_MAX, 1, BYPASS_BITS)
            put(digits % BYPASS_MAX, 1, BYPASS_BITS)
            for _ in range(digits // BYPASS_MAX):
                put(BYPASS_MAX, 1, BYPASS_BITS)
            value = escape
        put(cdf[value], cdf[value + 1] - cdf[value], PRECISION)
    if compact and not words:
        return x.to_bytes((x.bit_length() + 7) // 8, "little")
    return x.to_bytes(8, "little") + b"".join(w.to_bytes(4, "little") for w in reversed(words))


def decode(data: bytes, indexes: np.ndarray, tables, compact: bool) -> np.ndarray:
    decoder = Decoder(data, compact)
    out = np.array([decoder.symbol(tables, r) for r in indexes.tolist()], np.int32)
    decoder.finish()
    return out
