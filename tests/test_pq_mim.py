"""The PQ-MIM codec (pq-mim-v1): product quantizer, masked-token entropy model and its schedule,
exact round trips, identical tables on 1 and 2 threads, weights files, damaged token streams.
Tiny random-initialised models (codebooks initialised by k-means on the frame) on a real frame."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from nvc.codec import frame_to_tensor
from nvc.container import FramePacket, FrameType, Stream, StreamKind
from nvc.entropy.token_model import MaskedTokenModel, schedule, step_fractions, token_order
from nvc.errors import NvcError
from nvc.model import load_weights, save_weights
from nvc.models.pq import PQMimConfig, ProductQuantizer
from nvc.models.registry import entry_by_name
from nvc.pq_model import STICKY_MARGINS, PQMimVideoModel, sticky_margin
from nvc.video import read_frames

TINY = PQMimConfig(latent_channels=16, codebooks=4, codebook_size=16, synthesis_width=(16, 16, 8), token_width=16,
                   token_dilations=(1, 2), quality_levels=4, active_codebooks=(1, 2, 3, 4),
                   lambdas=(0.001, 0.002, 0.004, 0.008), steps=4)


@pytest.fixture(scope="module")
def frame(carphone):
    """One real 176x144 frame, padded to 192x192 and packed: a 12 x 12 token grid."""
    return frame_to_tensor(read_frames(carphone, 1)[0])


@pytest.fixture(scope="module")
def model(frame):
    torch.manual_seed(0)
    m = PQMimVideoModel(TINY).eval()
    with torch.no_grad():
        m.intra.quantizer.kmeans_init(m.intra.quantizer.subvectors(m.intra.g_a(frame)))
    return m


def test_schedule_is_deterministic_and_follows_the_power_law():
    assert step_fractions(1) == (65536,)
    assert step_fractions(8)[-1] == 65536 and list(step_fractions(8)) == sorted(step_fractions(8))
    order = token_order(8, 45, 80)
    assert np.array_equal(np.sort(order), np.arange(8 * 45 * 80))
    for steps in (1, 4, 8):
        s = schedule(steps, 8, 45, 80)
        counts = np.bincount(s.ravel(), minlength=steps)
        assert s.shape == (8, 45, 80) and counts.sum() == 8 * 45 * 80
        assert (counts > 0).all() and list(counts) == sorted(counts)  # few tokens first (M2T)
        schedule.cache_clear(), token_order.cache_clear()
        assert np.array_equal(schedule(steps, 8, 45, 80), s)
    first = schedule(8, 8, 45, 80) == 0  # the first step is spread over the whole grid
    assert first[:, :22].sum() > 0 and first[:, 23:].sum() > 0 and first[:, :, :40].sum() > 0 and first[:, :, 40:].sum() > 0


def test_codebook_shapes_kmeans_ema_and_health(frame):
    torch.manual_seed(1)
    pq = ProductQuantizer(16, 4, 8)
    y = torch.randn(2, 16, 6, 6)
    pq.kmeans_init(pq.subvectors(y))
    assert pq.codewords.shape == (4, 8, 4) and bool(pq.initialised)
    active = torch.tensor([4, 2])
    q = pq(y, active)
    assert q.tokens.shape == (2, 4, 6, 6) and q.tokens.dtype == torch.int64 and q.y_hat.shape == y.shape
    assert (q.tokens[1, 2:] == 0).all()  # inactive sub-vectors are not coded...
    assert torch.equal(pq.split(q.y_hat)[1, 3, :, 0, 0], pq.default[3].detach())  # ...and decode to the default
    assert torch.allclose(q.y_hat[0], pq.lookup(q.tokens, active)[0])  # straight-through value = codewords
    pq.ema_count[0, 0] = 0.0  # a dead codeword is restarted
    assert pq.ema_update(q.z, q.tokens, active) >= 1
    assert pq.usage().shape == (4,) and pq.perplexity().shape == (4,)
    assert 1.0 <= float(pq.perplexity(q.tokens, active)[0]) <= 8.0


def test_round_trip_is_bit_exact(model, frame):
    intra = model.intra
    for quality, steps in ((0, 1), (1, 4), (3, 8)):
        stats = {}
        streams, rec = intra.compress(frame, None, quality, steps=steps, stats=stats)
        assert [s.step for s in streams] == list(range(steps)) and streams[0].data[0] == TINY.active_codebooks[quality]
        tokens, active = intra.decode_tokens(streams, 192, 192)
        assert active == TINY.active_codebooks[quality] and torch.equal(tokens, stats["tokens"])
        dec = intra.decompress(streams, None, 192, 192, quality)
        assert torch.equal(dec.x_hat, rec.x_hat) and torch.equal(dec.y_hat, rec.y_hat)
        coded = 8 * sum(len(s.data) for s in streams)
        assert coded >= sum(stats["bits_per_step"]) - 8  # the ANS is near its information content


def test_p_frame_round_trip_and_static_content(model, frame):
    """A P-frame's tokens are coded given the reference's: bit-exact through the container, through
    the reference the pipelined decoder holds (its latent only), and nearly free where nothing moved."""
    model = copy.deepcopy(model)  # its temporal model is changed here
    _, ref = model.intra.compress(frame, None, 2)
    tm = model.inter.token_model
    with torch.no_grad():  # a temporal model that has learned something: copy strongly
        torch.manual_seed(3)
        tm.prev_embed.weight.normal_(0, 0.5)
        tm.copy_weight.normal_(0, 0.1)
        tm.copy_bias.fill_(12.0)
    stats = {}
    streams, rec = model.inter.compress(frame, ref, 2, stats=stats)
    packet = FramePacket(FrameType.P, 2, 1, tuple(streams))
    assert packet.to_bytes()  # fits the format: LATENT streams, steps < 8
    for reference in (ref, replace(ref, x_hat=None)):  # the serial and the pipelined decoder's reference
        dec = model.inter.decompress(list(packet.streams), reference, 192, 192, 2)
        assert torch.equal(dec.x_hat, rec.x_hat) and torch.equal(dec.y_hat, rec.y_hat)
    intra_stats = {}
    model.intra.compress(frame, None, 2, stats=intra_stats)
    assert torch.equal(stats["tokens"], intra_stats["tokens"])  # same tokens, so the same pixels...
    assert sum(stats["bits_per_step"]) < 0.05 * sum(intra_stats["bits_per_step"])  # ...almost free when static
    # the reference decides the tables: against another one the streams do not give these tokens
    moved = model.intra.compress(torch.roll(frame, 32, dims=3), None, 2)[1]
    try:
        wrong = model.inter.decode_latent(list(packet.streams), moved, 192, 192).y_hat
    except NvcError:
        wrong = None
    assert wrong is None or not torch.equal(wrong, rec.y_hat)


def test_tables_and_streams_identical_with_1_and_2_threads(model, frame):
    intra, before = model.intra, torch.get_num_threads()
    tm = intra.token_model
    tokens, active = intra.tokens(frame, 3)
    known = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    positions = [torch.arange(0, 144, 3)] * active
    try:
        torch.set_num_threads(2)
        f2 = tm.step_frequencies(tokens, known, active, positions)
        streams, _ = intra.compress(frame, None, 3)
        torch.set_num_threads(1)
        f1 = tm.step_frequencies(tokens, known, active, positions)
        decoded, _ = intra.decode_tokens(streams, 192, 192)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(f1, f2) and f1.dtype == np.int32
    assert f1.min() >= 1 and f1.sum(1).max() <= 1 << 16
    assert torch.equal(decoded, tokens)


def test_weights_file_rebuilds_the_model(model, frame, tmp_path):
    path = tmp_path / "pq.pt"
    save_weights(copy.deepcopy(model), path)
    loaded = load_weights(path)
    assert isinstance(loaded, PQMimVideoModel) and loaded.config == TINY
    assert loaded.intra.quantizer.codewords.dtype == torch.float32  # codebooks stay full precision
    assert loaded.intra.token_model.head_weight.shape == (4, 16, 16)
    # the file's model codes and decodes on its own (fp16-rounded weights: its own streams)
    streams, rec = loaded.intra.compress(frame, None, 2)
    assert torch.equal(loaded.intra.decompress(streams, None, 192, 192, 2).x_hat, rec.x_hat)
    with pytest.raises(RuntimeError):  # another architecture's weights do not load silently
        PQMimVideoModel(replace(TINY, codebook_size=32)).load_state_dict(loaded.state_dict())


def test_corrupt_token_stream_is_a_one_line_error(model, frame):
    intra = model.intra
    streams, _ = intra.compress(frame, None, 3, steps=4)
    last = streams[-1]
    damaged = []
    for i in range(0, len(last.data) - 3, 4):  # flip one word at a time
        data = bytearray(last.data)
        data[i : i + 4] = bytes(b ^ 0xA5 for b in data[i : i + 4])
        damaged.append(streams[:-1] + [replace(last, data=bytes(data))])
    damaged += [streams[:-1] + [replace(last, data=last.data[:-4])],  # truncated
                streams[:-1] + [replace(last, data=last.data[:-1])],  # not whole words
                streams[:-1] + [replace(last, data=last.data + bytes(4))],  # trailing words
                [replace(streams[0], data=bytes([9]) + streams[0].data[1:])] + streams[1:],  # 9 > 4 codebooks
                [replace(streams[0], data=b"")] + streams[1:],
                streams[1:],  # a step missing
                streams + [Stream(StreamKind.HYPER, 0, 0, b"x")]]
    for bad in damaged:
        with pytest.raises(NvcError) as e:
            intra.decode_latent(bad, None, 192, 192)
        assert "\n" not in str(e.value)


def test_training_step_updates_token_model_and_codebooks(frame):
    torch.manual_seed(2)
    m = PQMimVideoModel(TINY).intra.train()
    x = frame[:, :, :64, :64].repeat(2, 1, 1, 1)
    m.quantizer.kmeans_init(m.quantizer.subvectors(m.g_a(x).detach()))
    out = m(x, torch.tensor([0, 3]), steps=4)
    assert out.bits.shape == (2,) and (out.bits > 0).all() and out.bits[1] > out.bits[0]  # more tokens, more bits
    (out.bits.mean() + out.x_hat.pow(2).mean() + out.quantized.commitment).backward()
    assert m.token_model.head_weight.grad is not None and m.g_a.net[0].weight.grad is not None
    m.quantizer.ema_update(out.quantized.z, out.quantized.tokens, out.quantized.active)


def test_p_frame_training_step_reaches_the_temporal_model_only(frame):
    from tools.train_pq_mim import inter_step_loss

    torch.manual_seed(4)
    m = PQMimVideoModel(TINY)
    pair = torch.stack([frame[:, :, :64, :64], frame[:, :, 8:72, :64]], dim=1)  # two frames, a vertical move
    m.intra.quantizer.kmeans_init(m.intra.quantizer.subvectors(m.intra.g_a(pair[:, 0]).detach()))
    loss, bpp = inter_step_loss(m, pair, torch.tensor([3]), steps=4)
    assert bpp.shape == (1,) and loss > 0
    loss.backward()
    tm = m.inter.token_model
    assert tm.copy_bias.grad is not None and tm.copy_bias.grad.abs().sum() > 0  # the copy logit learns
    assert tm.prev_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.intra.parameters())  # transforms, codebooks, I-frame model frozen


def test_missing_weights_fail_in_one_line(tmp_path, monkeypatch):
    """An installation without a model's weights file: a one-line error naming it."""
    from nvc.codec import Encoder
    from nvc.models import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")
    with pytest.raises(NvcError, match="weights for pq-mim-v1 are missing"):
        Encoder(tmp_path / "x.nvc", 64, 64, model="pq-mim-v1", intra_period=1)
    assert not (tmp_path / "x.nvc").exists()


