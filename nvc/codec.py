"""Frame-level codec: YUV420 frames in, `.nvc` packets out, and back.

Frames of any size are edge-padded to a multiple of 64 for the model and cropped on output.
Frames are coded in low-delay order (`nvc.gop`): an I-frame (intra model) starts every GOP of
`intra_period` frames, the others are P-frames coded from the previous decoded frame (inter model,
`nvc.model`). The container records the model id and the hash of its weights, and a decoder with
other weights refuses the file.

The encoder chooses how the v2 model runs (`engine=`, `entropy=`) and the header records it: the
synthesis engine ("torch", the fp32 reference on one thread, or an int8 engine of
`nvc.deploy.int8`: "openvino", "onnxruntime"; "int8" names the default one, `DEFAULT_INT8_ENGINE`)
and the entropy parameters ("float", or "integer": `nvc.deploy.integer`). The encoder's
reconstruction is what the decoder computes with the same choice, so a decoder (`Reader`,
`nvc.open`) runs what the stream names, whatever the caller's thread count.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import sys
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from fractions import Fraction
from typing import BinaryIO, Iterator

import numpy as np
import torch

from nvc.models.config import DEFAULT_QUALITY
from nvc.models.registry import DEFAULT_MODEL, MODEL_TABLE, entry_by_name
from nvc.models.transforms import PAD_MULTIPLE, pack_yuv420
from nvc.atomic import AtomicPath
from nvc.container import (END_OF_STREAM, ChromaLocation, ColorRange, ColorSpace, DamagedPacket, EntropyParameters,
                           VERSION, FramePacket, FrameType, StreamHeader, SynthesisEngine, read_packets)
from nvc.errors import NvcError
from nvc.frames import YUVFrame, chroma_size
from nvc.gop import (DEFAULT_INTRA_PERIOD, FLAT_QUALITY, PsnrHold, QualitySchedule, ReferenceBuffer, check_intra_period,
                     frame_type, next_intra, quality_schedule as default_quality_schedule)
from nvc.metrics import frame_psnr
from nvc.model import Reconstruction, VideoModel, load_shipped
from nvc.runtime import keep_freed_memory


def padded_size(n: int) -> int:
    """The coded (padded) size of a luma dimension: the next multiple of 64."""
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


def frame_to_tensor(frame: YUVFrame, device: str | torch.device = "cpu") -> torch.Tensor:
    """YUV420 uint8 planes -> packed (1, 6, Hp/2, Wp/2) float tensor, edge-padded."""
    hp, wp = padded_size(frame.height), padded_size(frame.width)
    planes = []
    for plane, (h, w) in zip(frame.planes(), ((hp, wp), (hp // 2, wp // 2), (hp // 2, wp // 2))):
        p = np.pad(plane, ((0, h - plane.shape[0]), (0, w - plane.shape[1])), mode="edge")
        planes.append(torch.from_numpy(p).to(device=device, dtype=torch.float32).div_(255)[None, None])
    return pack_yuv420(*planes)


def tensor_to_frame(x: torch.Tensor, height: int, width: int) -> YUVFrame:
    """Packed reconstruction (float on the 8-bit grid, or its uint8 bytes) -> cropped YUV420 uint8 planes."""
    ch, cw = chroma_size(height, width)
    if x.dtype == torch.uint8:
        q = x[0].cpu().numpy()
    else:  # to 8 bits first, then unpack
        q = x[0].mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    h2, w2 = q.shape[1:]
    y = q[:4].reshape(2, 2, h2, w2)[:, :, : (height + 1) // 2, : (width + 1) // 2]  # luma 2x2 phases (unpack_yuv420)
    y = y.transpose(2, 0, 3, 1).reshape(2 * y.shape[2], 2 * y.shape[3])
    return YUVFrame(np.ascontiguousarray(y[:height, :width]), q[4, :ch, :cw].copy(), q[5, :ch, :cw].copy())


def reconstruction_to_frame(rec: Reconstruction, height: int, width: int) -> YUVFrame:
    """A decoded frame's YUV420 planes, from the synthesis's bytes when it made them."""
    return tensor_to_frame(rec.x_bytes if rec.x_bytes is not None else rec.x_hat, height, width)


def resolve_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise NvcError("--device cuda was asked for but CUDA is not available on this machine")
    if device not in ("cpu", "cuda"):
        raise NvcError(f"unknown device {device!r} (use cpu or cuda)")
    return device


ENGINES = ("torch", "int8", "openvino", "onnxruntime")  # what `Encoder(engine=...)` takes
DEFAULT_ENGINE = "torch"
DEFAULT_INT8_ENGINE = "openvino"  # the fastest int8 engine measured here (README, "Real-time decoding")
ENTROPY_PARAMETERS = ("float", "integer")  # what `Encoder(entropy=...)` takes
DEFAULT_ENTROPY = "float"
DEPLOYABLE_MODELS = ("lean-mc-yuv420-v2",)  # the models that int8 synthesis and integer parameters exist for


def synthesis_engine(name: str) -> SynthesisEngine:
    """An `engine=` name ("int8": the default int8 engine) as the header's enum."""
    if name not in ENGINES:
        raise NvcError(f"unknown synthesis engine {name!r} (one of {', '.join(ENGINES)})")
    return SynthesisEngine[(DEFAULT_INT8_ENGINE if name == "int8" else name).upper()]


