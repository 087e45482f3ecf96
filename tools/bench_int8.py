"""int8 synthesis of the v2 model: speed per engine and PSNR loss per quality level (JSON + table).

    python -m tools.bench_int8 --clip ../shared/data/heldout/08_driving.mp4 --frames 8 --json out.json

Builds the int8 engines first if the model's weights have none cached (calibration on the training
clips, `nvc.deploy.int8`), so rerunning it after the weights change is this one command.

Speed (`--skip-speed` to leave out): ms per frame of I and P synthesis at the clip's size (720p:
1280x768 padded), on real inputs (the latent and motion of the clip's first frames), `--threads`
threads (default 1): the frame model's whole `synthesize` (gain, warp for P, g_s, rounding to 8 bits)
and g_s alone, for torch fp32 (the reference), torch bf16 (channels_last, autocast) and each int8
engine; median of `--reps` runs after warm-up. For a clean timing stop other CPU work meanwhile.
Also whether each int8 engine gives the same output on 1 and 2 threads.

Quality (`--skip-quality` to leave out): per quality level, a GOP of `--frames` frames (one I-frame,
then P-frames) is encoded with the fp32 model; the same streams are decoded by the fp32 synthesis
and by each int8 engine, each with its own reference chain (as a real int8 decoder would), and
PSNR-YUV against the source is reported for both, with the difference (int8 - fp32) averaged over
the GOP, at its first and its last frame (the drift), and PSNR of int8 vs fp32 reconstructions.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from nvc.codec import frame_to_tensor, tensor_to_frame
from nvc.deploy.int8 import INT8_ENGINES, FastMotionCompensation, QuantConfig, build, synthesis_backend, weights_digest, \
    with_synthesis
from nvc.entropy.hyperprior import single_threaded
from nvc.metrics import frame_psnr, psnr_from_mse
from nvc.model import DecodedLatent, to_8bit
from nvc.model import load_shipped, load_weights
from nvc.models.registry import entry_by_name
from nvc.video import read_frames

V2 = "lean-mc-yuv420-v2"


def _timed(fn, reps: int) -> dict:
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median": round(statistics.median(times), 2), "min": round(min(times), 2)}


def _packed_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR-YUV of two packed reconstructions (padding included), in 8-bit steps."""
    ya, yb = a[:, :4] * 255, b[:, :4] * 255
    ua, ub, va, vb = a[:, 4] * 255, b[:, 4] * 255, a[:, 5] * 255, b[:, 5] * 255
    p = [psnr_from_mse(float(((s - t) ** 2).double().mean())) for s, t in ((ya, yb), (ua, ub), (va, vb))]
    return (6 * p[0] + p[1] + p[2]) / 8


def encode_gop(model, frames: list[torch.Tensor], quality: int) -> list[DecodedLatent]:
    """Encode with the fp32 model; returns each frame's decoded latent (what the decoder synthesises)."""
    h, w = frames[0].shape[-2] * 2, frames[0].shape[-1] * 2
    latents, ref, latent_ref = [], None, None
    for i, x in enumerate(frames):
        fm = model.intra if i == 0 else model.inter
        streams, ref_next = fm.compress(x, ref, quality)
        latent = fm.decode_latent(streams, latent_ref, h, w)
        assert torch.equal(latent.y_hat, ref_next.y_hat), "entropy decoding differs from the encoder"
        latents.append(latent)
        ref, latent_ref = ref_next, ref_next
    return latents


def decode_gop(model, latents: list[DecodedLatent], quality: int) -> list[torch.Tensor]:
    out, ref = [], None
    for i, latent in enumerate(latents):
        ref = (model.intra if i == 0 else model.inter).synthesize(latent, ref, quality)
        out.append(ref.x_hat)
    return out