def test_token_model_logits_cover_every_token():
    tm = MaskedTokenModel(3, 5, width=8, dilations=(1,))
    tokens = torch.randint(0, 5, (2, 3, 4, 6))
    logits = tm(tokens, torch.zeros_like(tokens, dtype=torch.bool), torch.tensor([3, 1]))
    assert logits.shape == (2, 3, 5, 4, 6)


def test_sticky_tokens_keep_the_previous_token_within_the_margin(model, frame):
    intra = model.intra
    tokens, active = intra.tokens(frame, 3)
    other = (tokens + 1) % TINY.codebook_size  # a reference whose tokens all differ
    with torch.no_grad():
        z = intra.quantizer.subvectors(intra.g_a(frame))
        extra = intra.quantizer.distance(z, other) - intra.quantizer.distance(z, tokens)
    assert (extra >= 0).all()  # the nearest codeword is nearest
    margin = float(extra.median())
    kept, _ = intra.tokens(frame, 3, other, margin)
    assert torch.equal(kept == other, extra < margin) and 0 < int((kept == other).sum()) < kept.numel()
    assert torch.equal(intra.tokens(frame, 3, other, 0.0)[0], tokens)


def test_sticky_margin_per_level_narrows_with_the_rate():
    """One encoder margin per quality level of the shipped config, never wider at a higher level."""
    levels = PQMimConfig().quality_levels
    margins = [sticky_margin(q) for q in range(levels)]
    assert len(STICKY_MARGINS) == levels and all(a >= b > 0 for a, b in zip(margins, margins[1:]))
    assert sticky_margin(levels) == 0.0  # a level coding refuses


def test_reference_tokens_are_the_coded_tokens(model, frame):
    intra = model.intra
    for quality in (0, 2, 3):
        tokens, active = intra.tokens(frame, quality)
        y_hat = intra.quantizer.lookup(tokens, torch.tensor([active]))
        ref = intra.quantizer.tokens_of(y_hat)
        assert torch.equal(ref[:, :active], tokens[:, :active])
        with torch.no_grad():
            assert torch.equal(ref, intra.quantizer.nearest(intra.quantizer.subvectors(y_hat)))  # what training sees
