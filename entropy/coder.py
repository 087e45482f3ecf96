"""Table-driven entropy coding of integer symbols: one call per substream, numpy arrays in and out.

Every symbol is coded with one of a fixed set of integer CDFs (a "table"), chosen per symbol by an
index; the tables are a discretised Gaussian per scale of a log-spaced scale table (CompressAI's
`GaussianConditional.update_scale_table`), with an escape for values outside a table's range.
Index 0 is the skip class: symbols whose predicted scale is at most `scale_table[0]` are not coded
at all, in the encoder and the decoder alike (DCVC-RT skips scale <= 0.12).

The coder behind `encode` / `decode` is the native rANS of `nvc.entropy.native` (GIL released,
substreams on threads). Its streams come in three forms (`SubstreamForm`, set per thread by
`stream_format`): *trimmed*, what container version 6 on holds: *compact* streams whose leading
8-byte state is cut to its significant bytes (`trim_state`: ~1.6 bytes a substream less); *compact*,
what version 5 holds (the state starts at 1 rather than 2^31 and a stream that is only its final
state keeps its significant bytes: ~3 bytes less a substream, 3-7 for one that is its state alone);
and the form of versions 1-4, exactly the bytes of CompressAI's rANS (`compressai.ans`), the
reference it is tested against. Without the extension, `nvc.entropy.pyrans` codes compact streams
and CompressAI the others.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

from nvc.entropy import native, pyrans
from nvc.errors import NvcError

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.12, 64.0, 64


def scale_table() -> torch.Tensor:
    """Log-spaced scales; entry 0 is the skip threshold."""
    return torch.exp(torch.linspace(np.log(SCALE_MIN), np.log(SCALE_MAX), SCALE_LEVELS))


def scale_indexes(scales: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Table index per symbol: the first table scale >= the predicted scale (0: skip). On the CPU
    the native coder's `scale_indexes` computes the same (~6x faster than torch.bucketize)."""
    if scales.device.type == "cpu" and scales.dtype == torch.float32 and native.available():
        values = scales.detach().contiguous().numpy()
        boundaries = table[:-1].to(torch.float32).numpy()
        return torch.from_numpy(native.scale_indexes(values, boundaries)).view(scales.shape)
    return torch.bucketize(scales, table[:-1].to(scales.device)).int()


@dataclass(frozen=True)
class CdfTables:
    """Integer CDFs of the coder: one row per table index (built by a `GaussianConditional`)."""

    cdfs: list  # list[list[int]], 16-bit precision
    lengths: list  # list[int]
    offsets: list  # list[int]

    @functools.cached_property
    def native(self):
        """The same tables as arrays for the native coder, or None when it is not built."""
        return native.NativeTables.from_cdf_tables(self) if native.available() else None

    @classmethod
    def from_buffers(cls, cdf: torch.Tensor, lengths: torch.Tensor, offsets: torch.Tensor) -> "CdfTables":
        if cdf.numel() == 0 or int(lengths.reshape(-1)[0]) == 0:
            raise RuntimeError("entropy tables are not built: call update() after loading float weights")
        return cls(cdf.tolist(), lengths.reshape(-1).int().tolist(), offsets.reshape(-1).int().tolist())


class TableCache:
    """`CdfTables` of a module's integer CDF buffers (`_quantized_cdf`, `_cdf_length`, `_offset`, as
    CompressAI's entropy models name them), built once and rebuilt only when they change (a new
    `update()` or a loaded state dict)."""

    def __init__(self):
        self._key, self._tables = None, None

    def of(self, module: torch.nn.Module) -> CdfTables:
        buffers = (module._quantized_cdf, module._cdf_length, module._offset)
        key = tuple((t.data_ptr(), t._version) for t in buffers)
        if key != self._key:
            self._key, self._tables = key, CdfTables.from_buffers(*buffers)
        return self._tables


def _pad_single(values: np.ndarray, fill: int) -> np.ndarray:
    """A substream of one symbol is coded as two (the symbol and a zero under the same table):
    CompressAI's coder corrupts its heap on a single symbol. Part of the format, on both sides."""
    return np.concatenate([values, np.full(1, fill, values.dtype)]) if values.size == 1 else values


