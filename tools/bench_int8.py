"""int8 synthesis of the v2 model: speed per engine and PSNR loss per quality level (JSON + tables).

    python -m tools.bench_int8 --clip ../shared/data/heldout/08_driving.mp4 --frames 8 --json out.json
    python -m tools.bench_int8 --clip ../shared/data/heldout/*.mp4 --skip-speed    # every held-out clip

Builds the int8 graphs first if the model's weights have none cached (calibration on the training
clips, `nvc.deploy.int8`), so rerunning it after the weights change is this one command.

Speed (`--skip-speed` to leave out), on the first clip: ms per frame of I and P synthesis at the
clip's coded size (720p: 1280x768), on real inputs (the latent and motion of its first two frames
at quality 4), on `--threads` threads (default 1): the frame model's whole `synthesize` (gain, warp
for P, g_s, rounding to 8 bits) and g_s alone, for torch fp32 (the reference), torch bf16
(channels_last, autocast) and each int8 engine; median of `--reps` runs after two warm-up runs.
Stop other CPU work meanwhile for a clean timing. Also: does each int8 engine give the same bytes
twice, and on 1 and 2 threads?

Decoding (`--decode`): the clip's first `--frames` frames are encoded through `nvc.Encoder` with
each `--decode-engines` engine (the stream names it; quality `--decode-quality`, one GOP), then
decoded by `nvc.open` serial and pipelined; per stage ms per frame from `FrameDecoder.timings`
(entropy = entropy parameters + symbols, synthesis, output = crop to YUVFrame, entropy_wait =
what the pipeline did not hide) and end-to-end fps (demux included, model load excluded).

Quality (`--skip-quality` to leave out): per clip and quality level, a GOP of `--frames` frames
(one I-frame, then P-frames) is encoded with the fp32 model; the same streams are decoded by the
fp32 synthesis and by each int8 engine, each along its own reference chain (as a real int8 decoder
would), and PSNR-YUV against the source is reported for both: the difference (int8 - fp32) over
the GOP, its drift (last frame - I-frame) and the PSNR of int8 against fp32 reconstructions. This
is the open loop, the worst case: the decoder's references drift from the encoder's. With
`--closed-loop` the GOP is also encoded with each engine, as deployed (the encoder runs the
decoder's synthesis, so nothing drifts): PSNR and size against the fp32 encoding. The last table
checks the issue's bound: |int8 - fp32| (open loop) <= `--bound` dB at every level on every clip.
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
from nvc.deploy.int8 import (INT8_ENGINES, FastMotionCompensation, block_output, QuantConfig, build, synthesis_backend,
                             weights_digest, with_synthesis)
from nvc.entropy.hyperprior import single_threaded
from nvc.metrics import frame_psnr, psnr_from_mse
from nvc.model import DecodedLatent, load_shipped, load_weights, to_8bit
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
    """PSNR-YUV of two packed reconstructions (padding included)."""
    planes = ((a[:, :4], b[:, :4]), (a[:, 4], b[:, 4]), (a[:, 5], b[:, 5]))
    p = [psnr_from_mse(float(((s - t).double() * 255).pow(2).mean())) for s, t in planes]
    return (6 * p[0] + p[1] + p[2]) / 8


def encode_gop(model, frames: list[torch.Tensor], quality: int, stats: dict | None = None) -> list[DecodedLatent]:
    """Encode with `model`; each frame's decoded latent (what a decoder synthesises). `stats`
    receives the encoder's reconstructions ("x_hat") and the bytes of the streams ("bytes")."""
    h, w = frames[0].shape[-2] * 2, frames[0].shape[-1] * 2
    latents, ref = [], None
    for i, x in enumerate(frames):
        fm = model.intra if i == 0 else model.inter
        streams, rec = fm.compress(x, ref, quality)
        latent = fm.decode_latent(streams, ref, h, w)
        assert torch.equal(latent.y_hat, rec.y_hat), "entropy decoding differs from the encoder"
        latents.append(latent)
        if stats is not None:
            stats.setdefault("x_hat", []).append(rec.x_hat)
            stats["bytes"] = stats.get("bytes", 0) + sum(len(s.data) for s in streams)
        ref = rec
    return latents


def decode_gop(model, latents: list[DecodedLatent], quality: int) -> list[torch.Tensor]:
    out, ref = [], None
    for i, latent in enumerate(latents):
        ref = (model.intra if i == 0 else model.inter).synthesize(latent, ref, quality)
        out.append(ref.x_hat)
    return out


