"""Colour metadata from the source to the header and out again (matrix, range, chroma siting, sample
aspect ratio), and one warning line for each way nvc reduces a source format (issue 11, 7-8)."""

from fractions import Fraction

import av
import numpy as np
import pytest

import nvc
from nvc.cli import main
from nvc.video import VideoSource
from tests.conftest import crop


@pytest.fixture
def frame(carphone_frames):
    return crop(carphone_frames[0], 64, 64)


def y4m(path, frame, tags: str, planes=None):
    """A one-frame Y4M file with the given header tags (W, H and F are added)."""
    data = b"".join(planes) if planes is not None else frame.to_bytes()
    path.write_bytes(f"YUV4MPEG2 W{frame.width} H{frame.height} F25:1 {tags}\n".encode() + b"FRAME\n" + data)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


# 7. The recorded matrix and range decide the RGB conversion.

@pytest.mark.parametrize("matrix, color_range", [("bt601", "tv"), ("bt709", "pc"), ("unknown", "unknown")])
def test_rgb_and_png_use_the_header_matrix_and_range(tmp_path, capsys, frame, matrix, color_range):
    path = tmp_path / "m.nvc"
    with nvc.open(path, "w", width=64, height=64, colorspace=matrix, color_range=color_range) as enc:
        decoded = enc.encode(frame).reconstruction
    expected = decoded.to_rgb("bt709" if matrix == "unknown" else matrix, color_range)
    assert not np.array_equal(expected, decoded.to_rgb("bt709" if matrix == "bt601" else "bt601", color_range))
    with nvc.open(path, format="rgb") as f:
        assert np.array_equal(next(iter(f)), expected)
    assert run(capsys, "decode", path, "-o", tmp_path / "pngs")[0] == 0
    with av.open(str(tmp_path / "pngs" / "000000.png")) as png:
        assert np.array_equal(next(png.decode(video=0)).to_ndarray(format="rgb24"), expected)


def test_bt601_and_bt709_differ_as_they_should():
    y, u, v = (np.full((2, 2), 128, np.uint8), np.full((1, 1), 128, np.uint8), np.full((1, 1), 240, np.uint8))
    red601, red709 = (nvc.YUVFrame(y, u, v).to_rgb(m)[0, 0] for m in ("bt601", "bt709"))
    # Cr at its limited-range peak: R = Y + 2(1-Kr)*Cr, Kr 0.299 (601) vs 0.2126 (709).
    assert red601[0] == 255 and red709[0] == 255
    assert red601[1] < red709[1]  # green falls further with BT.601's larger Cr weight


# 7. Y4M tags and container attributes go into the header and back out to Y4M.

@pytest.mark.parametrize("tags, siting, out_tag", [
    ("C420jpeg", "center", "C420jpeg"),
    ("C420mpeg2", "left", "C420mpeg2"),
    ("C420paldv", "unknown", "C420jpeg"),  # top-left siting has no header value (yet)
    ("", "center", "C420jpeg"),  # Y4M's default is 420jpeg
])
def test_y4m_chroma_siting_range_and_aspect_ratio_round_trip(tmp_path, capsys, frame, tags, siting, out_tag):
    source = y4m(tmp_path / "in.y4m", frame, f"Ip A16:15 {tags} XCOLORRANGE=FULL")
    assert run(capsys, "encode", source, "-o", tmp_path / "c.nvc")[0] == 0
    with nvc.open(tmp_path / "c.nvc") as f:
        h = f.header
        assert (h.color_range.name, h.chroma_location.name, h.sar) == ("PC", siting.upper(), (16, 15))
    code, out = run(capsys, "info", tmp_path / "c.nvc")
    assert code == 0 and f"range pc, chroma siting {siting}, sample aspect ratio 16:15" in out.out
    assert run(capsys, "decode", tmp_path / "c.nvc", "-o", tmp_path / "o.y4m")[0] == 0
    header = (tmp_path / "o.y4m").read_bytes().split(b"\n")[0].decode().split()
    assert "A16:15" in header and out_tag in header and "XCOLORRANGE=FULL" in header


def test_unknown_metadata_is_written_as_unknown(tmp_path, capsys, frame):
    path = tmp_path / "u.nvc"
    with nvc.open(path, "w", width=64, height=64) as enc:
        enc.encode(frame)
    assert run(capsys, "decode", path, "-o", tmp_path / "o.y4m")[0] == 0
    header = (tmp_path / "o.y4m").read_bytes().split(b"\n")[0].decode().split()
    assert "A0:0" in header and not [t for t in header if t.startswith("XCOLORRANGE")]


