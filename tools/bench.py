"""Speed and rate benchmark of the shipped model on a real clip, per quality level (JSON + table).

    python -m tools.bench --clip bigbuckbunny.mp4 --frames 32 --json results/bench-cpu.json

For every level: bpp of the real .nvc file, PSNR-YUV, encode fps, decode fps, and the decode time
of I- and P-frames split into entropy decoding (z stream, entropy parameters, CDF indexes, y
substreams) and synthesis (context pyramid and g_s). Also the kMAC per pixel of each decoder path
(counted from the layers run, `models.macs`) and the parameter counts.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from models.registry import DEFAULT_MODEL, entry_by_name
from models.macs import kmac_per_pixel
from nvc.codec import Reader, padded_size
from nvc.container import FrameType
from nvc.gop import DEFAULT_INTRA_PERIOD
from nvc.model import Reconstruction, VideoModel, load_shipped
from nvc.transcode import encode_video
from nvc.video import sample_clip


def decoder_kmacs(model: VideoModel) -> dict:
    """kMAC per luma pixel of each decoder path: entropy parameters (h_s, and the temporal prior of
    P-frames) and synthesis (g_s, and the context pyramid of P-frames)."""
    h = w = 128
    cfg = model.config
    x = torch.rand(1, 6, h // 2, w // 2)
    y = torch.rand(1, cfg.latent_channels, h // 16, w // 16)
    z = torch.rand(1, cfg.channels, h // 64, w // 64)
    intra, inter = model.intra, model.inter
    out = {
        "i_entropy_params_kmac_per_pixel": kmac_per_pixel(lambda: intra.latent_codec.h_s(z), [intra], h * w),
        "i_synthesis_kmac_per_pixel": kmac_per_pixel(lambda: intra.g_s(y), [intra], h * w),
    }
    if inter is not None:
        out["p_entropy_params_kmac_per_pixel"] = kmac_per_pixel(
            lambda: inter.latent_codec._entropy_parameters(z, y), [inter], h * w)
        out["p_synthesis_kmac_per_pixel"] = kmac_per_pixel(lambda: inter.g_s(y, inter.context(x)), [inter], h * w)
    return {k: round(v, 2) for k, v in out.items()}


def model_stats(device: str) -> dict:
    model, weights_hash = load_shipped(entry_by_name(DEFAULT_MODEL), device)
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    return {
        "model": DEFAULT_MODEL,
        "weights_sha256_16": weights_hash.hex(),
        "weights_bytes": entry_by_name(DEFAULT_MODEL).weights_path.stat().st_size,
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
            q = torch.tensor([packet.quality])
            t0 = time.perf_counter()
            with torch.no_grad():
                if packet.frame_type == FrameType.I:
                    y_hat = model.intra.decode_latent(packet.streams, hp, wp)
                    sync()
                    t1 = time.perf_counter()
                    x_hat = model.intra.synthesize(y_hat, q)
                else:
                    y_hat = model.inter.decode_latent(packet.streams, ref, hp, wp)
                    sync()
                    t1 = time.perf_counter()
                    x_hat = model.inter.synthesize(y_hat, ref, q)
                ref = Reconstruction(x_hat, y_hat)
                x_hat.cpu()
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default="bigbuckbunny.mp4", help="a bundled clip name, or a video path")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--qualities", type=int, nargs="+", default=None)
    ap.add_argument("--intra-period", type=int, default=DEFAULT_INTRA_PERIOD)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    clip = Path(args.clip) if Path(args.clip).exists() else sample_clip(args.clip)
    stats = model_stats(args.device)
    levels = args.qualities or list(range(load_shipped(entry_by_name(DEFAULT_MODEL), args.device)[0].config.quality_levels))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for q in levels:
            out = Path(tmp) / f"q{q}.nvc"
            enc = encode_video(clip, out, q, args.frames, args.device, progress=False, intra_period=args.intra_period)
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
