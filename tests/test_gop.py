"""P-frames: GOP structure, exact decoding, determinism of the entropy path, damaged packets."""

import numpy as np
import pytest
import torch

import nvc
from nvc.cli import main
from nvc.codec import frame_to_tensor, tensor_to_frame
from nvc.container import FrameType, StreamHeader, read_packets
from nvc.gop import FLAT_QUALITY, QualitySchedule, frame_type
from nvc.metrics import frame_psnr
from nvc.video import read_frames


def frames_equal(a, b) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a.planes(), b.planes()))


@pytest.fixture(scope="module")
def frames(carphone):
    return read_frames(carphone, 7)


@pytest.fixture(scope="module")
def gop_file(tmp_path_factory, frames):
    """7 real frames, intra period 3: I P P I P P I, all at one level."""
    path = tmp_path_factory.mktemp("gop") / "gop.nvc"
    with nvc.open(path, "w", width=176, height=144, fps=30, quality=2, intra_period=3,
                  quality_schedule=FLAT_QUALITY) as enc:
        encoded = [enc.encode(f) for f in frames]
    return path, encoded


def test_frame_types_follow_the_intra_period():
    assert [frame_type(i, 3) for i in range(7)] == [FrameType.I, FrameType.P, FrameType.P] * 2 + [FrameType.I]
    assert [frame_type(i, -1) for i in range(4)] == [FrameType.I] + [FrameType.P] * 3
    assert all(frame_type(i, 1) == FrameType.I for i in range(4))


def test_p_frames_decode_bit_for_bit(gop_file, frames):
    path, encoded = gop_file
    assert [e.frame_type for e in encoded] == [FrameType.I, FrameType.P, FrameType.P] * 2 + [FrameType.I]
    with nvc.open(path) as f:
        assert f.header.intra_period == 3
        decoded = list(f)
    assert len(decoded) == 7
    assert all(frames_equal(e.reconstruction, d) for e, d in zip(encoded, decoded))
    assert all(frame_psnr(s, d).yuv > 28 for s, d in zip(frames, decoded))


def test_quality_schedule_raises_i_frames_and_every_periodth_p_frame():
    schedule = QualitySchedule(intra=3, period=4, periodic=1)
    assert [schedule.level(i, 8, 2, 8) for i in range(10)] == [5, 2, 2, 2, 3, 2, 2, 2, 5, 2]
    assert [schedule.level(i, 8, 6, 8) for i in range(5)] == [7, 6, 6, 6, 7]  # capped at the last level
    assert [schedule.level(i, -1, 1, 8) for i in range(9)] == [4, 1, 1, 1, 2, 1, 1, 1, 2]
    assert [schedule.level(i, 1, 2, 8) for i in range(3)] == [2, 2, 2]  # all intra: no frame to favour
    assert all(FLAT_QUALITY.level(i, 8, 3, 8) == 3 for i in range(10))


@pytest.mark.parametrize("schedule", [QualitySchedule(intra=3, period=4, periodic=1), FLAT_QUALITY])
def test_packets_carry_their_level_and_decode_exactly(tmp_path, frames, schedule):
    """The decoder follows each packet's level, whatever schedule the encoder used."""
    path = tmp_path / "s.nvc"
    with nvc.Encoder(path, 176, 144, fps=30, quality=2, intra_period=8, quality_schedule=schedule) as enc:
        encoded = [enc.encode(f) for f in frames[:6]]
    with open(path, "rb") as f:
        levels = [p.quality for p in read_packets(f, StreamHeader.read(f))]
    assert levels == [schedule.level(i, 8, 2, 8) for i in range(6)]
    with nvc.open(path) as f:
        assert f.header.quality == 2
        assert all(frames_equal(e.reconstruction, d) for e, d in zip(encoded, f))


def test_p_frames_cost_fewer_bits_than_i_frames(gop_file):
    """The point of inter coding, on real video at one quality level."""
    _, encoded = gop_file
    i_bytes = np.mean([e.bytes for e in encoded if e.frame_type == FrameType.I])
    p_bytes = np.mean([e.bytes for e in encoded if e.frame_type == FrameType.P])
    assert p_bytes < 0.9 * i_bytes