def quality_table(model, twins: dict, source, frames: list[torch.Tensor], qualities, log) -> dict:
    height, width = source[0].height, source[0].width
    out = {}
    for q in qualities:
        t0 = time.perf_counter()
        latents = encode_gop(model, frames, q)
        ref = decode_gop(model, latents, q)
        ref_psnr = [frame_psnr(s, tensor_to_frame(x, height, width)).yuv for s, x in zip(source, ref)]
        row = {"psnr_yuv_fp32": round(statistics.mean(ref_psnr), 4), "psnr_yuv_fp32_frames": [round(p, 4) for p in ref_psnr]}
        for name, twin in twins.items():
            dec = decode_gop(twin, latents, q)
            psnr = [frame_psnr(s, tensor_to_frame(x, height, width)).yuv for s, x in zip(source, dec)]
            delta = [a - b for a, b in zip(psnr, ref_psnr)]
            row[name] = {
                "psnr_yuv": round(statistics.mean(psnr), 4),
                "delta_db": round(statistics.mean(psnr) - statistics.mean(ref_psnr), 4),
                "delta_db_frames": [round(d, 4) for d in delta],
                "drift_db": round(delta[-1] - delta[0], 4),  # loss added along the GOP by P-frames
                "psnr_vs_fp32_frames": [round(_packed_psnr(a, b), 2) for a, b in zip(dec, ref)],
            }
        out[q] = row
        log(f"  quality {q}: fp32 {row['psnr_yuv_fp32']:.3f} dB; "
            + "; ".join(f"{n} {row[n]['delta_db']:+.4f} dB (drift {row[n]['drift_db']:+.4f})" for n in twins)
            + f"  [{time.perf_counter() - t0:.0f} s]")
    return out


def speed_table(model, engines: list[str], frames: list[torch.Tensor], threads: int, reps: int, config, log) -> dict:
    """ms per frame of I and P synthesis, on the latents of the clip's first two frames (quality 4)."""
    latents = encode_gop(model, frames[:2], 4)
    ref = model.intra.synthesize(latents[0], None, 4)
    q = torch.tensor([4])
    y_i = model.intra.gain.unscale(latents[0].y_hat, q)
    y_p = model.inter.gain.unscale(latents[1].y_hat, q)
    with single_threaded():
        pred = model.inter.motion_compensation(ref.x_hat, latents[1].mv)
    torch.set_num_threads(threads)
    fast = FastMotionCompensation()
    with torch.no_grad():
        out = {"warp_ms": _timed(lambda: model.inter.motion_compensation(ref.x_hat, latents[1].mv), reps),
               "warp_fast_ms": _timed(lambda: fast(ref.x_hat, latents[1].mv), reps)}
    for engine in engines:
        backend = synthesis_backend(model, engine, threads, config)
        twin = with_synthesis(model, engine, threads, config) if engine != "torch" else model
        with torch.no_grad():
            row = {
                "I_ms": _timed(lambda: twin.intra.synthesize(latents[0], None, 4), reps),
                "P_ms": _timed(lambda: twin.inter.synthesize(latents[1], ref, 4), reps),
                "I_g_s_ms": _timed(lambda: backend.intra(y_i), reps),
                "P_g_s_ms": _timed(lambda: backend.inter(y_p, pred), reps),
            }
        if engine in INT8_ENGINES:  # determinism: same input twice, and 1 vs 2 threads
            a, b = backend.inter(y_p, pred), backend.inter(y_p, pred)
            other = synthesis_backend(model, engine, 2 if threads == 1 else 1, config)
            c = other.inter(y_p, pred)
            row["same_output_twice"] = bool(torch.equal(a, b))
            row["threads_1_vs_2_values_differing"] = int((a != c).sum())
            row["threads_1_vs_2_8bit_values_differing"] = int((to_8bit(a.clone()) != to_8bit(c.clone())).sum())
            ai, ci = backend.intra(y_i), other.intra(y_i)
            row["threads_1_vs_2_values_differing"] += int((ai != ci).sum())
            row["threads_1_vs_2_8bit_values_differing"] += int((to_8bit(ai.clone()) != to_8bit(ci.clone())).sum())
        out[engine] = row
        log(f"  {engine:12s} I {row['I_ms']['median']:7.1f} ms (g_s {row['I_g_s_ms']['median']:6.1f})   "
            f"P {row['P_ms']['median']:7.1f} ms (g_s {row['P_g_s_ms']['median']:6.1f})")
    return out


