"""The v2 codec (lean-mc-yuv420-v2): decoder budget, int8-friendly layers, motion, multi-step
entropy model with skipping, exact decoding, damaged streams, and data-parallel training."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import nvc
from nvc.codec import frame_to_tensor
from nvc.container import FrameType, StreamKind
from nvc.entropy.motion import MotionCoder, field_differences, field_from_differences
from nvc.entropy import coder, multistep
from nvc.entropy.multistep import RdoRounding, step_masks, symbol_bits
from nvc.errors import NvcError
from nvc.lean_model import LeanVideoModel
from nvc.model import load_shipped
from nvc.models.lean import LeanConfig
from nvc.models.motion import MotionCompensation, estimate_motion, predict_packed
from nvc.models.registry import entry_by_name
from nvc.video import read_frames
from tools.bench import decoder_kmacs

V2 = "lean-mc-yuv420-v2"


@pytest.fixture(scope="module")
def model():
    return load_shipped(entry_by_name(V2))[0]


@pytest.fixture(scope="module")
def clip(carphone):
    """Three real 176x144 frames, padded to 192x192 and packed."""
    return [frame_to_tensor(f) for f in read_frames(carphone, 3)]


def test_decoder_fits_the_budget(model):
    """Synthesis (motion compensation included) <= 6 kMAC per luma pixel, entropy parameters <= 2."""
    kmacs = decoder_kmacs(model, 256, 384)
    assert kmacs["i_synthesis_kmac_per_pixel"] <= 6 and kmacs["p_synthesis_kmac_per_pixel"] <= 6
    assert kmacs["i_entropy_params_kmac_per_pixel"] <= 2 and kmacs["p_entropy_params_kmac_per_pixel"] <= 2
    assert kmacs["p_synthesis_kmac_per_pixel"] > 5  # counted for real: the conditional g_s and the warp


def test_decoder_layers_are_int8_friendly(model):
    """No GDN, transposed or depthwise convolution on the decoder side."""
    allowed = (nn.Conv2d, nn.ReLU, nn.LeakyReLU, nn.PixelShuffle, nn.Sequential, nn.ModuleList, MotionCompensation)
    for frame_model in (model.intra, model.inter):
        for root in frame_model.synthesis_modules() + frame_model.entropy_parameter_modules():
            for m in root.modules():
                if m is root or len(list(m.children())):
                    continue
                assert isinstance(m, allowed), f"{type(m).__name__} in the decoder"
                if isinstance(m, nn.Conv2d):
                    assert m.groups == 1 and m.stride == (1, 1)


def test_step_masks_partition_the_latent():
    for steps in (1, 2, 4):
        masks = step_masks(steps, 8, 4, 6)
        assert masks.shape == (steps, 8, 4, 6)
        assert torch.equal(masks.sum(0), torch.ones(8, 4, 6, dtype=torch.long))


@pytest.mark.parametrize("split_min_bytes", [multistep.SPLIT_MIN_BYTES, 0])
def test_i_and_p_frames_decode_bit_for_bit(model, clip, monkeypatch, split_min_bytes):
    """With each step in one substream (small frames, the default) and in K (what large ones get)."""
    monkeypatch.setattr(multistep, "SPLIT_MIN_BYTES", split_min_bytes)
    parts = 1 if split_min_bytes else model.config.substreams
    h, w = clip[0].shape[-2] * 2, clip[0].shape[-1] * 2
    ref_enc = ref_dec = None
    for i, x in enumerate(clip):
        frame_model = model.intra if i == 0 else model.inter
        streams, rec = frame_model.compress(x, ref_enc, 3)
        kinds = [s.kind for s in streams]
        assert kinds.count(StreamKind.MOTION) == (i > 0) and kinds.count(StreamKind.HYPER) == 1
        steps = model.config.intra_steps if i == 0 else model.config.inter_steps
        assert kinds.count(StreamKind.LATENT) == steps * parts
        dec = frame_model.decompress(streams, ref_dec, h, w, 3)
        assert torch.equal(dec.x_hat, rec.x_hat) and torch.equal(dec.y_hat, rec.y_hat)
        ref_enc, ref_dec = rec, dec


def test_one_step_schedule_decodes_too(model, clip):
    """S = 1 (every symbol from the base parameters): what the multi-step gain is measured against."""
    h, w = clip[0].shape[-2] * 2, clip[0].shape[-1] * 2
    streams, rec = model.intra.compress(clip[0], None, 3, steps=1)
    assert sum(s.kind == StreamKind.LATENT for s in streams) == 1  # a small frame: one substream
    assert torch.equal(model.intra.decompress(streams, None, h, w, 3).x_hat, rec.x_hat)


@pytest.mark.xfail(strict=True, reason="not met by the shipped v2 weights (d2de9676): the same carphone frame coded "
                   "again at q3 costs 650 bytes (39 % of its 1,652-byte I-frame; zero motion, 2 bytes): the P-model "
                   "spends them refining the I-frame's error against the source (README, v2)")
def test_a_repeated_frame_is_nearly_free(model, clip):
    """Static content: zero motion costs 2 bytes and the latent is almost entirely skipped."""
    _, ref = model.intra.compress(clip[0], None, 3)
    streams, rec = model.inter.compress(clip[0], ref, 3)  # the same frame again
    motion = next(s for s in streams if s.kind == StreamKind.MOTION)
    assert motion.data == b"\xff\xff"
    i_bytes = sum(len(s.data) for s in model.intra.compress(clip[0], None, 3)[0])
    assert sum(len(s.data) for s in streams) < 0.1 * i_bytes


def test_p_frame_keeps_the_cheaper_of_its_motion_searches(model, clip, monkeypatch):
    """Searched with each weight of MOTION_LAMBDAS, a P-frame keeps the coding of lowest cost (its
    distortion weighed DECISION_WEIGHT times), which the decoder reproduces from the stream."""
    from nvc import lean_model
    from nvc.lean_model import DECISION_WEIGHT, coding_cost

    _, ref = model.intra.compress(clip[0], None, 2)
    q, lmbda = 2, DECISION_WEIGHT * model.config.lambdas[2]

    def coded(lambdas):
        monkeypatch.setattr(lean_model, "MOTION_LAMBDAS", lambdas)
        streams, rec = model.inter.compress(clip[2], ref, q)
        return streams, rec, coding_cost(rec.x_hat, clip[2], 8 * sum(len(s.data) for s in streams), lmbda)

    alone = [coded((w,)) for w in (128.0, 8.0)]
    assert alone[0][0][0].data != alone[1][0][0].data  # the two weights find different fields here
    for order in ((128.0, 8.0), (8.0, 128.0)):
        streams, rec, cost = coded(order)
        assert cost == min(c for _, _, c in alone)
    h, w = clip[2].shape[-2] * 2, clip[2].shape[-1] * 2
    assert torch.equal(model.inter.decompress(streams, ref, h, w, q).x_hat, rec.x_hat)


def test_p_frame_may_repeat_its_references_hyper_latent(model, clip):
    """A P-frame whose reference is a P-frame may code its latent with the reference's hyper-latent
    (an empty hyper stream: a still scene's is the same frame after frame), if that costs less; the
    decoder rebuilds it exactly, and refuses an empty hyper stream with no hyper-latent to repeat."""
    from nvc.lean_model import DECISION_WEIGHT, coding_cost

    h, w = clip[0].shape[-2] * 2, clip[0].shape[-1] * 2
    q, inter = 3, model.inter
    streams_i, ref_i = model.intra.compress(clip[0], None, q)
    streams_p, ref_p = inter.compress(clip[1], ref_i, q)
    dec_p = inter.decompress(streams_p, model.intra.decompress(streams_i, None, h, w, q), h, w, q)
    assert ref_i.z_hat is None and torch.equal(dec_p.z_hat, ref_p.z_hat)

    streams, rec = inter.compress(clip[2], ref_p, q)
    mv = inter.motion_coder.decode(next(s.data for s in streams if s.kind == StreamKind.MOTION), (h // 16, w // 16))
    analysis = inter._analyse(clip[2], ref_p, q, mv)
    own = inter._code(clip[2], ref_p, q, mv, analysis, None)
    repeat = inter._code(clip[2], ref_p, q, mv, analysis, None, hyper=(b"", ref_p.z_hat))
    kept = coding_cost(rec.x_hat, clip[2], 8 * sum(len(s.data) for s in streams), DECISION_WEIGHT * model.config.lambdas[q])
    assert kept == min(own[-1], repeat[-1])  # the cheaper of the two, with the field it kept

    (hyper,) = [s for s in repeat[0] if s.kind == StreamKind.HYPER]
    assert hyper.data == b"" and len(next(s for s in own[0] if s.kind == StreamKind.HYPER).data) > 0
    assert torch.equal(repeat[1].z_hat, ref_p.z_hat)
    dec = inter.decompress(repeat[0], dec_p, h, w, q)
    assert torch.equal(dec.x_hat, repeat[1].x_hat) and torch.equal(dec.z_hat, ref_p.z_hat)
    with pytest.raises(NvcError, match="empty hyper stream"):
        inter.decompress(repeat[0], ref_i, h, w, q)


def test_motion_search_finds_a_translation(carphone):
    frame = frame_to_tensor(read_frames(carphone, 1)[0])
    luma = nn.functional.pixel_shuffle(frame[:, :4], 2)
    moved = torch.roll(luma, (4, -6), (2, 3))  # cur[p] = ref[p - (-6, 4)]
    mv = estimate_motion(moved, luma)
    inner = mv[0, :, 2:-2, 2:-2].reshape(2, -1)
    share = (inner == torch.tensor([[24], [-16]])).all(0).float().mean()
    assert share > 0.6
    pred = predict_packed(frame, mv)
    target = torch.cat([nn.functional.pixel_unshuffle(moved, 2), frame[:, 4:]], 1)
    err = (pred - target)[..., 16:-16, 16:-16, ][:, :4].abs().mean()
    assert err < (frame - target)[..., 16:-16, 16:-16][:, :4].abs().mean() / 3


def test_coarse_motion_search_repeats_its_vectors_and_codes_cheaper(carphone):
    """block=32 (the encoder's choice at the lowest qualities): the 16x16 grid's shape, one vector per
    2x2 group, the translation found, and fewer motion bytes than the 16x16 search."""
    frames = [frame_to_tensor(f) for f in read_frames(carphone, 2)]
    cur, ref = (nn.functional.pixel_shuffle(f[:, :4], 2) for f in frames[::-1])
    fine, coarse = estimate_motion(cur, ref), estimate_motion(cur, ref, block=32)
    assert not estimate_motion(ref, ref, block=32).any()  # a still picture: zero vectors, exactly
    assert coarse.shape == fine.shape == (1, 2, cur.shape[-2] // 16, cur.shape[-1] // 16)
    assert torch.equal(coarse[..., 1::2, :], coarse[..., ::2, :][..., : coarse[..., 1::2, :].shape[-2], :])
    assert torch.equal(coarse[..., 1::2], coarse[..., ::2][..., : coarse[..., 1::2].shape[-1]])
    moved = torch.roll(ref, (4, -6), (2, 3))
    inner = estimate_motion(moved, ref, block=32)[0, :, 2:-2, 2:-2].reshape(2, -1)
    assert (inner == torch.tensor([[24], [-16]])).all(0).float().mean() > 0.6
    coder = MotionCoder()
    coder.update()
    assert len(coder.encode(coarse)) < len(coder.encode(fine))


def test_motion_coder_round_trip_and_errors():
    coder = MotionCoder()
    coder.update()
    rng = np.random.default_rng(0)
    mv = torch.from_numpy(rng.integers(-300, 300, (1, 2, 5, 7)).astype(np.int32))
    mv[0, 1] = 0
    data = coder.encode(mv)
    assert data[2] == 0xFF  # an all-zero component costs one byte
    assert torch.equal(coder.decode(data, (5, 7)), mv)
    assert coder.encode(torch.zeros(1, 2, 5, 7, dtype=torch.int32)) == b"\xff\xff"
    d = field_differences(mv[0].numpy())
    assert np.array_equal(field_from_differences(d), mv[0].numpy())
    for bad in (b"", b"\x01", bytes([200, 200]) + data[2:], b"\xff\xff\x00", data[:1] + bytes([200]) + data[2:],
                data[:4], bytes([0xFC]) + data[1:]):
        with pytest.raises(NvcError):
            coder.decode(bad, (5, 7))


def _encode(path, frames, intra_period):
    h, w = frames[0].height, frames[0].width
    with nvc.open(path, "w", width=w, height=h, fps=25, quality=2, model=V2, intra_period=intra_period) as enc:
        return [enc.encode(f) for f in frames]


def test_damaged_motion_stream_stops_or_is_concealed(tmp_path, carphone):
    frames = read_frames(carphone, 5)
    path = tmp_path / "v2.nvc"
    encoded = _encode(path, frames, 3)
    assert [e.frame_type for e in encoded] == [FrameType.I, FrameType.P, FrameType.P, FrameType.I, FrameType.P]
    data = bytearray(path.read_bytes())
    # frame 1's motion stream (first stream of the packet): corrupt it and fix the CRC, so that it
    # reaches the decoder as a valid packet with wrong motion data
    from nvc.container import StreamHeader, read_packets, FramePacket, Stream
    import io

    f = io.BytesIO(bytes(data))
    header = StreamHeader.read(f)
    packets = list(read_packets(f, header))
    motion = packets[1].streams[0]
    bad = Stream(motion.kind, 0, 0, bytes([250, 250]) + motion.data[2:])
    packets[1] = FramePacket(packets[1].frame_type, packets[1].quality, 1, (bad,) + packets[1].streams[1:])
    from nvc.container import END_OF_STREAM

    path.write_bytes(header.to_bytes() + b"".join(p.to_bytes() for p in packets) + END_OF_STREAM)
    with pytest.raises(NvcError, match="frame 1.*frames 1-2 cannot be decoded; the I-frame 3 recovers"):
        list(nvc.open(path))
    warnings = []
    with nvc.open(path, conceal=True, on_damage=warnings.append) as r:
        decoded = list(r)
    assert len(decoded) == 5 and len(warnings) == 1
    assert all(np.array_equal(a, b) for a, b in zip(decoded[3].planes(), encoded[3].reconstruction.planes()))


@pytest.mark.slow
def test_training_runs_data_parallel(tmp_path, carphone):
    """`torchrun --nproc_per_node 2` runs the unchanged training script (gloo on the CPU)."""
    data = tmp_path / "clips"
    data.mkdir()
    (data / "clip.mp4").symlink_to(carphone)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tools.train_v2",
           "--steps", "2", "--batch", "1", "--patch", "128", "--length", "5", "--data", str(data),
           "--out", str(tmp_path / "run"), "--export", str(tmp_path / "w.pt"), "--from-scratch",
           "--photo-share", "0", "--segments", "1", "--segment", "6", "--checkpoint-every", "1", "--no-sample-clips"]
    result = subprocess.run(cmd, cwd=os.path.dirname(os.path.dirname(__file__)), env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "w.pt").exists()
    steps = [line.split("\t")[0] for line in (tmp_path / "run" / "log.tsv").read_text().splitlines()]
    assert steps == ["1", "2"]


def test_rdo_rounding_steps_towards_the_mean_only_where_the_bits_saved_outweigh_the_distortion():
    table = coder.scale_table()
    r = torch.tensor([0.6, 0.6, -0.6, 1.7])
    indexes = torch.tensor([5, 60, 5, 60], dtype=torch.int32)  # narrow (scale 0.2) and wide (47) Gaussians
    at = torch.zeros(4, dtype=torch.int64)  # every symbol in channel 0
    # distortion free: always one step towards the mean; distortion dominant: the nearest integer
    assert RdoRounding(torch.zeros(1), table, 1)(r, indexes, at).tolist() == [0, 0, 0, 1]
    assert torch.equal(RdoRounding(torch.full((1,), 1e6), table, 1)(r, indexes, at), torch.round(r))
    # in between (0.6 -> 0 adds 0.2 * 5 = 1 bit of loss): the narrow Gaussian saves 7.4 bits, the wide one none
    assert RdoRounding(torch.full((1,), 5.0), table, 1)(r, indexes, at).tolist() == [0, 1, 0, 2]
    # each channel's weight applies to its positions (a plane of 2: positions 0-1 channel 0, 2-3 channel 1)
    assert RdoRounding(torch.tensor([0.0, 1e6]), table, 2)(r, indexes, torch.arange(4)).tolist() == [0, 0, -1, 2]
    # the bits: the probabilities of a Gaussian's integers, summing to one
    bits = symbol_bits(torch.tensor([0.0, 1.0, -1.0, 2.0]), torch.full((4,), 0.5))
    assert bits[0] < bits[1] == bits[2] < bits[3]
    assert abs(2 ** -bits[0] + 2 * 2 ** -bits[1] + 2 * 2 ** -bits[3] - 1) < 1e-3


def test_rdo_rounding_weights_come_from_the_synthesis():
    model = LeanVideoModel(LeanConfig()).eval()
    for frame_model in (model.intra, model.inter):
        energy = frame_model.unit_energy(2)
        assert energy.shape == (96,) and (energy > 0).all()
        assert frame_model.unit_energy(2) is energy  # cached per level
