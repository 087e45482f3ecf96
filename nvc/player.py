"""Real-time output: release decoded frames at the stream's frame rate, and `nvc play`.

    pacer = Pacer(Fraction(25))
    for frame in reader:
        pacer.wait()            # sleeps until the frame's time; a frame ready after it counts as late
        writer.write(frame)
    print(pacer.stats.summary())

The schedule is fixed when the first frame is released: frame i is due at t0 + i / fps. A frame
that is ready before its time waits for it; one that is ready more than `tolerance` seconds after
it is *late* and is released at once (never dropped). The schedule is not moved after a late frame,
so a stall makes every frame behind it late until the decoder has caught up, as a player's clock
would see it. As a player does, `nvc decode --realtime` and `nvc play` decode ahead of the clock on
a thread of their own into a queue of `DECODE_AHEAD` frames (ffplay's picture queue holds 3), filled
before t0: model loading and those frames' decoding are the start-up; after it a frame that takes
longer than a frame interval (an I-frame) is absorbed as long as the queue does not run dry.

`nvc play` runs the same loop into the stdin of `ffplay` or `mpv` (whichever is installed) as
Y4M. The clock and the sleep are injectable, so that the pacing is tested without timing anything.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable

from nvc.errors import NvcError

DEFAULT_TOLERANCE = 0.002  # seconds after its due time before a frame counts as late (timer and scheduler noise)
DECODE_AHEAD = 3  # frames decoded before they are due (ffplay's VIDEO_PICTURE_QUEUE_SIZE)
PLAYERS = ("ffplay", "mpv")


@dataclass(frozen=True)
class PacingStats:
    frames: int
    late: int  # frames ready more than the tolerance after their due time
    max_late_seconds: float  # the worst lateness
    seconds: float  # from the first release to the last
    target_fps: Fraction

    @property
    def fps(self) -> float:
        """Achieved release rate: frame intervals over the time from the first release to the last."""
        if self.frames < 2 or self.seconds <= 0:
            return 0.0
        return (self.frames - 1) / self.seconds

    def summary(self) -> str:
        worst = f" (worst {1e3 * self.max_late_seconds:.1f} ms)" if self.late else ""
        return (f"realtime: {self.frames} frames, {self.late} late{worst}, {self.fps:.2f} fps achieved "
                f"(target {float(self.target_fps):.2f})")


class Pacer:
    """Releases frames at `fps` (see the module docstring); `clock()` returns seconds, `sleep(s)` waits."""

    def __init__(self, fps: Fraction | float, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep, tolerance: float = DEFAULT_TOLERANCE):
        fps = Fraction(fps)
        if fps <= 0:
            raise ValueError(f"frame rate must be positive, not {fps}")
        self.fps, self.interval = fps, 1 / fps
        self.clock, self.sleep, self.tolerance = clock, sleep, tolerance
        self._start: float | None = None
        self._last = 0.0
        self.frames = self.late = 0
        self.max_late = 0.0

    def due(self, index: int) -> float:
        """When frame `index` is due, on the clock (after the first release)."""
        return self._start + float(index * self.interval)

    def wait(self) -> float:
        """Wait until the next frame is due; returns how late it is (0.0 when on time)."""
        now = self.clock()
        if self._start is None:
            self._start = now
        due = self.due(self.frames)
        lateness = now - due
        if lateness < 0:
            self.sleep(-lateness)
            lateness = 0.0
            now = due
        elif lateness > self.tolerance:
            self.late += 1
            self.max_late = max(self.max_late, lateness)
        else:
            lateness = 0.0
        self.frames += 1
        self._last = now
        return lateness

    @property
    def stats(self) -> PacingStats:
        seconds = self._last - self._start if self._start is not None else 0.0
        return PacingStats(self.frames, self.late, self.max_late, seconds, self.fps)


def paced(frames, pacer: Pacer):
    """`frames`, each released when `pacer` says it is due."""
    for frame in frames:
        pacer.wait()
        yield frame


def decoded_ahead(frames, depth: int = DECODE_AHEAD):
    """`frames` (an iterable), iterated on a thread of its own up to `depth` frames ahead of the
    caller; the first frame is yielded once `depth` are ready (or the source ended). An exception of
    the source is raised here, in order; leaving the loop early stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for frame in frames:
                if not put((frame, None)):
                    return
            put((end, None))
        except BaseException as e:  # handed to the consumer, raised there
            put((end, e))

    thread = threading.Thread(target=produce, name="nvc-decode-ahead", daemon=True)
    thread.start()
    try:
        while ready.qsize() < depth and thread.is_alive():  # pre-roll
            time.sleep(0.001)
        while True:
            frame, error = ready.get()
            if frame is end:
                if error is not None:
                    raise error
                return
            yield frame
    finally:
        stop.set()
        thread.join()


