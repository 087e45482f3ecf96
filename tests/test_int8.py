"""int8 synthesis of the v2 model through a real inference engine (`nvc.deploy.int8`).

The engines here are built with a small calibration (one training clip, two frames, a 128x192
crop) into a temporary cache, so the file runs in well under a minute; the shipped recipe and its
PSNR loss per quality level at 720p are measured by `python -m tools.bench_int8`.
"""

import numpy as np
import pytest
import torch

from nvc.codec import frame_to_tensor
from nvc.model import load_shipped, to_8bit
from nvc.models.registry import entry_by_name
from nvc.video import read_frames

pytest.importorskip("onnx", reason="int8 synthesis needs the onnx package (pip install onnx)")
pytest.importorskip("onnxruntime", reason="int8 synthesis needs onnxruntime (pip install onnxruntime)")

from nvc.deploy import int8  # noqa: E402

ENGINES = [pytest.param(e, marks=pytest.mark.skipif(e == "openvino" and _missing, reason="openvino is not installed"))
           for e, _missing in (("openvino", __import__("importlib").util.find_spec("openvino") is None),
                               ("onnxruntime", False))]
SMALL = int8.QuantConfig(clips=("01_dog.mp4",), frames=2, crop=(128, 192))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Encoding small frames is fastest on one torch thread (and a busy 2-core machine makes two slow)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return load_shipped(entry_by_name("lean-mc-yuv420-v2"))[0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    if not (int8.TRAIN_CLIPS / SMALL.clips[0]).exists():
        pytest.skip(f"calibration needs the training clips in {int8.TRAIN_CLIPS}")
    mp = pytest.MonkeyPatch()
    mp.setenv("NVC_CACHE", str(tmp_path_factory.mktemp("nvc-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def frames(carphone):
    """Three real 176x144 frames, padded to 192x192 and packed."""
    return [frame_to_tensor(f) for f in read_frames(carphone, 3)]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean().clamp_min(1e-12)))


def _gop(model, frames, quality, decoder=None):
    """Encode with `model`; decode the same streams with `decoder` (default: `model`)."""
    decoder = decoder or model
    h, w = frames[0].shape[-2] * 2, frames[0].shape[-1] * 2
    enc, dec, ref_e, ref_d = [], [], None, None
    for i, x in enumerate(frames):
        fe, fd = (model.intra, decoder.intra) if i == 0 else (model.inter, decoder.inter)
        streams, ref_e = fe.compress(x, ref_e, quality)
        ref_d = fd.decompress(streams, ref_d, h, w, quality)
        enc.append(ref_e.x_hat)
        dec.append(ref_d.x_hat)
    return enc, dec


@pytest.mark.parametrize("engine", ENGINES)
def test_int8_close_to_fp32(model, cache, frames, engine):
    twin = int8.with_synthesis(model, engine, config=SMALL, log=lambda _: None)
    for q in (0, 7):
        ref, dec = _gop(model, frames, q, twin)
        for a, b in zip(ref, dec):
            assert b.shape == a.shape == frames[0].shape
            assert torch.equal(b, torch.round(b * 255) / 255)  # on the 8-bit grid
            assert _psnr(a, b) > 35, f"quality {q}: int8 vs fp32 {_psnr(a, b):.1f} dB"


@pytest.mark.parametrize("engine", ENGINES)
def test_int8_is_deterministic(model, cache, frames, engine):
    """Same input, same output: twice, and on 1 and 2 engine threads; encoder and decoder agree."""
    one = int8.Int8Synthesis(model, engine, threads=1, config=SMALL, log=lambda _: None)
    two = int8.Int8Synthesis(model, engine, threads=2, config=SMALL, log=lambda _: None)
    y = torch.randn(1, 96, 12, 12) * 2
    pred = frames[0]
    bi, bp = (int8.block_output(getattr(model, k).g_s, y) for k in ("intra", "inter"))
    for backend_call in (lambda b: b.intra(y, bi), lambda b: b.inter(y, pred, bp)):
        a = backend_call(one)
        assert torch.equal(a, backend_call(one))
        assert torch.equal(a, backend_call(two))
    twin = int8.with_synthesis(model, engine, config=SMALL, log=lambda _: None)
    enc, dec = _gop(twin, frames, 3)  # encoded and decoded through the engine: the same pixels
    assert all(torch.equal(a, b) for a, b in zip(enc, dec))
    torch.set_num_threads(2)  # the caller's thread count does not change them either (the warp runs on one)
    try:
        _, dec2 = _gop(model, frames, 3, twin)
    finally:
        torch.set_num_threads(1)
    _, dec1 = _gop(model, frames, 3, twin)
    assert all(torch.equal(a, b) for a, b in zip(dec1, dec2))


def test_fp32_twin_unchanged(model, cache, frames):
    """The switch: "torch" is the model itself; an int8 copy leaves the model's synthesis as it was."""
    assert int8.with_synthesis(model, "torch") is model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref, _ = _gop(model, frames[:2], 4)
    twin = int8.with_synthesis(model, "onnxruntime", config=SMALL, log=lambda _: None)
    assert twin.intra is not model.intra and twin.inter is not model.inter
    assert type(model.intra).synthesize is type(model.intra).__mro__[0].synthesize
    assert "_synthesis_backend" not in vars(model.intra) and "_synthesis_backend" not in vars(model.inter)
    after, _ = _gop(model, frames[:2], 4)
    assert all(torch.equal(a, b) for a, b in zip(ref, after))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    int8_out, _ = _gop(twin, frames[:2], 4)
    assert not all(torch.equal(a, b) for a, b in zip(ref, int8_out))  # the copy does run int8


def test_exported_graph_is_exact(model):
    """The graph given to the engines (ReLU before PixelShuffle, split convs, rounding to bytes;
    the block transform's output an input, `block_output`) is g_s followed by `to_8bit`: bytes
    differ by at most 1, where float sums round differently."""
    y, pred = torch.randn(1, 96, 8, 12), torch.rand(1, 6, 64, 96)
    with torch.no_grad():
        for frame_model, args in ((model.intra, (y,)), (model.inter, (y, pred))):
            ours = int8.SynthesisGraph(frame_model.g_s)(*args, int8.block_output(frame_model.g_s, y))
            ref = to_8bit(frame_model.g_s(*args)) * 255
            assert ours.dtype == torch.uint8 and ours.shape == ref.shape
            diff = (ours.float() - ref).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


@pytest.fixture
def small_engines(cache, monkeypatch):
    """`nvc.Encoder(engine=...)` and `nvc.open` with the small calibration of this file."""
    import functools

    from nvc.codec import deployed_model

    monkeypatch.setattr(int8, "with_synthesis", functools.partial(int8.with_synthesis, config=SMALL))
    deployed_model.cache_clear()
    yield
    deployed_model.cache_clear()


def _planes_equal(a, b) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a.planes(), b.planes()))


