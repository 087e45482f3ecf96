"""The native rANS coder (nvc.entropy._rans): CompressAI's bytes, round trips, threads, bad input."""

import threading

import numpy as np
import pytest
from compressai.ans import RansDecoder, RansEncoder
from compressai.entropy_models import GaussianConditional

from nvc.entropy import coder, native, pyrans
from nvc.errors import NvcError


@pytest.fixture(scope="module")
def tables() -> coder.CdfTables:
    gc = GaussianConditional(None)
    gc.update_scale_table(coder.scale_table())
    return coder.CdfTables.from_buffers(gc._quantized_cdf, gc._cdf_length, gc._offset)


@pytest.fixture(scope="module")
def nt(tables) -> native.NativeTables:
    return native.NativeTables.from_cdf_tables(tables)


def gaussian(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbols of the Gaussian of their scale-table index (0..63), 1% of them far out (escapes)."""
    rng = np.random.default_rng(seed)
    indexes = rng.integers(0, coder.SCALE_LEVELS, n).astype(np.int32)
    symbols = np.round(rng.standard_normal(n) * coder.scale_table().numpy()[indexes]).astype(np.int32)
    far = rng.random(n) < 0.01
    symbols[far] = rng.integers(-1000, 1000, int(far.sum()))
    return symbols, indexes


def compressai_encode(symbols, indexes, t) -> bytes:
    return RansEncoder().encode_with_indexes(symbols.tolist(), indexes.tolist(), t.cdfs, t.lengths, t.offsets)


def compressai_decode(data, indexes, t) -> np.ndarray:
    return np.array(RansDecoder().decode_with_indexes(data, indexes.tolist(), t.cdfs, t.lengths, t.offsets), np.int32)


def test_extension_is_built():
    assert native.available(), native.unavailable_reason()


@pytest.mark.parametrize("n, seed", [(300, 0), (5000, 1), (60000, 2)])
def test_bytes_match_compressai_both_ways(tables, nt, n, seed):
    symbols, indexes = gaussian(n, seed)
    data = native.encode(symbols, indexes, nt)
    assert data == compressai_encode(symbols, indexes, tables)
    assert np.array_equal(native.decode(data, indexes, nt), symbols)
    assert np.array_equal(compressai_decode(data, indexes, tables), symbols)


def test_escapes_with_small_scales(tables, nt):
    rng = np.random.default_rng(3)
    indexes = rng.integers(0, 4, 400).astype(np.int32)  # the narrowest tables: 3 values + escape
    symbols = rng.choice(np.array([-500, 500, -1, 0, 1, 2, -2, 70000, -70000, 2**26, -(2**26)], np.int32), 400)
    data = native.encode(symbols, indexes, nt)
    assert data == compressai_encode(symbols, indexes, tables)
    assert np.array_equal(native.decode(data, indexes, nt), symbols)
    assert np.array_equal(compressai_decode(data, indexes, tables), symbols)
    # 8-digit escapes (|value| >= 2^27): CompressAI's encoder loops forever on them, its decoder reads them
    symbols[::7] = [2**30 - 1, -(2**30)] * 29
    data = native.encode(symbols, indexes, nt)
    assert np.array_equal(native.decode(data, indexes, nt), symbols)
    assert np.array_equal(compressai_decode(data, indexes, tables), symbols)


def test_symbols_beyond_the_escape_range_are_rejected(nt):
    with pytest.raises(ValueError, match="too far"):
        native.encode(np.array([2**31 - 1], np.int32), np.array([1], np.int32), nt)


def test_empty(nt):
    empty = np.zeros(0, np.int32)
    assert native.encode(empty, empty, nt) == b""
    assert native.decode(b"", empty, nt).shape == (0,)
    assert native.encode_many([], [], nt, 2) == [] and native.decode_many([], [], nt, 2) == []
    with pytest.raises(ValueError):
        native.decode(b"\0" * 8, empty, nt)


def test_many_substreams_on_threads(nt):
    parts = [gaussian(n, 10 + i) for i, n in enumerate([20000, 0, 1, 7000, 15000])]
    streams = native.encode_many([s for s, _ in parts], [i for _, i in parts], nt, threads=2)
    assert streams == [native.encode(s, i, nt) for s, i in parts]
    one = native.decode_many(streams, [i for _, i in parts], nt, threads=1)
    two = native.decode_many(streams, [i for _, i in parts], nt, threads=2)
    for (s, _), a, b in zip(parts, one, two):
        assert a.dtype == np.int32 and np.array_equal(a, s) and np.array_equal(b, s)


def test_python_threads_decode_concurrently(nt):
    symbols, indexes = gaussian(50000, 4)
    data = native.encode(symbols, indexes, nt)
    results = []
    workers = [threading.Thread(target=lambda: results.append(native.decode(data, indexes, nt))) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(results) == 3 and all(np.array_equal(r, symbols) for r in results)


def test_truncated_and_extended_streams(nt):
    symbols, indexes = gaussian(3000, 5)
    data = native.encode(symbols, indexes, nt)
    for cut in [0, 1, 4, 7, 8, len(data) // 2, len(data) - 4, len(data) - 1]:
        with pytest.raises(ValueError):
            native.decode(data[:cut], indexes, nt)
    with pytest.raises(ValueError):
        native.decode(data + b"\0\0\0\0", indexes, nt)
    with pytest.raises(ValueError):  # more symbols than were coded
        native.decode(data, np.concatenate([indexes, indexes]), nt)


def test_fuzzed_streams_never_crash(nt):
    """Garbage and bit-flipped streams raise ValueError or decode to some int32 array."""
    rng = np.random.default_rng(6)
    symbols, indexes = gaussian(2000, 7)
    good = native.encode(symbols, indexes, nt)
    outcomes = {"error": 0, "decoded": 0}
    for case in range(400):
        n = int(rng.integers(1, 3000))
        idx = rng.integers(0, coder.SCALE_LEVELS, n).astype(np.int32)
        if case % 2:
            data = rng.integers(0, 256, int(rng.integers(0, 200)) * (1 if case % 4 == 1 else 4), np.uint8).tobytes()
        else:
            flipped = bytearray(good)
            for pos in rng.integers(0, len(good), int(rng.integers(1, 4))):
                flipped[pos] ^= 1 << int(rng.integers(0, 8))
            data, idx = bytes(flipped), indexes
        try:
            out = native.decode(data, idx, nt)
        except ValueError:
            outcomes["error"] += 1
        else:
            assert out.shape == idx.shape and out.dtype == np.int32
            outcomes["decoded"] += 1
    assert outcomes["error"] > 300  # the final-state check catches nearly all corruption
    with pytest.raises(ValueError, match="substream 1"):
        native.decode_many([good, good[:-8]], [indexes, indexes], nt, threads=2)


def test_bad_indexes_and_lengths(nt):
    symbols, indexes = gaussian(100, 8)
    data = native.encode(symbols, indexes, nt)
    for bad in (-1, coder.SCALE_LEVELS, 2**31 - 1):
        wrong = indexes.copy()
        wrong[50] = bad
        with pytest.raises(ValueError, match="out of range"):
            native.encode(symbols, wrong, nt)
        with pytest.raises(ValueError):
            native.decode(data, wrong, nt)
    with pytest.raises(ValueError, match="symbols but"):
        native.encode(symbols, indexes[:-1], nt)
    with pytest.raises(ValueError):
        native.encode_many([symbols], [indexes, indexes], nt)
    with pytest.raises(ValueError):
        native.decode_many([data, data], [indexes], nt)
    with pytest.raises(ValueError, match="threads"):
        native.decode_many([data], [indexes], nt, threads=0)


def test_bad_tables_and_types(nt):
    symbols, indexes = gaussian(100, 9)
    from nvc.entropy import _rans

    cdfs = nt.cdfs.copy()
    cdfs[3, 1] = cdfs[3, 2]  # not strictly increasing
    with pytest.raises(ValueError, match="row 3"):
        _rans.encode(symbols, indexes, cdfs, nt.lengths, nt.offsets)
    lengths = nt.lengths.copy()
    lengths[0] = nt.cdfs.shape[1] + 1
    with pytest.raises(ValueError, match="row 0"):
        _rans.decode(b"\0" * 8, indexes, nt.cdfs, lengths, nt.offsets)
    with pytest.raises(ValueError, match="one entry per table row"):
        _rans.encode(symbols, indexes, nt.cdfs, nt.lengths[:-1], nt.offsets)
    with pytest.raises(TypeError):
        _rans.encode(symbols.astype(np.int64), indexes, nt.cdfs, nt.lengths, nt.offsets)
    with pytest.raises(TypeError):
        _rans.encode(symbols[::2], indexes[::2], nt.cdfs, nt.lengths, nt.offsets)
    with pytest.raises(TypeError):
        _rans.decode("text", indexes, nt.cdfs, nt.lengths, nt.offsets)


# ---------------------------------------------------------------- decoding helpers beside the coder


def test_scale_indexes_are_torch_bucketize():
    import torch

    table = coder.scale_table()[:-1]
    edges = torch.cat([table, table.nextafter(torch.tensor(0.0)), table.nextafter(torch.tensor(1e9))])
    values = torch.cat([torch.rand(20000) * 80, torch.randn(1000) * 1e-3, torch.rand(100) * 1e30, edges,
                        torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-45])])
    assert np.array_equal(native.scale_indexes(values.numpy(), table.numpy()), torch.bucketize(values, table).numpy())
    signed = torch.tensor([-1.0, 0.0, 2.0])  # boundaries that are not all positive: the plain search
    assert np.array_equal(native.scale_indexes(values.numpy(), signed.numpy()), torch.bucketize(values, signed).numpy())
    with pytest.raises(ValueError, match="sorted"):
        native.scale_indexes(values.numpy(), signed.numpy()[::-1].copy())
    with pytest.raises(TypeError, match="float32"):  # the extension itself (the wrapper converts)
        native._lib().scale_indexes(values.numpy().astype(np.float64), table.numpy())


def test_motion_field_is_the_python_rebuild():
    from nvc.entropy import motion

    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = rng.integers(1, 10, 2)
        field = rng.integers(-3, 4, (2, h, w)) * rng.integers(0, 2, (1, h, w))  # runs of equal vectors
        modes, residuals = motion.field_modes(field)
        assert np.array_equal(native.motion_field(modes, residuals), field)
        assert np.array_equal(motion.field_from_modes(modes, residuals), field)


def test_motion_field_rejects_malformed_modes():
    modes = np.zeros((3, 4), np.int32)
    none = np.zeros((0, 2), np.int32)
    assert not native.motion_field(modes, none).any()
    for bad, residuals, message in [
        (7, none, "bad mode"),
        (1, none, "bad mode"),  # LEFT in the first column
        (-1, none, "too few residuals"),
        (0, np.ones((1, 2), np.int32), "too many residuals"),
        (-1, np.full((1, 2), 1 << 20, np.int32), "out of range"),
    ]:
        m = modes.copy()
        m[1, 0] = bad
        with pytest.raises(ValueError, match=message):
            native.motion_field(m, residuals)


# ---- compact streams (container version 5 on) ------------------------------------------------------
@pytest.mark.parametrize("n, seed", [(1, 20), (2, 21), (3, 22), (40, 23), (300, 24), (5000, 25)])
def test_compact_streams_are_the_python_coders_both_ways(tables, nt, n, seed):
    symbols, indexes = gaussian(n, seed)
    symbols[: min(n, 2)] = [700, -900][: min(n, 2)]  # escapes
    data = native.encode(symbols, indexes, nt, compact=True)
    assert data == pyrans.encode(symbols, indexes, tables, compact=True)
    assert np.array_equal(native.decode(data, indexes, nt, compact=True), symbols)
    assert np.array_equal(pyrans.decode(data, indexes, tables, compact=True), symbols)
    classic = native.encode(symbols, indexes, nt)
    assert pyrans.encode(symbols, indexes, tables, compact=False) == classic
    assert np.array_equal(pyrans.decode(classic, indexes, tables, compact=False), symbols)
    with pytest.raises(ValueError):  # a stream read in the other form ends in the wrong state
        native.decode(data, indexes, nt, compact=False)
    with pytest.raises(ValueError):
        native.decode(classic, indexes, nt, compact=True)


def test_compact_streams_are_shorter(nt):
    """The state starts at 1: the ~31 bits that L = 2^31 wasted; a stream that is its state alone
    keeps its significant bytes (symbols of probability ~1 cost no more than its first byte)."""
    saved = []
    for seed in range(60):
        symbols, indexes = gaussian(int(np.random.default_rng(seed).integers(20, 3000)), 100 + seed)
        saved.append(len(native.encode(symbols, indexes, nt)) - len(native.encode(symbols, indexes, nt, compact=True)))
    assert min(saved) >= 0 and 2.5 <= np.mean(saved) <= 4
    few, idx = np.zeros(3, np.int32), np.full(3, coder.SCALE_LEVELS - 1, np.int32)
    assert len(native.encode(few, idx, nt)) == 8 and len(native.encode(few, idx, nt, compact=True)) <= 4
    certain = np.zeros(2, np.int32), np.zeros(2, np.int32)  # the narrowest table: 0 is all but certain
    assert len(native.encode(*certain, nt, compact=True)) == 1


def test_compact_streams_detect_damage(nt):
    symbols, indexes = gaussian(3000, 30)
    data = native.encode(symbols, indexes, nt, compact=True)
    for cut in [0, 1, 4, 7, 9, len(data) // 2, len(data) - 4, len(data) - 1]:
        with pytest.raises(ValueError):
            native.decode(data[:cut], indexes, nt, compact=True)
    with pytest.raises(ValueError):
        native.decode(data + b"\0\0\0\0", indexes, nt, compact=True)
    rng, caught = np.random.default_rng(31), 0
    for _ in range(200):
        flipped = bytearray(data)
        flipped[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        try:
            native.decode(bytes(flipped), indexes, nt, compact=True)
        except ValueError:
            caught += 1
    assert caught > 190


def test_stream_format_is_per_thread_and_restored():
    trimmed = coder.SubstreamForm.TRIMMED
    assert coder.substream_form() == trimmed
    seen = []
    with coder.stream_format(coder.SubstreamForm.COMPRESSAI):
        worker = threading.Thread(target=lambda: seen.append(coder.substream_form()))
        worker.start()
        worker.join()
        assert coder.substream_form() == coder.SubstreamForm.COMPRESSAI
    assert coder.substream_form() == trimmed and seen == [trimmed]


@pytest.mark.parametrize("n", [3, 40, 700, 5000])
def test_trimmed_streams_are_compact_ones_with_a_shorter_state(tables, nt, n):
    """Container version 6: a stream with words keeps max(5, significant) bytes of its 8-byte state
    and its length names how many; `untrim_state` gives the compact stream back."""
    saved = []
    for seed in range(40):
        symbols, indexes = gaussian(n, seed)
        compact = native.encode(symbols, indexes, nt, compact=True)
        trimmed = coder.encode(symbols, indexes, tables)
        assert coder.untrim_state(trimmed) == compact and len(trimmed) <= len(compact)
        assert (len(trimmed) <= 8) == (len(compact) <= 8)  # 8 bytes or fewer: the state alone
        assert np.array_equal(coder.decode(trimmed, indexes, tables), symbols)
        saved.append(len(compact) - len(trimmed))
    if n >= 40:  # streams with words: 0 to 3 bytes less, about 1.6 on average (log-uniform states)
        assert set(saved) <= {0, 1, 2, 3} and 1.0 < np.mean(saved) < 2.5
    with coder.stream_format(coder.SubstreamForm.COMPACT):
        assert coder.encode(symbols, indexes, tables) == compact


def test_trimmed_streams_detect_damage(tables):
    symbols, indexes = gaussian(2000, 7)
    data = coder.encode(symbols, indexes, tables)
    for cut in (1, 2, 5):
        with pytest.raises(NvcError):
            coder.decode(data[:-cut], indexes, tables)
    with pytest.raises(NvcError):
        coder.decode(data + b"\0", indexes, tables)


def test_without_the_extension_the_python_coder_writes_the_same_bytes(monkeypatch, tables, nt):
    """The fallback of `nvc.entropy.coder` when the extension is not built: nvc.entropy.pyrans for
    compact streams, CompressAI's coder for the older form; both the native coder's bytes."""
    symbols, indexes = gaussian(700, 40)
    compact, classic = native.encode(symbols, indexes, nt, compact=True), native.encode(symbols, indexes, nt)
    monkeypatch.setattr(native, "_rans", None)
    bare = coder.CdfTables(tables.cdfs, tables.lengths, tables.offsets)  # tables.native is cached
    assert bare.native is None
    assert coder.encode(symbols, indexes, bare) == coder.trim_state(compact)
    assert np.array_equal(coder.decode(coder.trim_state(compact), indexes, bare), symbols)
    with coder.stream_format(coder.SubstreamForm.COMPACT):
        assert coder.encode(symbols, indexes, bare) == compact
        assert np.array_equal(coder.decode(compact, indexes, bare), symbols)
    with coder.stream_format(coder.SubstreamForm.COMPRESSAI):
        assert coder.encode(symbols, indexes, bare) == classic
        assert np.array_equal(coder.decode(classic, indexes, bare), symbols)
    with pytest.raises(NvcError):
        coder.decode(coder.trim_state(compact)[:-1], indexes, bare)
