"""Whole-file operations behind the CLI: encode a video to `.nvc`, decode `.nvc` to frames."""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nvc.codec import DEFAULT_QUALITY, Encoder, Reader
from nvc.errors import NvcError
from nvc.frames import YUVFrame
from nvc.gop import DEFAULT_INTRA_PERIOD
from nvc.metrics import FramePSNR, frame_psnr
from nvc.output import open_writer
from nvc.video import VideoSource


@dataclass(frozen=True)
class EncodeStats:
    frames: int
    width: int
    height: int
    bytes: int  # the whole .nvc file
    seconds: float
    psnr: list[FramePSNR]  # per frame, reconstruction vs source
    reconstructions: list[YUVFrame] | None = None  # with keep=True: what a decoder will output

    @property
    def bpp(self) -> float:
        return self.bytes * 8 / (self.width * self.height * self.frames)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def mean_psnr(self, attr: str = "yuv") -> float:
        return float(np.mean([getattr(p, attr) for p in self.psnr]))

    def summary(self) -> str:
        return (f"{self.frames} frames {self.width}x{self.height}, {self.bytes} bytes, {self.bpp:.4f} bpp, "
                f"PSNR-YUV {self.mean_psnr():.2f} dB (Y {self.mean_psnr('y'):.2f} U {self.mean_psnr('u'):.2f} "
                f"V {self.mean_psnr('v'):.2f}), {self.fps:.2f} fps")


@dataclass(frozen=True)
class DecodeStats:
    frames: int
    seconds: float
    reconstructions: list[YUVFrame] | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def summary(self) -> str:
        return f"decoded {self.frames} frames in {self.seconds:.2f} s, {self.fps:.2f} fps"


def encode_video(source: str | Path, output: str | Path, quality: int = DEFAULT_QUALITY, frames: int | None = None,
                 device: str = "cpu", size: tuple[int, int] | None = None, fps: Fraction | None = None,
                 progress: bool = True, keep: bool = False, intra_period: int = DEFAULT_INTRA_PERIOD) -> EncodeStats:
    if frames is not None and frames < 1:
        raise NvcError(f"--frames must be at least 1, got {frames}")
    with VideoSource(source, size=size, fps=fps) as src:
        info = src.info
        known = [n for n in (frames, info.frame_count) if n]
        total = min(known) if known else None
        encoder = Encoder(output, info.width, info.height, fps=info.fps, quality=quality, device=device,
                          colorspace=info.colorspace, intra_period=intra_period)
        psnr, kept = [], []
        bar = tqdm(total=total, desc="encode", unit="frame", disable=not progress, leave=False)
        try:
            start = time.perf_counter()
            for frame in src:
                if frames is not None and encoder.frames_written >= frames:
                    break
                encoded = encoder.encode(frame)
                psnr.append(frame_psnr(frame, encoded.reconstruction))
                if keep:
                    kept.append(encoded.reconstruction)
                bar.update(1)
                bar.set_postfix(bpp=f"{encoder.bytes_written * 8 / (info.width * info.height * len(psnr)):.4f}",
                                psnr=f"{psnr[-1].yuv:.2f}")
            encoder.flush()
            seconds = time.perf_counter() - start
        except BaseException:
            encoder.abort()
            raise
        finally:
            bar.close()
    return EncodeStats(encoder.frames_written, info.width, info.height, encoder.bytes_written, seconds, psnr,
                       kept if keep else None)


def decode_video(source: str | Path, output: str | Path | None, device: str = "cpu", progress: bool = True,
                 keep: bool = False, conceal: bool = False, on_damage=None) -> DecodeStats:
    """Decode to a writer chosen by `output`'s name (None: decode only). `keep` returns the frames;
    `conceal` and `on_damage` are those of `nvc.codec.Reader`."""
    with Reader(source, device=device, conceal=conceal, on_damage=on_damage) as reader:
        h = reader.header
        writer = open_writer(str(output), h.width, h.height, reader.fps) if output is not None else None
        bar = tqdm(total=h.frame_count or None, desc="decode", unit="frame", disable=not progress, leave=False)
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
            seconds = time.perf_counter() - start
            if writer is not None:
                writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            bar.close()
    return DecodeStats(count, seconds, kept if keep else None)
