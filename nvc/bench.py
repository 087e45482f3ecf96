"""`nvc bench`: decoding speed of an `.nvc` file end to end and per stage, serial and pipelined;
encoding speed of a source video.

    nvc bench clip.nvc --json bench.json                 # decode: serial, then pipelined
    nvc bench in.mp4 --encode --frames 64 --model lean-mc-yuv420-v2 [--engine openvino]

Decoding is timed from the file to frames in memory (`YUVFrame`s, cropped to the picture size, as
`nvc.open` yields them): reading and parsing the packets, entropy decoding, synthesis and the
conversion to 8-bit planes. The model load is timed apart. Stages measured here, in the caller's
thread: `demux` (reading and checking packets), `decode` (the frame decoder's `decode`/`flush`:
entropy decoding and synthesis serially; pipelined, synthesis plus any wait for the entropy worker)
and `to_frame` (tensor to cropped 8-bit planes). Where the frame decoder keeps its own per-stage
clock (`FrameDecoder.timings`, seconds per stage) it is reported too; pipelined, those stages run
on two threads at once, so their sum exceeds the wall time. The first frame includes one-time
set-up (an int8 engine compiles for a new frame size), so fps is also given without it. The model
is loaded once per process (the second mode finds it loaded: its load time is ~0).

Encoding is timed over frames already read into memory (reading the source is reported apart), the
model load apart; the encoded file is then benchmarked for decoding.

The frame decoder is driven here as `nvc.codec.Reader` drives it (without concealment: a damaged
packet stops the benchmark). No torch at import: `nvc --help` stays fast.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from nvc.errors import NvcError

MODES = {"serial": (False,), "pipelined": (True,), "both": (False, True)}


def _ms(seconds: float, frames: int) -> float:
    return round(1e3 * seconds / frames, 3) if frames else 0.0


def bench_decode(path: str | os.PathLike, pipelined: bool, device: str = "cpu", frames: int | None = None) -> dict:
    """Decode `path` (at most `frames` frames) to frames in memory; speeds and per-stage times."""
    import torch

    from nvc.codec import Reader, padded_size, reconstruction_to_frame
    from nvc.deploy.pipeline import FrameDecoder

    clock = time.perf_counter
    threads = torch.get_num_threads()  # the pipelined decoder sets 1 for the process: put it back after
    try:
        with Reader(path, device=device) as reader:
            h = reader.header
            t = clock()
            model = reader.load_model()
            load = clock() - t
            decoder = FrameDecoder(model, padded_size(h.height), padded_size(h.width), pipelined,
                                   substream_form=h.substream_form)
            stages = {"demux": 0.0, "decode": 0.0, "to_frame": 0.0}
            packets = reader.packets()
            count, submitted, first = 0, 0, None
            start = clock()
            try:
                while True:
                    t = clock()
                    packet = next(packets, None) if frames is None or submitted < frames else None
                    t1 = clock()
                    stages["demux"] += t1 - t
                    results = decoder.flush() if packet is None else decoder.decode(packet)
                    t2 = clock()
                    stages["decode"] += t2 - t1
                    for result in results:
                        if result.error is not None:
                            raise result.error
                        reconstruction_to_frame(result.reconstruction, h.height, h.width)
                        count += 1
                        if first is None:
                            first = clock() - start
                    stages["to_frame"] += clock() - t2
                    if packet is None:
                        break
                    submitted += 1
                total = clock() - start
                timings = dict(decoder.timings)
                torch_threads = torch.get_num_threads()
            finally:
                decoder.close()
    finally:
        torch.set_num_threads(threads)
    if not count:
        raise NvcError(f"{path}: no frames decoded")
    row = {
        "mode": "pipelined" if pipelined else "serial",
        "frames": count,
        "seconds": round(total, 4),
        "fps": round(count / total, 3),
        "fps_after_first_frame": round((count - 1) / (total - first), 3) if count > 1 and total > first else None,
        "first_frame_seconds": round(first, 4),
        "model_load_seconds": round(load, 4),
        "torch_threads": torch_threads,
        "stages_ms_per_frame": {k: _ms(v, count) for k, v in stages.items()},
        "decoder_stages_ms_per_frame": {k: _ms(v, count) for k, v in timings.items()},
    }
    return row


def file_info(path: str | os.PathLike) -> dict:
    """What the header says (no torch)."""
    from nvc.container import StreamHeader
    from nvc.models.registry import MODEL_TABLE

    with open(path, "rb") as f:
        h = StreamHeader.read(f)
    entry = MODEL_TABLE.get(h.model_id)
    return {
        "file": str(path),
        "bytes": Path(path).stat().st_size,
        "model": entry.name if entry else f"id {h.model_id}",
        "engine": h.synthesis.label,  # what the stream records
        "entropy_parameters": h.entropy_params.label,
        "size": f"{h.width}x{h.height}",
        "fps": str(Fraction(h.fps_num, h.fps_den)),
        "frame_count": h.frame_count,
        "intra_period": h.intra_period,
        "quality": h.quality,
    }


def bench_encode(source: str | os.PathLike, output: str | os.PathLike, model: str, quality: int,
                 frames: int | None, intra_period: int, device: str = "cpu", engine: str | None = None) -> dict:
    """Encode `source` (at most `frames` frames, read into memory first) to `output`, timed."""
    from nvc.codec import Encoder
    from nvc.metrics import frame_psnr
    from nvc.video import VideoSource

    clock = time.perf_counter
    extra = {"engine": engine} if engine is not None else {}
    t = clock()
    with VideoSource(source) as src:
        info = src.info
        source_frames = []
        for frame in src:
            if frames is not None and len(source_frames) >= frames:
                break
            source_frames.append(frame)
    read = clock() - t
    t = clock()
    enc = Encoder(output, info.width, info.height, fps=info.fps, quality=quality, model=model, device=device,
                  colorspace=info.colorspace, intra_period=intra_period, color_range=info.color_range,
                  chroma_location=info.chroma_location, sar=info.sar, **extra)
    load = clock() - t
    seconds, psnr = 0.0, []
    try:
        for frame in source_frames:
            t = clock()
            rec = enc.encode(frame).reconstruction
            seconds += clock() - t
            psnr.append(frame_psnr(frame, rec).yuv)  # not timed
        t = clock()
        enc.flush()
        seconds += clock() - t
    except BaseException:
        enc.abort()
        raise
    n = len(source_frames)
    return {
        "source": str(source),
        "frames": n,
        "size": f"{info.width}x{info.height}",
        "model": model,
        "engine": engine,
        "quality": quality,
        "intra_period": intra_period,
        "encode_fps": round(n / seconds, 3),
        "seconds": round(seconds, 4),
        "model_load_seconds": round(load, 4),
        "source_read_seconds": round(read, 4),
        "bytes": enc.bytes_written,
        "bpp": round(enc.bytes_written * 8 / (info.width * info.height * n), 5),
        "psnr_yuv": round(sum(psnr) / n, 3),
    }


def machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "loadavg_1min": round(os.getloadavg()[0], 2)}


def run(input: str, *, mode: str = "both", frames: int | None = None, device: str = "cpu", encode: bool = False,
        model: str | None = None, quality: int | None = None, intra_period: int = 32, engine: str | None = None,
        keep: str | None = None) -> dict:
    """The whole benchmark: [encode `input`, then] decode the `.nvc` in each mode."""
    from nvc.codec import DEFAULT_MODEL, DEFAULT_QUALITY

    if mode not in MODES:
        raise NvcError(f"unknown mode {mode!r} (use {', '.join(MODES)})")
    if frames is not None and frames < 1:
        raise NvcError(f"--frames must be at least 1, got {frames}")
    report = {"machine": machine(), "device": device}
    with tempfile.TemporaryDirectory(prefix="nvc-bench-") as tmp:
        path = input
        if encode:
            path = keep or str(Path(tmp) / "bench.nvc")
            report["encode"] = bench_encode(input, path, model or DEFAULT_MODEL,
                                            DEFAULT_QUALITY if quality is None else quality, frames, intra_period,
                                            device, engine)
        elif not os.path.isfile(path):
            raise NvcError(f"input not found: {path}")
        report["stream"] = file_info(path)
        report["decode"] = [bench_decode(path, pipelined, device, frames) for pipelined in MODES[mode]]
    return report


def table(report: dict) -> str:
    """The report for people: a few lines and one row per decoding mode."""
    lines = []
    m, s = report["machine"], report["stream"]
    if "encode" in report:
        e = report["encode"]
        lines.append(f"encode {Path(e['source']).name}: {e['frames']} frames {e['size']}, {e['model']} q{e['quality']}"
                     f"{', engine ' + e['engine'] if e['engine'] else ''}: {e['encode_fps']:.2f} fps, "
                     f"{e['bpp']:.4f} bpp, PSNR-YUV {e['psnr_yuv']:.2f} dB "
                     f"(model load {e['model_load_seconds']:.2f} s, "
                     f"source read {e['source_read_seconds']:.2f} s)")
    engine = f", engine {s['engine']}" if s.get("engine") else ""
    lines.append(f"decode {Path(s['file']).name}: {s['size']} at {s['fps']} fps, {s['model']}{engine}, "
                 f"device {report['device']}, {m['cpus']} CPUs, load average {m['loadavg_1min']}; model load "
                 + ("done by the encoder" if "encode" in report else
                    f"{report['decode'][0]['model_load_seconds']:.2f} s (not in the fps)"))
    # the frame decoder's own clock, where it keeps one (stages that never ran are left out)
    extra = sorted({k for r in report["decode"] for k, v in r.get("decoder_stages_ms_per_frame", {}).items()
                    if v >= 0.05})
    head = ["mode", "frames", "fps", "fps w/o 1st", "demux ms", "decode ms", "to frame ms",
            *(f"{k} ms" for k in extra)]
    lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in report["decode"]:
        st, dec = r["stages_ms_per_frame"], r.get("decoder_stages_ms_per_frame", {})
        after = r["fps_after_first_frame"]
        cells = [r["mode"], str(r["frames"]), f"{r['fps']:.2f}", f"{after:.2f}" if after else "-",
                 f"{st['demux']:.1f}", f"{st['decode']:.1f}", f"{st['to_frame']:.1f}",
                 *(f"{dec[k]:.1f}" if k in dec else "-" for k in extra)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("(ms per decoded frame; demux, decode and to frame: the caller's thread"
                 + (f"; {', '.join(extra)}: the frame decoder's clock, pipelined entropy on a second thread"
                    if extra else "") + ")")
    return "\n".join(lines)


def write_json(report: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
