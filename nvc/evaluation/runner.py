"""Run the evaluation protocol: every codec at every rate point on every sequence, measured alike.

Results are appended to `results.json` as each point finishes; a rerun with the same protocol skips
the points already there, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nvc.errors import NvcError
from nvc.evaluation.codecs import Codec
from nvc.frames import YUVFrame
from nvc.metrics import frame_psnr, ms_ssim_y, psnr_rgb
from nvc.video import RAW_EXTENSIONS, VideoSource

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".y4m", ".ts", ".m4v", *RAW_EXTENSIONS}
START_QPS = (22, 27, 32, 37)
QP_STEP = 5


@dataclass(frozen=True)
class PointResult:
    sequence: str
    codec: str
    point: int  # quality level or QP
    settings: dict
    frames: int
    width: int
    height: int
    intra_period: int
    bytes: int
    bpp: float
    psnr_y: float
    psnr_u: float
    psnr_v: float
    psnr_yuv: float
    psnr_rgb: float
    ms_ssim: float
    encode_fps: float
    decode_fps: float
    psnr_yuv_per_frame: list[float] = field(default_factory=list)
    stream_bytes: dict = field(default_factory=dict)  # nvc: bytes per frame type and stream kind

    def key(self) -> tuple:
        return (self.sequence, self.codec, self.point, self.frames, self.intra_period)


@dataclass(frozen=True)
class Sequence:
    name: str
    frames: list[YUVFrame]
    fps: Fraction

    @property
    def width(self) -> int:
        return self.frames[0].width

    @property
    def height(self) -> int:
        return self.frames[0].height


def find_inputs(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS)
        elif p.exists():
            found.append(p)
        else:
            raise NvcError(f"input not found: {p}")
    if not found:
        raise NvcError("no video files in the inputs")
    return found


def load_sequence(path: Path, frames: int, size=None, fps=None) -> Sequence:
    with VideoSource(path, size=size, fps=fps) as src:
        out = []
        for f in src:
            if len(out) >= frames:
                break
            out.append(f)
        if not out:
            raise NvcError(f"{path.name} has zero frames")
        return Sequence(path.stem, out, src.info.fps)


def measure(codec: Codec, seq: Sequence, point: int, intra_period: int, workdir: Path) -> PointResult:
    path = workdir / f"{seq.name}.{codec.name}.{point}{codec.extension}"
    coded = codec.code(seq.frames, seq.fps, point, intra_period, path)
    size = path.stat().st_size
    psnrs = [frame_psnr(a, b) for a, b in zip(seq.frames, coded.decoded)]
    n = len(seq.frames)
    mean = lambda values: float(np.mean(values))  # noqa: E731 - per-frame metrics averaged over frames
    result = PointResult(
        sequence=seq.name, codec=codec.name, point=point, settings=codec.settings(point, intra_period), frames=n,
        width=seq.width, height=seq.height, intra_period=intra_period, bytes=size,
        bpp=size * 8 / (seq.width * seq.height * n),
        psnr_y=mean([p.y for p in psnrs]), psnr_u=mean([p.u for p in psnrs]), psnr_v=mean([p.v for p in psnrs]),
        psnr_yuv=mean([p.yuv for p in psnrs]),
        psnr_rgb=mean([psnr_rgb(a, b) for a, b in zip(seq.frames, coded.decoded)]),
        ms_ssim=mean([ms_ssim_y(a, b) for a, b in zip(seq.frames, coded.decoded)]),
        encode_fps=n / coded.encode_seconds, decode_fps=n / coded.decode_seconds,
        psnr_yuv_per_frame=[round(p.yuv, 3) for p in psnrs],
        stream_bytes=codec.stream_bytes(path) if hasattr(codec, "stream_bytes") else {},
    )
    path.unlink()
    return result


class ResultStore:
    """results.json: every measured point, rewritten atomically after each one."""

    def __init__(self, path: Path, protocol: dict):
        self.path, self.protocol = path, protocol
        self.points: dict[tuple, PointResult] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                for p in data.get("points", []):
                    r = PointResult(**p)
                    self.points[r.key()] = r
            except (ValueError, TypeError) as e:
                raise NvcError(f"cannot resume from {path}: {e}") from None

    def get(self, seq: str, codec: Codec, point: int, frames: int, intra_period: int) -> PointResult | None:
        """A finished point, unless the codec's settings have changed since (a new model)."""
        found = self.points.get((seq, codec.name, point, frames, intra_period))
        if found is not None and found.settings != codec.settings(point, intra_period):
            return None
        return found

    def add(self, result: PointResult) -> None:
        self.points[result.key()] = result
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".results.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"protocol": self.protocol, "points": [asdict(p) for p in self.points.values()]}, f, indent=1)
        os.replace(tmp, self.path)

    def curve(self, seq: str, codec: str, frames: int, intra_period: int) -> list[PointResult]:
        return sorted((p for p in self.points.values()
                       if p.sequence == seq and p.codec == codec and p.frames == frames
                       and p.intra_period == intra_period), key=lambda p: p.bpp)


def anchor_points(done: list[PointResult], target: list[PointResult]) -> list[int]:
    """The next QPs to run so that the anchor covers the target's bpp range and its PSNR-YUV range
    (the interval BD-rate integrates over), within QP 0..51; [] when it does."""
    qps = sorted(p.point for p in done)
    if not qps:
        return list(START_QPS)
    lower_qp = (max(p.bpp for p in done) < max(p.bpp for p in target)
                or max(p.psnr_yuv for p in done) < max(p.psnr_yuv for p in target))
    higher_qp = (min(p.bpp for p in done) > min(p.bpp for p in target)
                 or min(p.psnr_yuv for p in done) > min(p.psnr_yuv for p in target))
    more = []
    if lower_qp and qps[0] > 0:
        more.append(max(qps[0] - QP_STEP, 0))
    if higher_qp and qps[-1] < 51:
        more.append(min(qps[-1] + QP_STEP, 51))
    return more


def run(sequences: list[Sequence], nvc_codec: Codec, qualities: list[int], anchors: list[Codec],
        anchor_qps: list[int] | None, intra_period: int, store: ResultStore, workdir: Path,
        progress: bool = True, references: list[tuple[Codec, list[int]]] = ()) -> None:
    """Measure nvc at `qualities` and each reference (another nvc model or configuration) at its
    own levels, then each anchor at `anchor_qps` or at a QP sweep covering nvc's curve."""
    total = len(sequences) * (len(qualities) + sum(len(q) for _, q in references)
                              + (len(anchors) * len(anchor_qps) if anchor_qps else 0))
    bar = tqdm(desc="eval", unit="point", total=total or None, disable=not progress)

    def point(codec: Codec, seq: Sequence, p: int) -> PointResult:
        n = len(seq.frames)
        bar.set_description(f"eval {seq.name} {codec.name} {codec.parameter}={p}")
        found = store.get(seq.name, codec, p, n, intra_period)
        if found is None:
            found = measure(codec, seq, p, intra_period, workdir)
            store.add(found)
        bar.update(1)
        return found

    try:
        for seq in sequences:
            ours = [point(nvc_codec, seq, q) for q in qualities]
            for ref, levels in references:
                for q in levels:
                    point(ref, seq, q)
            for anchor in anchors:
                if anchor_qps:
                    for qp in anchor_qps:
                        point(anchor, seq, qp)
                    continue
                done: list[PointResult] = []
                while qps := anchor_points(done, ours):
                    done += [point(anchor, seq, qp) for qp in qps]
    finally:
        bar.close()