def entropy_parameters(name: str) -> EntropyParameters:
    if name not in ENTROPY_PARAMETERS:
        raise NvcError(f"unknown entropy parameters {name!r} (one of {', '.join(ENTROPY_PARAMETERS)})")
    return EntropyParameters[name.upper()]


def _log(message: str) -> None:
    print(f"nvc: {message}", file=sys.stderr, flush=True)


@lru_cache(maxsize=8)
def deployed_model(entry, device: str, engine: SynthesisEngine, entropy: EntropyParameters):
    """(model, weights hash, synthesis id) of a shipped model run as `engine` and `entropy` say:
    copies of the shipped model that share its weights (`nvc.deploy`). The synthesis id is the
    int8 graphs' hash prefix (zeros for torch). An int8 engine's graphs are built from the weights
    the first time (calibration on the training clips, minutes; cached under $NVC_CACHE)."""
    try:
        model, weights_hash = load_shipped(entry, device)
    except FileNotFoundError as e:  # a model of the table whose weights this installation lacks
        raise NvcError(str(e)) from None
    synthesis_id = bytes(8)
    if engine == SynthesisEngine.TORCH and entropy == EntropyParameters.FLOAT:
        return model, weights_hash, synthesis_id
    if entry.name not in DEPLOYABLE_MODELS:
        raise NvcError(f"{engine.label} synthesis and {entropy.label} entropy parameters: only "
                       f"{', '.join(DEPLOYABLE_MODELS)} has them ({entry.name} runs torch and float)")
    if entropy == EntropyParameters.INTEGER:
        from nvc.deploy.integer import with_integer_parameters

        model = with_integer_parameters(model)
    if engine != SynthesisEngine.TORCH:
        try:
            from nvc.deploy.int8 import with_synthesis

            model = with_synthesis(model, engine.label, threads=1, log=_log)
        except ImportError as e:
            raise NvcError(f"{engine.label} int8 synthesis needs {e.name} (pip install {e.name})") from None
        except FileNotFoundError as e:
            raise NvcError(f"cannot build the int8 graphs: {e}") from None
        digest = hashlib.sha256()
        for kind in ("intra", "inter"):
            digest.update(model.intra._synthesis_backend.paths[kind].read_bytes())
        synthesis_id = digest.digest()[:8]
    return model, weights_hash, synthesis_id


@dataclass(frozen=True)
class EncodedFrame:
    index: int
    frame_type: FrameType
    bytes: int  # packet size in the file, container overhead included
    reconstruction: YUVFrame  # exactly what a decoder will output