def write_mkv(path, codec: str, pix_fmt: str, frame, **attrs):
    """One frame of `frame` (converted to RGB and back to `pix_fmt` by PyAV) in a Matroska file."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = frame.width, frame.height, pix_fmt
        for k, v in attrs.items():
            setattr(s.codec_context, k, v)
        image = av.VideoFrame.from_ndarray(frame.to_rgb(), format="rgb24").reformat(format=pix_fmt)
        for p in [*s.encode(image), *s.encode(None)]:
            c.mux(p)
    return path


def test_pyav_source_range_matrix_and_aspect_ratio(tmp_path, capsys, frame):
    source = write_mkv(tmp_path / "j.mkv", "mjpeg", "yuvj420p", frame, color_range=2, colorspace=5,
                       sample_aspect_ratio=Fraction(12, 11))
    with av.open(str(source)) as c:
        full = next(c.decode(video=0))
    with VideoSource(source) as src:
        info, first = src.info, next(iter(src))
    assert (info.colorspace, info.color_range, info.sar) == ("bt601", "pc", Fraction(12, 11))
    # Full-range samples are coded as they are, not squeezed into 16..235.
    assert np.array_equal(first.y, full.to_ndarray(format="yuvj420p")[: frame.height])
    assert run(capsys, "encode", source, "-o", tmp_path / "j.nvc")[0] == 0
    with nvc.open(tmp_path / "j.nvc") as f:
        assert (f.header.colorspace.name, f.header.color_range.name, f.header.sar) == ("BT601", "PC", (12, 11))


# 8. One warning line per reduction.

def warnings_of(capsys, source, tmp_path) -> list[str]:
    code, out = run(capsys, "encode", source, "-o", tmp_path / "w.nvc", "-y", "--frames", "1")
    assert code == 0, out.err
    return [line for line in out.err.splitlines() if line.startswith("nvc: warning:")]


def test_reductions_warn_one_line_each(tmp_path, capsys, frame):
    up = lambda c: np.repeat(np.repeat(c, 2, 0), 2, 1)  # noqa: E731
    ten = lambda p: (p.astype("<u2") << 2).tobytes()  # noqa: E731
    s444 = y4m(tmp_path / "a.y4m", frame, "Ip C444", [frame.y.tobytes(), up(frame.u).tobytes(), up(frame.v).tobytes()])
    assert warnings_of(capsys, s444, tmp_path) == ["nvc: warning: a.y4m: 4:4:4 chroma is coded as 4:2:0"]
    s10 = y4m(tmp_path / "b.y4m", frame, "It C420p10", [ten(p) for p in frame.planes()])
    assert warnings_of(capsys, s10, tmp_path) == ["nvc: warning: b.y4m: 10-bit samples are coded as 8-bit",
                                                  "nvc: warning: b.y4m: interlaced video is coded as progressive frames"]
    with VideoSource(s10) as src:  # 10-bit samples that are 8-bit ones shifted come back exactly
        assert all(np.array_equal(a, b) for a, b in zip(next(iter(src)).planes(), frame.planes()))
    mkv = write_mkv(tmp_path / "c.mkv", "ffv1", "yuv422p10le", frame)
    assert warnings_of(capsys, mkv, tmp_path) == ["nvc: warning: c.mkv: 10-bit samples are coded as 8-bit",
                                                  "nvc: warning: c.mkv: 4:2:2 chroma is coded as 4:2:0"]
    assert warnings_of(capsys, y4m(tmp_path / "d.y4m", frame, "Ip C420jpeg"), tmp_path) == []


def test_library_reductions_are_python_warnings(tmp_path, frame):
    from nvc.transcode import encode_video

    up = lambda c: np.repeat(np.repeat(c, 2, 0), 2, 1)  # noqa: E731
    source = y4m(tmp_path / "a.y4m", frame, "Ip C444", [frame.y.tobytes(), up(frame.u).tobytes(), up(frame.v).tobytes()])
    with pytest.warns(UserWarning, match="4:4:4 chroma is coded as 4:2:0"):
        encode_video(source, tmp_path / "a.nvc", progress=False)
