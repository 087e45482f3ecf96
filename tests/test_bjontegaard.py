import numpy as np
import pytest

from nvc.evaluation.bjontegaard import bd_psnr, bd_rate

# Reference: the example RD data in the README and example_usage.py of FAU-LMS "bjontegaard"
# (C. Herglotz et al.; PyPI bjontegaard 1.3.0), whose PCHIP mode is documented to match the
# JVET/JCT-VC CTC Excel sheet to 10 decimals. Expected values computed with that package,
# method="pchip".
RATE1 = [9487.76, 4593.60, 2486.44, 1358.24]
PSNR1 = [40.037, 38.615, 36.845, 34.851]
RATE2 = [9787.80, 4469.00, 2451.52, 1356.24]
PSNR2 = [40.121, 38.651, 36.970, 34.987]
HIGH_RATE1 = [82472.76, 26875.24, 9487.76, 4593.6]
HIGH_PSNR1 = [43.825, 41.404, 40.037, 38.615]
HIGH_RATE2 = [99896.96, 33952.04, 9787.8, 4469.0]
HIGH_PSNR2 = [44.731, 41.875, 40.121, 38.651]


def test_published_reference_values():
    assert bd_rate(RATE1, PSNR1, RATE2, PSNR2) == pytest.approx(-4.417485350589045, abs=1e-9)
    assert bd_psnr(RATE1, PSNR1, RATE2, PSNR2) == pytest.approx(0.11969278542479489, abs=1e-9)
    assert bd_rate(HIGH_RATE1, HIGH_PSNR1, HIGH_RATE2, HIGH_PSNR2) == pytest.approx(-4.47218200276197, abs=1e-9)
    assert bd_psnr(HIGH_RATE1, HIGH_PSNR1, HIGH_RATE2, HIGH_PSNR2) == pytest.approx(0.08887484704747745, abs=1e-9)


def test_same_curve_is_zero():
    assert bd_rate(RATE1, PSNR1, RATE1, PSNR1) == pytest.approx(0, abs=1e-12)
    assert bd_psnr(RATE1, PSNR1, RATE1, PSNR1) == pytest.approx(0, abs=1e-12)


def test_rate_scaled_by_0_8_is_minus_20_percent():
    assert bd_rate(RATE1, PSNR1, [r * 0.8 for r in RATE1], PSNR1) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate([r * 0.8 for r in RATE1], PSNR1, RATE1, PSNR1) == pytest.approx(25.0, abs=1e-9)


def test_psnr_shift_is_bd_psnr_and_order_does_not_matter():
    shuffled = np.random.default_rng(0).permutation(4)
    r = [RATE1[i] for i in shuffled]
    p = [PSNR1[i] + 0.5 for i in shuffled]
    assert bd_psnr(RATE1, PSNR1, r, p) == pytest.approx(0.5, abs=1e-9)


def test_disjoint_curves_are_refused():
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate(RATE1, PSNR1, RATE1, [p + 10 for p in PSNR1])