class Encoder:
    """Encodes YUV420 frames to an `.nvc` file ("-" for stdout); `flush()` completes the file.

        with nvc.Encoder("clip.nvc", 1280, 720, fps=25, quality=3) as enc:
            for frame in frames:
                enc.encode(frame)
    """

    def __init__(self, output: str | os.PathLike | BinaryIO, width: int, height: int, fps=Fraction(25),
                 quality: int = DEFAULT_QUALITY, model: str = DEFAULT_MODEL, device: str = "cpu",
                 colorspace: str = "unknown", intra_period: int = DEFAULT_INTRA_PERIOD, color_range: str = "unknown",
                 chroma_location: str = "unknown", sar: Fraction | tuple[int, int] | None = None,
                 engine: str = DEFAULT_ENGINE, entropy: str = DEFAULT_ENTROPY,
                 quality_schedule: QualitySchedule | None = None, hold_psnr: float | None = None):
        """`colorspace` (bt709, bt601), `color_range` (tv, pc), `chroma_location` (left, center) and
        `sar` (sample aspect ratio) describe the source; they go into the header, "unknown" or None
        when not known. `engine` runs synthesis (`ENGINES`: "torch" the fp32 reference, "int8" =
        `DEFAULT_INT8_ENGINE`, "openvino", "onnxruntime") and `entropy` the entropy parameters
        ("float", "integer"), here and in every decoder of the file (the header records both);
        other than torch and float for lean-mc-yuv420-v2 only. `quality_schedule` sets each frame's
        level around `quality` (`nvc.gop.QualitySchedule`; default: the model's, `FLAT_QUALITY`
        codes every frame at `quality`); `hold_psnr` (dB) raises P-frames' levels where their PSNR falls
        more than that below their GOP's first P-frame's (`nvc.gop.PsnrHold`; None: off)."""
        if width <= 0 or height <= 0:
            raise NvcError(f"invalid frame size {width}x{height}")
        check_intra_period(intra_period)
        entry = _model_entry(model)
        self.device = resolve_device(device)
        keep_freed_memory()
        self.engine, self.entropy = synthesis_engine(engine), entropy_parameters(entropy)
        self.model, weights_hash, synthesis_id = deployed_model(entry, self.device, self.engine, self.entropy)
        if self.model.inter is None and intra_period != 1:
            raise NvcError(f"model {entry.name} codes I-frames only: use --intra-period 1")
        levels = self.model.config.quality_levels
        if not 0 <= quality < levels:
            raise NvcError(f"--quality must be 0..{levels - 1}, got {quality}")
        fps = Fraction(fps).limit_denominator(1 << 30)
        self.header = StreamHeader(entry.id, weights_hash, width, height, fps.numerator, fps.denominator,
                                   ColorSpace.from_name(colorspace), 0, intra_period, quality,
                                   _enum_by_name(ColorRange, color_range), _enum_by_name(ChromaLocation, chroma_location),
                                   header_sar(sar), synthesis=self.engine, entropy_params=self.entropy,
                                   synthesis_id=synthesis_id)
        self.quality_schedule = quality_schedule or default_quality_schedule(entry.name)
        self.hold = None if hold_psnr is None else PsnrHold(hold_psnr)
        self._references = ReferenceBuffer()
        self.frames_written = 0
        self.bytes_written = 0
        self._closed = False
        self._atomic = None
        self._file = self._open(output)
        try:
            self._file.write(self.header.to_bytes())
        except BaseException:
            self.abort()
            raise
        self.bytes_written = len(self.header.to_bytes())

    def _open(self, output) -> BinaryIO:
        """stdout for "-", a path through `AtomicPath` (a temporary name until flush), or a file object."""
        if output == "-":
            return sys.stdout.buffer
        if not isinstance(output, (str, os.PathLike)):
            return output
        self._atomic = AtomicPath(output)
        try:
            return builtins.open(self._atomic.path, "wb")
        except OSError as e:
            self._atomic.discard()
            raise NvcError(f"cannot write {output}: {e.strerror}") from None
        except BaseException:
            self._atomic.discard()
            raise

    def encode(self, frame: YUVFrame) -> EncodedFrame:
        h = self.header
        if (frame.width, frame.height) != (h.width, h.height):
            raise NvcError(f"frame {self.frames_written} is {frame.width}x{frame.height}, stream is {h.width}x{h.height}")
        index = self.frames_written
        kind = frame_type(index, h.intra_period)
        x = frame_to_tensor(frame, self.device)
        ref = None if kind == FrameType.I else self._references.reference_for(index)
        levels = self.model.config.quality_levels
        quality = self.quality_schedule.level(index, h.intra_period, h.quality, levels)
        if self.hold is not None:
            quality = self.hold.level(quality, kind, levels)
        streams, rec = frame_model(self.model, kind).compress(x, ref, quality)
        self._references.put(index, rec)
        packet = FramePacket(kind, quality, index, tuple(streams)).to_bytes()
        self._file.write(packet)
        self.frames_written += 1
        self.bytes_written += len(packet)
        decoded = reconstruction_to_frame(rec, h.height, h.width)
        if self.hold is not None:
            self.hold.observe(kind, frame_psnr(frame, decoded).yuv, levels)
        return EncodedFrame(index, kind, len(packet), decoded)

    def flush(self) -> None:
        """Write the end mark and complete the output (renamed into place only now)."""
        if self._closed:
            return
        if self.frames_written == 0:
            self.abort()
            raise NvcError("no frames to encode (the input has zero frames)")
        self._file.write(END_OF_STREAM)
        if self._file.seekable():  # a file, not a pipe: record the frame count in the header
            self._file.seek(0)
            self._file.write(replace(self.header, frame_count=self.frames_written).to_bytes())
            self._file.seek(0, os.SEEK_END)
        self.bytes_written += len(END_OF_STREAM)
        self._file.flush()
        self._closed = True
        if self._atomic is not None:
            self._file.close()
            self._atomic.commit()

    def abort(self) -> None:
        """Stop and remove the partial output."""
        if self._closed:
            return
        self._closed = True
        if self._atomic is not None:
            self._file.close()
            self._atomic.discard()

    def __enter__(self) -> "Encoder":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.flush()
        else:
            self.abort()


