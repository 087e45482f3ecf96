"""Bjøntegaard delta rate and PSNR (G. Bjøntegaard, VCEG-M33, 2001) with piecewise cubic Hermite
interpolation (PCHIP), as in the JCT-VC/JVET common-test-conditions spreadsheet (JCTVC-L1100).

Rate is interpolated as log(rate) over quality (BD-rate) or quality over log(rate) (BD-PSNR); the
difference of the integrals over the overlapping interval, divided by its width, is the average gap.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


def _mean_over(x: Sequence[float], y: Sequence[float], lo: float, hi: float) -> float:
    """Mean of the PCHIP interpolant of y(x) over [lo, hi]."""
    order = np.argsort(x)
    xs, ys = np.asarray(x, float)[order], np.asarray(y, float)[order]
    if len(np.unique(xs)) != len(xs):
        raise ValueError("an RD curve has two points at the same abscissa")
    return float(PchipInterpolator(xs, ys).integrate(lo, hi) / (hi - lo))


def _overlap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    lo, hi = max(min(a), min(b)), min(max(a), max(b))
    if hi <= lo:
        raise ValueError("the RD curves do not overlap")
    return lo, hi


def _check(rate: Sequence[float], quality: Sequence[float]) -> None:
    if len(rate) != len(quality) or len(rate) < 2:
        raise ValueError("an RD curve needs at least 2 (rate, quality) points")
    if min(rate) <= 0:
        raise ValueError("rates must be positive")


def bd_rate(rate_anchor, quality_anchor, rate_test, quality_test) -> float:
    """Average rate difference of test vs anchor at equal quality, in percent (negative: test saves)."""
    _check(rate_anchor, quality_anchor)
    _check(rate_test, quality_test)
    lo, hi = _overlap(quality_anchor, quality_test)
    log_a = _mean_over(quality_anchor, np.log(rate_anchor), lo, hi)
    log_t = _mean_over(quality_test, np.log(rate_test), lo, hi)
    return (math.exp(log_t - log_a) - 1) * 100


def bd_psnr(rate_anchor, quality_anchor, rate_test, quality_test) -> float:
    """Average quality difference of test vs anchor at equal rate, in dB (positive: test is better)."""
    _check(rate_anchor, quality_anchor)
    _check(rate_test, quality_test)
    la, lt = np.log(rate_anchor), np.log(rate_test)
    lo, hi = _overlap(la, lt)
    return _mean_over(lt, quality_test, lo, hi) - _mean_over(la, quality_anchor, lo, hi)
