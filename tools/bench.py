"""Speed and rate benchmark of the shipped model on a real clip, per quality level (JSON + table).

    python -m tools.bench --clip bigbuckbunny.mp4 --frames 32 --json results/bench-cpu.json

For every level: bpp of the real .nvc file, PSNR-YUV, encode fps, decode fps, and the decode time
split into entropy decoding (z stream, h_s, CDF indexes, y substreams) and synthesis (g_s). Also
the synthesis transform's kMAC per pixel and the parameter counts.
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
from models.transforms import decoder_kmac_per_pixel, synthesis_kmac_per_pixel
from nvc.codec import Reader, padded_size
from nvc.model import load_shipped
from nvc.transcode import encode_video
from nvc.video import sample_clip


def model_stats(device: str) -> dict:
    model, weights_hash = load_shipped(entry_by_name(DEFAULT_MODEL), device)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "model": DEFAULT_MODEL,
        "weights_sha256_16": weights_hash.hex(),
        "weights_bytes": entry_by_name(DEFAULT_MODEL).weights_path.stat().st_size,
        "params_total": count(model),
        "params_synthesis": count(model.g_s),
        "params_decoder": count(model.g_s) + count(model.latent_codec.h_s) + count(model.latent_codec.z_codec),
        "synthesis_kmac_per_pixel_1080p": round(synthesis_kmac_per_pixel(model.config, 1088, 1920), 2),
        "decoder_kmac_per_pixel_1080p": round(decoder_kmac_per_pixel(model.config, 1088, 1920), 2),
    }


def timed_decode(path: Path, device: str) -> dict:
    """Decode every frame, timing entropy decoding and synthesis separately."""
    entropy = synthesis = 0.0
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with Reader(path, device=device) as r:
        model = r.load_model()
        h = r.header
        hp, wp = padded_size(h.height), padded_size(h.width)
        frames = 0
        start = time.perf_counter()
        for packet in r.packets():
            t0 = time.perf_counter()
            y_hat = model.latent_codec.decompress(packet.streams, model.z_size(hp, wp))
            sync()
            t1 = time.perf_counter()
            with torch.no_grad():
                model.synthesize(y_hat.to(device), torch.tensor([packet.quality])).cpu()
            sync()
            synthesis += time.perf_counter() - t1
            entropy += t1 - t0
            frames += 1
        total = time.perf_counter() - start
    return {"decode_fps": frames / total, "entropy_ms_per_frame": 1e3 * entropy / frames,
            "synthesis_ms_per_frame": 1e3 * synthesis / frames}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default="bigbuckbunny.mp4", help="a bundled clip name, or a video path")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--qualities", type=int, nargs="+", default=None)
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
            enc = encode_video(clip, out, q, args.frames, args.device, progress=False)
            rows.append({"quality": q, "frames": enc.frames, "bytes": enc.bytes, "bpp": enc.bpp,
                         "psnr_yuv": enc.mean_psnr(), "psnr_y": enc.mean_psnr("y"), "encode_fps": enc.fps,
                         **timed_decode(out, args.device)})
    result = {"clip": clip.name, "size": f"{enc.width}x{enc.height}", "device": args.device,
              "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              **stats, "levels": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "levels"}, indent=1))
    print(f"\n{clip.name} {result['size']}, first {rows[0]['frames']} frames, device {args.device}\n")
    print("| quality | bpp | PSNR-YUV (dB) | PSNR-Y (dB) | encode fps | decode fps | entropy ms/frame | synthesis ms/frame |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['quality']} | {r['bpp']:.4f} | {r['psnr_yuv']:.2f} | {r['psnr_y']:.2f} | {r['encode_fps']:.2f} | "
              f"{r['decode_fps']:.2f} | {r['entropy_ms_per_frame']:.0f} | {r['synthesis_ms_per_frame']:.0f} |")


if __name__ == "__main__":
    main()