def quality_table(model, twins: dict, source, qualities, closed_loop: bool, log) -> dict:
    frames = [frame_to_tensor(f) for f in source]
    height, width = source[0].height, source[0].width

    def psnr(xs):
        return [frame_psnr(s, tensor_to_frame(x, height, width)).yuv for s, x in zip(source, xs)]

    out = {}
    for q in qualities:
        t0 = time.perf_counter()
        fp32 = {}
        latents = encode_gop(model, frames, q, fp32)
        ref = decode_gop(model, latents, q)
        ref_psnr = psnr(ref)
        row = {"psnr_yuv_fp32": round(statistics.mean(ref_psnr), 4), "bytes_fp32": fp32["bytes"],
               "psnr_yuv_fp32_frames": [round(p, 4) for p in ref_psnr]}
        for name, twin in twins.items():
            dec = decode_gop(twin, latents, q)
            delta = [a - b for a, b in zip(psnr(dec), ref_psnr)]
            row[name] = {
                "delta_db": round(statistics.mean(delta), 4),
                "delta_db_frames": [round(d, 4) for d in delta],
                "drift_db": round(delta[-1] - delta[0], 4),  # what the P-frames' chain adds to the I-frame's
                "psnr_vs_fp32_frames": [round(_packed_psnr(a, b), 2) for a, b in zip(dec, ref)],
            }
            if closed_loop:  # deployed: the encoder runs the engine too (its reconstructions = the decoder's)
                own = {}
                encode_gop(twin, frames, q, own)
                row[name]["closed_loop_delta_db"] = round(statistics.mean(psnr(own["x_hat"])) - row["psnr_yuv_fp32"], 4)
                row[name]["closed_loop_bytes_pct"] = round(100 * (own["bytes"] / fp32["bytes"] - 1), 3)
        out[str(q)] = row
        log(f"  quality {q}: fp32 {row['psnr_yuv_fp32']:.3f} dB; "
            + "; ".join(f"{n} {row[n]['delta_db']:+.4f} dB (drift {row[n]['drift_db']:+.4f})" for n in twins)
            + f"  [{time.perf_counter() - t0:.0f} s]")
    return out


def speed_table(model, engines: list[str], source, threads: int, reps: int, config, log) -> dict:
    frames = [frame_to_tensor(f) for f in source[:2]]
    latents = encode_gop(model, frames, 4)
    ref = model.intra.synthesize(latents[0], None, 4)
    q = torch.tensor([4])
    y_i = model.intra.gain.unscale(latents[0].y_hat, q)
    y_p = model.inter.gain.unscale(latents[1].y_hat, q)
    with single_threaded():
        pred = model.inter.motion_compensation(ref.x_hat, latents[1].mv)
    block_i, block_p = (block_output(m.g_s, y) if m.g_s.block is not None else None
                        for m, y in ((model.intra, y_i), (model.inter, y_p)))
    torch.set_num_threads(threads)
    fast = FastMotionCompensation()
    with torch.no_grad():
        out = {"warp_ms": _timed(lambda: model.inter.motion_compensation(ref.x_hat, latents[1].mv), reps),
               "warp_fast_ms": _timed(lambda: fast(ref.x_hat, latents[1].mv), reps)}
    for engine in engines:
        backend = synthesis_backend(model, engine, threads, config)
        twin = with_synthesis(model, engine, threads, config)
        with torch.no_grad():
            row = {
                "I_ms": _timed(lambda: twin.intra.synthesize(latents[0], None, 4), reps),
                "P_ms": _timed(lambda: twin.inter.synthesize(latents[1], ref, 4), reps),
                "I_g_s_ms": _timed(lambda: backend.intra(y_i, block_i), reps),
                "P_g_s_ms": _timed(lambda: backend.inter(y_p, pred, block_p), reps),
            }
        if engine in INT8_ENGINES:  # determinism: the same input twice, and on 1 vs 2 threads
            other = synthesis_backend(model, engine, 2 if threads == 1 else 1, config)
            a = [backend.intra(y_i, block_i), backend.inter(y_p, pred, block_p)]
            b = [backend.intra(y_i, block_i), backend.inter(y_p, pred, block_p)]
            c = [other.intra(y_i, block_i), other.inter(y_p, pred, block_p)]
            row["same_output_twice"] = all(torch.equal(s, t) for s, t in zip(a, b))
            row["bytes_differing_1_vs_2_threads"] = sum(int((to_8bit(s.clone()) != to_8bit(t.clone())).sum())
                                                        for s, t in zip(a, c))
        out[engine] = row
        log(f"  {engine:12s} I {row['I_ms']['median']:7.1f} ms (g_s {row['I_g_s_ms']['median']:6.1f})   "
            f"P {row['P_ms']['median']:7.1f} ms (g_s {row['P_g_s_ms']['median']:6.1f})")
    return out


