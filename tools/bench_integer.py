"""Rate cost and speed of the integer entropy parameters (`nvc.deploy.integer`) against the float ones.

    python -m tools.bench_integer --clip ../shared/data/heldout/08_driving.mp4 --frames 3 --json out.json
        [--preset default|int8|int16] [--model lean-mc-yuv420-v2] [--qualities 0,1,...] [--crop 256x384]
        [--repeats 3] [--no-timing]

Rate: for every quality level the clip's first `--frames` frames are coded as one I-frame and
P-frames, and every frame's latent y is coded twice from the same y and z_hat: once with the float
parameters (`MultiStepLatentCodec.base_parameters` / `.step_parameters`, what the codec does today)
and once with the integer twin. Each path keeps its own decoded latents (the step context and the
next P-frame's temporal prior); the pixels (motion search, g_a input, the reference frame) are
those of the float path for both, so the two see the same y and the difference is the entropy
parameters alone. Bits of y are counted twice: the real coded size (`nvc.entropy.coder.encode`,
per step and substream, as the codec splits them) and the ideal -log2 of the discretised Gaussian
at the table scale of each coded symbol. Also: the shared z and motion bytes (so the cost can be
read against the whole frame), the latent MSE and the PSNR-YUV of each path's reconstruction
(synthesised from its own y_hat on the shared reference; on the coded, padded frame), and how
many scale indexes equal the float ones or lie within one of them.

Speed: the entropy-parameter path of one frame of the clip at its full size (I: base + 4 steps,
P: warp + base + 2 steps; the float path includes its bucketize of the scales into table indexes),
float vs integer, on one torch thread, best of `--repeats`, in CPU time of the thread (robust to
other processes on the machine; its load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import warnings

import numpy as np
import torch

from nvc.codec import frame_to_tensor
from nvc.deploy.integer import MEAN_FRAC, PRESETS, IntegerEntropyParameters
from nvc.entropy import bottleneck, coder
from nvc.entropy.hyperprior import single_threaded
from nvc.entropy.multistep import step_masks
from nvc.lean_model import luma
from nvc.model import load_shipped, to_8bit
from nvc.models.motion import estimate_motion, warp_latent
from nvc.models.registry import entry_by_name
from nvc.video import read_frames


def ideal_bits(symbols: torch.Tensor, indexes: torch.Tensor, table: torch.Tensor) -> float:
    """-log2 P(symbol) under the discretised zero-mean Gaussian of each symbol's table scale."""
    if symbols.numel() == 0:
        return 0.0
    sigma = table[indexes.long()].double()
    s = symbols.double().abs()
    normal = torch.distributions.Normal(0.0, 1.0)
    p = normal.cdf((0.5 - s) / sigma) - normal.cdf((-0.5 - s) / sigma)
    return float(-torch.log2(p.clamp_min(2.0**-16)).sum())


class LatentPath:
    """One way of deriving the entropy parameters of a latent: 'float' (the codec) or 'int' (twin)."""

    def __init__(self, kind: str, codec, twin=None):
        self.kind, self.codec, self.twin = kind, codec, twin

    def base(self, z_hat, y_ref, mv):
        if self.kind == "float":
            prior = None if mv is None else (warp_latent(y_ref, mv), mv)
            with single_threaded():
                return self.codec.base_parameters(z_hat, prior)
        return self.twin.base(z_hat, None if mv is None else (y_ref, mv))

    def step(self, s, base, y_hat):
        if self.kind == "float":
            with single_threaded():
                means, scales = self.codec.step_parameters(s, base, y_hat)
            return means, coder.scale_indexes(scales, self.codec.y_codec.scale_table)
        means_fixed, indexes = self.twin.step(s, base, y_hat)
        return means_fixed.float() / float(1 << MEAN_FRAC), indexes

    def code(self, y, z_hat, y_ref=None, mv=None) -> tuple[torch.Tensor, dict]:
        """y_hat and the rate of one latent, as `MultiStepLatentCodec.compress` codes it."""
        lc = self.codec
        masks = step_masks(lc.steps, y.size(1), y.size(2), y.size(3))
        table = lc.y_codec.scale_table
        base = self.base(z_hat, y_ref, mv)
        y_hat = torch.zeros_like(y)
        stats = {"bytes": 0, "ideal_bits": 0.0, "coded": 0, "indexes": []}
        for s in range(lc.steps):
            means, indexes = self.step(s, base, y_hat)
            symbols = torch.round(y - means)
            mask = masks[s][None]
            coded = mask & (indexes > 0)
            y_hat = torch.where(mask, torch.where(coded, symbols + means, means), y_hat)
            stats["coded"] += int(coded.sum())
            stats["ideal_bits"] += ideal_bits(symbols[coded], indexes[coded], table)
            plan = lc._plan(lc.steps, *y.shape[1:])[s]  # the step's positions and substreams, as the codec codes them
            sel, sym, idx = (t.flatten()[plan.positions] for t in (coded, symbols, indexes))
            for a, b in plan.spans:
                stats["bytes"] += len(coder.encode(sym[a:b][sel[a:b]].int().numpy(), idx[a:b][sel[a:b]].numpy(),
                                                   lc.tables))
            stats["indexes"].append(indexes[mask])
        stats["indexes"] = torch.cat(stats["indexes"])
        return y_hat, stats