def print_tables(result: dict) -> None:
    if "speed" in result:
        s = result["speed"]
        print(f"\nsynthesis at {result['padded_size']}, {result['threads']} thread(s), ms per frame (median; "
              f"g_s alone in brackets)")
        print(f"P warp, torch fp32: reference (models.motion) {s['warp_ms']['median']:.1f} ms, "
              f"FastMotionCompensation (used with the engines) {s['warp_fast_ms']['median']:.1f} ms")
        print(f"{'engine':12s} {'I':>16s} {'P':>16s}  determinism")
        for e, row in s.items():
            if e.startswith("warp"):
                continue
            det = ""
            if "same_output_twice" in row:
                det = (f"same twice: {row['same_output_twice']}; 1 vs 2 threads: "
                       f"{row['threads_1_vs_2_values_differing']} values differ "
                       f"({row['threads_1_vs_2_8bit_values_differing']} after rounding to 8 bits)")
            print(f"{e:12s} {row['I_ms']['median']:7.1f} ({row['I_g_s_ms']['median']:6.1f}) "
                  f"{row['P_ms']['median']:7.1f} ({row['P_g_s_ms']['median']:6.1f})  {det}")
    if "quality" in result:
        engines = [e for e in next(iter(result["quality"].values())) if not e.startswith("psnr")]
        print(f"\nPSNR-YUV over a {result['frames']}-frame GOP (I + P), same streams, dB; "
              "delta = int8 - fp32 (mean over the GOP), drift = delta(last frame) - delta(I-frame)")
        print(f"{'q':>2s} {'fp32':>8s} " + " ".join(f"{e + ' delta':>18s} {'drift':>8s} {'vs fp32':>8s}" for e in engines))
        for q, row in result["quality"].items():
            cells = " ".join(f"{row[e]['delta_db']:+18.4f} {row[e]['drift_db']:+8.4f} "
                             f"{min(row[e]['psnr_vs_fp32_frames']):8.2f}" for e in engines)
            print(f"{q:>2} {row['psnr_yuv_fp32']:8.3f} {cells}")
        print("(vs fp32: the lowest PSNR of an int8 reconstruction against the fp32 one over the GOP)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, required=True, help="a real clip (a held-out clip may be measured)")
    ap.add_argument("--model", default=V2, help="a shipped model's name")
    ap.add_argument("--weights", type=Path, help="a weights file instead of the shipped one (e.g. a snapshot)")
    ap.add_argument("--frames", type=int, default=8, help="GOP length for the PSNR part")
    ap.add_argument("--qualities", type=int, nargs="+", default=None, help="default: all levels")
    ap.add_argument("--engines", nargs="+", default=list(INT8_ENGINES), choices=INT8_ENGINES, help="int8 engines")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--calibrate", default=QuantConfig.calibrate, choices=("minmax", "percentile", "entropy"))
    ap.add_argument("--float-convs", nargs="*", default=list(QuantConfig.float_convs),
                    help="g_s convs kept in float, e.g. up16.0 out")
    ap.add_argument("--activations", default=QuantConfig.activations, choices=("u8", "s8"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    config = QuantConfig(calibrate=args.calibrate, float_convs=tuple(args.float_convs), activations=args.activations)
    torch.set_num_threads(args.threads)
    model = load_weights(args.weights) if args.weights else load_shipped(entry_by_name(args.model))[0]
    model.eval()
    t0 = time.perf_counter()
    paths = build(model, config, log=log)
    source = read_frames(args.clip, max(args.frames, 2))
    frames = [frame_to_tensor(f) for f in source]
    result = {
        "model": str(args.weights or args.model), "weights_digest": weights_digest(model), "recipe": config.key(),
        "engines_dir": str(paths["intra"].parent), "build_or_load_s": round(time.perf_counter() - t0, 1),
        "clip": str(args.clip), "size": f"{source[0].width}x{source[0].height}",
        "padded_size": f"{frames[0].shape[-1] * 2}x{frames[0].shape[-2] * 2}", "frames": len(frames),
        "threads": args.threads, "cpu": platform.processor() or platform.machine(),
    }
    import onnxruntime
    import openvino

    result["versions"] = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                          "openvino": openvino.__version__}
    if not args.skip_speed:
        log(f"speed at {result['padded_size']}, {args.threads} thread(s):")
        result["speed"] = speed_table(model, ["torch", "torch-bf16"] + args.engines, frames, args.threads,
                                      args.reps, config, log)
    if not args.skip_quality:
        log(f"PSNR over {len(frames)} frames per quality level:")
        twins = {e: with_synthesis(model, e, args.threads, config) for e in args.engines}
        qualities = args.qualities if args.qualities is not None else range(model.config.quality_levels)
        result["quality"] = quality_table(model, twins, source, frames, qualities, log)
    print_tables(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
