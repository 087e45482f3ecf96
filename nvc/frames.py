"""Decoded pictures: 8-bit YUV420 planes, and their conversion to RGB (BT.601 or BT.709)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def chroma_size(height: int, width: int) -> tuple[int, int]:
    """4:2:0 chroma plane size for any (also odd) luma size."""
    return (height + 1) // 2, (width + 1) // 2


@dataclass(frozen=True)
class YUVFrame:
    """One picture as three uint8 planes: Y (H x W), U and V (ceil(H/2) x ceil(W/2))."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def height(self) -> int:
        return self.y.shape[0]

    @property
    def width(self) -> int:
        return self.y.shape[1]

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.y, self.u, self.v

    def to_bytes(self) -> bytes:
        """Planar I420 bytes, as in .yuv and Y4M files."""
        return b"".join(np.ascontiguousarray(p).tobytes() for p in self.planes())

    @classmethod
    def gray(cls, width: int, height: int) -> "YUVFrame":
        """Mid-grey, what a decoder shows when it has no picture at all."""
        ch, cw = chroma_size(height, width)
        return cls(np.full((height, width), 128, np.uint8), np.full((ch, cw), 128, np.uint8),
                   np.full((ch, cw), 128, np.uint8))

    @classmethod
    def from_bytes(cls, data: bytes, width: int, height: int) -> "YUVFrame":
        ch, cw = chroma_size(height, width)
        buf = np.frombuffer(data, np.uint8)
        y_end = width * height
        u_end = y_end + cw * ch
        return cls(
            buf[:y_end].reshape(height, width),
            buf[y_end:u_end].reshape(ch, cw),
            buf[u_end : u_end + cw * ch].reshape(ch, cw),
        )

    @staticmethod
    def frame_bytes(width: int, height: int) -> int:
        ch, cw = chroma_size(height, width)
        return width * height + 2 * ch * cw

    def to_rgb(self, matrix: str = "bt709", color_range: str = "tv") -> np.ndarray:
        """H x W x 3 uint8 RGB; `matrix` bt709 or bt601 (unknown: bt709), `color_range` tv (limited,
        also for unknown) or pc (full); chroma upsampled by repetition."""
        return yuv420_to_rgb(self.y, self.u, self.v, matrix, color_range)


# Luma weights (Kr, Kb) of the YCbCr matrices (ITU-R BT.601 and BT.709).
_MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str = "bt709",
                  color_range: str = "tv") -> np.ndarray:
    kr, kb = _MATRICES.get(matrix, _MATRICES["bt709"])
    kg = 1.0 - kr - kb
    h, w = y.shape
    up = lambda c: np.repeat(np.repeat(c, 2, 0), 2, 1)[:h, :w].astype(np.float32) - 128.0  # noqa: E731
    if color_range == "pc":
        yy, cb, cr = y.astype(np.float32), up(u), up(v)
    else:
        yy = (y.astype(np.float32) - 16.0) * (255.0 / 219.0)
        cb, cr = up(u) * (255.0 / 224.0), up(v) * (255.0 / 224.0)
    r = yy + 2 * (1 - kr) * cr
    g = yy - (2 * kb * (1 - kb) / kg) * cb - (2 * kr * (1 - kr) / kg) * cr
    b = yy + 2 * (1 - kb) * cb
    return np.clip(np.stack([r, g, b], -1) + 0.5, 0, 255).astype(np.uint8)


def rgb_to_yuv420(rgb: np.ndarray) -> YUVFrame:
    """H x W x 3 uint8 RGB -> BT.709 limited-range YUV420 (2x2 mean for chroma)."""
    x = rgb.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    yl = 0.2126 * r + 0.7152 * g + 0.0722 * b
    cb = (b - yl) / 1.8556
    cr = (r - yl) / 1.5748
    h, w = yl.shape
    ch, cw = chroma_size(h, w)

    def down(c: np.ndarray) -> np.ndarray:
        c = np.pad(c, ((0, 2 * ch - h), (0, 2 * cw - w)), mode="edge")
        return c.reshape(ch, 2, cw, 2).mean(axis=(1, 3))

    to8 = lambda a, lo, span: np.clip(np.round(lo + span * a), 0, 255).astype(np.uint8)  # noqa: E731
    return YUVFrame(to8(yl, 16, 219), to8(down(cb), 128, 224), to8(down(cr), 128, 224))
