"""Bad input: a one-line error, a non-zero exit, and no output left behind."""

import io
import struct
import zlib

import pytest

from nvc.cli import main
from nvc.container import StreamHeader, read_packets


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, (err[-1] if err else "")


def assert_clean(folder, *keep):
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


def test_missing_input(tmp_path, capsys):
    code, msg = run(capsys, "encode", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.nvc"))
    assert code == 1 and msg == f"nvc: error: input not found: {tmp_path / 'nope.mp4'}"
    assert_clean(tmp_path)


def test_not_a_video(tmp_path, capsys):
    (tmp_path / "notes.mp4").write_text("hello, not a video\n" * 50)
    code, msg = run(capsys, "encode", str(tmp_path / "notes.mp4"), "-o", str(tmp_path / "o.nvc"))
    assert code == 1 and msg.startswith("nvc: error: cannot read notes.mp4 as video")
    assert_clean(tmp_path, "notes.mp4")


def test_video_with_zero_frames(tmp_path, capsys):
    empty = tmp_path / "empty.y4m"
    empty.write_bytes(b"YUV4MPEG2 W64 H64 F25:1 Ip A1:1 C420jpeg\n")  # a valid stream header, no frames
    code, msg = run(capsys, "encode", str(empty), "-o", str(tmp_path / "o.nvc"))
    assert code == 1 and "zero frames" in msg
    assert_clean(tmp_path, "empty.y4m")


def test_raw_size_mismatch(tmp_path, capsys, odd_raw):
    code, msg = run(capsys, "encode", str(odd_raw), "--size", "176x144", "-o", str(tmp_path / "o.nvc"))
    assert code == 1 and "is not a whole number of 176x144 YUV420 frames" in msg
    assert_clean(tmp_path, "odd.yuv")


def test_raw_without_size(tmp_path, capsys, odd_raw):
    code, msg = run(capsys, "encode", str(odd_raw), "-o", str(tmp_path / "o.nvc"))
    assert code == 1 and "needs --size" in msg


def test_unwritable_output(tmp_path, capsys, carphone):
    code, msg = run(capsys, "encode", str(carphone), "-o", str(tmp_path / "no" / "such" / "o.nvc"), "--frames", "1")
    assert code == 1 and msg.startswith("nvc: error: cannot write") and "does not exist" in msg
    assert_clean(tmp_path)


def test_bad_quality(tmp_path, capsys, carphone):
    code, msg = run(capsys, "encode", str(carphone), "-o", str(tmp_path / "o.nvc"), "--quality", "9")
    assert code == 1 and msg == "nvc: error: --quality must be 0..7 for lean-mc-yuv420-v2, got 9"
    assert_clean(tmp_path)


def decode_error(tmp_path, capsys, data: bytes, name="bad.nvc"):
    bad = tmp_path / name
    bad.write_bytes(data)
    code, msg = run(capsys, "decode", str(bad), "-o", str(tmp_path / "out.y4m"))
    assert code == 1
    assert not (tmp_path / "out.y4m").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.y4m")]  # no temporary left
    return msg


def header_size(data: bytes) -> int:
    """Bytes of the file header (its CRC the last 4)."""
    return len(StreamHeader.read(io.BytesIO(data)).to_bytes())


def reseal(data: bytearray, n: int) -> bytes:
    """The file with its header CRC (header of n bytes) made right again."""
    data[n - 4 : n] = struct.pack(">I", zlib.crc32(bytes(data[: n - 4])))
    return bytes(data)


def test_truncated_nvc(tmp_path, capsys, small_nvc):
    data = small_nvc.read_bytes()
    assert decode_error(tmp_path, capsys, data[: len(data) - 100]) == (
        "nvc: error: truncated packet in frame 2; the 2 frames before it are good, --conceal keeps them")


def test_flipped_byte_names_the_frame(tmp_path, capsys, small_nvc):
    data = bytearray(small_nvc.read_bytes())
    n = header_size(data)
    f = io.BytesIO(bytes(data))
    first = next(read_packets(f, StreamHeader.read(f)))
    second = n + len(first.to_bytes())  # start of frame 1's packet
    data[second + 40] ^= 0x01
    assert decode_error(tmp_path, capsys, bytes(data)) == (
        "nvc: error: CRC mismatch in frame 1; frames 1-2 cannot be decoded (no later I-frame)")


def test_wrong_magic(tmp_path, capsys, small_nvc):
    data = small_nvc.read_bytes()
    assert decode_error(tmp_path, capsys, b"RIFF" + data[4:]) == "nvc: error: not an .nvc file (wrong magic)"


def test_future_version(tmp_path, capsys, small_nvc):
    data = small_nvc.read_bytes()
    msg = decode_error(tmp_path, capsys, data[:4] + bytes([7]) + data[5:])
    assert msg == "nvc: error: unsupported .nvc format version 7 (this nvc reads versions 1 to 6)"


def test_other_weights(tmp_path, capsys, small_nvc):
    data = bytearray(small_nvc.read_bytes())
    n = header_size(data)
    data[7:23] = bytes(16)  # weights hash field
    msg = decode_error(tmp_path, capsys, reseal(data, n))
    assert msg.startswith("nvc: error: weights hash differs: encoded with lean-mc-yuv420-v2 weights 0000000000000000")


def test_unknown_model_id(tmp_path, capsys, small_nvc):
    data = bytearray(small_nvc.read_bytes())
    n = header_size(data)
    data[5:7] = struct.pack(">H", 999)
    assert "needs model id 999" in decode_error(tmp_path, capsys, reseal(data, n))


def test_decode_to_unwritable_output(tmp_path, capsys, small_nvc):
    code, msg = run(capsys, "decode", str(small_nvc), "-o", str(tmp_path / "missing" / "o.y4m"))
    assert code == 1 and msg.startswith("nvc: error: cannot write")


def test_no_traceback_without_debug_but_with_it(tmp_path, capsys):
    code, msg = run(capsys, "info", str(tmp_path / "nothing.nvc"))
    assert code == 1 and "Traceback" not in capsys.readouterr().err
    with pytest.raises(Exception):
        main(["info", str(tmp_path / "nothing.nvc"), "--debug"])
