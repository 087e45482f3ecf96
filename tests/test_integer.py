"""Integer entropy parameters (`nvc.deploy.integer`): the same means and scale indexes on any thread
count, through two implementations (torch channels-last with exact float GEMMs, numpy int64) and on
CUDA; a real encode / decode round trip across thread counts; and close to the float parameters."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nvc.codec import frame_to_tensor
from nvc.deploy import integer as I
from nvc.entropy import bottleneck, coder
from nvc.entropy.multistep import step_masks
from nvc.lean_model import luma
from nvc.model import load_shipped
from nvc.models.motion import estimate_motion, warp_latent
from nvc.models.registry import entry_by_name
from nvc.video import read_frames

QUALITY = 5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread unless a test asks for two: on a busy 2-core machine a second thread mostly
    waits for the first (the results do not depend on it: that is what the tests check)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return load_shipped(entry_by_name("lean-mc-yuv420-v2"))[0]


class Case:
    """One I-frame and one P-frame of real video, analysed by the float model as the encoder does."""

    def __init__(self, model, frames):
        q = torch.tensor([QUALITY])
        self.x = [frame_to_tensor(f) for f in frames[:2]]
        with torch.no_grad():
            self.y_i = model.intra.gain.scale(model.intra.g_a(self.x[0]), q)
            self.mv = estimate_motion(luma(self.x[1]), luma(self.x[0]))
            pred = model.inter.motion_compensation(self.x[0], self.mv)
            self.y_p = model.inter.gain.scale(model.inter.g_a(torch.cat([self.x[1], pred], 1)), q)
            self.z_i = self._z_hat(model.intra.latent_codec, self.y_i)
            self.z_p = self._z_hat(model.inter.latent_codec, self.y_p)
        self.y_ref = torch.round(self.y_i * 256) / 256  # a reference latent on the 1/256 grid

    @staticmethod
    def _z_hat(lc, y):
        return bottleneck.encode(lc.z_codec, lc.h_a(y), lc._z_tables)[1]


@pytest.fixture(scope="module")
def case(model, carphone):
    return Case(model, read_frames(carphone, 2))


@pytest.fixture(scope="module")
def twins(model):
    return {"I": I.IntegerEntropyParameters.from_codec(model.intra.latent_codec),
            "P": I.IntegerEntropyParameters.from_codec(model.inter.latent_codec)}


def all_parameters(twin, z_hat, prior, y):
    """Base and every step's (means, indexes), with y_known built from the twin's own means."""
    base = twin.base(z_hat, prior)
    out = [base.fixed]
    masks = step_masks(twin.steps, *y.shape[1:])
    y_hat = torch.zeros_like(y)
    for s in range(twin.steps):
        means, index = twin.step(s, base, y_hat)
        out += [means, index]
        m = means.float() / 256
        y_hat = torch.where(masks[s][None].to(y.device), torch.round(y - m) + m, y_hat)
    return [t.cpu() for t in out]


def both_frames(twins, case, device="cpu", numpy=False):
    res = []
    for kind, z_hat, prior, y in (("I", case.z_i, None, case.y_i), ("P", case.z_p, (case.y_ref, case.mv), case.y_p)):
        twin = twins[kind].numpy() if numpy else twins[kind].to(device)
        if device != "cpu":
            z_hat, y = z_hat.to(device), y.to(device)
            prior = None if prior is None else tuple(t.to(device) for t in prior)
        res += all_parameters(twin, z_hat, prior, y)
    return res


def assert_identical(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and torch.equal(u, v)


@pytest.fixture(scope="module")
def reference(twins, case):
    assert torch.get_num_threads() == 1
    return both_frames(twins, case)


def test_identical_on_one_and_two_threads(twins, case, reference):
    torch.set_num_threads(2)
    try:
        assert_identical(both_frames(twins, case), reference)
    finally:
        torch.set_num_threads(1)


def test_identical_in_numpy(twins, case, reference):
    """numpy int64 (channels first, no float) against torch (channels last, float32/float64 GEMMs)."""
    assert_identical(both_frames(twins, case, numpy=True), reference)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_identical_on_cuda(twins, case, reference):
    assert_identical(both_frames(twins, case, device="cuda"), reference)


def test_units_and_outputs(twins, case, reference):
    m = case.y_i.size(1)
    base, means0, index0 = reference[:3]
    assert base.dtype == torch.int64 and base.shape == (1, 2 * m, *case.y_i.shape[2:])
    assert means0.dtype == torch.int32 and index0.dtype == torch.int32
    assert 0 <= int(index0.min()) and int(index0.max()) < coder.SCALE_LEVELS
    # step 0's means are the base means rounded from 2^-16 to 1/256, at the symbols of step 0
    mask = step_masks(4, *case.y_i.shape[1:])[0][None]
    assert torch.equal(means0[mask], ((base[:, :m] + 128) >> 8).int()[mask])
    assert int(means0[~mask].abs().max()) == 0 and int(index0[~mask].max()) == 0


def test_close_to_the_float_parameters(model, twins, case):
    """Same inputs (z_hat, y_known, reference latent), float vs integer: indexes within +-1 of the
    float path for > 99 % of the symbols, means within a tenth of a quantization step."""
    for kind, fm, z_hat, y, ref in (("I", model.intra, case.z_i, case.y_i, None),
                                    ("P", model.inter, case.z_p, case.y_p, case.y_ref)):
        lc, twin = fm.latent_codec, twins[kind]
        with torch.no_grad():
            base_f = lc.base_parameters(z_hat, None if ref is None else (warp_latent(ref, case.mv), case.mv))
        base_i = twin.base(z_hat, None if ref is None else (ref, case.mv))
        masks = step_masks(lc.steps, *y.shape[1:])
        y_hat = torch.zeros_like(y)
        near, total, mean_err = 0, 0, []
        for s in range(lc.steps):
            with torch.no_grad():
                means_f, scales_f = lc.step_parameters(s, base_f, y_hat)
            means_i, index_i = twin.step(s, base_i, y_hat)
            mask = masks[s][None]
            diff = (index_i - coder.scale_indexes(scales_f, lc.y_codec.scale_table))[mask]
            near += int((diff.abs() <= 1).sum())
            total += diff.numel()
            mean_err.append((means_i.float() / 256 - means_f)[mask].abs())
            y_hat = torch.where(mask, torch.round(y - means_f) + means_f, y_hat)
            y_hat = torch.round(y_hat * 256) / 256
        assert near / total > 0.99, f"{kind}: {100 * near / total:.2f} % of indexes within 1"
        err = torch.cat(mean_err)
        assert float(err.quantile(0.99)) < 0.1 and float(err.mean()) < 0.02


def test_encode_and_decode_on_different_thread_counts(model, twins, case):
    """Real streams: encoded with 2 threads (torch), decoded with 1 (torch) and by numpy, I then P."""
    try:
        torch.set_num_threads(2)
        lc_i, lc_p = model.intra.latent_codec, model.inter.latent_codec
        with torch.no_grad():
            z_i, parts_i, y_hat_i = I.IntegerLatentCodec(lc_i, twins["I"]).compress(case.y_i)
            z_p, parts_p, y_hat_p = I.IntegerLatentCodec(lc_p, twins["P"]).compress(case.y_p, (y_hat_i, case.mv))
        # y_hat = symbols + means / 256: exactly on the 1/256 grid
        assert torch.equal(torch.round(y_hat_p * 256) / 256, y_hat_p)
        shape = tuple(case.y_i.shape[1:])
        torch.set_num_threads(1)
        for impl in ("torch", "numpy"):
            ti = twins["I"] if impl == "torch" else twins["I"].numpy()
            tp = twins["P"] if impl == "torch" else twins["P"].numpy()
            dec_i = I.IntegerLatentCodec(lc_i, ti).decompress(z_i, parts_i, shape)
            dec_p = I.IntegerLatentCodec(lc_p, tp).decompress(z_p, parts_p, shape, (dec_i, case.mv))
            assert torch.equal(dec_i, y_hat_i) and torch.equal(dec_p, y_hat_p), impl
    finally:
        torch.set_num_threads(1)


def test_one_step_schedule_round_trip(model, twins, case):
    """`steps=1` (every symbol from the base, no context) codes and decodes too."""
    lc = model.intra.latent_codec
    z, parts, y_hat = I.IntegerLatentCodec(lc, twins["I"]).compress(case.y_i, steps=1)
    assert len(parts) == 1
    assert torch.equal(I.IntegerLatentCodec(lc, twins["I"]).decompress(z, parts, tuple(case.y_i.shape[1:])), y_hat)


def test_integer_warp_is_the_bilinear_warp(case):
    """The integer warp = grid_sample's (align_corners, border) on the 1/256 grid, for sub-pel,
    far out-of-frame and border vectors; torch and numpy agree exactly."""
    y = case.y_ref[:, :8]
    h, w = y.shape[-2:]
    gen = torch.Generator().manual_seed(0)
    mv = torch.randint(-300, 300, (1, 2, h, w), generator=gen, dtype=torch.int32)
    mv[0, :, 0, 0] = torch.tensor([-10_000, 7])
    mv[0, :, -1, -1] = torch.tensor([63, 10_000])
    fixed = torch.round(y[0] * 256).long()
    out_t = I.TorchOps.warp(fixed.permute(1, 2, 0).contiguous(), mv[0].long().permute(1, 2, 0)).permute(2, 0, 1)
    out_n = torch.from_numpy(I.NumpyOps.warp(fixed.numpy(), mv[0].long().numpy()))
    assert torch.equal(out_t, out_n)
    ref = warp_latent(y, mv)[0].double()
    assert float((out_t.double() / 2**I.WARP_FRAC - ref).abs().max()) < 1e-3


def test_bucketize_table_matches_torch_bucketize(model, twins):
    """The lookup-table index = torch.bucketize(scale, thresholds) = #{t_j < scale}, at and around
    every threshold and far outside the table."""
    t = twins["I"].plan.thresholds
    b = I._Bucketizer(t, torch.device("cpu"))
    assert b.k > 0
    x = torch.from_numpy(np.concatenate([t - 1, t, t + 1, [-(2**40), -1, 0, 1, 2**40], np.arange(-5, 2**23, 997)]))
    assert torch.equal(b(x), torch.bucketize(x, torch.from_numpy(t)).int())
    scales = torch.tensor([0.0, 0.11, 0.12, 0.1201, 0.5, 63.9, 64.0, 1000.0])
    table = model.intra.latent_codec.y_codec.scale_table
    fixed = torch.round(scales.double() * 2**16).long()  # exact for these scales' nearest 2^-16
    assert torch.equal(b(fixed), coder.scale_indexes(fixed.double() / 2**16, table.double()))


def test_exactness_bounds_and_weights(model, twins):
    """Every GEMM's partial sums stay inside the exact range of the float type it runs in, weights
    use their bit width, and building the twin leaves the module untouched."""
    state = {k: v.clone() for k, v in model.inter.latent_codec.state_dict().items()}
    plan = I.IntegerPlan.from_codec(model.inter.latent_codec)
    ops = I.TorchOps(plan)
    for layer in plan.layers():
        w = ops._layers[layer.name][0]
        assert layer.acc_bound < (I.FP32_EXACT if w.dtype == torch.float32 else I.FP64_EXACT)
        assert int(np.abs(layer.weight).max()) == 2 ** (layer.weight_bits - 1) - 1
        assert int(layer.mult.max()) <= 2**I.MULT_BITS
    assert any(ops._layers[n][0].dtype == torch.float32 for n in ("h_s.1", "base.1"))
    for k, v in model.inter.latent_codec.state_dict().items():
        assert torch.equal(v, state[k]), k
    again = I.IntegerPlan.from_codec(model.inter.latent_codec)  # the constants are a function of the weights
    for a, b in zip(plan.layers(), again.layers()):
        assert a.shift == b.shift
        assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("weight", "mult", "bias"))
    assert plan.thresholds.dtype == np.int64 and np.all(np.diff(plan.thresholds) > 0)


def test_presets_build_and_differ_only_in_accuracy(model, case):
    """Every preset is exact (numpy = torch); 16 bits is closer to float than 8."""
    lc = model.intra.latent_codec
    with torch.no_grad():
        base_f = lc.base_parameters(case.z_i, None)
    errs = {}
    for name in ("int8", "int16"):
        twin = I.IntegerEntropyParameters.from_codec(lc, I.PRESETS[name])
        a, b = twin.base(case.z_i), twin.numpy().base(case.z_i)
        assert torch.equal(a.fixed, b.fixed)
        errs[name] = float((a.fixed.double() / 2**16 - base_f).abs().mean())
    assert errs["int16"] < errs["int8"]


def test_codec_switch_records_and_decodes_integer_parameters(tmp_path, carphone):
    """`nvc.Encoder(entropy="integer")`: the header says so, and `nvc.open` decodes the encoder's
    reconstructions serial on one thread and pipelined with torch on two."""
    import nvc
    from nvc.container import EntropyParameters

    frames = read_frames(carphone, 3)
    path = tmp_path / "integer.nvc"
    with nvc.open(path, "w", width=176, height=144, fps=25, quality=QUALITY, model="lean-mc-yuv420-v2",
                  intra_period=3, entropy="integer") as enc:
        encoded = [enc.encode(f).reconstruction for f in frames]
    for threads, pipelined in ((1, False), (2, True)):
        torch.set_num_threads(threads)
        try:
            with nvc.open(path, pipelined=pipelined) as reader:
                assert reader.header.entropy_params == EntropyParameters.INTEGER
                decoded = list(reader)
        finally:
            torch.set_num_threads(1)
        assert all(np.array_equal(p, q) for a, b in zip(encoded, decoded) for p, q in zip(a.planes(), b.planes()))
