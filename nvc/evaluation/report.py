"""summary.md (BD-rate tables and every point) and one RD-curve PNG per sequence."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nvc.evaluation.bjontegaard import bd_psnr, bd_rate
from nvc.evaluation.runner import PointResult, ResultStore


def _bd(anchor: list[PointResult], test: list[PointResult], attr: str = "psnr_yuv") -> tuple[float, float]:
    """(BD-rate %, BD-PSNR dB) of test against anchor; NaN where the curves do not overlap."""
    ra, qa = [p.bpp for p in anchor], [getattr(p, attr) for p in anchor]
    rt, qt = [p.bpp for p in test], [getattr(p, attr) for p in test]
    try:
        rate = bd_rate(ra, qa, rt, qt)
    except ValueError:
        rate = math.nan
    try:
        psnr = bd_psnr(ra, qa, rt, qt)
    except ValueError:
        psnr = math.nan
    return rate, psnr


def _fmt(v: float, unit: str) -> str:
    return "n/a (no overlap)" if math.isnan(v) else f"{v:+.1f} {unit}" if unit == "%" else f"{v:+.2f} {unit}"


def plot(store: ResultStore, sequence: str, codecs: list[str], frames: int, intra_period: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    for codec in codecs:
        curve = store.curve(sequence, codec, frames, intra_period)
        if curve:
            ax.plot([p.bpp for p in curve], [p.psnr_yuv for p in curve], marker="o", label=codec)
    first = store.curve(sequence, codecs[0], frames, intra_period)
    size = f"{first[0].width}x{first[0].height}, " if first else ""
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR-YUV (6:1:1) [dB]")
    ax.set_title(f"{sequence} ({size}{frames} frames, intra period {intra_period})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def gop_profile(per_frame: list[float], intra_period: int) -> list[float]:
    """Mean PSNR by position in the GOP (position 0 is the I-frame), over the GOPs of a sequence."""
    period = intra_period if intra_period > 0 else len(per_frame)
    by_position: dict[int, list[float]] = {}
    for i, v in enumerate(per_frame):
        by_position.setdefault(i % period, []).append(v)
    return [float(np.mean(by_position[k])) for k in sorted(by_position)]


def _point_name(p: PointResult) -> str:
    """q3 for an nvc quality level, QP 32 for an anchor's."""
    return f"q{p.point}" if "quality" in p.settings else f"QP {p.point}"


def gop_drifts(curve: list[PointResult], intra_period: int) -> list[tuple[str, float, float]]:
    """(point name, mean PSNR-YUV, drift) of each point of a curve that has per-frame PSNR and P-frames;
    drift = the last P-frame's mean PSNR-YUV minus the first's, over the GOPs."""
    out = []
    for p in curve:
        prof = gop_profile(p.psnr_yuv_per_frame, intra_period) if p.psnr_yuv_per_frame else []
        if len(prof) > 1:
            out.append((_point_name(p), p.psnr_yuv, prof[-1] - prof[1]))
    return out


def drift_at(drifts: list[tuple[str, float, float]], psnr: float) -> float:
    """A curve's drift interpolated at mean PSNR-YUV `psnr`; NaN outside the curve's PSNR range."""
    by_psnr = sorted((q, d) for _, q, d in drifts)
    if len(by_psnr) < 2 or not by_psnr[0][0] <= psnr <= by_psnr[-1][0]:
        return math.nan
    return float(np.interp(psnr, [q for q, _ in by_psnr], [d for _, d in by_psnr]))


