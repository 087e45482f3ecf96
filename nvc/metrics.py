"""Distortion on the original 8-bit YUV420 planes, as the evaluation protocol defines it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nvc.frames import YUVFrame


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr_from_mse(m: float, peak: float = 255.0) -> float:
    return float("inf") if m == 0 else 10 * math.log10(peak * peak / m)


@dataclass(frozen=True)
class FramePSNR:
    y: float
    u: float
    v: float

    @property
    def yuv(self) -> float:
        """PSNR-YUV = (6 PSNR-Y + PSNR-U + PSNR-V) / 8."""
        return (6 * self.y + self.u + self.v) / 8


def frame_psnr(ref: YUVFrame, test: YUVFrame) -> FramePSNR:
    return FramePSNR(*(psnr_from_mse(mse(a, b)) for a, b in zip(ref.planes(), test.planes())))


def psnr_rgb(ref: YUVFrame, test: YUVFrame) -> float:
    """PSNR over the three channels after BT.709 conversion of both pictures."""
    return psnr_from_mse(mse(ref.to_rgb(), test.to_rgb()))


def ms_ssim_y(ref: YUVFrame, test: YUVFrame) -> float:
    """MS-SSIM (Wang et al., 2003) of the luma plane, five scales, 11-tap Gaussian window; pictures
    too small for that (under 161 pixels a side) get the largest odd window that fits, NaN below 35."""
    import torch
    from pytorch_msssim import ms_ssim

    win = 11
    while win > 3 and min(ref.height, ref.width) <= (win - 1) * 16:
        win -= 2
    if min(ref.height, ref.width) <= (win - 1) * 16:
        return float("nan")
    a, b = (torch.from_numpy(f.y.astype(np.float32))[None, None] for f in (ref, test))
    return float(ms_ssim(a, b, data_range=255, win_size=win))