def psnr_yuv(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR-YUV (6 Y + U + V) / 8 of packed YUV420 frames in [0, 1]."""
    d = (x - ref).double().pow(2)
    mses = [float(d[:, :4].mean()), float(d[:, 4].mean()), float(d[:, 5].mean())]
    p = [10 * math.log10(1 / max(m, 1e-12)) for m in mses]
    return (6 * p[0] + p[1] + p[2]) / 8


@torch.no_grad()
def rate_cost(model, frames: list[torch.Tensor], quality: int, twins: dict) -> dict:
    q = torch.tensor([quality])
    totals = {k: {"bytes": 0, "ideal_bits": 0.0, "coded": 0, "latent_sse": 0.0, "psnr": []} for k in ("float", "int")}
    shared = {"z_bytes": 0, "motion_bytes": 0, "symbols": 0}
    agree = {"equal": 0, "within_1": 0, "n": 0}
    ref_x, y_refs = None, {}
    for t, x in enumerate(frames):
        fm = model.intra if t == 0 else model.inter
        lc = fm.latent_codec
        mv, pred = None, None
        if t == 0:
            y = fm.gain.scale(fm.g_a(x), q)
        else:
            mv = estimate_motion(luma(x), luma(ref_x))
            shared["motion_bytes"] += len(fm.motion_coder.encode(mv))
            pred = fm.motion_compensation(ref_x, mv)
            y = fm.gain.scale(fm.g_a(torch.cat([x, pred], 1)), q)
        z_stream, z_hat = bottleneck.encode(lc.z_codec, lc.h_a(y), lc._z_tables)
        shared["z_bytes"] += len(z_stream)
        shared["symbols"] += y.numel()
        results = {}
        for kind in ("float", "int"):
            path = LatentPath(kind, lc, twins[(kind, t > 0)])
            y_hat, st = path.code(y, z_hat, y_refs.get(kind), mv)
            results[kind] = (y_hat, st)
            tot = totals[kind]
            tot["bytes"] += st["bytes"]
            tot["ideal_bits"] += st["ideal_bits"]
            tot["coded"] += st["coded"]
            tot["latent_sse"] += float((y - y_hat).double().pow(2).sum())
            with single_threaded():
                x_hat = to_8bit(fm.g_s(fm.gain.unscale(y_hat, q), pred) if t else fm.g_s(fm.gain.unscale(y_hat, q)))
            tot["psnr"].append(psnr_yuv(x_hat, x))
            if kind == "float":
                next_ref = x_hat
            y_refs[kind] = y_hat
        d = (results["int"][1]["indexes"] - results["float"][1]["indexes"]).abs()
        agree["equal"] += int((d == 0).sum())
        agree["within_1"] += int((d <= 1).sum())
        agree["n"] += d.numel()
        ref_x = next_ref
    out = {"quality": quality, "frames": len(frames), **shared}
    for kind, tot in totals.items():
        out[kind] = {"y_bytes": tot["bytes"], "y_ideal_bits": round(tot["ideal_bits"], 1), "coded": tot["coded"],
                     "latent_mse": tot["latent_sse"] / shared["symbols"], "psnr_yuv": float(np.mean(tot["psnr"]))}
    f, i = out["float"], out["int"]
    frame_bytes = shared["z_bytes"] + shared["motion_bytes"]
    out["y_cost_pct"] = 100.0 * (i["y_bytes"] - f["y_bytes"]) / max(f["y_bytes"], 1)
    out["y_ideal_cost_pct"] = 100.0 * (i["y_ideal_bits"] - f["y_ideal_bits"]) / max(f["y_ideal_bits"], 1e-9)
    out["frame_cost_pct"] = 100.0 * (i["y_bytes"] - f["y_bytes"]) / max(f["y_bytes"] + frame_bytes, 1)
    out["psnr_delta_db"] = i["psnr_yuv"] - f["psnr_yuv"]
    out["index_equal_pct"] = 100.0 * agree["equal"] / max(agree["n"], 1)
    out["index_within_1_pct"] = 100.0 * agree["within_1"] / max(agree["n"], 1)
    return out


def best_time(fn, repeats: int) -> float:
    """Best of `repeats` CPU times of the calling thread (torch on one thread runs there): robust to
    other processes sharing the cores, unlike wall time."""
    best = float("inf")
    fn()
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


@torch.no_grad()
def timing(model, frames: list[torch.Tensor], twins: dict, repeats: int, quality: int = 4) -> dict:
    """ms per frame of the entropy-parameter path, float vs integer, one torch thread."""
    q = torch.tensor([quality])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x0, x1 = frames[0], frames[1]
        out = {"height": int(x0.shape[-2] * 2), "width": int(x0.shape[-1] * 2)}
        y0 = model.intra.gain.scale(model.intra.g_a(x0), q)
        mv = estimate_motion(luma(x1), luma(x0))
        pred = model.inter.motion_compensation(x0, mv)
        y1 = model.inter.gain.scale(model.inter.g_a(torch.cat([x1, pred], 1)), q)
        for name, fm, y, ref in (("i", model.intra, y0, None), ("p", model.inter, y1, y0)):
            lc = fm.latent_codec
            z_hat = bottleneck.encode(lc.z_codec, lc.h_a(y), lc._z_tables)[1]
            m = mv if ref is not None else None
            ref_q = None if ref is None else torch.round(ref * 256) / 256
            for kind in ("float", "int"):
                path = LatentPath(kind, lc, twins[(kind, ref is not None)])
                y_hat = path.code(y, z_hat, ref_q, m)[0]  # the y_hat of each step's context

                def params():
                    base = path.base(z_hat, ref_q, m)
                    for s in range(lc.steps):
                        path.step(s, base, y_hat)

                out[f"{name}_{kind}_ms"] = 1000 * best_time(params, repeats)
    finally:
        torch.set_num_threads(before)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", required=True)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default="lean-mc-yuv420-v2")
    ap.add_argument("--qualities", default=None, help="comma-separated levels (default: all)")
    ap.add_argument("--crop", default=None, help="HxW, multiples of 64: code the top-left crop (faster)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the rate part")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS),
                    help="bit widths (nvc.deploy.integer.PRESETS)")
    args = ap.parse_args(argv)
    config = PRESETS[args.preset]
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load_shipped(entry_by_name(args.model))
    model.eval()
    frames = [frame_to_tensor(f) for f in read_frames(args.clip, max(args.frames, 2))]
    full = frames
    if args.crop:
        h, w = (int(v) for v in args.crop.lower().split("x"))
        frames = [f[..., : h // 2, : w // 2].contiguous() for f in frames]
    frames = frames[: args.frames]
    twins = {("float", False): None, ("float", True): None,
             ("int", False): IntegerEntropyParameters.from_codec(model.intra.latent_codec, config),
             ("int", True): IntegerEntropyParameters.from_codec(model.inter.latent_codec, config)}
    levels = (range(model.config.quality_levels) if args.qualities is None
              else [int(v) for v in args.qualities.split(",")])
    report = {"clip": os.path.basename(args.clip), "model": args.model, "preset": args.preset, "frames": len(frames),
              "coded_size": [int(frames[0].shape[-2] * 2), int(frames[0].shape[-1] * 2)],
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "load_average": os.getloadavg(), "levels": []}
    print(f"{report['clip']}: {len(frames)} frames at {report['coded_size'][1]}x{report['coded_size'][0]} (coded size)")
    print(" q | y bytes float -> int | y cost % | ideal % | frame cost % | PSNR f / int (dB) | idx equal % "
          "| within 1 %")
    for quality in levels:
        r = rate_cost(model, frames, quality, twins)
        report["levels"].append(r)
        print(f"{quality:2d} | {r['float']['y_bytes']:9d} -> {r['int']['y_bytes']:9d} | {r['y_cost_pct']:+7.3f} | "
              f"{r['y_ideal_cost_pct']:+7.3f} | {r['frame_cost_pct']:+7.3f} | {r['float']['psnr_yuv']:.3f} / "
              f"{r['int']['psnr_yuv']:.3f} | {r['index_equal_pct']:6.2f} | {r['index_within_1_pct']:7.3f}")
    f_bytes = sum(r["float"]["y_bytes"] for r in report["levels"])
    i_bytes = sum(r["int"]["y_bytes"] for r in report["levels"])
    report["y_cost_pct_all"] = 100.0 * (i_bytes - f_bytes) / max(f_bytes, 1)
    report["y_cost_pct_max"] = max(r["y_cost_pct"] for r in report["levels"])
    print(f"all levels: y cost {report['y_cost_pct_all']:+.3f} %, worst level {report['y_cost_pct_max']:+.3f} %")
    if not args.no_timing:
        t = timing(model, full, twins, args.repeats)
        report["timing"] = t
        print(f"entropy parameters at {t['width']}x{t['height']}, 1 thread (ms/frame): "
              f"I float {t['i_float_ms']:.1f} int {t['i_int_ms']:.1f} | "
              f"P float {t['p_float_ms']:.1f} int {t['p_int_ms']:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
