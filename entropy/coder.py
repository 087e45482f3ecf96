"""Table-driven entropy coding of integer symbols: one call per substream, numpy arrays in and out.

Every symbol is coded with one of a fixed set of integer CDFs (a "table"), chosen per symbol by an
index; the tables are a discretised Gaussian per scale of a log-spaced scale table (CompressAI's
`GaussianConditional.update_scale_table`), with an escape for values outside a table's range.
Index 0 is the skip class: symbols whose predicted scale is at most `scale_table[0]` are not coded
at all, in the encoder and the decoder alike (DCVC-RT skips scale <= 0.12).

The coder behind `encode` / `decode` is the native rANS of `nvc.entropy.native` (GIL released,
substreams on threads). Its streams come in two forms (`stream_format`): *compact*, what container
version 5 on holds (the state starts at 1 rather than 2^31 and a stream that is only its final
state keeps its significant bytes: ~3 bytes less a substream, 3-7 for one that is its state alone), and the form of
versions 1-4, exactly the bytes of CompressAI's rANS (`compressai.ans`), the reference it is tested
against. Without the extension, `nvc.entropy.pyrans` codes compact streams and CompressAI the others.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass

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


class _StreamFormat(threading.local):
    compact = True  # what this thread codes: compact streams unless a decoder of an older file says not


_FORMAT = _StreamFormat()


def compact_streams() -> bool:
    """Whether this thread's substreams are compact (container version 5 on)."""
    return _FORMAT.compact


@contextlib.contextmanager
def stream_format(compact: bool):
    """Code this thread's substreams compact (container version >= 5) or as versions 1-4 did, within
    the block: a decoder sets it from the file's header around its entropy decoding."""
    previous, _FORMAT.compact = _FORMAT.compact, compact
    try:
        yield
    finally:
        _FORMAT.compact = previous


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> bytes:
    """Code int32 `symbols` with per-symbol table `indexes` (both 1-D); empty input -> b""."""
    if symbols.size == 0:
        return b""
    symbols, indexes = _pad_single(symbols, 0), _pad_single(indexes, int(indexes[0]))
    compact = compact_streams()
    if tables.native is not None:
        return native.encode(symbols, indexes, tables.native, compact)
    if compact:
        return pyrans.encode(symbols, indexes, tables, compact)
    from compressai.ans import RansEncoder

    return RansEncoder().encode_with_indexes(symbols.astype(np.int32).tolist(), indexes.astype(np.int32).tolist(),
                                             tables.cdfs, tables.lengths, tables.offsets)


def decode(data: bytes, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
    """The symbols of `encode`, given the same indexes; a stream that is too short is an error."""
    if indexes.size == 0:
        if data:
            raise NvcError("unexpected data in an empty substream")
        return np.zeros(0, np.int32)
    compact = compact_streams()
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