def decode_table(clip: Path, frames: int, engines: list[str], quality: int, entropy: str, log) -> dict:
    import tempfile

    import nvc

    source = read_frames(clip, frames)
    h, w = source[0].height, source[0].width
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in engines:
            path = Path(tmp) / f"{engine}.nvc"
            t0 = time.perf_counter()
            with nvc.open(path, "w", width=w, height=h, fps=25, quality=quality, model=V2, intra_period=-1,
                          engine=engine, entropy=entropy) as enc:
                for f in source:
                    enc.encode(f)
            row = {"encode_s": round(time.perf_counter() - t0, 1), "bytes": path.stat().st_size}
            for pipelined in (False, True):
                with nvc.open(path, pipelined=pipelined) as reader:
                    reader.load()
                    t0 = time.perf_counter()
                    n = sum(1 for _ in reader)
                    wall = time.perf_counter() - t0
                    row["pipelined" if pipelined else "serial"] = {
                        "fps": round(n / wall, 2), "ms_per_frame": round(1e3 * wall / n, 1),
                        **{f"{k}_ms": round(1e3 * v / n, 1) for k, v in reader.timings.items()}}
            out[engine] = row
            log(f"  {engine:12s} " + "  ".join(f"{m}: {row[m]['ms_per_frame']} ms/frame ({row[m]['fps']} fps; "
                                               + ", ".join(f"{k[:-3]} {v}" for k, v in row[m].items()
                                                           if k.endswith('_ms') and k != 'ms_per_frame') + ")"
                                               for m in ("serial", "pipelined")))
    return out


