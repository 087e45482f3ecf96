import math

import numpy as np
import pytest

from nvc.frames import YUVFrame, rgb_to_yuv420, yuv420_to_rgb
from nvc.metrics import frame_psnr


def test_psnr_yuv_on_known_arrays():
    ref = YUVFrame(np.full((4, 6), 100, np.uint8), np.full((2, 3), 100, np.uint8), np.full((2, 3), 100, np.uint8))
    test = YUVFrame(ref.y + 1, ref.u + 2, ref.v - 4)  # MSE 1, 4 and 16
    p = frame_psnr(ref, test)
    assert p.y == pytest.approx(48.1308036, abs=1e-6)  # 10 log10(255^2 / 1)
    assert p.u == pytest.approx(42.1102037, abs=1e-6)  # 10 log10(255^2 / 4)
    assert p.v == pytest.approx(36.0896038, abs=1e-6)  # 10 log10(255^2 / 16)
    assert p.yuv == pytest.approx((6 * 48.1308036 + 42.1102037 + 36.0896038) / 8, abs=1e-6)
    assert frame_psnr(ref, ref).y == math.inf


def test_bt709_round_trip_on_smooth_colours():
    h, w = 32, 48
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 5, yy * 7, 255 - xx * 5], -1).clip(0, 255).astype(np.uint8)
    frame = rgb_to_yuv420(rgb)
    assert frame.u.shape == (16, 24)
    back = yuv420_to_rgb(frame.y, frame.u, frame.v).astype(int)
    assert np.abs(back - rgb).mean() < 3


def test_bt709_reference_colours():
    white = rgb_to_yuv420(np.full((2, 2, 3), 255, np.uint8))
    assert (white.y[0, 0], white.u[0, 0], white.v[0, 0]) == (235, 128, 128)
    red = rgb_to_yuv420(np.array([[[255, 0, 0]] * 2] * 2, np.uint8))
    # BT.709 limited range red: Y = 16 + 219 * 0.2126, Cr = 128 + 112
    assert (red.y[0, 0], red.v[0, 0]) == (63, 240)
