"""Real-time output: the pacing (on a fake clock, nothing timed) and real consumers of the Y4M pipe."""

import hashlib
import subprocess
import sys
from fractions import Fraction

import pytest

import nvc
from nvc.cli import main
from nvc.errors import NvcError
from nvc.player import Pacer, paced

# A real consumer of the pipe: libavformat's Y4M demuxer (ffmpeg's, through PyAV; no ffmpeg binary
# is installed here), one line per frame: the SHA-256 of its planes.
CONSUMER = """
import hashlib, sys
import av
with av.open(sys.stdin.buffer, format="yuv4mpegpipe") as c:
    for frame in c.decode(video=0):
        print(hashlib.sha256(frame.to_ndarray().tobytes()).hexdigest(), flush=True)
"""


class FakeClock:
    """A clock that moves only when the code under test sleeps or the test says so."""

    def __init__(self, t: float = 100.0):
        self.t, self.sleeps = t, []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.t += seconds


def test_pacer_waits_when_ahead_and_counts_late_frames():
    clock = FakeClock()
    pacer = Pacer(Fraction(25), clock=clock, sleep=clock.sleep)  # a frame every 40 ms
    decode_times = [0.0, 0.010, 0.070, 0.010, 0.0]  # time to get each frame ready after the previous release
    released, lateness = [], []
    for cost in decode_times:
        clock.t += cost
        lateness.append(pacer.wait())
        released.append(clock.t)
    # frame 0 starts the schedule; 1 waits 30 ms; 2 is 30 ms late (released at once, not dropped);
    # 3 is due exactly when it is ready (the schedule did not move); 4 waits a whole interval
    assert released == pytest.approx([100.0, 100.04, 100.11, 100.12, 100.16])
    assert lateness == pytest.approx([0, 0, 0.03, 0, 0])
    assert clock.sleeps == pytest.approx([0.03, 0.04])
    stats = pacer.stats
    assert (stats.frames, stats.late) == (5, 1)
    assert stats.max_late_seconds == pytest.approx(0.03)
    assert stats.fps == pytest.approx(25)
    assert "5 frames, 1 late" in stats.summary()


def test_pacer_tolerance_and_a_stall_that_makes_several_frames_late():
    clock = FakeClock()
    pacer = Pacer(Fraction(30000, 1001), clock=clock, sleep=clock.sleep, tolerance=0.002)
    interval = 1001 / 30000
    frames = iter(range(6))

    def decoder():  # frame 1 stalls for 3.5 intervals; frame 5 is ready 1 ms after its time (within tolerance)
        for i in frames:
            clock.t += {1: 3.5 * interval, 5: interval + 0.001}.get(i, 0.0)
            yield i

    assert list(paced(decoder(), pacer)) == list(range(6))
    # frames 1 and 2 are late (due at 1 and 2 intervals, ready at 3.5); frame 3 is late by half an
    # interval; frame 4 waits for its time again
    assert pacer.stats.late == 3
    assert pacer.stats.max_late_seconds == pytest.approx(2.5 * interval)
    assert clock.t == pytest.approx(100 + 5 * interval + 0.001)


def test_pacer_refuses_a_rate_of_zero():
    with pytest.raises(ValueError):
        Pacer(0)


def expected_hashes(path) -> list[str]:
    with nvc.open(path) as f:
        return [hashlib.sha256(frame.to_bytes()).hexdigest() for frame in f]


def test_realtime_y4m_pipe_into_a_real_consumer(small_nvc):
    """`nvc decode -o - --realtime | consumer`: every frame arrives, as the decoder makes it."""
    decoder = subprocess.Popen([sys.executable, "-m", "nvc.cli", "decode", str(small_nvc), "-o", "-", "--realtime"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    consumer = subprocess.run([sys.executable, "-c", CONSUMER], stdin=decoder.stdout, capture_output=True,
                              text=True, timeout=300)
    decoder.stdout.close()
    stderr = decoder.stderr.read().decode()
    assert decoder.wait(timeout=60) == 0, stderr
    assert consumer.returncode == 0, consumer.stderr
    assert consumer.stdout.split() == expected_hashes(small_nvc)
    summary = stderr.strip().splitlines()[-1]
    assert summary.startswith("realtime: 3 frames, ") and "fps achieved (target 29.97)" in summary


def test_realtime_null_sink(small_nvc, capsys):
    assert main(["decode", str(small_nvc), "-f", "null", "--realtime"]) == 0
    assert capsys.readouterr().err.startswith("realtime: 3 frames, ")


def test_play_without_a_player_is_one_clear_line(small_nvc, capsys, monkeypatch):
    monkeypatch.setattr("nvc.player.shutil.which", lambda name: None)
    assert main(["play", str(small_nvc)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nvc: error: no player found: nvc play needs ffplay or mpv")


def test_play_pipes_every_frame_into_the_player(small_nvc, tmp_path, monkeypatch, capsys):
    """`nvc play` with a stand-in player (the consumer above) on the PATH's place."""
    script = tmp_path / "player.py"
    script.write_text(CONSUMER.replace("flush=True)", "file=out, flush=True)").replace(
        "import av\n", "import av\nout = open(sys.argv[1], 'w')\n"))
    hashes = tmp_path / "hashes.txt"
    monkeypatch.setattr("nvc.player.player_command", lambda title: [sys.executable, str(script), str(hashes)])
    assert main(["play", str(small_nvc)]) == 0
    assert hashes.read_text().split() == expected_hashes(small_nvc)
    assert capsys.readouterr().err.startswith("realtime: 3 frames, ")


def test_play_stops_quietly_when_the_player_is_closed(small_nvc, monkeypatch, capsys):
    monkeypatch.setattr("nvc.player.player_command", lambda title: [sys.executable, "-c", "import sys; sys.exit(0)"])
    assert main(["play", str(small_nvc)]) == 0
    assert capsys.readouterr().err.startswith("realtime: ")


def test_play_checks_the_input_before_starting_the_player(tmp_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr("nvc.player.player_command", lambda title: started.append(title) or ["true"])
    monkeypatch.setattr("nvc.player.subprocess.Popen", lambda *a, **k: started.append("popen"))
    assert main(["play", str(tmp_path / "none.nvc")]) == 1
    assert capsys.readouterr().err == f"nvc: error: input not found: {tmp_path / 'none.nvc'}\n"
    assert "popen" not in started


def test_decoded_ahead_keeps_order_errors_and_stops_early():
    """The decode-ahead queue of the real-time output: the frames in order, the source's error
    raised in its place, and a consumer that stops early stops the decoding thread."""
    import threading

    from nvc.player import decoded_ahead

    assert list(decoded_ahead(iter(range(10)), depth=3)) == list(range(10))
    assert list(decoded_ahead(iter([]), depth=3)) == []

    def failing():
        yield 1
        yield 2
        raise NvcError("corrupt latent data in frame 2")

    got = []
    with pytest.raises(NvcError, match="frame 2"):
        for frame in decoded_ahead(failing(), depth=3):
            got.append(frame)
    assert got == [1, 2]

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    frames = decoded_ahead(endless(), depth=3)
    assert [next(frames) for _ in range(5)] == list(range(5))
    frames.close()
    assert not any(t.name == "nvc-decode-ahead" for t in threading.enumerate())
    assert len(produced) <= 5 + 3 + 1  # at most a queue's worth beyond what was taken
