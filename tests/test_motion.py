"""The motion-field coder (merge modes + median prediction) and the motion search."""

import numpy as np
import pytest
import torch

from nvc.entropy import native
from nvc.entropy.coder import SubstreamForm, stream_format
from nvc.entropy.motion import (EXPLICIT, FORMAT_MARKER, MEDIAN, MODE_ROWS, MotionCoder, coded_modes,
                                decode_motion_python, expand_field, field_from_modes, field_modes, mode_tables)
from nvc.errors import NvcError
from nvc.models.motion import estimate_motion


@pytest.fixture(scope="module")
def coder():
    c = MotionCoder()
    c.update()
    return c


def _smooth_field(h=9, w=13, seed=0):
    """A piecewise-constant field with a few quarter-pel outliers, like a search's output."""
    rng = np.random.default_rng(seed)
    mv = np.zeros((2, h, w), np.int32)
    mv[:, :, w // 2 :] = np.array([24, -8])[:, None, None]  # a moving half
    for _ in range(6):
        mv[:, rng.integers(h), rng.integers(w)] += rng.integers(-9, 10, 2)
    return torch.from_numpy(mv)[None]


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (9, 13)])
def test_round_trip(coder, shape):
    rng = np.random.default_rng(1)
    for mv in (torch.from_numpy(rng.integers(-300, 300, (1, 2, *shape)).astype(np.int32)),
               _smooth_field(*shape) if shape[0] > 1 and shape[1] > 1 else torch.full((1, 2, *shape), 5, dtype=torch.int32)):
        assert torch.equal(coder.decode(coder.encode(mv), shape), mv)


def test_zero_field_costs_two_bytes_and_a_still_component_one(coder):
    assert coder.encode(torch.zeros(1, 2, 4, 6, dtype=torch.int32)) == b"\xff\xff"
    assert torch.equal(coder.decode(b"\xff\xff", (4, 6)), torch.zeros(1, 2, 4, 6, dtype=torch.int32))
    mv = _smooth_field()
    mv[0, 1] = 0
    data = coder.encode(mv)
    assert data[2] == 0xFF and torch.equal(coder.decode(data, (9, 13)), mv)


def test_a_uniform_pan_is_nearly_free(coder):
    """One explicit vector, the rest merge: a few bytes for 3,600 blocks (720p)."""
    mv = torch.zeros(1, 2, 45, 80, dtype=torch.int32)
    mv[0, 0], mv[0, 1] = 37, -5
    modes, residuals = field_modes(mv[0].numpy())
    assert (modes == EXPLICIT).sum() == 1 and (modes == MEDIAN).sum() == 45 * 80 - 1
    assert np.array_equal(field_from_modes(modes, residuals), mv[0].numpy())
    assert len(coder.encode(mv)) < 32


def test_smooth_fields_cost_less_than_left_differences(coder):
    """The merge modes beat the former left-difference coding on a field with a motion edge."""
    from nvc.entropy.motion import field_differences

    mv = _smooth_field(45, 80)
    d = field_differences(mv[0].numpy())
    left_bits = sum(coder._bits(c).min() for c in d if c.any())
    assert 8 * len(coder.encode(mv)) < left_bits


def test_corrupt_streams_raise_nvc_error(coder):
    mv = _smooth_field(45, 80)
    data = coder.encode(mv)
    for bad in (b"", b"\x01", b"\xff\xff\x00", bytes([200, 200]) + data[2:], data[:2], data[:4],
                data[:3] + b"\xff\xff\xff\xff\x7f" + data[4:], data[:2] + bytes([250]) + data[3:]):
        with pytest.raises(NvcError):
            coder.decode(bad, (45, 80))
    # random damage: an NvcError or some field of the right shape, never another exception or a hang
    rng = np.random.default_rng(0)
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            damaged[rng.integers(len(damaged))] = rng.integers(256)
        cut = len(damaged) if rng.random() < 0.7 else rng.integers(len(damaged))
        try:
            out = coder.decode(bytes(damaged[:cut]), (45, 80))
        except NvcError:
            continue
        assert out.shape == (1, 2, 45, 80) and out.dtype == torch.int32


# A field coded by the first format (every 16x16 block's mode under one geometric table; no format
# marker), made by the coder of commit c924769: still decoded.
FIRST_FORMAT = bytes.fromhex("07067008fe85ad356e6205009dd6d75908000000d9995e36")


def test_first_format_still_decodes(coder):
    mv = np.zeros((2, 5, 7), np.int32)
    mv[:, :, 4:] = np.array([24, -8])[:, None, None]
    mv[:, 2, 1], mv[:, 4, 6] = (5, -3), (-7, 2)
    with stream_format(SubstreamForm.COMPRESSAI):  # written before container version 5
        assert np.array_equal(coder.decode(FIRST_FORMAT, (5, 7))[0].numpy(), mv)
    assert coder.encode(torch.from_numpy(mv)[None])[0] == 0xF8  # new streams carry the marker (and grid 0)


