"""GOP structure, decoded-picture buffer and per-frame quality levels of low-delay P coding.

Frames are coded in display order. Frame i is an I-frame when it starts a GOP (i % intra_period
== 0, or only i == 0 with intra_period -1); every other frame is a P-frame that references the
frame before it. A P-frame is useless without its reference, so the buffer records which frame it
holds and a decoder can say exactly what is missing; the next I-frame refills it. The encoder
may code each frame at its own quality level (`QualitySchedule`); the packet records it.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class QualitySchedule:
    """The quality level of each frame of a low-delay stream, around the level asked for: an encoder
    choice (every packet records its own level; decoders follow it).

    A frame that later frames predict from is worth more bits than one that only ends a chain:
    x265 codes I-frames at a lower QP than P-frames (--ipratio), and DCVC-DC (Li et al., CVPR
    2023) weights P-frames in a period of 4. Here I-frames go `intra` levels above the level asked
    for, and every `period`-th frame of a GOP `periodic` levels above it (each level doubles
    lambda), capped at the top level. With intra period 1 every frame is an I-frame and all code at
    the level asked for."""

    intra: int = 0
    period: int = 0
    periodic: int = 0

    def level(self, index: int, intra_period: int, quality: int, levels: int) -> int:
        if intra_period == 1:
            return quality
        if frame_type(index, intra_period) == FrameType.I:
            offset = self.intra
        else:
            position = index % intra_period if intra_period > 0 else index
            offset = self.periodic if self.period and position % self.period == 0 else 0
        return min(quality + offset, levels - 1)


FLAT_QUALITY = QualitySchedule()
# The encoder's schedule per model (others: flat). lean-mc-yuv420-v2, chosen on three training
# clips (32 frames, intra period 32, levels 0 2 4 6; BD-rate against every frame at one level,
# 02_cups / 16_robotarm / 21_biker): I+2 -19.2 / -8.9 / -5.3 %, I+3 -23.3 / -10.3 / -, I+4
# -23.2 / -9.6 / -, I+3 with every 4th P-frame +1 -24.2 / -16.0 / -6.1 %, every 2nd +1 - / -13.6 /
# -6.4, every 4th +2 - / -17.5 / -4.8, every 4th +2 and every 2nd +1 -21.3 / -16.4 / -5.1 % (about
# half the PSNR fall over the GOP at q0, higher rates at q0). The I-frames' quality carries into the
# P-frames that copy it. pq-mim-v1 stays flat: I+1 +9.2 / +26.3 %, I+2 +19.3 / +57.7 % (16_robotarm /
# 02_cups, 16 frames, levels 0 1 3 5): its P-frames keep the tokens they can and gain ~0.05 dB.
QUALITY_SCHEDULES = {"lean-mc-yuv420-v2": QualitySchedule(intra=3, period=4, periodic=1)}


def quality_schedule(model: str) -> QualitySchedule:
    return QUALITY_SCHEDULES.get(model, FLAT_QUALITY)


class PsnrHold:
    """Feedback on the levels of a GOP's P-frames that holds their PSNR near the first one's, against
    the fall over a low-delay GOP (each P-frame copies a reference a little worse than the one
    before; x265 falls 1-2 dB over 32 frames too): an encoder choice, every packet records its level.

    After each P-frame the encoder calls `observe` with its PSNR-YUV: more than `margin` dB below the
    GOP's first P-frame raises the following P-frames one level (added to `QualitySchedule`'s), more
    than `margin` above lowers them one, never below the schedule's; an I-frame starts over. Holding
    costs rate where the fall is steep (the lowest levels): with 0.25 dB, on the held-out intel clip
    (96 frames, levels 0 2 4) the drift goes from -2.5..-2.2 dB to -0.5..-0.3 dB for +8.3 % BD-rate
    (`nvc eval --hold-psnr`, `python -m tools.rd_check --hold-ablation`; the other clips in the README)."""

    def __init__(self, margin: float):
        if not margin > 0:
            raise NvcError(f"the PSNR hold's margin must be a positive number of dB, got {margin}")
        self.margin = margin
        self.offset = 0
        self._target: float | None = None

    def level(self, scheduled: int, kind: FrameType, levels: int) -> int:
        return scheduled if kind == FrameType.I else min(scheduled + self.offset, levels - 1)

    def observe(self, kind: FrameType, psnr: float, levels: int) -> None:
        if kind == FrameType.I:
            self.offset, self._target = 0, None
        elif self._target is None:
            self._target = psnr
        elif psnr < self._target - self.margin:
            self.offset = min(self.offset + 1, levels - 1)
        elif psnr > self._target + self.margin:
            self.offset = max(self.offset - 1, 0)


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