def plot_gop(profiles: dict[str, list[float]], sequence: str, intra_period: int, path: Path) -> None:
    """One line per rate point (label -> its `gop_profile`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    for label, profile in profiles.items():
        ax.plot(range(len(profile)), profile, marker=".", label=label)
    ax.set_xlabel("position in GOP (0 = I-frame)")
    ax.set_ylabel("PSNR-YUV (6:1:1) [dB], mean over GOPs")
    ax.set_title(f"{sequence}: quality over a GOP (intra period {intra_period})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(store: ResultStore, out_dir: Path, sequences: list[str], frames: dict[str, int], test: str,
          anchors: list[str], intra_period: int, command: str) -> str:
    lines = [f"# {test} vs anchors: BD-rate on PSNR-YUV (6:1:1)", "",
             f"Command: `{command}`", "",
             f"Negative BD-rate: {test} needs fewer bits than the anchor for the same PSNR-YUV. Rate is the size "
             "of the real output file (the .nvc file; the anchor's Annex-B elementary stream). Anchors run "
             f"low-delay (no B-frames), constant QP, tune=psnr, intra period {intra_period}.", ""]
    test_curves = {s: store.curve(s, test, frames[s], intra_period) for s in sequences}
    periods = {c[0].settings.get("intra_period") for c in test_curves.values() if c}
    if periods == {1}:
        lines += [f"{test} codes every frame as an I-frame.", ""]
    elif periods:
        lines += [f"{test} codes an I-frame every {intra_period} frames (-1: only the first) and P-frames between.", ""]
    if f"{test}-intra" in anchors:
        lines += [f"{test}-intra is the same model without temporal prediction (every frame an I-frame): "
                  "BD-rate against it is what P-frames save.", ""]
    header = "| sequence | " + " | ".join(f"BD-rate vs {a} | BD-PSNR vs {a}" for a in anchors) + " |"
    lines += [header, "|" + " --- |" * (1 + 2 * len(anchors))]
    sums = {a: [] for a in anchors}
    for s in sequences:
        first = test_curves[s][0] if test_curves[s] else None
        cells = [f"{s} ({first.width}x{first.height}, {first.frames} fr)" if first else s]
        for a in anchors:
            rate, psnr = _bd(store.curve(s, a, frames[s], intra_period), test_curves[s])
            sums[a].append((rate, psnr))
            cells += [_fmt(rate, "%"), _fmt(psnr, "dB")]
        lines.append("| " + " | ".join(cells) + " |")
    avg = ["**average**"]
    for a in anchors:
        rates = [r for r, _ in sums[a] if not math.isnan(r)]
        psnrs = [p for _, p in sums[a] if not math.isnan(p)]
        avg += [_fmt(float(np.mean(rates)) if rates else math.nan, "%"),
                _fmt(float(np.mean(psnrs)) if psnrs else math.nan, "dB")]
    lines += ["| " + " | ".join(avg) + " |", ""]

    for s in sequences:
        png = out_dir / f"rd-{s}.png"
        plot(store, s, [test, *anchors], frames[s], intra_period, png)
        lines += [f"## {s}", "", f"![RD curve]({png.name})", ""]
        gop_curve = [p for p in test_curves[s] if p.psnr_yuv_per_frame]
        if gop_curve and intra_period != 1:
            profiles = [gop_profile(p.psnr_yuv_per_frame, intra_period) for p in gop_curve]
            gop_png = out_dir / f"gop-{s}.png"
            plot_gop({f"q{p.point} ({p.bpp:.3f} bpp)": prof for p, prof in zip(gop_curve, profiles)}, s,
                     intra_period, gop_png)
            positions = len(profiles[0])
            shown = sorted({0, 1, positions // 2, positions - 1})
            anchor_drifts = {a: gop_drifts(store.curve(s, a, frames[s], intra_period), intra_period) for a in anchors}
            anchor_drifts = {a: d for a, d in anchor_drifts.items() if d}
            lines += [f"![PSNR over the GOP]({gop_png.name})", "",
                      f"{test} PSNR-YUV by position in the GOP (mean over GOPs; drift = last P-frame - first "
                      "P-frame; an anchor's drift is interpolated at the same mean PSNR-YUV):", "",
                      "| quality | " + " | ".join(f"pos {k}" for k in shown) + " | drift |"
                      + "".join(f" {a} drift |" for a in anchor_drifts),
                      "|" + " --- |" * (len(shown) + 2 + len(anchor_drifts))]
            for p, prof in zip(gop_curve, profiles):
                drift = f"{prof[-1] - prof[1]:+.2f} dB" if len(prof) > 1 else "n/a"
                same = [_fmt(drift_at(d, p.psnr_yuv), "dB") for d in anchor_drifts.values()]
                lines.append(f"| q{p.point} | " + " | ".join(f"{prof[k]:.2f}" for k in shown) + f" | {drift} |"
                             + "".join(f" {c} |" for c in same))
            for a, d in anchor_drifts.items():
                lines.append("")
                lines.append(f"{a} drift: " + ", ".join(f"{point} {value:+.2f} dB" for point, _, value in d))
            lines.append("")
        lines += ["| codec | point | bpp | PSNR-Y | PSNR-U | PSNR-V | PSNR-YUV | PSNR-RGB | MS-SSIM (Y) | enc fps | dec fps |",
                  "|" + " --- |" * 11]
        for codec in (test, *anchors):
            for p in store.curve(s, codec, frames[s], intra_period):
                lines.append(f"| {codec} | {_point_name(p)} | {p.bpp:.4f} | {p.psnr_y:.2f} | {p.psnr_u:.2f} | "
                             f"{p.psnr_v:.2f} | {p.psnr_yuv:.2f} | {p.psnr_rgb:.2f} | {p.ms_ssim:.4f} | "
                             f"{p.encode_fps:.2f} | {p.decode_fps:.2f} |")
        lines.append("")
    text = "\n".join(lines)
    (out_dir / "summary.md").write_text(text)
    return text