@pytest.mark.parametrize("engine", ENGINES)
def test_stream_names_its_engine_and_decodes_bit_exact(tmp_path, carphone, small_engines, engine):
    """The encoder records the engine; `nvc.open` runs it: the encoder's reconstructions, serial on
    one thread and pipelined with torch on two."""
    import nvc
    from nvc.container import SynthesisEngine

    frames = read_frames(carphone, 3)
    path = tmp_path / "int8.nvc"
    with nvc.open(path, "w", width=176, height=144, fps=25, quality=3, model="lean-mc-yuv420-v2", intra_period=3,
                  engine=engine) as enc:
        encoded = [enc.encode(f).reconstruction for f in frames]
    for threads, pipelined in ((1, False), (2, True)):
        torch.set_num_threads(threads)
        try:
            with nvc.open(path, pipelined=pipelined) as reader:
                assert reader.header.synthesis == SynthesisEngine[engine.upper()]
                assert reader.header.synthesis_id != bytes(8)
                decoded = list(reader)
        finally:
            torch.set_num_threads(1)
        assert len(decoded) == 3 and all(_planes_equal(a, b) for a, b in zip(encoded, decoded))
    with nvc.open(path) as reader:  # the same streams through the fp32 reference give other pixels
        reader._model = load_shipped(entry_by_name("lean-mc-yuv420-v2"))[0]
        assert not all(_planes_equal(a, b) for a, b in zip(encoded, reader))


def test_engine_names_and_refusals(tmp_path, carphone, small_engines):
    import nvc
    from nvc.codec import synthesis_engine
    from nvc.container import SynthesisEngine
    from nvc.errors import NvcError

    assert synthesis_engine("int8") == SynthesisEngine.OPENVINO and synthesis_engine("torch") == SynthesisEngine.TORCH
    with pytest.raises(NvcError, match="unknown synthesis engine 'tensorrt'"):
        nvc.open(tmp_path / "a.nvc", "w", width=64, height=64, model="lean-mc-yuv420-v2", engine="tensorrt")
    with pytest.raises(NvcError, match="only lean-mc-yuv420-v2 has them"):
        nvc.open(tmp_path / "b.nvc", "w", width=64, height=64, model="tcm-yuv420-v1", engine="onnxruntime")
    path = tmp_path / "c.nvc"
    with nvc.open(path, "w", width=176, height=144, model="lean-mc-yuv420-v2", intra_period=1,
                  engine="onnxruntime") as enc:
        enc.encode(read_frames(carphone, 1)[0])
    data = bytearray(path.read_bytes())
    data[57:65] = bytes(8)  # synthesis_id: other int8 graphs
    import zlib

    data[65:69] = zlib.crc32(bytes(data[:65])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    with pytest.raises(NvcError, match="int8 graphs differ"):
        with nvc.open(path) as reader:
            list(reader)
