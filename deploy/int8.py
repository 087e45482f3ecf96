"""int8 synthesis of the v2 model (`LeanVideoModel`) through a real inference engine.

The decoder's pixel path, g_s of the I- and the P-frame model, is exported to ONNX (dynamic height
and width), quantized to int8 by `onnxruntime.quantization` (static QDQ: int8 weights per output
channel, u8 activations per tensor, calibrated on the latents and predictions that encoding real
frames of the *training* clips produces, at every quality level) and run by OpenVINO (the default:
fastest here) or ONNX Runtime on a fixed number of CPU threads. The fp32 PyTorch path stays the
reference twin behind one switch:

    from nvc.deploy.int8 import with_synthesis
    model_int8 = with_synthesis(model, "openvino")    # "onnxruntime"; "torch" returns `model` itself
    streams, rec = model_int8.inter.compress(x, ref, quality)   # the encoder runs the same synthesis
    rec = model_int8.inter.decompress(streams, ref, height, width, quality)

`with_synthesis` returns a copy of the model whose frame models' `synthesize` (and so `compress`
and `decompress`) run g_s in the engine; weights are shared and the model passed in is unchanged.
The codec's switch is `nvc.Encoder(..., engine="openvino")` ("int8" = OpenVINO, "onnxruntime",
"torch"): the header records the engine and a hash of the int8 graphs, and `nvc.open` decodes with
the same engine on one engine thread, so its frames are the encoder's reconstructions bit for bit
at any torch thread count (tests/test_int8.py).
The engine also rounds to the 8-bit grid (`to_8bit`) and hands back bytes. The P-frame's bilinear
warp stays fp32 outside the engine, as `FastMotionCompensation` (native, `deploy/warp.cpp`: the same
function as `models.motion.predict_packed` to ~1e-4; exported to OpenVINO the reference warp was
slower than in torch). With a fixed engine and thread count the output is a function of the input
(tested; 1 and 2 threads give the same bytes: integer accumulation); across engines it is not
(OpenVINO and ONNX Runtime requantize differently), so encoder and decoder must use the same one.

Speed per engine and PSNR loss per quality level: `python -m tools.bench_int8` (README). Measured
with the shipped weights and this recipe on held-out 08_driving (8 frames, open loop: the fp32
encoder's streams decoded by the engine along its own references): PSNR-YUV int8 - fp32 at q0
+0.0016 dB (OpenVINO) / +0.0007 (ONNX Runtime), at q1 -0.0024 / -0.0039.

The graph given to the engines (`SynthesisGraph`) is g_s rewritten without changing its function,
for 8-bit arithmetic and for the engines' kernels: ReLU before PixelShuffle (they commute), so
every conv fuses with its ReLU and the shuffles move bytes; DCR-ordered shuffles; the P-frame's
`pixel_unshuffle(pred)` and conv as one stride-2 conv; the convs that read `cat([features, pred])`
split so that each input gets its own 8-bit scale; `pred + conv(pred)` folded into one conv.

Built graphs are cached under `$NVC_CACHE` (default `~/.cache/nvc`) `/int8/`, keyed by a hash of
the model's weights and of the recipe (`QuantConfig`), with the calibration inputs beside them: a
new weights file is calibrated and quantized the first time it is used (a few minutes), and
`python -m tools.bench_int8 --clip CLIP` rebuilds and re-measures in one command. An engine is
compiled for each frame size when that size is first met (~0.5 s).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nvc.deploy import with_frame_models
from nvc.models.lean import BLOCK

ENGINES = ("torch", "torch-bf16", "openvino", "onnxruntime")  # torch: the fp32 reference twin
INT8_ENGINES = ("openvino", "onnxruntime")
FORMAT_VERSION = 9  # bump when the exported graph or the quantization code changes meaning
CALIBRATION_VERSION = 3  # bump when the calibration inputs change meaning
# The training clips (calibration data); the repository's ../shared/data/train unless NVC_TRAIN_CLIPS says.
TRAIN_CLIPS = Path(os.environ.get("NVC_TRAIN_CLIPS",
                                  Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "train"))



def cache_dir() -> Path:
    return Path(os.environ.get("NVC_CACHE", Path.home() / ".cache" / "nvc")) / "int8"


@dataclass(frozen=True)
class QuantConfig:
    """The quantization recipe; part of the cache key."""

    # onnxruntime CalibrationMethod: minmax | percentile | entropy. Percentile: ranges clipped at the
    # 99.999th percentile of the calibration data, so that rare outliers do not widen the 8-bit steps
    # (compare with `python -m tools.bench_int8 --calibrate minmax`).
    calibrate: str = "percentile"
    percentile: float = 99.999
    activations: str = "u8"  # u8 (u8 x s8 VNNI) or s8
    # convs of `SynthesisGraph` left in float (see CONVS; the block transform is not in it). None by
    # default: held-out driving, 4 frames, q0/q4/q7: |int8 - fp32| <= 0.0027 dB with every conv int8
    # (`python -m tools.bench_int8 --float-convs ...` compares others).
    float_convs: tuple[str, ...] = ()
    float_adds: bool = False  # also the P-frame's mix4 add in float (the output tail always is)
    clips: tuple[str, ...] = ("01_dog.mp4", "06_pingpong.mp4", "16_robotarm.mp4", "21_biker.mp4")
    frames: int = 3  # per clip: one I-frame then P-frames, encoded at every quality level
    crop: tuple[int, int] = (384, 640)  # luma crop of the calibration frames (centre), multiples of 64

    def key(self) -> str:
        blob = json.dumps({"v": FORMAT_VERSION, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def data_key(self) -> str:
        """The part of the recipe that decides the calibration inputs."""
        blob = json.dumps([CALIBRATION_VERSION, self.clips, self.frames, self.crop]).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def weights_digest(model: nn.Module) -> str:
    """A hash of every parameter and buffer of the model (calibration depends on the whole model)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- the exported graphs