def decode_realtime(source, output: str | None, device: str = "cpu", *, format: str | None = None,
                    pipelined: bool = True, conceal: bool = False, on_damage=None,
                    pacer: Pacer | None = None) -> PacingStats:
    """Decode `source` and write its frames to `output` at the stream's frame rate (a writer of
    `nvc.output`: "-" for Y4M on stdout; format "null" writes nothing). Returns the pacing statistics."""
    from nvc.codec import Reader

    with Reader(source, device=device, conceal=conceal, on_damage=on_damage, pipelined=pipelined) as reader:
        return _paced_decode(reader, pacer, output=output, format=format)


def _paced_decode(reader, pacer: Pacer | None, *, output: str | None = None, format: str | None = None,
                  file: BinaryIO | None = None) -> PacingStats:
    """`reader`'s frames, paced, into `output` (`nvc.output.open_writer`) or as Y4M into the binary
    `file` (a player's stdin: closing the player ends decoding, quietly)."""
    from nvc.output import open_writer, y4m_header

    h = reader.header
    sar = Fraction(*h.sar) if h.sar[0] and h.sar[1] else None
    colour = dict(color_range=h.color_range.name.lower(), chroma_location=h.chroma_location.name.lower(), sar=sar)
    pacer = pacer or Pacer(reader.fps)
    writer = None
    try:
        if file is not None:
            writer = _PipeY4M(file, y4m_header(h.width, h.height, reader.fps, **colour))
        else:
            writer = open_writer(str(output), h.width, h.height, reader.fps, format, matrix=h.colorspace.name.lower(),
                                 **colour)
        reader.load()
        for frame in paced(decoded_ahead(reader), pacer):
            writer.write(frame)
        writer.close()
    except BrokenPipeError:
        if file is None:  # stdout: the CLI stops quietly
            raise
        # the player was closed: the frames released so far are the result
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return pacer.stats


class _PipeY4M:
    """Y4M into an open binary file (a player's stdin), flushed frame by frame."""

    def __init__(self, file: BinaryIO, header: bytes):
        self._file = file
        self._file.write(header)

    def write(self, frame) -> None:
        self._file.write(b"FRAME\n" + frame.to_bytes())
        self._file.flush()

    def close(self) -> None:
        self._file.flush()

    def abort(self) -> None:
        pass


def player_command(title: str) -> list[str]:
    """The command line of the first installed player that reads Y4M on stdin."""
    for name in PLAYERS:
        path = shutil.which(name)
        if path is None:
            continue
        if name == "ffplay":
            return [path, "-hide_banner", "-loglevel", "error", "-autoexit", "-window_title", title,
                    "-f", "yuv4mpegpipe", "-i", "-"]
        return [path, "--really-quiet", f"--title={title}", "--demuxer=lavf", "--demuxer-lavf-format=yuv4mpegpipe", "-"]
    raise NvcError(f"no player found: nvc play needs {' or '.join(PLAYERS)} on the PATH "
                   f"(or pipe it yourself: nvc decode FILE -o - --realtime | PLAYER -)")


def play(source: str, device: str = "cpu", *, pipelined: bool = True, conceal: bool = False, on_damage=None,
         command: list[str] | None = None, pacer: Pacer | None = None) -> PacingStats:
    """Decode `source` in real time into a player (`command`, default `player_command`) until the
    end of the stream or until the player is closed. The header is read before the player starts."""
    from nvc.codec import Reader

    command = command or player_command(Path(source).name if source != "-" else "stdin")
    with Reader(source, device=device, conceal=conceal, on_damage=on_damage, pipelined=pipelined) as reader:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE)
        except OSError as e:
            raise NvcError(f"cannot start {command[0]}: {e.strerror}") from None
        try:
            return _paced_decode(reader, pacer, file=proc.stdin)
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait()
