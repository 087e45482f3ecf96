import io

import pytest

from entropy.hyperprior import LatentStreams
from nvc.container import (END_OF_STREAM, ColorSpace, FramePacket, FrameType, StreamHeader, read_packets)
from nvc.errors import NvcError

HEADER = StreamHeader(1, bytes(range(16)), 175, 143, 30000, 1001, ColorSpace.BT709, 2, 1, 4, 2)


def stream(*packets: FramePacket, end: bool = True) -> io.BytesIO:
    return io.BytesIO(HEADER.to_bytes() + b"".join(p.to_bytes() for p in packets) + (END_OF_STREAM if end else b""))


def packet(i: int) -> FramePacket:
    return FramePacket(FrameType.I, 4, i, LatentStreams(b"z" * (i + 1), (b"a" * 5, b"b" * (7 + i))))


def test_header_round_trip():
    f = io.BytesIO(HEADER.to_bytes())
    assert StreamHeader.read(f) == HEADER
    assert len(HEADER.to_bytes()) == 54


def test_packets_round_trip():
    f = stream(packet(0), packet(1))
    header = StreamHeader.read(f)
    assert list(read_packets(f, header)) == [packet(0), packet(1)]


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


@pytest.mark.parametrize("cut, message", [(10, "truncated packet in frame 1"), (4, "truncated file")])
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


def test_packet_crc_covers_lengths():
    raw = bytearray(packet(0).to_bytes())
    raw[4 + 1] ^= 1  # the quality byte
    f = io.BytesIO(HEADER.to_bytes() + bytes(raw) + END_OF_STREAM)
    with pytest.raises(NvcError, match="CRC mismatch in frame 0"):
        list(read_packets(f, StreamHeader.read(f)))