class _DepthToSpace(torch.autograd.Function):
    """ONNX DepthToSpace, mode DCR (blocksize r): out[c, r*y + i, r*x + j] = x[(i*r + j)*C + c]. In
    the engines' channels-last layout this moves runs of C channels, where torch's order (CRD,
    x[c*r*r + i*r + j]) gathers them (OpenVINO at 720p, r = 2: 0.66 -> 0.11 ms at 1/16, 1.5 -> 1.2
    at 1/8); the producing conv's output channels are permuted to match (`_dcr`)."""

    @staticmethod
    def forward(ctx, x, r=2):  # noqa: D102
        b, c, h, w = x.shape
        x = x.reshape(b, r, r, c // (r * r), h, w).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(b, c // (r * r), r * h, r * w)

    @staticmethod
    def symbolic(g, x, r=2):  # noqa: D102
        return g.op("DepthToSpace", x, blocksize_i=r, mode_s="DCR")


def _dcr_order(channels: int, r: int) -> list[int]:
    """The permutation from PixelShuffle's channel order (c*r*r + k) to DCR's (k*C + c)."""
    c = channels // (r * r)
    return [ch * r * r + k for k in range(r * r) for ch in range(c)]


def _dcr(conv: nn.Conv2d, r: int = 2) -> nn.Conv2d:
    """Reorder a conv's output channels from PixelShuffle's order to DCR's (`_dcr_order`)."""
    perm = _dcr_order(conv.out_channels, r)
    with torch.no_grad():
        conv.weight.copy_(conv.weight[perm])
        conv.bias.copy_(conv.bias[perm])
    return conv


def _unshuffled_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """conv(pixel_unshuffle(x, 2)) as one conv on x: a 3x3 conv over the 2x2 phases of x is a 6x6
    conv of stride 2 (padding 2) over x itself; no unshuffled copy of x is made (OpenVINO's
    SpaceToDepth alone took 1.6 ms at 720p)."""
    c = conv.in_channels // 4
    big = nn.Conv2d(c, conv.out_channels, 6, stride=2, padding=2, bias=conv.bias is not None)
    with torch.no_grad():
        w = conv.weight.reshape(conv.out_channels, c, 2, 2, 3, 3)  # (o, c, i, j, ky, kx): phase (i, j)
        big.weight.copy_(w.permute(0, 1, 4, 2, 5, 3).reshape(conv.out_channels, c, 6, 6))  # row 2*ky + i
        if conv.bias is not None:
            big.bias.copy_(conv.bias)
    return big


def _split_conv(conv: nn.Conv2d, first: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """conv(cat([a, b])) = conv_a(a) + conv_b(b): the input channels [:first] and [first:], the bias
    with conv_a."""
    a = nn.Conv2d(first, conv.out_channels, conv.kernel_size, padding=conv.padding)
    b = nn.Conv2d(conv.in_channels - first, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=False)
    with torch.no_grad():
        a.weight.copy_(conv.weight[:, :first])
        a.bias.copy_(conv.bias)
        b.weight.copy_(conv.weight[:, first:])
    return a, b


class SynthesisGraph(nn.Module):
    """g_s rewritten for int8 engines, followed by `to_8bit` as bytes: the same function as
    `to_8bit(Synthesis(...))` up to float rounding (a byte may differ by 1 where a sum rounds
    differently).

    The prediction enters at 1/4 resolution through a stride-2 conv (`_unshuffled_conv`) rather
    than pixel_unshuffle and a conv. The P-frame convs that read `cat([features, prediction])` are
    split in two (conv of each part, summed): a per-tensor 8-bit scale shared by ReLU features
    (0..~20) and the prediction (0..1) would quantize the prediction to ~1/12 of its 8-bit steps;
    split, each input has its own scale.
    The block transform (`nvc.models.lean.BlockTransform`, a 1x1 conv and an 8x pixel shuffle) is not
    in the graph: its conv's output comes in as the input `block` (`block_output`: 1/16 resolution,
    DCR channel order), shuffled and added in float before the rounding. It stays float (its input,
    the latent, needs finer steps at high quality than one 8-bit scale over the latent's range
    gives), and it depends on the latent only, so the decoder computes it on the entropy thread
    (`prepare_synthesis`), off the synthesis thread.
    The P-frame's output is `pred + outp(pred) + out(h) (+ block(y))` with the prediction itself
    added in float: the trained outp is small (|w| <= 0.011 for d2de9676), so the 8-bit steps of its
    input barely reach the output, where a copy of the prediction through an int8 conv put ~0.3
    levels of noise on every P-frame, carried on along the GOP (-0.39..-1.73 dB at q0..q7 with the
    identity folded into outp's centre taps, as was right for older weights whose outp was ~minus
    the identity).
    """

    def __init__(self, g_s: nn.Module):
        super().__init__()
        g_s = copy.deepcopy(g_s).float().eval()
        self.conditional = g_s.conditional
        self.c16a, self.c16b = g_s.up16[0], _dcr(g_s.up16[2])
        self.c8a, self.c8b = g_s.up8[0], _dcr(g_s.up8[2])
        self.c4, self.c2, self.out = g_s.mix4[0], _dcr(g_s.up4[0]), g_s.out
        self.has_block = g_s.block is not None
        if self.conditional:
            w4 = self.c4.in_channels - 24
            self.c4, c4p = _split_conv(self.c4, w4)
            self.c4p = _unshuffled_conv(c4p)
            self.out, self.outp = _split_conv(self.out, self.out.in_channels - 6)

    def forward(self, y: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        """(y, [pred if conditional], [block if the model has a block transform]) -> 8-bit frame."""
        pred = rest[0] if self.conditional else None
        block = rest[-1] if self.has_block else None
        shuffle = _DepthToSpace.apply
        h = F.relu(self.c16a(y))
        h = shuffle(F.relu(self.c16b(h)))  # ReLU and PixelShuffle commute
        h = F.relu(self.c8a(h))
        h = shuffle(F.relu(self.c8b(h)))
        if self.conditional:
            h = F.relu(self.c4(h) + self.c4p(pred))
        else:
            h = F.relu(self.c4(h))
        h = shuffle(F.relu(self.c2(h)))
        x = self.out(h) + self.outp(pred) + pred if self.conditional else self.out(h)
        if block is not None:
            x = x + shuffle(block, BLOCK)
        return torch.round(torch.clamp(x * 255, 0, 255)).to(torch.uint8)  # = nvc.model.to_8bit, as bytes


CONVS = ("c16a", "c16b", "c8a", "c8b", "c4", "c4p", "c2", "out", "outp")  # SynthesisGraph's convs, in order


def export_onnx(g_s: nn.Module, path: Path) -> None:
    graph = SynthesisGraph(g_s)
    y = torch.zeros(1, graph.c16a.in_channels, 4, 6)
    names, args, axes = ["y"], [y], {"y": {2: "h16", 3: "w16"}, "x": {2: "h2", 3: "w2"}}
    for name, present in (("pred", graph.conditional), ("block", graph.has_block)):
        if present:
            names.append(name)
            args.append(torch.zeros(1, 6, 32, 48) if name == "pred" else torch.zeros(1, 6 * BLOCK * BLOCK, 4, 6))
            axes[name] = {2: "h2", 3: "w2"} if name == "pred" else {2: "h16", 3: "w16"}
    args = tuple(args)
    with torch.no_grad():
        torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=17, input_names=names,
                          output_names=["x"], dynamic_axes=axes)


# ---------------------------------------------------------------- calibration on real frames


class _Recorder:
    """A synthesis backend that runs the fp32 reference and keeps its inputs."""

    rounds = False

    def __init__(self, model):
        self.model = model
        self.intra_inputs: list[dict] = []
        self.inter_inputs: list[dict] = []

    def intra(self, y: torch.Tensor, block: torch.Tensor | None = None) -> torch.Tensor:
        self.intra_inputs.append({"y": y.numpy().copy()})
        return self.model.intra.g_s(y)  # the whole g_s: its block transform included

    def inter(self, y: torch.Tensor, pred: torch.Tensor, block: torch.Tensor | None = None) -> torch.Tensor:
        self.inter_inputs.append({"y": y.numpy().copy(), "pred": pred.numpy().copy()})
        return self.model.inter.g_s(y, pred)


def _calibration_frames(config: QuantConfig, clip_dir: Path) -> list[list[torch.Tensor]]:
    from nvc.codec import frame_to_tensor
    from nvc.video import read_frames

    if "heldout" in str(clip_dir):
        raise ValueError("calibration must not see the held-out clips")
    ch, cw = config.crop
    clips = []
    for name in config.clips:
        path = clip_dir / name
        if not path.exists():
            raise FileNotFoundError(f"calibration clip {path} is missing (training clips, shared/data/train)")
        xs = []
        for f in read_frames(path, config.frames):
            x = frame_to_tensor(f)  # (1, 6, Hp/2, Wp/2)
            h, w = x.shape[-2:]
            top, left = max(0, (h - ch // 2) // 2) // 32 * 32, max(0, (w - cw // 2) // 2) // 32 * 32
            xs.append(x[..., top : top + ch // 2, left : left + cw // 2].contiguous())
        clips.append(xs)
    return clips


def calibration_inputs(model, config: QuantConfig, clip_dir: Path = TRAIN_CLIPS, log=print) -> _Recorder:
    """Encode the calibration frames with the fp32 model at every quality level, keeping g_s's inputs."""
    from nvc.entropy.hyperprior import single_threaded

    rec = _Recorder(model)
    twin = _with_backend(model, rec)
    t0 = time.perf_counter()
    with single_threaded():  # one thread: much faster than two on a busy machine, and the same result
        for xs in _calibration_frames(config, clip_dir):
            for q in range(model.config.quality_levels):
                ref = None
                for i, x in enumerate(xs):
                    _, ref = (twin.intra if i == 0 else twin.inter).compress(x, ref, q)
    log(f"int8: calibration data: {len(rec.intra_inputs)} I and {len(rec.inter_inputs)} P inputs from "
        f"{len(config.clips)} training clips ({time.perf_counter() - t0:.0f} s)")
    return rec


class _Reader:
    def __init__(self, samples: list[dict]):
        self._it = iter(samples)

    def get_next(self):
        return next(self._it, None)


def _float_tail(graph, all_adds: bool) -> list[str]:
    """Names of the nodes to keep in float: those between the last convs and the outputs (the sum of
    the P-frame's two output convs, the rounding to 8 bits), and with `all_adds` every Add."""
    producers = {o: n for n in graph.node for o in n.output}
    keep, frontier = {n.name for n in graph.node if all_adds and n.op_type == "Add"}, [o.name for o in graph.output]
    while frontier:  # walk back from the outputs until a conv
        node = producers.get(frontier.pop())
        if node is not None and node.op_type != "Conv" and node.name not in keep:
            keep.add(node.name)
            frontier.extend(node.input)
    return sorted(keep)


def _strip_requantization(path: Path, float_nodes: set[str]) -> None:
    """After quantize_static: float nodes read float tensors. A float node reads the unquantized
    tensor where the quantizer gave it a dequantized copy (the P-frame's `pred + residual` adds the
    prediction itself, not its 8-bit version), and QuantizeLinear -> DequantizeLinear pairs that only
    float nodes or the graph outputs read are removed: a conv feeding a float add (or the output)
    gives its float result instead of rounding it to 8 bits first."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    for n in g.node:  # float nodes read the float originals
        if n.name in float_nodes:
            for k, name in enumerate(n.input):
                dq = producers.get(name)
                q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
                if q is not None and q.op_type == "QuantizeLinear":
                    n.input[k] = q.input[0]
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    drop = []
    for q in [n for n in g.node if n.op_type == "QuantizeLinear"]:
        dqs = consumers.get(q.output[0], [])
        if any(d.op_type != "DequantizeLinear" for d in dqs):
            continue
        readers = [r for d in dqs for r in consumers.get(d.output[0], [])]
        if not all(r.name in float_nodes for r in readers):
            continue
        src = q.input[0]
        for d in dqs:
            if d.output[0] in outputs:  # keep the output's name: its producer writes it directly
                for n in g.node:
                    n.output[:] = [d.output[0] if o == src else o for o in n.output]
                    n.input[:] = [d.output[0] if i == src else i for i in n.input]
                src = d.output[0]
            for r in consumers.get(d.output[0], []):
                r.input[:] = [src if i == d.output[0] else i for i in r.input]
        drop += [q, *dqs]
    for n in drop:
        g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(init)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def quantize_onnx(src: Path, dst: Path, samples: list[dict], config: QuantConfig) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(src)).graph
    float_nodes = set(_float_tail(graph, config.float_adds))
    unknown = set(config.float_convs) - set(CONVS)
    if unknown:
        raise ValueError(f"unknown convs {sorted(unknown)}: {', '.join(CONVS)}")
    float_convs = set(config.float_convs)
    float_nodes |= {n.name for n in graph.node if n.op_type == "Conv" and n.name.split("/")[1] in float_convs}
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[config.calibrate]
    # Keep the ReLUs: QDQ would drop them into the 8-bit clamp, which `_strip_requantization` may remove.
    extra = {"QDQKeepRemovableActivations": True}
    if config.calibrate == "percentile":
        extra["CalibPercentile"] = config.percentile
    quantize_static(str(src), str(dst), _Reader(samples), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8 if config.activations == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=sorted(float_nodes),
                    extra_options=extra)
    _strip_requantization(dst, float_nodes)


def _cached_calibration_inputs(model, config: QuantConfig, clip_dir: Path, log) -> dict[str, list[dict]]:
    """g_s's calibration inputs, kept beside the engines (encoding the frames takes minutes)."""
    path = cache_dir() / f"calib-{weights_digest(model)}-{config.data_key()}.npz"
    if path.exists():
        with np.load(path) as data:
            return {kind: [{k.split("/")[2]: data[k] for k in data.files if k.startswith(f"{kind}/{i}/")}
                           for i in range(int(data[f"{kind}_count"]))] for kind in ("intra", "inter")}
    with torch.no_grad():
        rec = calibration_inputs(model, config, clip_dir, log)
    samples = {"intra": rec.intra_inputs, "inter": rec.inter_inputs}
    arrays = {f"{kind}_count": np.array(len(v)) for kind, v in samples.items()}
    arrays.update({f"{kind}/{i}/{k}": a for kind, v in samples.items() for i, d in enumerate(v) for k, a in d.items()})
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return samples


def build(model, config: QuantConfig | None = None, clip_dir: Path = TRAIN_CLIPS, log=print) -> dict[str, Path]:
    """The int8 ONNX graphs of the model's two g_s ({"intra": path, "inter": path}), built if not cached."""
    config = config or QuantConfig()
    folder = cache_dir() / f"{weights_digest(model)}-{config.key()}"
    paths = {kind: folder / f"{kind}.int8.onnx" for kind in ("intra", "inter")}
    if all(p.exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    samples = _cached_calibration_inputs(model, config, clip_dir, log)
    for kind in ("intra", "inter"):
        g_s = getattr(model, kind).g_s
        fp32 = folder / f"{kind}.fp32.onnx"
        export_onnx(g_s, fp32)
        tmp = paths[kind].with_suffix(f".{os.getpid()}.tmp")
        if g_s.block is not None:  # the graph's `block` input, as `prepare_synthesis` makes it
            samples[kind] = [{**d, "block": _np(block_output(g_s, torch.from_numpy(d["y"])))} for d in samples[kind]]
        quantize_onnx(fp32, tmp, samples[kind], config)
        tmp.replace(paths[kind])
    (folder / "recipe.json").write_text(json.dumps({"format": FORMAT_VERSION, **asdict(config)}, indent=1))
    log(f"int8: built {folder} ({time.perf_counter() - t0:.0f} s)")
    return paths


# ---------------------------------------------------------------- engines


class _OpenVINO:
    def __init__(self, path: Path, threads: int):
        import openvino as ov

        self._core = ov.Core()
        self._model = self._core.read_model(str(path))
        # f32 for whatever is not int8; CACHE_DIR keeps compiled engines (per graph, shape and
        # settings) on disk: the first frame of a new size costs ~0.5 s once, not in every process.
        self._config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_PRECISION_HINT": "f32", "CACHE_DIR": str(cache_dir() / "openvino")}
        self._requests: dict[tuple, object] = {}

    def _request(self, shapes: tuple):
        if shapes not in self._requests:
            model = self._model.clone()
            model.reshape({inp.get_any_name(): list(s) for inp, s in zip(model.inputs, shapes)})
            self._requests[shapes] = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        return self._requests[shapes]

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        """The output, a view of the request's buffer: valid until the next call (callers convert it
        under `Int8Synthesis._lock`). Inputs are read in place (share_inputs), not copied."""
        request = self._request(tuple(a.shape for a in arrays))
        request.infer(list(arrays), share_inputs=True)
        return request.get_output_tensor(0).data


class _OnnxRuntime:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave the other core alone
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._names = [i.name for i in self._session.get_inputs()]

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return self._session.run(None, dict(zip(self._names, arrays)))[0]


def _engine(engine: str, path: Path, threads: int):
    if engine == "openvino":
        return _OpenVINO(path, threads)
    if engine == "onnxruntime":
        return _OnnxRuntime(path, threads)
    raise ValueError(f"unknown int8 engine {engine!r} (openvino or onnxruntime)")


class Int8Synthesis:
    """g_s of both frame models in an int8 engine: `.intra(y) -> x`, `.inter(y, pred) -> x`.

    `y` is the unscaled latent (`gain.unscale(y_hat, q)`), `pred` the motion-compensated
    prediction; `x` is g_s's output rounded to the 8-bit grid by the engine (as `nvc.model.to_8bit`
    does to the fp32 g_s's output; `to_8bit(x)` is `x`).
    """

    def __init__(self, model, engine: str = "openvino", threads: int = 1, config: QuantConfig | None = None,
                 clip_dir: Path = TRAIN_CLIPS, log=print):
        self.engine, self.threads = engine, threads
        self.rounds = True  # the engines round to the 8-bit grid themselves
        self.paths = build(model, config, clip_dir, log)
        self._lock = threading.Lock()  # an engine's request is not to be run from two threads at once
        self._intra = _engine(engine, self.paths["intra"], threads)
        self._inter = _engine(engine, self.paths["inter"], threads)

    def intra(self, y: torch.Tensor, block: torch.Tensor | None = None, as_bytes: bool = False) -> torch.Tensor:
        """g_s's output on the 8-bit grid (float), or with `as_bytes` as the engine's uint8 (a copy)."""
        with self._lock:
            return _output(self._intra(*_arrays(y, block)), as_bytes)

    def inter(self, y: torch.Tensor, pred: torch.Tensor, block: torch.Tensor | None = None,
              as_bytes: bool = False) -> torch.Tensor:
        with self._lock:
            return _output(self._inter(*_arrays(y, pred, block)), as_bytes)


def _arrays(*tensors: torch.Tensor | None) -> list[np.ndarray]:
    return [_np(t) for t in tensors if t is not None]


@torch.no_grad()
def block_output(g_s: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The input `block` of `SynthesisGraph`: g_s's block transform before its pixel shuffle, from
    the unscaled latent y (fp32, one thread), output channels in DCR order: DepthToSpace(8) of it is
    what the block transform adds to g_s's output."""
    from nvc.entropy.hyperprior import single_threaded

    linear = g_s.block.linear
    perm = _dcr_order(linear.out_channels, BLOCK)
    with single_threaded():
        return F.conv2d(y, linear.weight[perm], linear.bias[perm])


def _from_bytes(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The engines' 8-bit output -> the float tensor `to_8bit` makes (k / 255, computed the same way)."""
    return torch.as_tensor(x).to(torch.float32).div_(255)


def _output(x: np.ndarray, as_bytes: bool) -> torch.Tensor:
    return torch.from_numpy(x.copy()) if as_bytes else _from_bytes(x)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


class TorchSynthesis:
    """g_s in torch on `threads` threads: the fp32 reference (`dtype` float32) or bf16 autocast with
    channels_last (a comparison point for the int8 engines; bf16 pixels depend on the kernels used).
    As the engines, it takes the block transform's output as an input rather than computing it."""

    def __init__(self, model, dtype: torch.dtype = torch.float32, threads: int = 1):
        self.dtype, self.threads = dtype, threads
        self.rounds = False  # the caller rounds to the 8-bit grid (`to_8bit`)
        fmt = torch.channels_last if dtype != torch.float32 else torch.contiguous_format
        self._g = {}
        for kind in ("intra", "inter"):
            g = copy.copy(getattr(model, kind).g_s)
            g._modules = {**g._modules, "block": None}  # added by `_run`, from its input
            self._g[kind] = copy.deepcopy(g).to(memory_format=fmt).eval()
        self._fmt = fmt

    def _run(self, kind: str, block: torch.Tensor | None, *args: torch.Tensor) -> torch.Tensor:
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.no_grad(), torch.autocast("cpu", self.dtype, enabled=self.dtype != torch.float32):
                x = self._g[kind](*(a.contiguous(memory_format=self._fmt) for a in args))
            x = x.float().contiguous()
            return x if block is None else x + _DepthToSpace.apply(block, BLOCK)
        finally:
            torch.set_num_threads(before)

    def intra(self, y: torch.Tensor, block: torch.Tensor | None = None) -> torch.Tensor:
        return self._run("intra", block, y)

    def inter(self, y: torch.Tensor, pred: torch.Tensor, block: torch.Tensor | None = None) -> torch.Tensor:
        return self._run("inter", block, y, pred)


def synthesis_backend(model, engine: str, threads: int = 1, config: QuantConfig | None = None, **kwargs):
    """The object that runs g_s for `engine` (see `ENGINES`)."""
    if engine == "torch":
        return TorchSynthesis(model, torch.float32, threads)
    if engine == "torch-bf16":
        return TorchSynthesis(model, torch.bfloat16, threads)
    if engine in INT8_ENGINES:
        return Int8Synthesis(model, engine, threads, config, **kwargs)
    raise ValueError(f"unknown synthesis engine {engine!r}: one of {', '.join(ENGINES)}")


# ---------------------------------------------------------------- the model with int8 synthesis


class FastMotionCompensation:
    """`models.motion.predict_packed` (the same function, to ~1e-4) in one native pass
    (`deploy/warp.cpp`): the flow of each sample interpolated on the fly, runs of samples that one
    vector moves blended with fixed weights. In the 720p decoder the torch version (a sampling grid
    built by matrix products, unpacked luma, grid_sample) took ~13 ms a P-frame.

    The prediction is written into a buffer kept for the next call (fresh 6 MB a frame cost page
    faults): it is valid until then, which is how synthesis uses it (one caller at a time: a lock).
    """

    def __init__(self):
        self._out: torch.Tensor | None = None
        self._lock = threading.Lock()

    def __call__(self, ref: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
        from nvc.deploy import _warp

        if ref.size(0) != 1:
            raise ValueError("one frame at a time")
        with self._lock:
            if self._out is None or self._out.shape != ref.shape:
                self._out = torch.empty(ref.shape)
            _warp.warp(_np(ref)[0], mv[0].to("cpu", torch.int32).contiguous().numpy(), self._out.numpy()[0])
            return self._out.to(ref.device)


def _prepare_synthesis(self, latent, quality: int):
    """The synthesis work that needs the latent only, not the reference pixels: the unscaled latent
    and the block transform's output. `FrameDecoder` calls it on the entropy thread (~3 ms of a
    720p frame off the synthesis thread); `synthesize` calls it when it was not called (the
    encoder). One thread either way, so the values do not depend on where it ran."""
    from nvc.entropy.hyperprior import single_threaded

    with single_threaded(), torch.no_grad():
        q = torch.tensor([quality], device=latent.y_hat.device)
        prepared = {"y": self.gain.unscale(latent.y_hat, q)}
        if self.g_s.block is not None:
            prepared["block"] = block_output(self.g_s, prepared["y"])
    return replace(latent, prepared=prepared)


def _reconstruction(latent, backend, kind: str, *inputs: torch.Tensor | None):
    """The frame the backend's `kind` ("intra", "inter") synthesises from `inputs`: an int8 engine's
    bytes are kept (the output frame is made from them, not from floats); a float output is rounded."""
    from nvc.model import Reconstruction, to_8bit

    run = getattr(backend, kind)
    if backend.rounds:
        x8 = run(*inputs, as_bytes=True)
        return Reconstruction(_from_bytes(x8).to(latent.y_hat.device), latent.y_hat, x_bytes=x8, z_hat=latent.z_hat)
    return Reconstruction(to_8bit(run(*inputs).to(latent.y_hat.device)), latent.y_hat, z_hat=latent.z_hat)


def _synthesize_intra(self, latent, ref, quality: int):
    p = (latent if latent.prepared is not None else self.prepare_synthesis(latent, quality)).prepared
    return _reconstruction(latent, self._synthesis_backend, "intra", p["y"], p.get("block"))


def _synthesize_inter(self, latent, ref, quality: int):
    p = (latent if latent.prepared is not None else self.prepare_synthesis(latent, quality)).prepared
    pred = self._fast_motion_compensation(ref.x_hat, latent.mv)  # fp32, native (faster than in the engines)
    return _reconstruction(latent, self._synthesis_backend, "inter", p["y"], pred, p.get("block"))


def _frame_copy(frame_model: nn.Module, backend, synthesize) -> nn.Module:
    """A shallow copy of a frame model (weights shared) whose `synthesize` runs `backend`, with
    `prepare_synthesis` for the decoder's entropy thread."""
    twin = copy.copy(frame_model)
    methods = {"synthesize": synthesize, "prepare_synthesis": _prepare_synthesis}
    twin.__class__ = type(f"{type(frame_model).__name__}Int8", (type(frame_model),), methods)
    object.__setattr__(twin, "_synthesis_backend", backend)
    object.__setattr__(twin, "_fast_motion_compensation", FastMotionCompensation())
    return twin


def _with_backend(model, backend):
    synthesize = {"intra": _synthesize_intra, "inter": _synthesize_inter}
    return with_frame_models(model, lambda kind, frame_model: _frame_copy(frame_model, backend, synthesize[kind]))


def with_synthesis(model, engine: str = "torch", threads: int = 1, config: QuantConfig | None = None, **kwargs):
    """The switch: `model` itself for "torch" (the fp32 reference), else a copy whose synthesis runs
    in `engine` ("openvino" or "onnxruntime": int8; "torch-bf16": for comparison)."""
    if engine == "torch":
        return model
    return _with_backend(model, synthesis_backend(model, engine, threads, config, **kwargs))
