"""GOP structure and decoded-picture buffer of low-delay P coding.

Frames are coded in display order. Frame i is an I-frame when it starts a GOP (i % intra_period
== 0, or only i == 0 with intra_period -1); every other frame is a P-frame that references the
frame before it. A P-frame is useless without its reference, so the buffer records which frame it
holds and a decoder can say exactly what is missing; the next I-frame refills it.
"""

from __future__ import annotations

from nvc.container import FrameType
from nvc.errors import NvcError
from nvc.model import Reconstruction

DEFAULT_INTRA_PERIOD = 32


def check_intra_period(intra_period: int) -> int:
    if intra_period == 0 or intra_period < -1:
        raise NvcError(f"--intra-period must be a positive number of frames or -1 (only the first), got {intra_period}")
    return intra_period


def frame_type(index: int, intra_period: int) -> FrameType:
    if index == 0 or (intra_period > 0 and index % intra_period == 0):
        return FrameType.I
    return FrameType.P


def next_intra(index: int, intra_period: int) -> int | None:
    """The first I-frame after frame `index`, or None when the stream has no more."""
    if intra_period < 0:
        return None
    return (index // intra_period + 1) * intra_period


class ReferenceBuffer:
    """One reference, the previous decoded frame (low delay, as HEVC LDP with one reference)."""

    def __init__(self) -> None:
        self._ref: Reconstruction | None = None
        self._index = -1

    def put(self, index: int, rec: Reconstruction) -> None:
        self._ref, self._index = rec, index

    def clear(self) -> None:
        self._ref, self._index = None, -1

    def reference_for(self, index: int) -> Reconstruction:
        """The reference of P-frame `index`; NvcError when frame index-1 was not decoded."""
        if self._ref is None or self._index != index - 1:
            raise NvcError(f"frame {index} is a P-frame and its reference, frame {index - 1}, was not decoded")
        return self._ref
