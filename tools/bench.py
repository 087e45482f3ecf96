"""Speed and rate benchmark of the shipped model on a real clip, per quality level (JSON + table).

    python -m tools.bench --clip bigbuckbunny.mp4 --frames 32 --json results/bench-cpu.json
    python -m tools.bench FILE.nvc [--json out.json] [--mode serial|pipelined|both]   # = nvc bench FILE.nvc
    python -m tools.bench SOURCE.mp4 --encode --frames 300 --model lean-mc-yuv420-v2  # = nvc bench --encode

With a file as the first argument it is `nvc bench` (`nvc.bench`): decode fps of that `.nvc` end to
end (file to frames in memory, model load apart) and per stage, serial and pipelined; with
`--encode`, encode fps of a source video first. The rest of this docstring is the sweep.

For every level: bpp of the real .nvc file, PSNR-YUV, encode fps, decode fps, and the decode time
of I- and P-frames split into entropy decoding (z stream, entropy parameters, CDF indexes, y
substreams) and synthesis (context pyramid and g_s). Also the kMAC per pixel of each decoder path
(counted from the layers run, `nvc.models.macs`) and the parameter counts.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from nvc.models.registry import DEFAULT_MODEL, entry_by_name
from nvc.models.macs import kmac_per_pixel
from nvc.codec import Reader, padded_size
from nvc.container import FrameType
from nvc.entropy.coder import stream_format
from nvc.gop import DEFAULT_INTRA_PERIOD
from nvc.model import load_shipped
from nvc.transcode import encode_video
from nvc.video import sample_clip


def decoder_kmacs(model, height: int = 256, width: int = 256) -> dict:
    """kMAC per luma pixel of each decoder path, counted over the layers that run: entropy
    parameters (everything that decides the symbols) and synthesis (motion compensation and g_s)."""
    x = torch.rand(1, 6, height // 2, width // 2)
    out, ref, px = {}, None, height * width
    for name, frame_model in (("i", model.intra), ("p", model.inter)):
        if frame_model is None:
            continue
        streams, rec = frame_model.compress(x, ref, 0)
        latent = frame_model.decode_latent(streams, ref, height, width)
        out[f"{name}_entropy_params_kmac_per_pixel"] = kmac_per_pixel(
            lambda: frame_model.decode_latent(streams, ref, height, width), frame_model.entropy_parameter_modules(), px)
        out[f"{name}_synthesis_kmac_per_pixel"] = kmac_per_pixel(
            lambda: frame_model.synthesize(latent, ref, 0), frame_model.synthesis_modules(), px)
        ref = rec
    return {k: round(v, 3) for k, v in out.items()}


def model_stats(model_name: str, device: str) -> dict:
    model, weights_hash = load_shipped(entry_by_name(model_name), device)
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    return {
        "model": model_name,
        "weights_sha256_16": weights_hash.hex(),
        "weights_bytes": entry_by_name(model_name).weights_path.stat().st_size,
        "params_total": count(model),
        "params_intra": count(model.intra),
        "params_inter": count(model.inter),
        **decoder_kmacs(model.to("cpu")),
    }


def timed_decode(path: Path, device: str) -> dict:
    """Decode every frame, timing entropy decoding and synthesis separately, per frame type."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = {FrameType.I: [0, 0.0, 0.0], FrameType.P: [0, 0.0, 0.0]}  # frames, entropy s, synthesis s
    with Reader(path, device=device) as r:
        model = r.load_model()
        h = r.header
        hp, wp = padded_size(h.height), padded_size(h.width)
        ref = None
        start = time.perf_counter()
        for packet in r.packets():
            t0 = time.perf_counter()
            frame_model = model.intra if packet.frame_type == FrameType.I else model.inter
            with torch.no_grad(), stream_format(h.substream_form):
                latent = frame_model.decode_latent(list(packet.streams), ref, hp, wp)
                sync()
                t1 = time.perf_counter()
                ref = frame_model.synthesize(latent, ref, packet.quality)
                ref.x_hat.cpu()
            sync()
            t = times[packet.frame_type]
            t[0] += 1
            t[1] += t1 - t0
            t[2] += time.perf_counter() - t1
        total = time.perf_counter() - start
    frames = sum(t[0] for t in times.values())
    out = {"decode_fps": frames / total}
    for kind, (n, entropy, synthesis) in times.items():
        if n:
            out[f"{kind.name.lower()}_entropy_ms_per_frame"] = 1e3 * entropy / n
            out[f"{kind.name.lower()}_synthesis_ms_per_frame"] = 1e3 * synthesis / n
    return out


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("-"):  # a file first: the benchmark of `nvc bench`
        from nvc.cli import main as nvc_main

        code = nvc_main(["bench", *argv])
        if code:
            sys.exit(code)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default="bigbuckbunny.mp4", help="a bundled clip name, or a video path")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"shipped model (default {DEFAULT_MODEL})")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--qualities", type=int, nargs="+", default=None)
    ap.add_argument("--intra-period", type=int, default=DEFAULT_INTRA_PERIOD)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    clip = Path(args.clip) if Path(args.clip).exists() else sample_clip(args.clip)
    stats = model_stats(args.model, args.device)
    levels = args.qualities or list(range(load_shipped(entry_by_name(args.model), args.device)[0].config.quality_levels))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for q in levels:
            out = Path(tmp) / f"q{q}.nvc"
            enc = encode_video(clip, out, q, args.frames, args.device, progress=False, intra_period=args.intra_period,
                               model=args.model)
            rows.append({"quality": q, "frames": enc.frames, "bytes": enc.bytes, "bpp": enc.bpp,
                         "psnr_yuv": enc.mean_psnr(), "psnr_y": enc.mean_psnr("y"), "encode_fps": enc.fps,
                         **timed_decode(out, args.device)})
    result = {"clip": clip.name, "size": f"{enc.width}x{enc.height}", "device": args.device,
              "intra_period": args.intra_period,
              "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              **stats, "levels": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "levels"}, indent=1))
    print(f"\n{clip.name} {result['size']}, first {rows[0]['frames']} frames, device {args.device}\n")
    print("| quality | bpp | PSNR-YUV (dB) | encode fps | decode fps | I entropy / synthesis ms | "
          "P entropy / synthesis ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ms = lambda r, k: (f"{r[k + '_entropy_ms_per_frame']:.0f} / {r[k + '_synthesis_ms_per_frame']:.0f}"  # noqa: E731
                       if k + "_entropy_ms_per_frame" in r else "-")
    for r in rows:
        print(f"| {r['quality']} | {r['bpp']:.4f} | {r['psnr_yuv']:.2f} | {r['encode_fps']:.2f} | "
              f"{r['decode_fps']:.2f} | {ms(r, 'i')} | {ms(r, 'p')} |")


if __name__ == "__main__":
    main()