class SubstreamForm(IntEnum):
    """The byte form of a rANS substream (by container version: 1-4, 5, 6 on)."""

    COMPRESSAI = 0  # CompressAI's bytes: the state starts at 2^31 and is written in 8 bytes
    COMPACT = 1  # the state starts at 1; a stream that is its state alone keeps its significant bytes
    TRIMMED = 2  # compact, with the state of a stream that has words in 5 to 8 bytes (`trim_state`)


class _StreamFormat(threading.local):
    form = SubstreamForm.TRIMMED  # what this thread codes, unless a decoder of an older file says otherwise


_FORMAT = _StreamFormat()


def substream_form() -> SubstreamForm:
    """The form of this thread's substreams."""
    return _FORMAT.form


@contextlib.contextmanager
def stream_format(form: int):
    """Code this thread's substreams in `form` (a `SubstreamForm`) within the block: a decoder sets it
    from the file's header around its entropy decoding."""
    previous, _FORMAT.form = _FORMAT.form, SubstreamForm(form)
    try:
        yield
    finally:
        _FORMAT.form = previous


def trim_state(stream: bytes) -> bytes:
    """A compact stream in the trimmed form: a stream with words (longer than 8 bytes) starts with its
    final state x < 2^63 in 8 bytes, of which only the significant ones carry information (their
    number is about uniform over 4..8: rANS states are log-uniform); it keeps k = max(5, significant)
    of them, so that its length 4 * words + k names k (`untrim_state`). Shorter streams are the state alone."""
    if len(stream) <= 8:
        return stream
    k = max(5, (int.from_bytes(stream[:8], "little").bit_length() + 7) // 8)
    return stream[:k] + stream[8:]


def untrim_state(stream: bytes) -> bytes:
    """The compact stream of a trimmed one (k = 5 + (length - 9) mod 4 bytes of state)."""
    if len(stream) <= 8:
        return stream
    k = 5 + (len(stream) - 9) % 4
    return stream[:k] + bytes(8 - k) + stream[k:]


def readable(data: bytes) -> tuple[bytes, bool]:
    """A substream of this thread's form as the rANS decoders read it: (its bytes, trimmed states
    restored; whether it is compact)."""
    form = substream_form()
    return (untrim_state(data) if form == SubstreamForm.TRIMMED else data), form != SubstreamForm.COMPRESSAI


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> bytes:
    """Code int32 `symbols` with per-symbol table `indexes` (both 1-D); empty input -> b""."""
    if symbols.size == 0:
        return b""
    symbols, indexes = _pad_single(symbols, 0), _pad_single(indexes, int(indexes[0]))
    form = substream_form()
    if form != SubstreamForm.COMPRESSAI:
        data = (native.encode(symbols, indexes, tables.native, True) if tables.native is not None
                else pyrans.encode(symbols, indexes, tables, True))
        return trim_state(data) if form == SubstreamForm.TRIMMED else data
    if tables.native is not None:
        return native.encode(symbols, indexes, tables.native, False)
    from compressai.ans import RansEncoder

    return RansEncoder().encode_with_indexes(symbols.astype(np.int32).tolist(), indexes.astype(np.int32).tolist(),
                                             tables.cdfs, tables.lengths, tables.offsets)


def decode(data: bytes, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
    """The symbols of `encode`, given the same indexes; a stream that is too short is an error."""
    if indexes.size == 0:
        if data:
            raise NvcError("unexpected data in an empty substream")
        return np.zeros(0, np.int32)
    data, compact = readable(data)
    if len(data) < 4 and not compact:
        raise NvcError("truncated substream")
    n = indexes.size
    indexes = _pad_single(indexes, int(indexes[0]))
    try:
        if tables.native is not None:
            return native.decode(data, indexes, tables.native, compact)[:n]
        if compact:
            return pyrans.decode(data, indexes, tables, compact)[:n]
    except ValueError as e:
        raise NvcError(f"corrupt substream ({e})") from None
    from compressai.ans import RansDecoder

    values = RansDecoder().decode_with_indexes(data, indexes.astype(np.int32).tolist(), tables.cdfs, tables.lengths,
                                               tables.offsets)
    return np.asarray(values[:n], dtype=np.int32)