def print_tables(result: dict, bound: float) -> None:
    if "speed" in result:
        s = result["speed"]
        print(f"\nsynthesis of {Path(result['clips'][0]).name} at {result['padded_size']}, {result['threads']} "
              "thread(s): ms per frame, median (g_s alone in brackets)")
        print(f"P warp, fp32: reference (models.motion, torch) {s['warp_ms']['median']:.1f} ms, "
              f"FastMotionCompensation (native, used with the engines) {s['warp_fast_ms']['median']:.1f} ms")
        print(f"{'engine':12s} {'I':>16s} {'P':>16s}  determinism")
        for e, row in s.items():
            if e.startswith("warp"):
                continue
            det = ""
            if "same_output_twice" in row:
                det = (f"same bytes twice: {row['same_output_twice']}; 1 vs 2 threads: "
                       f"{row['bytes_differing_1_vs_2_threads']} bytes differ")
            print(f"{e:12s} {row['I_ms']['median']:7.1f} ({row['I_g_s_ms']['median']:6.1f}) "
                  f"{row['P_ms']['median']:7.1f} ({row['P_g_s_ms']['median']:6.1f})  {det}")
    if "quality" not in result:
        return
    engines = result["engines"]
    for clip, table in result["quality"].items():
        print(f"\n{Path(clip).name}: PSNR-YUV over a {result['frames']}-frame GOP (I + P), the same streams, dB; "
              "delta = int8 - fp32 (mean over the GOP), drift = delta(last frame) - delta(I-frame), "
              "vs fp32 = lowest PSNR of an int8 reconstruction against the fp32 one")
        print(f"{'q':>2s} {'fp32':>8s} " + " ".join(f"{e + ' delta':>18s} {'drift':>8s} {'vs fp32':>8s}"
                                                   for e in engines))
        for q, row in table.items():
            cells = " ".join(f"{row[e]['delta_db']:+18.4f} {row[e]['drift_db']:+8.4f} "
                             f"{min(row[e]['psnr_vs_fp32_frames']):8.2f}" for e in engines)
            print(f"{q:>2} {row['psnr_yuv_fp32']:8.3f} {cells}")
        if "closed_loop_delta_db" in next(iter(table.values()))[engines[0]]:
            print("closed loop (encoded and decoded with the engine): PSNR-YUV delta dB / size change %")
            for q, row in table.items():
                print(f"{q:>2} " + "  ".join(f"{e} {row[e]['closed_loop_delta_db']:+.4f} dB "
                                             f"{row[e]['closed_loop_bytes_pct']:+.3f} %" for e in engines))
    print(f"\nworst |delta| over the clips per quality level (bound {bound} dB):")
    for e in engines:
        worst = result["worst_abs_delta_db"][e]
        print(f"  {e:12s} " + " ".join(f"q{q} {d:.4f}" for q, d in worst.items())
              + f"  -> {'within' if result['within_bound'][e] else 'OUTSIDE'} the bound")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, nargs="+", required=True,
                    help="real clip(s); held-out clips may be measured (calibration never sees them)")
    ap.add_argument("--model", default=V2, help="a shipped model's name")
    ap.add_argument("--weights", type=Path, help="a weights file instead of the shipped one (e.g. a snapshot)")
    ap.add_argument("--frames", type=int, default=8, help="GOP length for the PSNR part")
    ap.add_argument("--qualities", type=int, nargs="+", default=None, help="default: every level")
    ap.add_argument("--engines", nargs="+", default=list(INT8_ENGINES), choices=INT8_ENGINES, help="int8 engines")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--bound", type=float, default=0.1, help="allowed |int8 - fp32| PSNR-YUV, dB")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--closed-loop", action="store_true",
                    help="also encode with each engine (as deployed): PSNR and size against the fp32 encoding")
    ap.add_argument("--calibrate", default=QuantConfig.calibrate, choices=("minmax", "percentile", "entropy"))
    ap.add_argument("--float-convs", nargs="*", default=list(QuantConfig.float_convs),
                    help="convs of SynthesisGraph kept in float, e.g. c16a out")
    ap.add_argument("--activations", default=QuantConfig.activations, choices=("u8", "s8"))
    ap.add_argument("--decode", action="store_true", help="also: encode and decode the clip through nvc.open "
                    "with each engine, serial and pipelined, per-stage timings")
    ap.add_argument("--decode-engines", nargs="+", default=["torch", "openvino"],
                    choices=["torch", "openvino", "onnxruntime"])
    ap.add_argument("--decode-quality", type=int, default=3)
    ap.add_argument("--entropy", default="float", choices=["float", "integer"], help="entropy parameters for --decode")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    import onnxruntime
    import openvino

    config = QuantConfig(calibrate=args.calibrate, float_convs=tuple(args.float_convs), activations=args.activations)
    torch.set_num_threads(args.threads)
    model = load_weights(args.weights) if args.weights else load_shipped(entry_by_name(args.model))[0]
    model.eval()
    t0 = time.perf_counter()
    paths = build(model, config, log=log)
    sources = {str(c): read_frames(c, max(args.frames, 2)) for c in args.clip}
    first = next(iter(sources.values()))
    result = {
        "model": str(args.weights or args.model), "weights_digest": weights_digest(model),
        "recipe": config.key(), "graphs": str(paths["intra"].parent),
        "build_or_load_s": round(time.perf_counter() - t0, 1),
        "clips": list(sources), "padded_size": f"{frame_to_tensor(first[0]).shape[-1] * 2}x"
                                               f"{frame_to_tensor(first[0]).shape[-2] * 2}",
        "frames": args.frames, "threads": args.threads, "engines": args.engines,
        "cpu": platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "openvino": openvino.__version__},
    }
    if not args.skip_speed:
        log(f"speed at {result['padded_size']}, {args.threads} thread(s):")
        result["speed"] = speed_table(model, ["torch", "torch-bf16"] + args.engines, first, args.threads,
                                      args.reps, config, log)
    if args.decode:
        clip = args.clip[0]
        log(f"decoding {clip.name}, {args.frames} frames, quality {args.decode_quality}, {args.entropy} entropy "
            f"parameters, torch threads {torch.get_num_threads()}:")
        result["decode"] = decode_table(clip, args.frames, args.decode_engines, args.decode_quality, args.entropy, log)
    if not args.skip_quality:
        twins = {e: with_synthesis(model, e, args.threads, config) for e in args.engines}
        qualities = args.qualities if args.qualities is not None else range(model.config.quality_levels)
        result["quality"] = {}
        for clip, source in sources.items():
            log(f"{Path(clip).name}: PSNR over {len(source[:args.frames])} frames per quality level:")
            result["quality"][clip] = quality_table(model, twins, source[:args.frames], qualities, args.closed_loop,
                                                    log)
        tables = result["quality"].values()
        result["worst_abs_delta_db"] = {e: {str(q): max(abs(t[str(q)][e]["delta_db"]) for t in tables)
                                            for q in qualities} for e in args.engines}
        result["within_bound"] = {e: max(result["worst_abs_delta_db"][e].values()) <= args.bound
                                  for e in args.engines}
    print_tables(result, args.bound)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
