from fractions import Fraction

import numpy as np

from nvc.output import Y4MWriter
from nvc.video import VideoSource, read_frames


def test_y4m_written_is_read_back_by_pyav(tmp_path, carphone_frames):
    path = tmp_path / "c.y4m"
    w = Y4MWriter(str(path), 176, 144, Fraction(30000, 1001))
    for f in carphone_frames:
        w.write(f)
    w.close()
    with VideoSource(path) as src:
        assert (src.info.width, src.info.height, src.info.fps) == (176, 144, Fraction(30000, 1001))
        back = list(src)
    assert len(back) == len(carphone_frames)
    assert all(np.array_equal(a.y, b.y) and np.array_equal(a.v, b.v) for a, b in zip(back, carphone_frames))


def test_writer_leaves_nothing_when_aborted(tmp_path, carphone_frames):
    w = Y4MWriter(str(tmp_path / "c.y4m"), 176, 144, Fraction(25))
    w.write(carphone_frames[0])
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_raw_reader(odd_raw):
    with VideoSource(odd_raw, size=(175, 143), fps=Fraction(24)) as src:
        assert src.info.frame_count == 2 and src.info.fps == 24
    frames = read_frames(odd_raw, size=(175, 143))
    assert [f.y.shape for f in frames] == [(143, 175)] * 2 and frames[0].u.shape == (72, 88)


def test_mp4_source_frames(carphone):
    with VideoSource(carphone) as src:
        assert (src.info.width, src.info.height) == (176, 144)
        assert src.info.frame_count == 120
