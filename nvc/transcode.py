"""Whole-file operations behind the CLI: encode a video to `.nvc`, decode `.nvc` to frames.

Both check the output before any work (`nvc.atomic.check_output`: never the input, never an
existing file unless `overwrite`), and time the same thing: the frame loop (reading, coding,
writing), with the model load measured apart.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nvc import quiet_import

quiet_import("nvc.codec")  # first: it imports compressai (whose FutureWarning nvc.quiet_import filters)

from nvc.atomic import check_output  # noqa: E402
from nvc.codec import (DEFAULT_INTRA_PERIOD, DEFAULT_MODEL, DEFAULT_QUALITY, Encoder, Reader,  # noqa: E402
                       resolve_device)
from nvc.errors import NvcError  # noqa: E402
from nvc.frames import YUVFrame  # noqa: E402
from nvc.gop import FLAT_QUALITY  # noqa: E402
from nvc.metrics import FramePSNR, frame_psnr  # noqa: E402
from nvc.output import open_writer  # noqa: E402
from nvc.video import VideoSource  # noqa: E402


@dataclass(frozen=True)
class EncodeStats:
    frames: int
    width: int
    height: int
    bytes: int  # the whole .nvc file
    seconds: float  # the frame loop: reading, encoding, writing (the model load excluded)
    psnr: list[FramePSNR]  # per frame, reconstruction vs source
    reconstructions: list[YUVFrame] | None = None  # with keep=True: what a decoder will output
    rate: Fraction = Fraction(25)  # frames per second of the video
    load_seconds: float = 0.0  # loading the model

    @property
    def bpp(self) -> float:
        return self.bytes * 8 / (self.width * self.height * self.frames)

    @property
    def kbps(self) -> float:
        """Bitrate at the video's frame rate, kilobits per second."""
        return self.bytes * 8 * float(self.rate) / self.frames / 1000

    @property
    def fps(self) -> float:
        """Encoding speed, frames per second of the frame loop."""
        return self.frames / self.seconds

    def mean_psnr(self, attr: str = "yuv") -> float:
        return float(np.mean([getattr(p, attr) for p in self.psnr]))

    def summary(self) -> str:
        return (f"{self.frames} frames {self.width}x{self.height}, {self.bytes} bytes, {self.bpp:.4f} bpp, "
                f"{self.kbps:.1f} kb/s at {_rate(self.rate)} fps, PSNR-YUV {self.mean_psnr():.2f} dB "
                f"(Y {self.mean_psnr('y'):.2f} U {self.mean_psnr('u'):.2f} V {self.mean_psnr('v'):.2f}), "
                f"{self.fps:.2f} fps, model load {self.load_seconds:.2f} s")


@dataclass(frozen=True)
class DecodeStats:
    frames: int
    seconds: float  # the frame loop: reading, decoding, writing (the model load excluded)
    reconstructions: list[YUVFrame] | None = None
    width: int = 0
    height: int = 0
    load_seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (f"decoded {self.frames} frames {self.width}x{self.height} in {self.seconds:.2f} s, {self.fps:.2f} fps, "
                f"model load {self.load_seconds:.2f} s")