def test_p_frame_entropy_decoding_is_exact_across_thread_counts(frames):
    """DESIGN.md, Determinism: the entropy parameters of a P-frame come from z_hat and the previous
    latent only, so the decoded latents are identical however the pixels were computed. Encode on
    one thread, decode the latent chain on two."""
    from nvc.models.registry import DEFAULT_MODEL, entry_by_name
    from nvc.model import load_shipped

    model, _ = load_shipped(entry_by_name(DEFAULT_MODEL))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        coded, ref = [], None
        for i, frame in enumerate(frames[:4]):
            streams, ref = (model.intra if i == 0 else model.inter).compress(frame_to_tensor(frame), ref, 2)
            coded.append((streams, ref))
        torch.set_num_threads(2)
        dec_ref = None
        for i, (streams, enc_rec) in enumerate(coded):
            frame_model = model.intra if i == 0 else model.inter
            latent = frame_model.decode_latent(streams, dec_ref, 192, 192)
            assert torch.equal(latent.y_hat, enc_rec.y_hat)
            dec_ref = frame_model.synthesize(latent, dec_ref, 2)
            a, b = tensor_to_frame(enc_rec.x_hat, 144, 176), tensor_to_frame(dec_ref.x_hat, 144, 176)
            assert max(np.abs(p.astype(int) - q).max() for p, q in zip(a.planes(), b.planes())) <= 2
    finally:
        torch.set_num_threads(before)


def damage(path, out, frame: int) -> None:
    """Flip one payload byte of a frame's packet (after the header and `frame` packets)."""
    import io

    from nvc.container import StreamHeader, read_packets

    data = bytearray(path.read_bytes())
    f = io.BytesIO(bytes(data))
    header = StreamHeader.read(f)
    packets = [p.to_bytes() for p in read_packets(f, header)]
    pos = len(header.to_bytes()) + sum(len(p) for p in packets[:frame])
    data[pos + 4 + 40] ^= 0xFF
    out.write_bytes(bytes(data))


def test_damaged_p_frame_stops_with_a_clear_error_for_its_gop(tmp_path, gop_file, capsys):
    path, _ = gop_file
    bad = tmp_path / "bad.nvc"
    damage(path, bad, 4)
    with nvc.open(bad) as f, pytest.raises(nvc.NvcError) as err:
        list(f)
    assert str(err.value) == ("CRC mismatch in frame 4; frames 4-5 cannot be decoded; the I-frame 6 recovers")
    out = tmp_path / "o.y4m"
    assert main(["decode", str(bad), "-o", str(out), "-q"]) == 1
    assert "error: CRC mismatch in frame 4; frames 4-5" in capsys.readouterr().err
    assert not out.exists()


def test_next_i_frame_recovers_with_conceal(tmp_path, gop_file, capsys):
    path, encoded = gop_file
    bad = tmp_path / "bad.nvc"
    damage(path, bad, 1)
    messages = []
    with nvc.open(bad, conceal=True, on_damage=messages.append) as f:
        decoded = list(f)
    assert len(decoded) == 7
    assert messages == ["CRC mismatch in frame 1; frames 1-2 cannot be decoded; the I-frame 3 recovers, "
                        "the last good frame is repeated in their place"]
    assert frames_equal(decoded[1], encoded[0].reconstruction) and frames_equal(decoded[2], encoded[0].reconstruction)
    assert all(frames_equal(decoded[i], encoded[i].reconstruction) for i in (0, 3, 4, 5, 6))
    out = tmp_path / "o.y4m"
    assert main(["decode", str(bad), "-o", str(out), "--conceal", "-q"]) == 0
    assert "warning: CRC mismatch in frame 1" in capsys.readouterr().err
    assert len(read_frames(out)) == 7


def test_eval_points_record_the_encoders_choices():
    """nvc eval measures a point again when the encoder's choices change; v1's points keep their settings."""
    from nvc.codec import encoder_settings

    v2 = encoder_settings("lean-mc-yuv420-v2", 32)
    assert v2["quality_schedule"] == {"intra": 3, "period": 4, "periodic": 1} and len(v2["rdo_weight"]) == 2
    assert v2["motion_format"] == 0xF8 and v2["container"] == 5 and "repeat_hyper" not in v2
    assert "quality_schedule" not in encoder_settings("lean-mc-yuv420-v2", 1)
    assert encoder_settings("tcm-yuv420-v1", 32) == {}


def test_eval_points_record_an_encoder_that_never_repeats_hyper_latents(monkeypatch):
    from nvc import lean_model
    from nvc.codec import encoder_settings

    monkeypatch.setattr(lean_model, "REPEAT_HYPER", False)
    assert encoder_settings("lean-mc-yuv420-v2", 32)["repeat_hyper"] is False
