"""`nvc eval` end to end on a few real frames, resume, and the anchor QP sweep."""

import json
import math
from dataclasses import replace

import pytest

from nvc.cli import main
from nvc.evaluation import runner
from nvc.evaluation.codecs import X264Codec, X265Codec


def point(qp: int, bpp: float, psnr: float = 30.0) -> runner.PointResult:
    return runner.PointResult("s", "x265-medium", qp, {}, 2, 64, 64, 32, 1, bpp, *(psnr,) * 6, 1.0, 1.0)


def test_anchor_sweep_extends_until_it_covers_the_target_rates():
    target = [point(q, b) for q, b in ((0, 0.02), (5, 0.9))]
    assert runner.anchor_points([], target) == [22, 27, 32, 37]
    done = [point(q, b) for q, b in ((22, 0.3), (27, 0.2), (32, 0.1), (37, 0.05))]
    assert runner.anchor_points(done, target) == [17, 42]
    done += [point(17, 1.2), point(42, 0.01)]
    assert runner.anchor_points(done, target) == []


def test_anchor_sweep_also_covers_the_target_quality_range_up_to_qp_51():
    target = [point(0, 0.1, 25.0), point(5, 0.5, 31.0)]
    done = [point(q, b, p) for q, b, p in ((22, 0.6, 40.0), (27, 0.4, 38.0), (32, 0.2, 36.0), (37, 0.1, 34.0))]
    assert runner.anchor_points(done, target) == [42]  # rates covered, but not PSNR 25..34
    done += [point(42, 0.05, 32.0), point(47, 0.03, 30.0)]
    assert runner.anchor_points(done, target) == [51]  # the last step stops at the end of the QP range
    done += [point(51, 0.02, 28.0)]
    assert runner.anchor_points(done, target) == []  # QP 51 is the end even if PSNR 25 is not reached


def test_anchor_settings_are_low_delay_with_the_intra_period():
    s = X265Codec("veryslow").settings(32, 32)
    assert s["preset"] == "veryslow" and s["tune"] == "psnr"
    assert "bframes=0" in s["x265-params"] and "keyint=32" in s["x265-params"] and "qp=32" in s["x265-params"]
    assert "keyint=infinite" in X264Codec().settings(30, -1)["x264-params"]


def test_eval_end_to_end_and_resume(tmp_path, carphone, capsys, monkeypatch):
    out = tmp_path / "report"
    args = ["eval", str(carphone), "--frames", "4", "--intra-period", "2", "--qualities", "0", "5", "--anchor-qps",
            "30", "40", "--preset", "ultrafast", "--nvc-intra", "--nvc-model", "lean-mc-yuv420-v2",
            "--compare-model", "tcm-yuv420-v1", "--compare-qualities", "0", "3", "-o", str(out), "-q"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "BD-PSNR vs x265-ultrafast" in printed and "BD-rate vs lean-mc-yuv420-v2-intra" in printed
    assert "BD-rate vs tcm-yuv420-v1" in printed
    data = json.loads((out / "results.json").read_text())
    points = {(p["codec"].replace("lean-mc-yuv420-v2", "nvc"), p["point"]): p for p in data["points"]}  # the model under test
    assert set(points) == {("nvc", 0), ("nvc", 5), ("nvc-intra", 0), ("nvc-intra", 5), ("x265-ultrafast", 30),
                           ("x265-ultrafast", 40), ("tcm-yuv420-v1", 0), ("tcm-yuv420-v1", 3)}
    assert points[("nvc", 0)]["stream_bytes"]["P-motion"] > 0
    x265 = points[("x265-ultrafast", 30)]
    assert x265["settings"]["preset"] == "ultrafast" and "bframes=0" in x265["settings"]["x265-params"]
    assert "keyint=2" in x265["settings"]["x265-params"]
    assert x265["frames"] == 4 and x265["bytes"] * 8 / (176 * 144 * 4) == pytest.approx(x265["bpp"])
    assert points[("nvc", 0)]["settings"]["intra_period"] == 2
    assert points[("nvc-intra", 0)]["settings"]["intra_period"] == 1
    assert len(points[("nvc", 5)]["psnr_yuv_per_frame"]) == 4
    assert points[("nvc", 5)]["bpp"] > points[("nvc", 0)]["bpp"]
    assert points[("x265-ultrafast", 30)]["psnr_yuv"] > points[("x265-ultrafast", 40)]["psnr_yuv"]
    assert (out / "rd-carphone_pristine.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "| lean-mc-yuv420-v2 | q5 |" in summary and "| lean-mc-yuv420-v2-intra | q5 |" in summary
    assert "| q5 | " in summary  # GOP table
    assert (out / "gop-carphone_pristine.png").exists()

    def must_not_run(*a, **k):
        raise AssertionError("a finished point was measured again")

    monkeypatch.setattr(runner, "measure", must_not_run)
    assert main(args) == 0  # resumed: every point comes from results.json
    assert not list(out.glob(".work-*"))


def test_gop_profile_averages_each_position_over_the_gops():
    from nvc.evaluation.report import gop_profile

    assert gop_profile([30, 29, 28, 31, 30, 29, 32], 3) == pytest.approx([31, 29.5, 28.5])


def test_anchor_drift_is_read_at_the_test_points_psnr():
    """The GOP table's anchor column: each anchor point's drift (last P - first P over the GOPs),
    interpolated at the test point's mean PSNR-YUV, NaN outside the anchor's PSNR range."""
    from nvc.evaluation.report import drift_at, gop_drifts

    def anchor(qp: int, per_frame: list[float]) -> runner.PointResult:
        return replace(point(qp, 0.01, sum(per_frame) / len(per_frame)), psnr_yuv_per_frame=per_frame)

    # two GOPs of 3 frames: drift = frame 2 - frame 1, averaged over the GOPs
    drifts = gop_drifts([anchor(42, [34, 32, 31, 34, 32, 30]), anchor(32, [40, 39, 39, 40, 39, 39])], 3)
    assert [(name, d) for name, _, d in drifts] == [("QP 42", pytest.approx(-1.5)), ("QP 32", pytest.approx(0.0))]
    low, high = drifts[0][1], drifts[1][1]
    assert drift_at(drifts, (low + high) / 2) == pytest.approx(-0.75)
    assert math.isnan(drift_at(drifts, high + 1))
    assert gop_drifts([anchor(32, [40, 39, 39])], 1) == []  # all I-frames: no drift


def test_eval_rejects_bad_arguments(tmp_path, carphone, capsys):
    assert main(["eval", str(carphone), "--qualities", "9", "-o", str(tmp_path / "r")]) == 1
    assert "--qualities must be in 0..7 for lean-mc-yuv420-v2" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope"), "-o", str(tmp_path / "r")]) == 1


def test_rd_check_crops_the_centre_with_chroma():
    """`tools.rd_check --crop WxH`: the centre of every plane, the corner on even luma pixels."""
    import numpy as np

    from nvc.frames import YUVFrame
    from tools.rd_check import centre_crop

    y = np.arange(10 * 12, dtype=np.uint8).reshape(10, 12)
    u, v = y[::2, ::2].copy(), y[1::2, 1::2].copy()
    out = centre_crop(YUVFrame(y, u, v), 6, 4)
    assert np.array_equal(out.y, y[2:6, 2:8])  # top (10-4)//2 = 3 -> 2, left (12-6)//2 = 3 -> 2
    assert np.array_equal(out.u, u[1:3, 1:4]) and np.array_equal(out.v, v[1:3, 1:4])
    with pytest.raises(SystemExit):
        centre_crop(YUVFrame(y, u, v), 5, 4)