def _rate(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{float(rate):.3f}"


def _warn(on_warning, message: str) -> None:
    if on_warning is not None:
        on_warning(message)
    else:
        warnings.warn(message, stacklevel=3)


def encode_video(source: str | Path, output: str | Path, quality: int = DEFAULT_QUALITY, frames: int | None = None,
                 device: str = "cpu", size: tuple[int, int] | None = None, fps: Fraction | None = None,
                 progress: bool = True, keep: bool = False, intra_period: int = DEFAULT_INTRA_PERIOD, *,
                 model: str = DEFAULT_MODEL, overwrite: bool | None = True, on_warning=None,
                 engine: str | None = None, entropy: str | None = None, flat_quality: bool = False,
                 hold_psnr: float | None = None) -> EncodeStats:
    """Encode `source` ("-": Y4M on stdin) to `output` ("-": stdout). What the source loses (bit
    depth, chroma, interlacing) is told to `on_warning(message)`, else raised as a `UserWarning`.
    `engine`, `entropy`: the synthesis engine and entropy parameters of a v2 model (`nvc.codec.Encoder`;
    None: its defaults); `flat_quality`: every frame at `quality`, not the model's quality schedule;
    `hold_psnr`: `nvc.gop.PsnrHold`'s margin in dB (None: off)."""
    if frames is not None and frames < 1:
        raise NvcError(f"--frames must be at least 1, got {frames}")
    check_output(output, [source], overwrite)
    resolve_device(device)
    with VideoSource(source, size=size, fps=fps) as src:
        info = src.info
        for line in info.reductions:
            _warn(on_warning, line)
        loading = time.perf_counter()
        encoder = Encoder(output, info.width, info.height, fps=info.fps, quality=quality, model=model,
                          device=device, colorspace=info.colorspace, intra_period=intra_period,
                          color_range=info.color_range, chroma_location=info.chroma_location, sar=info.sar,
                          **({"engine": engine} if engine is not None else {}),
                          **({"entropy": entropy} if entropy is not None else {}),
                          **({"quality_schedule": FLAT_QUALITY} if flat_quality else {}), hold_psnr=hold_psnr)
        try:
            load_seconds = time.perf_counter() - loading
            psnr, kept, seconds = _encode_frames(encoder, src, frames, progress, keep)
        except BaseException:
            encoder.abort()
            raise
    return EncodeStats(encoder.frames_written, info.width, info.height, encoder.bytes_written, seconds, psnr,
                       kept if keep else None, info.fps, load_seconds)


def _encode_frames(encoder, src: VideoSource, frames: int | None, progress: bool, keep: bool):
    """Encode the source's frames (at most `frames`) and complete the file: (psnr, kept, seconds)."""
    info = src.info
    known = [n for n in (frames, info.frame_count) if n]
    bar = tqdm(total=min(known) if known else None, desc="encode", unit="frame", disable=not progress, leave=False)
    psnr, kept, psnr_sum = [], [], 0.0
    try:
        start = time.perf_counter()
        for frame in itertools.islice(src, frames):
            encoded = encoder.encode(frame)
            psnr.append(frame_psnr(frame, encoded.reconstruction))
            psnr_sum += psnr[-1].yuv
            if keep:
                kept.append(encoded.reconstruction)
            bar.update(1)
            bar.set_postfix(bpp=f"{encoder.bytes_written * 8 / (info.width * info.height * len(psnr)):.4f}",
                            psnr=f"{psnr_sum / len(psnr):.2f}")  # the running mean, as the summary's
        encoder.flush()
        return psnr, kept, time.perf_counter() - start
    finally:
        bar.close()


def decode_video(source: str | Path, output: str | Path | None, device: str = "cpu", progress: bool = True,
                 keep: bool = False, conceal: bool = False, on_damage=None, *, format: str | None = None,
                 overwrite: bool | None = True, pipelined: bool = False) -> DecodeStats:
    """Decode to a writer chosen by `format` or `output`'s name (None: decode only; format "null":
    a null sink). `keep` returns the frames; `conceal`, `on_damage` and `pipelined` are those of
    `nvc.codec.Reader`."""
    if output is not None and format != "null":
        check_output(output, [source], overwrite)
    with Reader(source, device=device, conceal=conceal, on_damage=on_damage, pipelined=pipelined) as reader:
        h = reader.header
        writer = None
        try:
            if output is not None or format == "null":
                writer = open_writer(str(output), h.width, h.height, reader.fps, format,
                                     matrix=h.colorspace.name.lower(), color_range=h.color_range.name.lower(),
                                     chroma_location=h.chroma_location.name.lower(), sar=_sar(h.sar))
            loading = time.perf_counter()
            reader.load()
            load_seconds = time.perf_counter() - loading
            count, kept, seconds = _decode_frames(reader, writer, progress, keep)
            if writer is not None:
                writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    return DecodeStats(count, seconds, kept if keep else None, h.width, h.height, load_seconds)


def _decode_frames(reader, writer, progress: bool, keep: bool):
    """Decode every frame into `writer` (None: nowhere): (count, kept, seconds)."""
    bar = tqdm(total=reader.header.frame_count or None, desc="decode", unit="frame", disable=not progress, leave=False)
    kept, count = [], 0
    try:
        start = time.perf_counter()
        for frame in reader:
            if writer is not None:
                writer.write(frame)
            if keep:
                kept.append(frame)
            count += 1
            bar.update(1)
        return count, kept, time.perf_counter() - start
    finally:
        bar.close()


def _sar(sar: tuple[int, int]) -> Fraction | None:
    return Fraction(*sar) if sar[0] and sar[1] else None
