import io

import pytest

import struct
import zlib
from dataclasses import replace

from nvc.container import (END_OF_STREAM, ColorSpace, EntropyParameters, FramePacket, FrameType, Stream, StreamHeader,
                           StreamKind, SynthesisEngine, read_packets)
from nvc.errors import NvcError

HEADER = StreamHeader(3, bytes(range(16)), 175, 143, 30000, 1001, ColorSpace.BT709, 2, 1, 4)


def stream(*packets: FramePacket, end: bool = True) -> io.BytesIO:
    return io.BytesIO(HEADER.to_bytes() + b"".join(p.to_bytes() for p in packets) + (END_OF_STREAM if end else b""))


def packet(i: int) -> FramePacket:
    streams = (Stream(StreamKind.MOTION, 0, 0, b"m" * i), Stream(StreamKind.HYPER, 0, 0, b"z" * (i + 1)),
               Stream(StreamKind.LATENT, 0, 0, b"a" * 5), Stream(StreamKind.LATENT, 1, 1, b"b" * (200 + i)))
    return FramePacket(FrameType.P if i else FrameType.I, 4, i, streams)


def test_header_round_trip():
    f = io.BytesIO(HEADER.to_bytes())
    assert StreamHeader.read(f) == HEADER
    assert len(HEADER.to_bytes()) == 69
    assert HEADER.synthesis == SynthesisEngine.TORCH and HEADER.entropy_params == EntropyParameters.FLOAT
    int8 = replace(HEADER, synthesis=SynthesisEngine.OPENVINO, entropy_params=EntropyParameters.INTEGER,
                   synthesis_id=bytes(range(8, 16)))
    assert StreamHeader.read(io.BytesIO(int8.to_bytes())) == int8


def test_version_2_headers_are_read_as_torch_and_float():
    """A version 2 header is version 3 without its last three fields."""
    body = struct.pack(">4sBH16sIIIIBBBHHIiB", b"NVC\x1a", 2, 3, bytes(range(16)), 175, 143, 30000, 1001, 1, 0, 0, 0,
                       0, 2, 1, 4)
    header = StreamHeader.read(io.BytesIO(body + struct.pack(">I", zlib.crc32(body))))
    assert header == replace(HEADER, version=2)
    assert header.synthesis == SynthesisEngine.TORCH and header.entropy_params == EntropyParameters.FLOAT


def test_packets_round_trip():
    f = stream(packet(0), packet(1))
    header = StreamHeader.read(f)
    assert list(read_packets(f, header)) == [packet(0), packet(1)]


def test_version_6_packets_hold_no_index_and_no_last_length():
    """Length, type/quality, count, 4 descriptors with 3 lengths, CRC: 2 + 1 + 1 + 4 + 3 + 4 bytes
    before the payloads; the frame index is the packet's place in the file."""
    p = packet(1)
    assert len(p.to_bytes()) == 2 + 1 + 1 + 4 + 3 + 4 + p.size
    empty_last = replace(p, streams=p.streams[:-1] + (Stream(StreamKind.LATENT, 1, 1, b""),))
    f = stream(packet(0), empty_last)
    assert list(read_packets(f, StreamHeader.read(f))) == [packet(0), empty_last]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"RIFF" + b[4:], "wrong magic"),
        (lambda b: b[:4] + bytes([7]) + b[5:], "unsupported .nvc format version 7"),
        (lambda b: b[:20], "truncated file header"),
        (lambda b: b[:10] + bytes([b[10] ^ 1]) + b[11:], "CRC mismatch in file header"),
    ],
)
def test_bad_header(mutate, message):
    with pytest.raises(NvcError, match=message):
        StreamHeader.read(io.BytesIO(mutate(HEADER.to_bytes())))


def test_flipped_payload_byte_names_the_frame():
    data = bytearray(stream(packet(0), packet(1)).getvalue())
    data[-len(END_OF_STREAM) - 3] ^= 0x10  # inside frame 1's last substream
    f = io.BytesIO(bytes(data))
    header = StreamHeader.read(f)
    packets = read_packets(f, header)
    assert next(packets) == packet(0)
    with pytest.raises(NvcError, match="CRC mismatch in frame 1"):
        next(packets)


@pytest.mark.parametrize("cut, message", [(10, "truncated packet in frame 1"), (len(END_OF_STREAM), "truncated file")])
def test_truncation(cut, message):
    data = stream(packet(0), packet(1)).getvalue()[: -cut]
    f = io.BytesIO(data)
    with pytest.raises(NvcError, match=message):
        list(read_packets(f, StreamHeader.read(f)))


def test_missing_end_mark_is_an_error_even_without_frame_count():
    f = stream(packet(0), end=False)
    header = StreamHeader.read(io.BytesIO(HEADER.to_bytes()))
    f.seek(len(HEADER.to_bytes()))
    unknown = StreamHeader(**{**header.__dict__, "frame_count": 0})
    with pytest.raises(NvcError, match="no end-of-stream mark after frame 0"):
        list(read_packets(f, unknown))


def test_version_1_files_are_read_as_lists_of_streams():
    import struct
    import zlib

    body = struct.pack(">4sBH16sIIIIBIiBB", b"NVC\x1a", 1, 2, bytes(16), 64, 64, 25, 1, 1, 1, 32, 3, 2)
    header = body + struct.pack(">I", zlib.crc32(body))
    fixed = struct.pack(">BBII", 1, 3, 0, 2) + struct.pack(">2I", 3, 1)
    payload = b"zz" + b"abc" + b"d"
    packet_body = fixed + struct.pack(">I", zlib.crc32(payload, zlib.crc32(fixed))) + payload
    f = io.BytesIO(header + struct.pack(">I", len(packet_body)) + packet_body + struct.pack(">I", 0))
    h = StreamHeader.read(f)
    assert (h.version, h.model_id, h.substreams) == (1, 2, 2)
    (p,) = list(read_packets(f, h))
    assert p.streams == (Stream(StreamKind.HYPER, 0, 0, b"zz"), Stream(StreamKind.LATENT, 0, 0, b"abc"),
                         Stream(StreamKind.LATENT, 0, 1, b"d"))


def test_container_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, nvc.container; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_packet_crc_covers_lengths():
    raw = bytearray(packet(0).to_bytes())
    assert raw[1] < 0x80  # a 2-byte length (a body of 128 to 16383 bytes)
    raw[2] ^= 1  # the frame type and quality byte
    f = io.BytesIO(HEADER.to_bytes() + bytes(raw) + END_OF_STREAM)
    with pytest.raises(NvcError, match="CRC mismatch in frame 0"):
        list(read_packets(f, StreamHeader.read(f)))