def test_a_field_of_equal_groups_is_coded_on_its_grid(coder):
    """The 32x32 search's field (2x2 groups of equal vectors, the last cut) codes as its 5x7 groups:
    the same stream as the coarse field itself but for the grid byte."""
    small = _smooth_field(5, 7)
    big = torch.from_numpy(np.ascontiguousarray(expand_field(small[0].numpy(), 1, (9, 13))))[None]
    data = coder.encode(big)
    assert data[0] == 0xF9 and data[1:] == coder.encode(small)[1:]
    assert torch.equal(coder.decode(data, (9, 13)), big)
    pan = torch.tensor([7, -3], dtype=torch.int32)[None, :, None, None].expand(1, 2, 45, 80).contiguous()
    data = coder.encode(pan)
    assert data[0] == 0xFB and torch.equal(coder.decode(data, (45, 80)), pan)  # 6x10 groups of 8x8 blocks


def test_mode_tables_are_exact():
    for cdf, length in zip(mode_tables().cdfs, mode_tables().lengths):
        assert length == 8 and cdf[0] == 0 and cdf[-1] == 1 << 16 and cdf[-1] - cdf[-2] == 1  # escape: one slot
        assert all(b > a for a, b in zip(cdf, cdf[1:]))


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (3, 5), (45, 80)])
def test_native_motion_decoding_is_the_python_one(coder, shape, compact):
    """A stream's context-coded modes and residuals: the native sequential decoder and the Python
    one (nvc.entropy.pyrans for compact streams, CompressAI's for the older form), one symbol at a
    time, on the streams the coder writes (fields of random vectors)."""
    if not native.available():
        pytest.skip(native.unavailable_reason())
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    mv = torch.from_numpy(rng.integers(-3, 4, (1, 2, *shape)).astype(np.int32))
    mv[0, :, 0, 0] = 5  # at least one explicit vector
    with stream_format(SubstreamForm.COMPACT if compact else SubstreamForm.COMPRESSAI):
        data = coder.encode(mv)
        assert torch.equal(coder.decode(data, shape), mv)
    grid, modes, _ = coded_modes(mv[0].numpy())
    assert data[0] == FORMAT_MARKER | grid
    tables = coder._motion_tables()
    rows = [MODE_ROWS + i for i in data[1:3] if i != 0xFF]
    fast = native.decode_motion(data[3:], *modes.shape, rows, tables.native, compact)
    assert np.array_equal(fast, decode_motion_python(data[3:], *modes.shape, rows, tables, compact))
    assert np.array_equal(fast[: modes.size].reshape(modes.shape), modes)
    with pytest.raises(ValueError):
        native.decode_motion(data[3:-4], *modes.shape, rows, tables.native, compact)
    with pytest.raises(ValueError):  # the other form
        native.decode_motion(data[3:], *modes.shape, rows, tables.native, not compact)


def test_search_keeps_a_pan_free_to_code(coder):
    """A translated texture: the searched field is one vector, coded in a few bytes."""
    rng = np.random.default_rng(0)
    base = torch.nn.functional.interpolate(torch.from_numpy(rng.random((1, 1, 40, 56))).float(), size=(160, 224),
                                           mode="bicubic", align_corners=False).clamp(0, 1)
    moved = torch.roll(base, (4, -6), (2, 3))  # cur[p] = ref[p + (6, -4)]
    mv = estimate_motion(moved, base)
    inner = mv[0, :, 1:-1, 1:-1].reshape(2, -1)
    assert (inner == torch.tensor([[24], [-16]])).all(0).float().mean() > 0.9
    assert len(coder.encode(mv)) < 40


@pytest.mark.parametrize("block", [4, 16, 32])
def test_native_block_sad_is_the_warped_sad(block):
    """The encoder's block-matching cost (models/motion_search.cpp) against the torch definition:
    whole-, half- and quarter-pel vectors, some past the borders."""
    from nvc.models import motion

    g = torch.Generator().manual_seed(block)
    cur, ref = (torch.rand(1, 1, 64, 96, generator=g) * 255 for _ in range(2))
    mv = (torch.randn(1, 2, 64 // block, 96 // block, generator=g) * 40).round()
    mv[:, :, 0, 0] = 0
    expected = motion._block_sad(cur, motion.warp(ref, motion._block_flow(mv, block)), block)
    got = motion._warped_block_sad(cur, ref, mv, block)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-2)
