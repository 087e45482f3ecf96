"""Codecs under evaluation, behind one small interface (as CompressAI's bench does): nvc itself
and HEVC / AVC anchors through PyAV's libx265 / libx264. Adding VVC or AV1 is one more subclass.

A rate point is one integer parameter: nvc's quality level, or the anchor's constant QP. Rate is
always the size of the real output file: the `.nvc` file, or the Annex-B elementary stream.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from nvc.models.registry import DEFAULT_MODEL, entry_by_name, weights_hash
from nvc.errors import NvcError
from nvc.frames import YUVFrame
from nvc.video import av_frame_to_yuv


@dataclass(frozen=True)
class CodedSequence:
    path: Path
    encode_seconds: float
    decode_seconds: float
    decoded: list[YUVFrame]


class Codec(ABC):
    """Encodes a list of YUV420 frames at one rate point, then decodes the file it wrote."""

    name: str  # unique in a report, e.g. "x265-medium"
    parameter: str  # what a rate point sets, e.g. "qp" or "quality"
    extension: str

    @abstractmethod
    def settings(self, point: int, intra_period: int) -> dict:
        """The exact encoder settings of one rate point (recorded in results.json)."""

    @abstractmethod
    def encode(self, frames: list[YUVFrame], fps: Fraction, point: int, intra_period: int, path: Path) -> None: ...

    @abstractmethod
    def decode(self, path: Path) -> list[YUVFrame]: ...

    def warm_up(self) -> None:
        """One-time set-up (loading a model) that must not count as coding time."""

    def code(self, frames: list[YUVFrame], fps: Fraction, point: int, intra_period: int, path: Path) -> CodedSequence:
        self.warm_up()
        start = time.perf_counter()
        self.encode(frames, fps, point, intra_period, path)
        encoded = time.perf_counter()
        decoded = self.decode(path)
        done = time.perf_counter()
        if len(decoded) != len(frames):
            raise NvcError(f"{self.name} decoded {len(decoded)} of {len(frames)} frames from {path.name}")
        return CodedSequence(path, encoded - start, done - encoded, decoded)


class NvcCodec(Codec):
    """nvc with one of its shipped models, an I-frame every intra period and P-frames between
    (`all_intra`: every frame an I-frame, the reference that shows what P-frames save). Named after
    the model, so that models can be compared in one report."""

    parameter, extension = "quality", ".nvc"

    def __init__(self, device: str = "cpu", model: str = DEFAULT_MODEL, all_intra: bool = False,
                 hold_psnr: float | None = None):
        self.device, self.model, self.all_intra, self.hold_psnr = device, model, all_intra, hold_psnr
        self.name = f"{model}-intra" if all_intra else f"{model}-hold{hold_psnr:g}" if hold_psnr else model

    def levels(self) -> int:
        from nvc.model import load_shipped

        return load_shipped(entry_by_name(self.model), self.device)[0].config.quality_levels

    def stream_bytes(self, path: Path) -> dict:
        """Where the bytes went: per frame type, and per stream kind (motion, hyper, latent)."""
        from nvc.container import StreamHeader, read_packets

        split: dict[str, int] = {}
        with open(path, "rb") as f:
            for packet in read_packets(f, StreamHeader.read(f)):
                key = packet.frame_type.name
                split[key] = split.get(key, 0) + packet.size
                for s in packet.streams:
                    k = f"{key}-{s.kind.name.lower()}"
                    split[k] = split.get(k, 0) + len(s.data)
        return split

    def intra_period(self, intra_period: int) -> int:
        return 1 if self.all_intra else intra_period

    def warm_up(self) -> None:
        from nvc.model import load_shipped

        load_shipped(entry_by_name(self.model), self.device)

    def settings(self, point: int, intra_period: int) -> dict:
        """Includes the weights' hash and the encoder's choices (`nvc.codec.encoder_settings`): a point
        measured with other weights or other choices is stale."""
        from nvc.codec import encoder_settings

        return {"model": self.model, "quality": point, "intra_period": self.intra_period(intra_period),
                "device": self.device, "weights": weights_hash(entry_by_name(self.model).weights_path).hex(),
                **encoder_settings(self.model, self.intra_period(intra_period)),
                **({"hold_psnr": self.hold_psnr} if self.hold_psnr else {})}

    def encode(self, frames, fps, point, intra_period, path) -> None:
        from nvc.codec import Encoder

        with Encoder(path, frames[0].width, frames[0].height, fps=fps, quality=point, model=self.model,
                     device=self.device, intra_period=self.intra_period(intra_period), hold_psnr=self.hold_psnr) as enc:
            for f in frames:
                enc.encode(f)

    def decode(self, path) -> list[YUVFrame]:
        from nvc.codec import Reader

        with Reader(path, device=self.device) as r:
            return list(r)


class LibavCodec(Codec):
    """A libx265 / libx264 anchor: low delay (no B-frames), constant QP, tune=psnr."""

    library: str
    container: str

    def __init__(self, preset: str = "medium"):
        self.preset = preset
        self.name = f"{self.short}-{preset}"

    @abstractmethod
    def params(self, qp: int, intra_period: int) -> str: ...

    def settings(self, point: int, intra_period: int) -> dict:
        return {"library": self.library, "preset": self.preset, "tune": "psnr",
                f"{self.short}-params": self.params(point, intra_period)}

    def encode(self, frames, fps, point, intra_period, path) -> None:
        w, h = frames[0].width, frames[0].height
        if w % 2 or h % 2:
            raise NvcError(f"{self.name} needs an even frame size for 4:2:0, got {w}x{h}")
        with av.open(str(path), "w", format=self.container) as out:
            stream = out.add_stream(self.library, rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"preset": self.preset, "tune": "psnr", f"{self.short}-params": self.params(point, intra_period)}
            for i, f in enumerate(frames):
                planar = np.concatenate([f.y.ravel(), f.u.ravel(), f.v.ravel()]).reshape(h * 3 // 2, w)
                frame = av.VideoFrame.from_ndarray(planar, format="yuv420p")
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))

    def decode(self, path) -> list[YUVFrame]:
        with av.open(str(path)) as c:
            return [av_frame_to_yuv(f) for f in c.decode(video=0)]


class X265Codec(LibavCodec):
    short, library, container, parameter, extension = "x265", "libx265", "hevc", "qp", ".hevc"

    def params(self, qp: int, intra_period: int) -> str:
        return (f"qp={qp}:keyint={intra_period}:min-keyint={max(intra_period, 1)}:bframes=0:scenecut=0:"
                "open-gop=0:info=0:log-level=error")


class X264Codec(LibavCodec):
    short, library, container, parameter, extension = "x264", "libx264", "h264", "qp", ".h264"

    def params(self, qp: int, intra_period: int) -> str:
        keyint = "infinite" if intra_period < 0 else str(intra_period)
        return f"qp={qp}:keyint={keyint}:min-keyint=1:bframes=0:scenecut=0:log-level=error"


ANCHORS = {"x265": X265Codec, "x264": X264Codec}
