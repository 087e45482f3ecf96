"""The `.nvc` container: a file header, then one length-prefixed packet per frame, then an end mark.

Readable from a pipe front to back without seeking. All integers are big-endian.

File header (54 bytes in version 1)::

    magic          4s  b"NVC\\x1a"
    version        u8  format version (this module writes and reads 1)
    model_id       u16 id in models.registry.MODEL_TABLE (frozen; never reused)
    weights_hash   16s first 16 bytes of SHA-256 of the model's weights file
    width, height  u32 u32 luma size in pixels (any size; the codec pads and crops)
    fps            u32 u32 numerator, denominator
    colorspace     u8  0 unknown, 1 BT.709, 2 BT.601 (of the source; coded as 8-bit YUV420)
    frame_count    u32 0 when unknown (a stream written to a pipe)
    intra_period   i32 1: every frame is an I-frame; N: an I-frame every N; -1: only the first
    quality        u8  quality level the stream was encoded at
    substreams     u8  K, main-latent substreams per packet
    header_crc     u32 CRC32 of the bytes above

Packet, one per frame, in decoding order::

    length         u32 bytes that follow in this packet (0 marks the end of the stream)
    frame_type     u8  1 = I (intra), 2 = P (predicted from the frame before it)
    quality        u8
    frame_index    u32
    z_length       u32 hyper-latent stream length
    y_length * K   u32 main-latent substream lengths
    crc32          u32 CRC32 of everything in the packet before it and of the payload
    payload        z stream, then the K y substreams

A reader that meets a damaged file raises `NvcError` naming the problem and the frame.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import BinaryIO, Iterator

from entropy.hyperprior import LatentStreams
from nvc.errors import NvcError

MAGIC = b"NVC\x1a"
VERSION = 1
_HEADER = struct.Struct(">4sBH16sIIIIBIiBB")
_HEADER_CRC = struct.Struct(">I")
_PACKET_LEN = struct.Struct(">I")
_PACKET_FIXED = struct.Struct(">BBII")
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
    substreams: int
    version: int = VERSION

    def to_bytes(self) -> bytes:
        body = _HEADER.pack(MAGIC, self.version, self.model_id, self.weights_hash, self.width, self.height,
                            self.fps_num, self.fps_den, int(self.colorspace), self.frame_count,
                            self.intra_period, self.quality, self.substreams)
        return body + _HEADER_CRC.pack(zlib.crc32(body))

    @classmethod
    def read(cls, f: BinaryIO) -> "StreamHeader":
        head = f.read(len(MAGIC) + 1)
        if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
            raise NvcError("not an .nvc file (wrong magic)")
        if len(head) < len(MAGIC) + 1:
            raise NvcError("truncated file header")
        if head[len(MAGIC)] != VERSION:
            raise NvcError(f"unsupported .nvc format version {head[len(MAGIC)]} (this nvc reads version {VERSION})")
        rest = f.read(_HEADER.size - len(head) + _HEADER_CRC.size)
        if len(rest) < _HEADER.size - len(head) + _HEADER_CRC.size:
            raise NvcError("truncated file header")
        body, (crc,) = head + rest[: -_HEADER_CRC.size], _HEADER_CRC.unpack(rest[-_HEADER_CRC.size :])
        if zlib.crc32(body) != crc:
            raise NvcError("CRC mismatch in file header")
        (_, version, model_id, weights_hash, width, height, fps_num, fps_den, colorspace, frame_count,
         intra_period, quality, substreams) = _HEADER.unpack(body)
        if width == 0 or height == 0 or fps_num == 0 or fps_den == 0 or substreams == 0:
            raise NvcError("invalid file header (zero size, frame rate or substreams)")
        return cls(model_id, weights_hash, width, height, fps_num, fps_den, ColorSpace(colorspace),
                   frame_count, intra_period, quality, substreams, version)


@dataclass(frozen=True)
class FramePacket:
    frame_type: FrameType
    quality: int
    frame_index: int
    streams: LatentStreams

    def to_bytes(self) -> bytes:
        lengths = [len(self.streams.z)] + [len(s) for s in self.streams.y]
        fixed = _PACKET_FIXED.pack(int(self.frame_type), self.quality, self.frame_index, lengths[0])
        fixed += struct.pack(f">{len(lengths) - 1}I", *lengths[1:])
        payload = self.streams.z + b"".join(self.streams.y)
        crc = zlib.crc32(payload, zlib.crc32(fixed))
        body = fixed + struct.pack(">I", crc) + payload
        return _PACKET_LEN.pack(len(body)) + body

    @property
    def size(self) -> int:
        return len(self.streams.z) + sum(len(s) for s in self.streams.y)


@dataclass(frozen=True)
class DamagedPacket:
    """A packet that was read whole but failed its CRC or does not parse: the stream goes on after it."""

    frame_index: int
    problem: str

    def __str__(self) -> str:
        return f"{self.problem} in frame {self.frame_index}"


END_OF_STREAM = _PACKET_LEN.pack(0)


def read_packets(f: BinaryIO, header: StreamHeader, skip_damaged: bool = False) -> Iterator[FramePacket | DamagedPacket]:
    """Packets in order; raises NvcError on truncation, corruption or a missing end mark.

    With skip_damaged, a packet whose length is sound but whose CRC or fields are not is yielded as
    a `DamagedPacket` and reading goes on with the next one.
    """
    k = header.substreams
    fixed_size = _PACKET_FIXED.size + 4 * k + 4
    index = 0
    while True:
        raw = f.read(_PACKET_LEN.size)
        if len(raw) < _PACKET_LEN.size:
            if header.frame_count and index < header.frame_count:
                raise NvcError(f"truncated file: frame {index} is missing (header says {header.frame_count} frames)")
            raise NvcError(f"truncated file: no end-of-stream mark after frame {index - 1}")
        (length,) = _PACKET_LEN.unpack(raw)
        if length == 0:
            if header.frame_count and index != header.frame_count:
                raise NvcError(f"stream ends after {index} frames but the header says {header.frame_count}")
            return
        if length < fixed_size or length > MAX_PACKET:
            raise NvcError(f"corrupt packet length in frame {index}")
        body = f.read(length)
        if len(body) < length:
            raise NvcError(f"truncated packet in frame {index}")
        ftype, quality, frame_index, z_len = _PACKET_FIXED.unpack_from(body)
        y_lens = struct.unpack_from(f">{k}I", body, _PACKET_FIXED.size)
        (crc,) = struct.unpack_from(">I", body, fixed_size - 4)
        payload = body[fixed_size:]
        damage = None
        if zlib.crc32(payload, zlib.crc32(body[: fixed_size - 4])) != crc:
            damage = DamagedPacket(index, "CRC mismatch")
        elif ftype not in (FrameType.I, FrameType.P) or frame_index != index or z_len + sum(y_lens) != len(payload):
            damage = DamagedPacket(index, "malformed packet")
        if damage is not None:
            if not skip_damaged:
                raise NvcError(str(damage))
            yield damage
            index += 1
            continue
        cuts, pos = [], z_len
        for n in y_lens:
            cuts.append(payload[pos : pos + n])
            pos += n
        yield FramePacket(FrameType(ftype), quality, frame_index, LatentStreams(payload[:z_len], tuple(cuts)))
        index += 1
