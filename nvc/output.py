"""Writers for decoded frames: Y4M (file or stdout, frame by frame), raw .yuv, a folder of PNGs.

Files and folders are written under a temporary name and renamed only when complete.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av

from nvc.atomic import AtomicPath
from nvc.errors import NvcError
from nvc.frames import YUVFrame


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


class _StreamWriter(FrameWriter):
    def __init__(self, path: str):
        super().__init__(path)
        self._file = sys.stdout.buffer if self._atomic is None else open(self._atomic.temp, "wb")

    def _finish(self) -> None:
        if self._atomic is None:
            self._file.flush()
        elif not self._file.closed:
            self._file.close()


class Y4MWriter(_StreamWriter):
    """YUV4MPEG2, 4:2:0, limited range; flushed after each frame so that players start at once."""

    def __init__(self, path: str, width: int, height: int, fps: Fraction):
        super().__init__(path)
        self._file.write(f"YUV4MPEG2 W{width} H{height} F{fps.numerator}:{fps.denominator} Ip A1:1 C420jpeg "
                         "XYSCSS=420JPEG XCOLORRANGE=LIMITED\n".encode())

    def write(self, frame: YUVFrame) -> None:
        self._file.write(b"FRAME\n" + frame.to_bytes())
        self._file.flush()


class RawYUVWriter(_StreamWriter):
    def write(self, frame: YUVFrame) -> None:
        self._file.write(frame.to_bytes())


class PNGFolderWriter(FrameWriter):
    """Numbered RGB PNGs (BT.709), 000000.png, 000001.png, ..."""

    def __init__(self, path: str):
        super().__init__(path, folder=True)
        self._index = 0

    def write(self, frame: YUVFrame) -> None:
        codec = av.CodecContext.create("png", "w")
        codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "rgb24"
        image = av.VideoFrame.from_ndarray(frame.to_rgb(), format="rgb24")
        data = b"".join(bytes(p) for p in codec.encode(image) + codec.encode(None))
        (self._atomic.temp / f"{self._index:06d}.png").write_bytes(data)
        self._index += 1


def open_writer(path: str, width: int, height: int, fps: Fraction) -> FrameWriter:
    """Pick the writer from the output name: '-' or .y4m -> Y4M, .yuv -> raw, a folder -> PNGs."""
    p = Path(path)
    if path == "-" or p.suffix.lower() == ".y4m":
        return Y4MWriter(path, width, height, fps)
    if p.suffix.lower() in (".yuv", ".raw", ".i420"):
        return RawYUVWriter(path)
    if path.endswith(("/", "\\")) or p.is_dir() or p.suffix == "":
        return PNGFolderWriter(path.rstrip("/\\") or path)
    raise NvcError(f"unknown output type {p.suffix!r}: use .y4m, .yuv, a folder for PNGs, or - for Y4M on stdout")


