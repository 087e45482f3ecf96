"""The `.nvc` container: a file header, then one length-prefixed packet per frame, then an end mark.

Readable from a pipe front to back without seeking; pure Python (no torch), so that `nvc info` and
any tool can parse a file cheaply. All fixed-size integers are big-endian.

File header, format version 6 (69 bytes)::

    magic          4s  b"NVC\\x1a"
    version        u8  6 (this module writes 6 and reads 1 to 6)
    model_id       u16 id in nvc.models.registry.MODEL_TABLE (frozen; never reused)
    weights_hash   16s first 16 bytes of SHA-256 of the model's weights file
    width, height  u32 u32 luma size in pixels (any size; the codec pads and crops)
    fps            u32 u32 numerator, denominator
    colorspace     u8  matrix of the source: 0 unknown, 1 BT.709, 2 BT.601 (coded as 8-bit YUV420)
    color_range    u8  0 unknown, 1 tv (limited), 2 pc (full)
    chroma_loc     u8  4:2:0 chroma siting: 0 unknown, 1 left (MPEG-2, H.264), 2 center (JPEG, MPEG-1)
    sar            u16 u16 sample aspect ratio (0:0 unknown)
    frame_count    u32 0 when unknown (a stream written to a pipe)
    intra_period   i32 1: every frame is an I-frame; N: an I-frame every N; -1: only the first
    quality        u8  quality level the stream was encoded at
    synthesis      u8  the engine that ran synthesis in the encoder, which the decoder must run to
                       reproduce its pixels bit for bit: 0 torch fp32 (the reference), 1 OpenVINO int8,
                       2 ONNX Runtime int8 (`SynthesisEngine`)
    entropy_params u8  how the entropy parameters were computed: 0 float on one thread, 1 integer
                       (`nvc.deploy.integer`, preset "default"; the same indices on any machine)
    synthesis_id   8s  an int8 engine's graphs: first 8 bytes of SHA-256 of them (a decoder with other
                       graphs refuses the file); zeros for torch
    header_crc     u32 CRC32 of the bytes above

Versions 3 to 5 have the same header; version 2 (59 bytes) is it without synthesis, entropy_params and
synthesis_id: read as torch and float.

Packet, one per frame, in decoding order (varint: unsigned LEB128)::

    length         varint  bytes that follow in this packet (0 marks the end of the stream)
    type_quality   u8  frame_type << 6 | quality  (frame_type 1 = I (intra), 2 = P (predicted
                       from the frame before it); quality 0..63)
    stream_count   u8
    per stream     u8  kind << 6 | step << 3 | part   (kind: 1 motion, 2 hyper, 3 latent)
                   varint  payload length, for every stream but the last (whose payload is the rest)
    crc32          u32 CRC32 of everything in the packet before it and of the payloads
    payloads       the streams' bytes, in the order listed

The rANS substreams of version 6 are *trimmed* (`nvc.entropy.coder.SubstreamForm`: the final state
of a stream that has words in 5 to 8 bytes rather than 8, ~1.6 bytes a substream less). Versions 4
and 5 have the same packets with a varint frame_index after type_quality and the last stream's length
too (2 to 4 bytes more a frame); version 5's substreams are compact (the coder's state starts at 1 and
a stream that is only its final state keeps its significant bytes, ~3 bytes a substream less), where
versions 1-4 hold CompressAI's form. Version 4 also lets a P-frame's hyper stream be empty: the frame
reuses the hyper-latent of the P-frame before it (a still scene's is the same frame after frame).
Versions 2 and 3 have version 4's packets with u32 length, u8 frame_type, u8 quality and u32
frame_index (4 to 7 bytes more a frame).

A packet is a list of typed streams (the motion field, the hyper-latent, and one or more substreams
per decoding step of the main latent: its parts), so that a model with more steps or other stream kinds
needs no new format. Version 1 (models 1 and 2) had a fixed layout (a z stream and K y substreams,
K in the header); it is still read, as the same list of streams.

A reader that meets a damaged file raises `NvcError` naming the problem and the frame.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import BinaryIO, Iterator

from nvc.errors import NvcError

MAGIC = b"NVC\x1a"
VERSION = 6
_HEADER_V1 = struct.Struct(">4sBH16sIIIIBIiBB")
_HEADER_V2 = struct.Struct(">4sBH16sIIIIBBBHHIiB")
_HEADER = struct.Struct(">4sBH16sIIIIBBBHHIiBBB8s")
_CRC = struct.Struct(">I")
_PACKET_LEN_V3 = struct.Struct(">I")
_PACKET_FIXED_V3 = struct.Struct(">BBIB")  # frame type, quality, frame index, stream count
_PACKET_FIXED_V1 = struct.Struct(">BBII")  # frame type, quality, frame index, z length
MAX_PACKET = 1 << 30


class FrameType(IntEnum):
    I = 1  # noqa: E741 - the name every video codec uses
    P = 2


class ColorSpace(IntEnum):
    UNKNOWN = 0
    BT709 = 1
    BT601 = 2

    @classmethod
    def from_name(cls, name: str) -> "ColorSpace":
        return {"bt709": cls.BT709, "bt601": cls.BT601}.get(name, cls.UNKNOWN)


class SynthesisEngine(IntEnum):
    """What ran synthesis in the encoder (and must run it in the decoder); names as `engine=` takes them."""

    TORCH = 0  # fp32 PyTorch on one thread: the reference
    OPENVINO = 1  # int8 graphs of nvc.deploy.int8 in OpenVINO
    ONNXRUNTIME = 2  # the same graphs in ONNX Runtime (other requantization: other pixels)

    @property
    def label(self) -> str:
        return self.name.lower()


class EntropyParameters(IntEnum):
    """How the entropy parameters (means, scale indices) were computed."""

    FLOAT = 0  # the float nets on one thread: exact on one machine
    INTEGER = 1  # nvc.deploy.integer, preset "default": exact on any machine

    @property
    def label(self) -> str:
        return self.name.lower()


class StreamKind(IntEnum):
    """What a stream in a packet holds (format versions 2 to 6)."""

    MOTION = 1  # the motion field of a P-frame
    HYPER = 2  # the hyper-latent z
    LATENT = 3  # one substream (part) of one decoding step of the main latent y


@dataclass(frozen=True)
class Stream:
    kind: StreamKind
    step: int  # decoding step of a LATENT stream (0 otherwise)
    part: int  # substream within the step
    data: bytes


class ColorRange(IntEnum):
    UNKNOWN = 0
    TV = 1
    PC = 2


class ChromaLocation(IntEnum):
    UNKNOWN = 0
    LEFT = 1
    CENTER = 2


@dataclass(frozen=True)
class StreamHeader:
    model_id: int
    weights_hash: bytes
    width: int
    height: int
    fps_num: int
    fps_den: int
    colorspace: ColorSpace
    frame_count: int
    intra_period: int
    quality: int
    color_range: ColorRange = ColorRange.UNKNOWN
    chroma_location: ChromaLocation = ChromaLocation.UNKNOWN
    sar: tuple[int, int] = (0, 0)
    version: int = VERSION
    substreams: int = 0  # version 1 only: the fixed number of y substreams per packet
    synthesis: SynthesisEngine = SynthesisEngine.TORCH  # version 3 on; torch for older files
    entropy_params: EntropyParameters = EntropyParameters.FLOAT  # version 3 on; float for older files
    synthesis_id: bytes = bytes(8)  # version 3 on: the int8 graphs' hash prefix (zeros for torch)

    @property
    def substream_form(self) -> int:
        """The form of its rANS substreams (`nvc.entropy.coder.SubstreamForm`): 0 CompressAI's
        (versions 1-4), 1 compact (5), 2 trimmed (6)."""
        return 0 if self.version < 5 else 1 if self.version == 5 else 2

    def to_bytes(self) -> bytes:
        if self.version != VERSION:
            raise ValueError(f"this nvc writes format version {VERSION} only")
        body = _HEADER.pack(MAGIC, self.version, self.model_id, self.weights_hash, self.width, self.height,
                            self.fps_num, self.fps_den, int(self.colorspace), int(self.color_range),
                            int(self.chroma_location), self.sar[0], self.sar[1], self.frame_count,
                            self.intra_period, self.quality, int(self.synthesis), int(self.entropy_params),
                            self.synthesis_id)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def read(cls, f: BinaryIO) -> "StreamHeader":
        head = f.read(len(MAGIC) + 1)
        if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
            raise NvcError("not an .nvc file (wrong magic)")
        if len(head) < len(MAGIC) + 1:
            raise NvcError("truncated file header")
        version = head[len(MAGIC)]
        if not 1 <= version <= VERSION:
            raise NvcError(f"unsupported .nvc format version {version} (this nvc reads versions 1 to {VERSION})")
        layout = {1: _HEADER_V1, 2: _HEADER_V2}.get(version, _HEADER)
        rest = f.read(layout.size - len(head) + _CRC.size)
        if len(rest) < layout.size - len(head) + _CRC.size:
            raise NvcError("truncated file header")
        body, (crc,) = head + rest[: -_CRC.size], _CRC.unpack(rest[-_CRC.size :])
        if zlib.crc32(body) != crc:
            raise NvcError("CRC mismatch in file header")
        fields = layout.unpack(body)
        if version == 1:
            (_, _, model_id, weights_hash, width, height, fps_num, fps_den, colorspace, frame_count,
             intra_period, quality, substreams) = fields
            color_range, chroma, sar = 0, 0, (0, 0)
            if substreams == 0:
                raise NvcError("invalid file header (zero substreams)")
        else:
            (_, _, model_id, weights_hash, width, height, fps_num, fps_den, colorspace, color_range, chroma,
             sar_num, sar_den, frame_count, intra_period, quality) = fields[:16]
            substreams, sar = 0, (sar_num, sar_den)
        synthesis, entropy_params, synthesis_id = fields[16:] if version >= 3 else (0, 0, bytes(8))
        if width == 0 or height == 0 or fps_num == 0 or fps_den == 0:
            raise NvcError("invalid file header (zero size or frame rate)")
        try:
            return cls(model_id, weights_hash, width, height, fps_num, fps_den, ColorSpace(colorspace), frame_count,
                       intra_period, quality, ColorRange(color_range), ChromaLocation(chroma), sar, version,
                       substreams, SynthesisEngine(synthesis), EntropyParameters(entropy_params), synthesis_id)
        except ValueError as e:
            raise NvcError(f"invalid file header ({e})") from None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 28:
            raise ValueError("bad stream length")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


@dataclass(frozen=True)
class FramePacket:
    frame_type: FrameType
    quality: int
    frame_index: int
    streams: tuple[Stream, ...]

    def to_bytes(self) -> bytes:
        if len(self.streams) > 255:
            raise ValueError("at most 255 streams per packet")
        if not (0 <= self.quality < 64 and 0 <= int(self.frame_type) < 4):
            raise ValueError(f"frame type {int(self.frame_type)} or quality {self.quality} does not fit the format")
        table = bytearray([int(self.frame_type) << 6 | self.quality, len(self.streams)])
        for i, s in enumerate(self.streams):
            if not (0 < s.kind < 4 and 0 <= s.step < 8 and 0 <= s.part < 8):
                raise ValueError(f"stream {s.kind}/{s.step}/{s.part} does not fit the format")
            table.append(int(s.kind) << 6 | s.step << 3 | s.part)
            if i + 1 < len(self.streams):
                table += _varint(len(s.data))
        payload = b"".join(s.data for s in self.streams)
        body = bytes(table) + _CRC.pack(zlib.crc32(payload, zlib.crc32(table))) + payload
        return _varint(len(body)) + body

    @property
    def size(self) -> int:
        """Payload bytes (the streams, without the packet's own fields)."""
        return sum(len(s.data) for s in self.streams)


@dataclass(frozen=True)
class DamagedPacket:
    """A packet that was read whole but failed its CRC or does not parse: the stream goes on after it."""

    frame_index: int
    problem: str

    def __str__(self) -> str:
        return f"{self.problem} in frame {self.frame_index}"


END_OF_STREAM = _varint(0)


def _parse_v2(body: bytes, version: int, index: int) -> tuple[int, int, int, tuple[Stream, ...]] | str:
    """(type, quality, frame index, streams) of a version 2 to 6 packet body (the `index`-th of its
    file), or what is wrong with it."""
    if len(body) < (2 if version >= 6 else 3 if version >= 4 else _PACKET_FIXED_V3.size) + _CRC.size:
        return "malformed packet"
    table = []
    try:
        if version >= 6:
            ftype, quality, frame_index, count, pos = body[0] >> 6, body[0] & 63, index, body[1], 2
        elif version >= 4:
            ftype, quality = body[0] >> 6, body[0] & 63
            frame_index, pos = _read_varint(body, 1)
            count, pos = body[pos], pos + 1
        else:
            ftype, quality, frame_index, count = _PACKET_FIXED_V3.unpack_from(body)
            pos = _PACKET_FIXED_V3.size
        for i in range(count):
            desc = body[pos]
            if version >= 6 and i + 1 == count:  # the last stream's length: what the others leave
                table.append((desc, None))
                pos += 1
            else:
                length, pos = _read_varint(body, pos + 1)
                table.append((desc, length))
    except (ValueError, IndexError):
        return "malformed packet"
    if pos + _CRC.size > len(body):
        return "malformed packet"
    (crc,) = _CRC.unpack_from(body, pos)
    payload = body[pos + _CRC.size :]
    if zlib.crc32(payload, zlib.crc32(body[:pos])) != crc:
        return "CRC mismatch"
    if table and table[-1][1] is None:
        table[-1] = (table[-1][0], len(payload) - sum(n for _, n in table[:-1]))
    if sum(n for _, n in table) != len(payload) or any(d >> 6 == 0 or n < 0 for d, n in table):
        return "malformed packet"
    streams, at = [], 0
    for desc, n in table:
        streams.append(Stream(StreamKind(desc >> 6), (desc >> 3) & 7, desc & 7, payload[at : at + n]))
        at += n
    return ftype, quality, frame_index, tuple(streams)


def _parse_v1(body: bytes, k: int) -> tuple[int, int, int, tuple[Stream, ...]] | str:
    fixed_size = _PACKET_FIXED_V1.size + 4 * k + 4
    if len(body) < fixed_size:
        return "malformed packet"
    ftype, quality, frame_index, z_len = _PACKET_FIXED_V1.unpack_from(body)
    y_lens = struct.unpack_from(f">{k}I", body, _PACKET_FIXED_V1.size)
    (crc,) = _CRC.unpack_from(body, fixed_size - 4)
    payload = body[fixed_size:]
    if zlib.crc32(payload, zlib.crc32(body[: fixed_size - 4])) != crc:
        return "CRC mismatch"
    if z_len + sum(y_lens) != len(payload):
        return "malformed packet"
    streams, pos = [Stream(StreamKind.HYPER, 0, 0, payload[:z_len])], z_len
    for part, n in enumerate(y_lens):
        streams.append(Stream(StreamKind.LATENT, 0, part, payload[pos : pos + n]))
        pos += n
    return ftype, quality, frame_index, tuple(streams)


def _read_packet_length(f: BinaryIO, version: int) -> int | None:
    """The length field of the next packet (u32 before version 4, then a varint); None at the file's end."""
    if version < 4:
        raw = f.read(_PACKET_LEN_V3.size)
        return _PACKET_LEN_V3.unpack(raw)[0] if len(raw) == _PACKET_LEN_V3.size else None
    raw = b""
    while len(raw) < 5:
        byte = f.read(1)
        if not byte:
            return None
        raw += byte
        if not byte[0] & 0x80:
            return _read_varint(raw, 0)[0]
    return MAX_PACKET + 1  # a varint longer than 5 bytes: no sound length


def read_packets(f: BinaryIO, header: StreamHeader, skip_damaged: bool = False) -> Iterator[FramePacket | DamagedPacket]:
    """Packets in order; raises NvcError on truncation, corruption or a missing end mark.

    With skip_damaged, a packet whose length is sound but whose CRC or fields are not is yielded as
    a `DamagedPacket` and reading goes on with the next one.
    """
    index = 0
    while True:
        length = _read_packet_length(f, header.version)
        if length is None:
            if header.frame_count and index < header.frame_count:
                raise NvcError(f"truncated file: frame {index} is missing (header says {header.frame_count} frames)")
            raise NvcError(f"truncated file: no end-of-stream mark after frame {index - 1}")
        if length == 0:
            if header.frame_count and index != header.frame_count:
                raise NvcError(f"stream ends after {index} frames but the header says {header.frame_count}")
            return
        if length > MAX_PACKET:
            raise NvcError(f"corrupt packet length in frame {index}")
        body = f.read(length)
        if len(body) < length:
            raise NvcError(f"truncated packet in frame {index}")
        parsed = _parse_v1(body, header.substreams) if header.version == 1 else _parse_v2(body, header.version, index)
        if not isinstance(parsed, str):
            ftype, quality, frame_index, streams = parsed
            if ftype not in (FrameType.I, FrameType.P) or frame_index != index:
                parsed = "malformed packet"
        if isinstance(parsed, str):
            if not skip_damaged:
                raise NvcError(f"{parsed} in frame {index}")
            yield DamagedPacket(index, parsed)
        else:
            yield FramePacket(FrameType(ftype), quality, frame_index, streams)
        index += 1
