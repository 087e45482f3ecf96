"""Writers for decoded frames: Y4M (file, pipe, device or stdout, frame by frame), raw .yuv, a folder
of PNGs, and a null sink that writes nothing (for benchmarks).

Files and folders are written under a temporary name and renamed only when complete; devices and
pipes are written directly (`nvc.atomic`). Y4M carries the stream's colour range, chroma siting and
sample aspect ratio; PNGs are converted with the stream's matrix and range.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

from nvc.atomic import AtomicPath, is_stream
from nvc.errors import NvcError
from nvc.frames import YUVFrame

FORMATS = ("y4m", "yuv", "png", "null")
_RAW_SUFFIXES = (".yuv", ".raw", ".i420")


class FrameWriter:
    """Base: `write(frame)` per frame, `close()` to complete, `abort()` to remove what was written."""

    def __init__(self, path: str, folder: bool = False):
        self._atomic = None if path == "-" else AtomicPath(path, folder=folder)

    def write(self, frame: YUVFrame) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass

    def close(self) -> None:
        self._finish()
        if self._atomic is not None:
            self._atomic.commit()

    def abort(self) -> None:
        try:
            self._finish()
        except OSError:
            pass
        if self._atomic is not None:
            self._atomic.discard()


class NullWriter(FrameWriter):
    """Writes nothing (`-f null`): decoding speed without the cost of an output."""

    def __init__(self):
        self._atomic = None

    def write(self, frame: YUVFrame) -> None:
        pass


class _StreamWriter(FrameWriter):
    def __init__(self, path: str):
        super().__init__(path)
        if self._atomic is None:
            self._file = sys.stdout.buffer
            return
        try:
            self._file = open(self._atomic.path, "wb")
        except OSError as e:
            self._atomic.discard()
            raise NvcError(f"cannot write {path}: {e.strerror}") from None
        except BaseException:
            self._atomic.discard()
            raise

    def _finish(self) -> None:
        if self._atomic is None:
            self._file.flush()
        elif not self._file.closed:
            self._file.close()


_Y4M_CHROMA = {"left": "C420mpeg2 XYSCSS=420MPEG2", "center": "C420jpeg XYSCSS=420JPEG"}
_Y4M_RANGE = {"tv": " XCOLORRANGE=LIMITED", "pc": " XCOLORRANGE=FULL"}


def y4m_header(width: int, height: int, fps: Fraction, color_range: str = "unknown",
               chroma_location: str = "unknown", sar: Fraction | None = None) -> bytes:
    """The stream header line; unknown siting is written as Y4M's default (420jpeg), an unknown
    aspect ratio as A0:0, an unknown range not at all."""
    aspect = f"A{sar.numerator}:{sar.denominator}" if sar else "A0:0"
    chroma = _Y4M_CHROMA.get(chroma_location, _Y4M_CHROMA["center"])
    return (f"YUV4MPEG2 W{width} H{height} F{fps.numerator}:{fps.denominator} Ip {aspect} {chroma}"
            f"{_Y4M_RANGE.get(color_range, '')}\n").encode()


class Y4MWriter(_StreamWriter):
    """YUV4MPEG2, 4:2:0; flushed after each frame so that players start at once."""

    def __init__(self, path: str, width: int, height: int, fps: Fraction, color_range: str = "unknown",
                 chroma_location: str = "unknown", sar: Fraction | None = None):
        super().__init__(path)
        try:
            self._file.write(y4m_header(width, height, fps, color_range, chroma_location, sar))
        except BaseException:
            self.abort()
            raise

    def write(self, frame: YUVFrame) -> None:
        self._file.write(b"FRAME\n" + frame.to_bytes())
        self._file.flush()


class RawYUVWriter(_StreamWriter):
    def write(self, frame: YUVFrame) -> None:
        self._file.write(frame.to_bytes())


class PNGFolderWriter(FrameWriter):
    """Numbered RGB PNGs, 000000.png, 000001.png, ..., converted with the stream's matrix and range."""

    def __init__(self, path: str, matrix: str = "bt709", color_range: str = "tv"):
        if path == "-":
            raise NvcError("PNG frames need a folder, not stdout: use -f y4m or -f yuv with -o -")
        super().__init__(path, folder=True)
        self._index = 0
        self.matrix, self.color_range = matrix, color_range

    def write(self, frame: YUVFrame) -> None:
        import av

        codec = av.CodecContext.create("png", "w")
        codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "rgb24"
        image = av.VideoFrame.from_ndarray(frame.to_rgb(self.matrix, self.color_range), format="rgb24")
        data = b"".join(bytes(p) for p in codec.encode(image) + codec.encode(None))
        (self._atomic.path / f"{self._index:06d}.png").write_bytes(data)
        self._index += 1


def output_format(path: str, format: str | None = None) -> str:
    """The format asked for, or the one the output name implies: '-' or .y4m -> y4m, .yuv -> raw,
    a device or pipe (/dev/null) -> y4m, a folder or a name without suffix -> png."""
    if format is not None:
        if format not in FORMATS:
            raise NvcError(f"unknown output format {format!r} (use {', '.join(FORMATS)})")
        return format
    p = Path(path)
    if path == "-" or p.suffix.lower() == ".y4m":
        return "y4m"
    if p.suffix.lower() in _RAW_SUFFIXES:
        return "yuv"
    if is_stream(path):
        return "y4m"
    if path.endswith(("/", "\\")) or p.is_dir() or p.suffix == "":
        return "png"
    raise NvcError(f"unknown output type {p.suffix!r}: use .y4m, .yuv, a folder for PNGs, or - for Y4M on stdout")


def open_writer(path: str, width: int, height: int, fps: Fraction, format: str | None = None, *,
                matrix: str = "unknown", color_range: str = "unknown", chroma_location: str = "unknown",
                sar: Fraction | None = None) -> FrameWriter:
    """The writer for `path` in `format` (default: from the name, `output_format`)."""
    kind = output_format(path, format)
    if kind == "null":
        return NullWriter()
    if kind == "y4m":
        return Y4MWriter(path, width, height, fps, color_range, chroma_location, sar)
    if kind == "yuv":
        return RawYUVWriter(path)
    return PNGFolderWriter(path.rstrip("/\\") or path, matrix, color_range)
