from pathlib import Path

import numpy as np
import pytest
import torch

from nvc.frames import YUVFrame
from nvc.video import read_frames, sample_clip


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def carphone() -> Path:
    return sample_clip("carphone_pristine.mp4")


@pytest.fixture(scope="session")
def carphone_frames(carphone) -> list[YUVFrame]:
    return read_frames(carphone, 3)


def crop(frame: YUVFrame, height: int, width: int) -> YUVFrame:
    ch, cw = (height + 1) // 2, (width + 1) // 2
    return YUVFrame(*(np.ascontiguousarray(p) for p in (frame.y[:height, :width], frame.u[:ch, :cw], frame.v[:ch, :cw])))


@pytest.fixture
def odd_raw(tmp_path, carphone_frames) -> Path:
    """Two real 175x143 frames as a raw I420 file."""
    path = tmp_path / "odd.yuv"
    path.write_bytes(b"".join(crop(f, 143, 175).to_bytes() for f in carphone_frames[:2]))
    return path


@pytest.fixture
def small_nvc(tmp_path, carphone) -> Path:
    """A 3-frame .nvc of real video, encoded through the CLI."""
    from nvc.cli import main

    out = tmp_path / "small.nvc"
    assert main(["encode", str(carphone), "-o", str(out), "--frames", "3", "-q"]) == 0
    return out