MAX_SIDE = 16384  # pixels: larger headers are refused before any allocation
MAX_PIXELS = 8192 * 8192


def check_frame_size(header: StreamHeader) -> None:
    w, h = header.width, header.height
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise NvcError(f"frame size {w}x{h} in the header is beyond what nvc decodes "
                       f"(at most {MAX_SIDE} a side, {MAX_PIXELS} pixels)")


def _enum_by_name(enum, name: str | None):
    """A header enum member from its lower-case name; unknown for None or a name it does not have."""
    return enum.__members__.get((name or "unknown").upper(), enum(0))


def header_sar(sar: Fraction | tuple[int, int] | None) -> tuple[int, int]:
    """A sample aspect ratio as the header's u16 pair; (0, 0) when unknown or not representable."""
    if sar is None:
        return 0, 0
    num, den = sar if isinstance(sar, tuple) else (Fraction(sar).numerator, Fraction(sar).denominator)
    if num <= 0 or den <= 0:
        return 0, 0
    value = Fraction(num, den)
    if value.numerator > 0xFFFF or value.denominator > 0xFFFF:
        value = value.limit_denominator(0xFFFF)
    return (value.numerator, value.denominator) if 0 < value.numerator <= 0xFFFF else (0, 0)


def encoder_settings(model: str, intra_period: int) -> dict:
    """What changes a stream but not the weights: the quality schedule where it is not flat, v2's
    rounding weights, motion search weights, the distortion weight of its P-frame decisions, the
    format of its motion streams and the container's (version 4: compact packet fields, repeated
    hyper-latents; 5: compact rANS substreams; 6: trimmed substreams, packets without frame index or
    last stream length), PQ-MIM's sticky margins (P-frames).
    `nvc eval` records them with each point, so that a point coded otherwise is measured again."""
    settings = {}
    schedule = default_quality_schedule(model)
    if schedule != FLAT_QUALITY and intra_period != 1:
        settings["quality_schedule"] = asdict(schedule)
    if model == "lean-mc-yuv420-v2":
        from nvc.entropy.motion import FORMAT_MARKER
        from nvc.lean_model import DECISION_WEIGHT, MOTION_LAMBDAS, RDO_WEIGHT, REPEAT_HYPER

        settings["rdo_weight"] = list(RDO_WEIGHT)
        settings["motion_lambdas"] = list(MOTION_LAMBDAS)
        settings["decision_weight"] = DECISION_WEIGHT
        settings["motion_format"] = FORMAT_MARKER
        settings["container"] = VERSION
        if not REPEAT_HYPER:  # recorded only when off, so that points coded with the default stay valid
            settings["repeat_hyper"] = False
    if model == "pq-mim-v1" and intra_period != 1:
        from nvc.pq_model import STICKY_MARGINS

        settings["sticky_margins"] = list(STICKY_MARGINS)
    return settings


