"""Memory over a long decode: RSS growth over N decoded frames of one long stream (JSON + summary).

    python -m tools.bench_memory --frames 3000 --json results/memory.json [--serial] [--engine openvino]

To keep it cheap, a short small clip is encoded once (default: the first 64 frames of
bigbuckbunny.mp4 scaled to 256x144, `lean-mc-yuv420-v2`, quality 3, intra period 32) and its
packets are repeated, renumbered, into one stream of N frames (the clip is a whole number of GOPs,
so every repeat starts with an I-frame): one `nvc.open` decodes all N frames, through the same
reference chain and pipeline worker, as it would a long file. RSS (resident set size) is sampled
every `--every` frames (default 100); the report gives the growth from the first sample (after the
first `--every` frames: model, allocator and engine warm-up done) to the last, the largest RSS
and the growth over the second half (a leak grows steadily; a warm-up does not).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import psutil

import nvc
from nvc.container import END_OF_STREAM, StreamHeader, read_packets
from nvc.frames import YUVFrame
from nvc.video import av_frame_to_yuv, sample_clip


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def scaled_frames(clip: Path, count: int, width: int, height: int) -> list[YUVFrame]:
    """The first `count` frames of `clip`, scaled to width x height (8-bit YUV420)."""
    frames = []
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            frames.append(av_frame_to_yuv(frame.reformat(width=width, height=height, format="yuv420p")))
            if len(frames) == count:
                break
    return frames


def encode_short(frames: list[YUVFrame], path: Path, model: str, quality: int, intra_period: int,
                 engine: str | None) -> None:
    extra = {}
    if engine is not None:
        if "engine" not in inspect.signature(nvc.Encoder).parameters:
            raise SystemExit("--engine: this nvc's encoder has no choice of synthesis engine yet")
        extra["engine"] = engine
    with nvc.open(path, "w", width=frames[0].width, height=frames[0].height, fps=Fraction(25), quality=quality,
                  model=model, intra_period=intra_period, **extra) as enc:
        for frame in frames:
            enc.encode(frame)


def looped_stream(short: Path, long: Path, frames: int) -> None:
    """`short`'s packets repeated (renumbered) into one stream of `frames` frames."""
    with open(short, "rb") as f:
        header = StreamHeader.read(f)
        packets = list(read_packets(f, header))
    n = len(packets)
    if header.intra_period < 1 or n % header.intra_period:
        raise SystemExit(f"the short clip ({n} frames) must be a whole number of GOPs (intra period "
                         f"{header.intra_period})")
    with open(long, "wb") as f:
        f.write(dataclasses.replace(header, frame_count=frames).to_bytes())
        for i in range(frames):
            f.write(dataclasses.replace(packets[i % n], frame_index=i).to_bytes())
        f.write(END_OF_STREAM)


def measure(path: Path, every: int, pipelined: bool) -> dict:
    samples = []
    start = time.perf_counter()
    count = 0
    with nvc.open(path, pipelined=pipelined) as reader:
        before = rss_mb()
        reader.load()
        loaded = rss_mb()
        for _ in reader:
            count += 1
            if count % every == 0:
                samples.append({"frames": count, "rss_mb": round(rss_mb(), 2)})
    seconds = time.perf_counter() - start
    rss = [s["rss_mb"] for s in samples]
    half = samples[len(samples) // 2]
    return {
        "frames": count,
        "seconds": round(seconds, 2),
        "fps": round(count / seconds, 2),
        "rss_before_model_mb": round(before, 2),
        "rss_after_model_mb": round(loaded, 2),
        "rss_first_sample_mb": rss[0],
        "rss_last_mb": rss[-1],
        "rss_max_mb": max(rss),
        "growth_mb": round(rss[-1] - rss[0], 2),
        "growth_max_mb": round(max(rss) - rss[0], 2),
        "growth_second_half_mb": round(rss[-1] - half["rss_mb"], 2),
        "second_half_from_frame": half["frames"],
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3000, help="frames to decode (default 3000)")
    ap.add_argument("--every", type=int, default=100, help="RSS sample interval in frames (default 100)")
    ap.add_argument("--clip", default="bigbuckbunny.mp4", help="a bundled clip name, or a video path")
    ap.add_argument("--source-frames", type=int, default=64, help="frames of the short clip (default 64)")
    ap.add_argument("--size", default="256x144", help="WxH of the short clip (default 256x144)")
    ap.add_argument("--model", default="lean-mc-yuv420-v2")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--intra-period", type=int, default=32)
    ap.add_argument("--engine", help="synthesis engine of the stream (nvc encode --engine), where the encoder has one")
    ap.add_argument("--serial", action="store_true", help="decode without the pipeline (default: pipelined)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if args.frames < 2 * args.every:
        raise SystemExit("--frames must be at least two sample intervals (--every)")
    width, height = (int(v) for v in args.size.lower().split("x"))
    clip = Path(args.clip) if Path(args.clip).exists() else sample_clip(args.clip)

    with tempfile.TemporaryDirectory(prefix="nvc-memory-") as tmp:
        short, long = Path(tmp) / "short.nvc", Path(tmp) / "long.nvc"
        encode_short(scaled_frames(clip, args.source_frames, width, height), short, args.model, args.quality,
                     args.intra_period, args.engine)
        looped_stream(short, long, args.frames)
        stream_bytes = long.stat().st_size
        result = measure(long, args.every, not args.serial)
    report = {
        "clip": clip.name, "size": f"{width}x{height}", "source_frames": args.source_frames, "model": args.model,
        "quality": args.quality, "intra_period": args.intra_period, "engine": args.engine,
        "pipelined": not args.serial, "stream_bytes": stream_bytes,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "loadavg_1min_after": round(os.getloadavg()[0], 2), **result,
    }
    print(f"{report['frames']} frames {report['size']} ({args.model}, {'pipelined' if not args.serial else 'serial'}"
          f", {report['fps']:.1f} fps): RSS {report['rss_first_sample_mb']:.1f} MB after {args.every} frames, "
          f"{report['rss_last_mb']:.1f} MB at the end (max {report['rss_max_mb']:.1f}); growth "
          f"{report['growth_mb']:+.1f} MB, {report['growth_second_half_mb']:+.1f} MB over the second half")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
