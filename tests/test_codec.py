"""Round trips through the shipped model: exact decode, odd sizes, quality levels, API."""

import numpy as np
import pytest

import nvc
from nvc.models.registry import DEFAULT_MODEL, INTRA_MODEL, MODEL_TABLE, weights_hash
from nvc.cli import main
from nvc.codec import frame_to_tensor, tensor_to_frame
from nvc.metrics import frame_psnr
from nvc.video import read_frames
from tests.conftest import crop


def frames_equal(a, b) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a.planes(), b.planes()))


def test_pad_and_crop_are_inverse_for_odd_sizes(carphone_frames):
    frame = crop(carphone_frames[0], 143, 175)
    x = frame_to_tensor(frame)
    assert x.shape == (1, 6, 96, 96)  # 192 x 192 luma, packed at half resolution
    assert frames_equal(tensor_to_frame(x, 143, 175), frame)


@pytest.mark.parametrize("quality", [0, 5])
def test_decode_reproduces_encoder_reconstruction_bit_for_bit(tmp_path, carphone_frames, quality):
    path = tmp_path / "c.nvc"
    with nvc.open(path, "w", width=176, height=144, fps=30, quality=quality) as enc:
        recons = [enc.encode(f).reconstruction for f in carphone_frames]
    with nvc.open(path) as f:
        assert f.header.frame_count == len(carphone_frames)
        decoded = list(f)
    assert len(decoded) == len(recons)
    assert all(frames_equal(a, b) for a, b in zip(recons, decoded))


def test_header_records_model_id_and_weights_hash(small_nvc):
    with nvc.open(small_nvc) as f:
        entry = MODEL_TABLE[f.header.model_id]
        assert entry.name == DEFAULT_MODEL
        assert f.header.weights_hash == weights_hash(entry.weights_path)


def test_rate_and_quality_rise_with_the_level(tmp_path, carphone_frames):
    """The shipped variable-rate model orders its levels: more bits buy more PSNR."""
    sizes, psnrs = [], []
    for q in range(6):
        with nvc.open(tmp_path / f"{q}.nvc", "w", width=176, height=144, quality=q, intra_period=1) as enc:
            rec = enc.encode(carphone_frames[0]).reconstruction
        sizes.append(enc.bytes_written)
        psnrs.append(frame_psnr(carphone_frames[0], rec).yuv)
    assert sizes == sorted(sizes) and len(set(sizes)) == 6
    assert psnrs == sorted(psnrs)
    assert psnrs[0] > 27 and psnrs[5] > 30  # trained weights: 28.4 / 31.2 dB measured on this frame


def test_odd_size_raw_round_trip_through_cli(tmp_path, odd_raw):
    out_nvc, out_y4m = tmp_path / "odd.nvc", tmp_path / "odd.y4m"
    assert main(["encode", str(odd_raw), "--size", "175x143", "--fps", "30000/1001", "-o", str(out_nvc), "-q"]) == 0
    assert main(["decode", str(out_nvc), "-o", str(out_y4m), "-q"]) == 0
    source = read_frames(odd_raw, size=(175, 143))
    decoded = read_frames(out_y4m)  # read back through PyAV's Y4M demuxer
    assert len(decoded) == 2 and (decoded[0].width, decoded[0].height) == (175, 143)
    assert decoded[0].u.shape == (72, 88)
    assert all(frame_psnr(s, d).yuv > 29 for s, d in zip(source, decoded))  # 30.6 / 30.7 dB measured


def test_rgb_frames_from_the_api(small_nvc):
    with nvc.open(small_nvc, format="rgb") as f:
        first = next(iter(f))
    assert first.shape == (144, 176, 3) and first.dtype == np.uint8


def test_raw_yuv_and_png_outputs(tmp_path, small_nvc):
    import av

    assert main(["decode", str(small_nvc), "-o", str(tmp_path / "o.yuv"), "-q"]) == 0
    assert (tmp_path / "o.yuv").stat().st_size == 3 * 176 * 144 * 3 // 2
    assert main(["decode", str(small_nvc), "-o", str(tmp_path / "pngs") + "/", "-q"]) == 0
    pngs = sorted((tmp_path / "pngs").iterdir())
    assert [p.name for p in pngs] == ["000000.png", "000001.png", "000002.png"]
    with av.open(str(pngs[0])) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    with nvc.open(small_nvc, format="rgb") as f:
        assert np.array_equal(img, next(iter(f)))


def test_stdout_is_y4m_frame_by_frame(small_nvc):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "nvc.cli", "decode", str(small_nvc), "-o", "-", "-q"],
                          capture_output=True, check=True)
    header, _, body = proc.stdout.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 W176 H144 F30000:1001")
    frame = 176 * 144 * 3 // 2
    assert body.count(b"FRAME\n") >= 3 and len(body) == 3 * (len(b"FRAME\n") + frame)
    with nvc.open(small_nvc) as f:
        first = next(iter(f))
    assert body[6 : 6 + frame] == first.to_bytes()


def test_info_lists_every_packet(small_nvc, capsys):
    assert main(["info", str(small_nvc)]) == 0
    out = capsys.readouterr().out
    assert "176x144" in out and DEFAULT_MODEL in out
    assert len([line for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]) == 3


def test_intra_only_model_1_still_encodes_and_decodes(tmp_path, carphone_frames):
    """Files of model id 1 (intra only) stay decodable; asking it for P-frames is refused."""
    path = tmp_path / "v1.nvc"
    with nvc.open(path, "w", width=176, height=144, model=INTRA_MODEL, intra_period=1) as enc:
        recons = [enc.encode(f).reconstruction for f in carphone_frames]
    with nvc.open(path) as f:
        assert f.model_name == INTRA_MODEL
        assert all(frames_equal(a, b) for a, b in zip(recons, f))
    with pytest.raises(nvc.NvcError, match="codes I-frames only: use --intra-period 1"):
        nvc.open(tmp_path / "p.nvc", "w", width=176, height=144, model=INTRA_MODEL, intra_period=32)
