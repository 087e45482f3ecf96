"""Quick rate-distortion checks of the v2 codec on a few real clips, in-process (JSON + table):

    # the multi-step entropy model against the same model with S = 1 (every symbol from the base prior)
    python -m tools.rd_check --steps-ablation --json results/v2-steps-ablation.json CLIP...
    # the encoder's quality schedule (`nvc.gop.QualitySchedule`) against every frame at one level
    python -m tools.rd_check --frames 32 --schedule-ablation CLIP...
    # small steps in one substream (`nvc.entropy.multistep.SPLIT_MIN_BYTES`) against K always
    python -m tools.rd_check --frames 32 --substream-ablation CLIP...
    # P-frames that may repeat their reference's hyper-latent (`nvc.lean_model.REPEAT_HYPER`) against never
    python -m tools.rd_check --frames 32 --repeat-ablation CLIP...
    # the rANS substreams of container version 6 (trimmed) against those of versions 1-4 (`nvc.entropy.coder.SubstreamForm`)
    python -m tools.rd_check --frames 32 --compact-ablation CLIP...
    # P-frames held within 0.25 dB of their GOP's first (`nvc encode --hold-psnr 0.25`) against the schedule alone
    python -m tools.rd_check --frames 32 --hold-ablation 0.25 CLIP...
    # the block matching's rate weights (`nvc.lean_model.MOTION_LAMBDAS`, one coding of each P-frame per weight) set otherwise
    python -m tools.rd_check CLIP... --frames 32 --motion-lambdas 400 40 4000
    # the weight of a P-frame's distortion in its choices between codings (`nvc.lean_model.DECISION_WEIGHT`)
    python -m tools.rd_check CLIP... --frames 32 --crop 640x352 --decision-weight 3
    # another quality schedule (`nvc.gop.QualitySchedule`: I-frame offset, period, periodic offset)
    python -m tools.rd_check CLIP... --frames 32 --schedule 3 4 2
    # the encoder's rounding weights (`nvc.lean_model.RDO_WEIGHT`, I and P) set otherwise
    python -m tools.rd_check --frames 16 --rdo-weight 4 16 --json results/rdo-4-16.json CLIP...
    # held-out BD-rate against x265 for every training snapshot (does more training help?)
    python -m tools.rd_check --checkpoints runs/v2-snap/*.pt --plot results/v2-progress.png --json ... CLIP...
    # a training snapshot against the shipped weights on the centre 640x352 of 720p clips (4x quicker)
    python -m tools.rd_check --frames 32 --crop 640x352 --checkpoints runs/v5/snap/step1000.pt CLIP...

Each clip's first --frames frames are coded as one GOP (an I-frame, then P-frames) at each quality
level; rate is the size of the .nvc packets the frames become (header included), distortion
PSNR-YUV (6:1:1) on the original YUV420 planes, exactly as `nvc eval` measures. The anchor is
libx265 (low delay, constant QP, tune=psnr, --preset) on the same frames. Also reported: the split
of the bytes into I-frames, P-frames, motion and hyper streams, and the share of latent symbols
that were skipped (predicted scale <= 0.12), and the drift (the last P-frame's PSNR-YUV minus the
first P-frame's, in the first GOP). For the full protocol (96 frames, both presets, RD
plots) use `nvc eval`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from unittest.mock import patch

import numpy as np
import torch

from nvc import lean_model
from nvc.cli import parse_size
from nvc.codec import frame_to_tensor, tensor_to_frame
from nvc.container import END_OF_STREAM, FramePacket, FrameType, StreamHeader
from nvc.entropy import multistep
from nvc.entropy.coder import SubstreamForm, stream_format
from nvc.evaluation.bjontegaard import bd_psnr, bd_rate
from nvc.evaluation.codecs import X265Codec
from nvc.frames import YUVFrame
from nvc.gop import FLAT_QUALITY, PsnrHold, QualitySchedule, frame_type, quality_schedule
from nvc.lean_model import LeanVideoModel
from nvc.metrics import frame_psnr
from nvc.model import load_shipped, update_entropy_tables
from nvc.models.lean import LeanConfig
from nvc.models.registry import entry_by_name
from nvc.video import read_frames
from tools.training import load_model_state

V2 = "lean-mc-yuv420-v2"


def code_clip(model, frames, quality: int, intra_period: int, steps: int | None = None,
              schedule: QualitySchedule = quality_schedule(V2), hold_psnr: float | None = None) -> dict:
    """One RD point: bpp, PSNR-YUV, drift, the byte split and the skipped share of the latent symbols;
    each frame at the level `schedule` (and `hold_psnr`'s `PsnrHold`) gives it, as `nvc.Encoder` codes it."""
    h, w = frames[0].height, frames[0].width
    total = len(StreamHeader(3, bytes(16), w, h, 25, 1, 0, len(frames), intra_period, quality).to_bytes()) + len(END_OF_STREAM)
    split, stats, psnrs, ref = {}, {}, [], None
    levels = model.config.quality_levels
    hold = None if hold_psnr is None else PsnrHold(hold_psnr)
    for i, f in enumerate(frames):
        kind = frame_type(i, intra_period)
        frame_model = model.intra if kind == FrameType.I else model.inter
        level = schedule.level(i, intra_period, quality, levels)
        if hold is not None:
            level = hold.level(level, kind, levels)
        streams, ref = frame_model.compress(frame_to_tensor(f), None if kind == FrameType.I else ref, level,
                                            steps=steps, stats=stats)
        total += len(FramePacket(kind, level, i, tuple(streams)).to_bytes())
        for s in streams:
            key = f"{kind.name}-{s.kind.name.lower()}"
            split[key] = split.get(key, 0) + len(s.data)
        psnrs.append(frame_psnr(f, tensor_to_frame(ref.x_hat, h, w)).yuv)
        if hold is not None:
            hold.observe(kind, psnrs[-1], levels)
    gop = psnrs[:intra_period] if intra_period > 0 else psnrs
    return {"quality": quality, "bpp": total * 8 / (w * h * len(frames)), "psnr_yuv": float(np.mean(psnrs)),
            "drift": gop[-1] - gop[1] if len(gop) > 2 else float("nan"),
            "bytes": total, "split": split, "skipped_share": 1 - stats["coded"] / stats["symbols"]}


def x265_curve(frames, qps: list[int], intra_period: int, preset: str) -> list[dict]:
    codec = X265Codec(preset)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for qp in qps:
            coded = codec.code(frames, Fraction(25), qp, intra_period, Path(tmp) / f"{qp}.hevc")
            size = coded.path.stat().st_size
            psnr = float(np.mean([frame_psnr(a, b).yuv for a, b in zip(frames, coded.decoded)]))
            out.append({"qp": qp, "bpp": size * 8 / (frames[0].width * frames[0].height * len(frames)), "psnr_yuv": psnr})
    return out


def bd(anchor: list[dict], test: list[dict], measure=bd_rate) -> float:
    """BD-rate (or `measure=bd_psnr`) of `test` against `anchor`; NaN where the curves do not overlap."""
    try:
        return measure([p["bpp"] for p in anchor], [p["psnr_yuv"] for p in anchor],
                       [p["bpp"] for p in test], [p["psnr_yuv"] for p in test])
    except ValueError:
        return float("nan")


def model_from_checkpoint(path: Path) -> LeanVideoModel:
    """A training checkpoint's model (the default LeanConfig unless it saved its own), as shipped."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = LeanVideoModel(LeanConfig.from_dict(ckpt["config"]) if "config" in ckpt else LeanConfig())
    load_model_state(model, ckpt["model"])
    with torch.no_grad():  # as shipped: fp16 weights, tables from them
        for p in model.parameters():
            p.copy_(p.half().float())
    update_entropy_tables(model)
    return model.eval()


def centre_crop(frame: YUVFrame, width: int, height: int) -> YUVFrame:
    """The centre width x height of a frame (corner on even pixels, so that chroma is cut with luma)."""
    if width % 2 or height % 2 or width > frame.width or height > frame.height:
        raise SystemExit(f"--crop {width}x{height}: must be even and within the {frame.width}x{frame.height} frames")
    top, left = (frame.height - height) // 2 & ~1, (frame.width - width) // 2 & ~1
    return YUVFrame(np.ascontiguousarray(frame.y[top : top + height, left : left + width]),
                    *(np.ascontiguousarray(p[top // 2 : (top + height) // 2, left // 2 : (left + width) // 2])
                      for p in (frame.u, frame.v)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--crop", type=parse_size, metavar="WxH",
                    help="code the centre WxH of each clip (even; quicker checks on 720p clips)")
    ap.add_argument("--intra-period", type=int, default=32)
    ap.add_argument("--qualities", type=int, nargs="+", default=[0, 2, 4, 6])
    ap.add_argument("--qps", type=int, nargs="+", default=[27, 32, 37, 42, 47], help="x265 QPs")
    ap.add_argument("--preset", default="medium", help="x265 preset of the anchor")
    ap.add_argument("--steps-ablation", action="store_true", help="also code with S = 1 and report the BD-rate gain")
    ap.add_argument("--schedule-ablation", action="store_true",
                    help="also code every frame at the same level (no quality schedule) and report the BD-rate gain")
    ap.add_argument("--substream-ablation", action="store_true",
                    help="also code every step as K substreams (none merged) and report the BD-rate gain")
    ap.add_argument("--repeat-ablation", action="store_true",
                    help="also code with no repeated hyper-latents and report the BD-rate gain of repeating")
    ap.add_argument("--compact-ablation", action="store_true",
                    help="also code with the rANS substreams of container versions 1-4 and report the BD-rate gain")
    ap.add_argument("--hold-ablation", type=float, metavar="DB",
                    help="also code with `nvc encode --hold-psnr DB` and report its BD-rate and drift")
    ap.add_argument("--schedule", type=int, nargs=3, metavar=("INTRA", "PERIOD", "PERIODIC"),
                    help="code with this nvc.gop.QualitySchedule instead of the model's")
    ap.add_argument("--decision-weight", type=float, metavar="W",
                    help="the P-frame decisions' distortion weight (default: nvc.lean_model.DECISION_WEIGHT)")
    ap.add_argument("--motion-lambdas", type=float, nargs="+", metavar="L",
                    help="the block matching's rate weights, one coding each (default: nvc.lean_model.MOTION_LAMBDAS)")
    ap.add_argument("--rdo-weight", type=float, nargs=2, metavar=("I", "P"),
                    help="the encoder's rate-distortion rounding weights (default: nvc.lean_model.RDO_WEIGHT)")
    ap.add_argument("--checkpoints", type=Path, nargs="+", help="training checkpoints to measure (default: shipped)")
    ap.add_argument("--plot", type=Path, help="with --checkpoints: BD-rate vs training step, as PNG")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.decision_weight is not None:
        lean_model.DECISION_WEIGHT = args.decision_weight
    if args.motion_lambdas:
        lean_model.MOTION_LAMBDAS = tuple(args.motion_lambdas)
    if args.rdo_weight:
        lean_model.RDO_WEIGHT = tuple(args.rdo_weight)

    models = {}  # checkpoints labelled by step, and by path too where two share a step
    for c in args.checkpoints or []:
        label = f"step {torch.load(c, map_location='cpu', weights_only=True)['step']}"
        models[label if label not in models else f"{label} ({c})"] = c
    models = models or {V2: None}
    schedule = QualitySchedule(*args.schedule) if args.schedule else quality_schedule(V2)
    clips = {c.stem: [centre_crop(f, *args.crop) if args.crop else f for f in read_frames(c, args.frames)]
             for c in args.clips}
    result = {"frames": args.frames, "intra_period": args.intra_period, "anchor": f"x265-{args.preset}",
              "rdo_weight": list(lean_model.RDO_WEIGHT), "decision_weight": lean_model.DECISION_WEIGHT,
              "motion_lambdas": list(lean_model.MOTION_LAMBDAS), "schedule": asdict(schedule), "clips": {}}
    for name, frames in clips.items():
        anchor = x265_curve(frames, args.qps, args.intra_period, args.preset)
        entry = {"x265": anchor, "models": {}}
        for label, ckpt in models.items():
            model = model_from_checkpoint(ckpt) if ckpt else load_shipped(entry_by_name(V2))[0]
            curve = [code_clip(model, frames, q, args.intra_period, schedule=schedule) for q in args.qualities]
            row = {"curve": curve, "bd_rate_vs_x265": bd(anchor, curve), "bd_psnr_vs_x265": bd(anchor, curve, bd_psnr)}
            if args.steps_ablation:
                single = [code_clip(model, frames, q, args.intra_period, steps=1, schedule=schedule) for q in args.qualities]
                row |= {"curve_one_step": single, "bd_rate_multistep_vs_one_step": bd(single, curve)}
            if args.schedule_ablation:
                flat = [code_clip(model, frames, q, args.intra_period, schedule=FLAT_QUALITY) for q in args.qualities]
                row |= {"curve_flat_quality": flat, "bd_rate_schedule_vs_flat": bd(flat, curve)}
            def coded_within(setting) -> list[dict]:
                """The curve coded with an encoder setting changed for the block (a context manager)."""
                with setting:
                    return [code_clip(model, frames, q, args.intra_period, schedule=schedule) for q in args.qualities]

            if args.substream_ablation:
                split = coded_within(patch.object(multistep, "SPLIT_MIN_BYTES", 0))
                row |= {"curve_k_substreams": split, "bd_rate_one_substream_vs_k": bd(split, curve)}
            if args.repeat_ablation:
                own = coded_within(patch.object(lean_model, "REPEAT_HYPER", False))
                row |= {"curve_no_repeat": own, "bd_rate_repeat_vs_none": bd(own, curve)}
            if args.compact_ablation:
                older = coded_within(stream_format(SubstreamForm.COMPRESSAI))
                row |= {"curve_older_streams": older, "bd_rate_compact_vs_older": bd(older, curve)}
            if args.hold_ablation:
                held = [code_clip(model, frames, q, args.intra_period, schedule=schedule, hold_psnr=args.hold_ablation)
                        for q in args.qualities]
                row |= {"curve_hold": held, "bd_rate_hold_vs_schedule": bd(curve, held)}
            entry["models"][label] = row
            print(f"{name} {label}: BD-rate vs x265-{args.preset} {row['bd_rate_vs_x265']:+.1f} %, "
                  f"BD-PSNR {row['bd_psnr_vs_x265']:+.2f} dB"
                  + (f", multi-step vs S=1 {row['bd_rate_multistep_vs_one_step']:+.1f} %" if args.steps_ablation else "")
                  + (f", quality schedule vs flat {row['bd_rate_schedule_vs_flat']:+.1f} %" if args.schedule_ablation else "")
                  + (f", small steps in one substream vs K {row['bd_rate_one_substream_vs_k']:+.2f} %"
                     if args.substream_ablation else "")
                  + (f", repeated hyper-latents vs none {row['bd_rate_repeat_vs_none']:+.2f} %" if args.repeat_ablation else "")
                  + (f", compact substreams vs older {row['bd_rate_compact_vs_older']:+.2f} %" if args.compact_ablation else "")
                  + (f", PSNR hold vs schedule alone {row['bd_rate_hold_vs_schedule']:+.2f} %" if args.hold_ablation else ""))
            for p in curve:
                print(f"  q{p['quality']}: {p['bpp']:.4f} bpp {p['psnr_yuv']:.2f} dB, drift {p['drift']:+.2f} dB, "
                      f"skipped {p['skipped_share']:.1%}, " + ", ".join(f"{k} {v}" for k, v in sorted(p["split"].items())))
            for p in row.get("curve_hold", []):
                print(f"  q{p['quality']} held: {p['bpp']:.4f} bpp {p['psnr_yuv']:.2f} dB, drift {p['drift']:+.2f} dB")
        result["clips"][name] = entry
    for measure in ("bd_rate_vs_x265", "bd_psnr_vs_x265"):
        for label in models:
            values = [e["models"][label][measure] for e in result["clips"].values()]
            result.setdefault(f"mean_{measure}", {})[label] = float(np.nanmean(values))
        print(f"mean {measure}:", {k: round(v, 2) for k, v in result[f"mean_{measure}"].items()})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot and args.checkpoints:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [int(k.split()[1]) for k in models]
        # BD-rate is undefined (NaN) where the PSNR ranges do not overlap; BD-PSNR beside it (a panel per
        # measure that has a value)
        panels = [(m, u) for m, u in (("bd_rate_vs_x265", "BD-rate [%]"), ("bd_psnr_vs_x265", "BD-PSNR [dB]"))
                  if not np.isnan(list(result[f"mean_{m}"].values())).all()]
        fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.0), dpi=100,
                                 squeeze=False)
        for ax, (measure, unit) in zip(axes[0], panels):
            for name, entry in result["clips"].items():
                ax.plot(steps, [entry["models"][k][measure] for k in models], marker="o", label=name)
            ax.plot(steps, [result[f"mean_{measure}"][k] for k in models], marker="s", color="k", label="mean")
            ax.set_xlabel("training step")
            ax.set_ylabel(f"{unit} vs x265-{args.preset}")
            ax.set_title(f"held-out clips, first {args.frames} frames")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(args.plot)


if __name__ == "__main__":
    main()