def frame_model(model, kind: FrameType):
    """The model that codes frames of this type (the one frame-codec contract, `nvc.model`)."""
    return model.intra if kind == FrameType.I else model.inter


def _model_entry(name: str):
    try:
        return entry_by_name(name)
    except KeyError as e:
        raise NvcError(e.args[0]) from None


class Reader:
    """Decodes an `.nvc` file lazily, frame by frame (PyAV style):

        with nvc.open("clip.nvc") as f:
            for frame in f:          # YUVFrame; nvc.open(..., format="rgb") yields H x W x 3 arrays
                ...
    """

    def __init__(self, source: str | os.PathLike | BinaryIO, device: str = "cpu", format: str = "yuv",
                 conceal: bool = False, on_damage=None, pipelined: bool = False):
        # pipelined: entropy decoding of frame t+1 on a worker thread while frame t is synthesised
        # (nvc.deploy.pipeline; the same frames as serial decoding, one frame later).
        self.pipelined = pipelined
        if format not in ("yuv", "rgb"):
            raise NvcError(f"unknown frame format {format!r} (use yuv or rgb)")
        self.format = format
        self.device = resolve_device(device)
        keep_freed_memory()
        # conceal: a damaged packet costs the rest of its GOP (the last good frame is repeated in
        # its place) instead of stopping; on_damage(message) is told once per damaged GOP.
        self.conceal = conceal
        self.on_damage = on_damage
        if source == "-":
            self._file, self._owns = sys.stdin.buffer, False
        elif isinstance(source, (str, os.PathLike)):
            if not os.path.exists(source):
                raise NvcError(f"input not found: {source}")
            if os.path.isdir(source):
                raise NvcError(f"input is a folder, not an .nvc file: {source}")
            try:
                self._file, self._owns = builtins.open(source, "rb"), True
            except OSError as e:
                raise NvcError(f"cannot read {source}: {e.strerror}") from None
        else:
            self._file, self._owns = source, False
        try:
            self.header = StreamHeader.read(self._file)
            check_frame_size(self.header)
        except NvcError:
            self.close()
            raise
        self._model: VideoModel | None = None
        self.timings: dict[str, float] = {}  # FrameDecoder.timings of the current iteration

    @property
    def model_name(self) -> str:
        entry = MODEL_TABLE.get(self.header.model_id)
        return entry.name if entry else f"unknown model id {self.header.model_id}"

    @property
    def fps(self) -> Fraction:
        return Fraction(self.header.fps_num, self.header.fps_den)

    def load_model(self) -> VideoModel:
        """The model this file was encoded with; refuses unknown ids and other weights."""
        h = self.header
        entry = MODEL_TABLE.get(h.model_id)
        if entry is None:
            known = ", ".join(f"{e.id} ({e.name})" for e in MODEL_TABLE.values())
            raise NvcError(f"file needs model id {h.model_id}, which this nvc does not have (known: {known})")
        model, weights_hash, synthesis_id = deployed_model(entry, self.device, h.synthesis, h.entropy_params)
        if weights_hash != h.weights_hash:
            raise NvcError(f"weights hash differs: encoded with {entry.name} weights {h.weights_hash.hex()[:16]}, "
                           f"this nvc has {weights_hash.hex()[:16]}")
        if synthesis_id != h.synthesis_id:
            raise NvcError(f"the {h.synthesis.label} int8 graphs differ: encoded with {h.synthesis_id.hex()}, "
                           f"this nvc built {synthesis_id.hex()} (int8 graphs are built per machine from the "
                           "training clips; decode where the file was encoded, or encode with --engine torch)")
        if h.version == 1 and h.substreams != model.config.substreams:
            raise NvcError(f"file has {h.substreams} substreams per frame, {entry.name} uses {model.config.substreams}")
        return model

    def packets(self) -> Iterator[FramePacket]:
        """The packets, not decoded (what `nvc info` lists); a damaged one raises NvcError."""
        return read_packets(self._file, self.header)

    def load(self) -> None:
        """Load the model now (otherwise the first frame does): what a caller times apart from decoding."""
        if self._model is None:
            self._model = self.load_model()

    def __iter__(self) -> Iterator:
        from nvc.deploy.pipeline import FrameDecoder

        self.load()
        h = self.header
        decoder = FrameDecoder(self._model, padded_size(h.height), padded_size(h.width), self.pipelined,
                               output=lambda rec: self._output(reconstruction_to_frame(rec, h.height, h.width)),
                               substream_form=h.substream_form)
        self.timings = decoder.timings  # seconds per stage (FrameDecoder.timings), filled as frames come out
        state = {"last": None, "losing": False}  # the last frame output; whether the current GOP is lost

        def emit(results) -> Iterator:
            for result in results:
                if result.error is None:
                    frame, state["losing"] = result.frame, False
                else:
                    message = f"{result.error}; {self._lost_frames(result.index)}"
                    if not self.conceal:
                        raise NvcError(message) from None
                    if self.on_damage is not None and not state["losing"]:
                        self.on_damage(f"{message}, the last good frame is repeated in their place")
                    state["losing"] = True
                    frame = state["last"] if state["last"] is not None else self._output(YUVFrame.gray(h.width,
                                                                                                        h.height))
                state["last"] = frame
                yield frame

        packets = read_packets(self._file, h, skip_damaged=True)
        submitted = 0
        try:
            while True:
                try:
                    packet = self._next_packet(packets, submitted)
                except NvcError:  # a cut file: the frames still in the pipeline come out first
                    yield from emit(decoder.flush())
                    raise
                if packet is None:
                    yield from emit(decoder.flush())
                    return
                submitted += 1
                yield from emit(decoder.decode(packet))
        finally:
            decoder.close()

    def _next_packet(self, packets: Iterator, count: int) -> FramePacket | DamagedPacket | None:
        """The next packet, None after the last. Where the file is cut or its end mark is damaged,
        the frames before are good: with conceal they are kept (warned once) and decoding ends
        there; without it the error says so."""
        try:
            return next(packets)
        except StopIteration:
            return None
        except NvcError as e:
            if not count:  # nothing to keep
                raise
            before = "the frame before it is" if count == 1 else f"the {count} frames before it are"
            if not self.conceal:
                raise NvcError(f"{e}; {before} good, --conceal keeps them") from None
            if self.on_damage is not None:
                self.on_damage(f"{e}; {before} kept")
            return None

    def _output(self, frame: YUVFrame):
        if self.format == "yuv":
            return frame
        h = self.header
        return frame.to_rgb(h.colorspace.name.lower(), h.color_range.name.lower())

    def _lost_frames(self, index: int) -> str:
        """What a decoding error at frame `index` costs: the rest of its GOP."""
        resume, count = next_intra(index, self.header.intra_period), self.header.frame_count
        if count and (resume is None or resume >= count):
            resume, last = None, count - 1
        else:
            last = resume - 1 if resume is not None else None
        span = f"frame {index}" if last == index else f"frames {index}-{last}" if last is not None else \
            f"frames {index} to the end"
        return f"{span} cannot be decoded" + (f"; the I-frame {resume} recovers" if resume is not None else
                                              " (no later I-frame)")

    def close(self) -> None:
        if self._owns:
            self._file.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open(path, mode: str = "r", **kwargs):  # noqa: A001 - mirrors av.open
    """`nvc.open(path)` -> Reader; `nvc.open(path, "w", width=..., height=..., ...)` -> Encoder."""
    if mode == "r":
        return Reader(path, **kwargs)
    if mode == "w":
        return Encoder(path, **kwargs)
    raise ValueError(f"mode must be 'r' or 'w', not {mode!r}")
