"""P-frames: GOP structure, exact decoding, determinism of the entropy path, damaged packets."""

import numpy as np
import pytest
import torch

import nvc
from nvc.cli import main
from nvc.codec import frame_to_tensor, tensor_to_frame
from nvc.container import FrameType, StreamHeader, read_packets
from nvc.gop import FLAT_QUALITY, PsnrHold, QualitySchedule, frame_type
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


def test_psnr_hold_raises_p_frames_that_fall_behind_the_first_and_starts_over_at_an_i_frame():
    hold = PsnrHold(0.25)
    levels = []
    for kind, psnr in [(FrameType.I, 40.0), (FrameType.P, 36.0), (FrameType.P, 35.9), (FrameType.P, 35.6),
                       (FrameType.P, 35.7), (FrameType.P, 36.5), (FrameType.P, 36.0), (FrameType.I, 40.0), (FrameType.P, 30.0)]:
        levels.append(hold.level(6 if kind == FrameType.I else 2, kind, 8))
        hold.observe(kind, psnr, 8)
    # 35.9 is within the margin of the first P-frame's 36.0; 35.6 and 35.7 are not (two levels up);
    # 36.5 is above it (one down); the I-frame starts over, its own level never moved
    assert levels == [6, 2, 2, 2, 3, 4, 3, 6, 2]
    top = PsnrHold(0.25)
    for psnr in (40.0, 30.0, 29.0, 28.0, 27.0):
        top.observe(FrameType.P, psnr, 3)
    assert top.level(2, FrameType.P, 3) == 2  # capped at the last level
    with pytest.raises(nvc.NvcError, match="positive"):
        PsnrHold(0)


def test_hold_psnr_packets_record_their_levels_and_decode_exactly(tmp_path, frames, carphone, capsys):
    """nvc encode --hold-psnr: every P-frame at or above the schedule's level, the file decodes as encoded;
    a margin that is not positive is refused in one line before any file is written."""
    schedule = QualitySchedule(intra=3, period=4, periodic=1)
    path = tmp_path / "h.nvc"
    with nvc.Encoder(path, 176, 144, fps=30, quality=0, intra_period=8, hold_psnr=0.05) as enc:
        encoded = [enc.encode(f) for f in frames]
    with open(path, "rb") as f:
        levels = [p.quality for p in read_packets(f, StreamHeader.read(f))]
    scheduled = [schedule.level(i, 8, 0, 8) for i in range(len(frames))]
    assert levels[0] == scheduled[0] and all(a >= b for a, b in zip(levels, scheduled)) and levels != scheduled
    with nvc.open(path) as f:
        assert all(frames_equal(e.reconstruction, d) for e, d in zip(encoded, f))
    assert main(["encode", str(carphone), "-o", str(tmp_path / "bad.nvc"), "--hold-psnr", "0", "-q"]) == 1
    err = capsys.readouterr().err
    assert "--hold-psnr must be a positive number of dB" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.nvc").exists()


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
    assert v2["motion_format"] == 0xF8 and v2["container"] == 6 and "repeat_hyper" not in v2
    assert "quality_schedule" not in encoder_settings("lean-mc-yuv420-v2", 1)
    assert encoder_settings("tcm-yuv420-v1", 32) == {}


def test_eval_points_record_an_encoder_that_never_repeats_hyper_latents(monkeypatch):
    from nvc import lean_model
    from nvc.codec import encoder_settings

    monkeypatch.setattr(lean_model, "REPEAT_HYPER", False)
    assert encoder_settings("lean-mc-yuv420-v2", 32)["repeat_hyper"] is False


def test_eval_names_and_records_a_held_encoder():
    """nvc eval --hold-psnr reports the model under its own name, and its points record the margin."""
    from nvc.evaluation.codecs import NvcCodec

    held, plain = NvcCodec(hold_psnr=0.25), NvcCodec()
    assert held.name == "lean-mc-yuv420-v2-hold0.25" and plain.name == "lean-mc-yuv420-v2"
    assert held.settings(0, 32)["hold_psnr"] == 0.25 and "hold_psnr" not in plain.settings(0, 32)
