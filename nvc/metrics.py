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
