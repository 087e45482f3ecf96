"""Integer entropy parameters: an exact integer twin of a `MultiStepLatentCodec`'s parameter nets.

The symbols of a frame are decided by h_s, (P-frames) the warp of the previous latent and the
temporal prior, the base net and the context steps. In float these can differ in the last bit
between thread counts, CPUs and CUDA, and one flipped scale index desynchronises the decoder
(DESIGN, "Determinism"). This module evaluates the same networks, built from the trained float
weights, in integers only, so that encoder and decoder derive bit-identical means and scale
indexes on any CPU, any thread count and on CUDA::

    twin = IntegerEntropyParameters.from_codec(codec)     # codec: MultiStepLatentCodec, not modified
    base = twin.base(z_hat, prior)                         # prior: None (I) or (y_ref_hat, mv) (P)
    for s in range(twin.steps):
        means_fixed, scale_index = twin.step(s, base, y_known)

    # or the whole latent, streams as MultiStepLatentCodec.compress / .decompress lay them out:
    z_stream, parts, y_hat = IntegerLatentCodec(codec, twin).compress(y, prior)
    y_hat = IntegerLatentCodec(codec, twin).decompress(z_stream, parts, (M, H, W), prior)

Units (`frac f` means "value = integer / 2**f"):

- `z_hat` (1, Z, H/4, W/4): the hyper-latent as the z codec decodes it (float symbols + medians),
  read as round(z_hat * 256): the medians at 1/256.
- `prior = (y_ref, mv)`: the previous frame's y_hat (1, M, H, W), *not* warped (the twin warps
  it), read as round(y_ref * 256) (exact: this twin's y_hat is on the 1/256 grid); `mv` (1, 2, H, W)
  the decoded block field, integers in quarter luma pixels (x, y) = 1/64 latent pixel.
- `base(...)` -> `BaseParameters`, opaque (the implementation's layout); `.fixed` is the int64
  (1, 2M, H, W) tensor, frac 16: means then scales before the context.
- `step(s, base, y_known, steps=None)` -> `means_fixed` int32 (1, M, H, W), frac 8 (1/256), and
  `scale_index` int32 (1, M, H, W), the coder's table index (0: skip), at the symbols of step s
  of the schedule (`step_masks(steps)`; the codec's by default, or 1: every symbol at step 0);
  0 elsewhere. `y_known` (1, M, H, W): y_hat of the earlier steps, zeros elsewhere (unused at s=0).
- Symbols are round(y - means_fixed / 256); y_hat = symbols + means_fixed / 256 (a skipped
  symbol: means_fixed / 256), exact in float32.

Arithmetic, the same in the two implementations (`TorchOps`: channels last, CPU or CUDA, exact
float GEMMs; `NumpyOps`: channels first, int64 only):

- weights: per output channel, int8 (or int16, `QuantConfig` / `PRESETS`), w_int = round(w * 127 /
  max|w_c|) from the fp16 weights the weights file ships (exact float64 operations done once: the
  same integers on every machine); the scale max|w_c| / 127 as an integer multiplier
  mult_c < 2**24 and a shift; biases at frac 16. The preset is part of the format: encoder and
  decoder must build the twin with the same one.
- activations: each conv input is quantized *dynamically* to its bit width (uint8 after a ReLU,
  int8 or int16 for signed inputs) by a rounding right shift chosen from the exact integer max |x|
  of the tensor the layer sees (a 1x1 conv evaluated at a step's positions sees those positions).
  No calibration: nothing depends on float results of the training framework. (A consequence: a
  value depends on the max over the frame, so a frame split into tiles needs the global max.)
- products and sums: exact. TorchOps gathers im2col columns and runs one GEMM in float32 when
  every partial sum provably stays below 2**24 (int8 x uint8 / int8: checked per layer from the L1
  norms of the integer weights) and in float64 otherwise (below 2**53): integers in that range are
  added exactly in any order, by any BLAS, on any device (TF32 or bf16 keep int8 values exact too;
  a float32 matmul precision other than "highest" sends every GEMM to float64 anyway). NumpyOps
  uses int64 matmul. Accumulators are int64 after the GEMM.
- requantization: y = ((acc * mult_c + 2**(sh-1)) >> sh) + bias_c at frac 16 (int64, bounds
  checked when the twin is built); ReLU is max(0, y); PixelShuffle a reshape.
- warp: the bilinear warp of `warp_latent` (grid_sample, align_corners=True, border padding) by
  mv / 64 latent pixels, on the 1/256 latent, with integer weights (64 - fx)(64 - fy) ... in 1/4096.
- scale index: #{j < 63 : t_j < scale} (torch.bucketize on the table, as `coder.scale_indexes`),
  compared as integers: scale (frac 16) > floor(t_j * 2**16), t_j the codec's stored table. The
  net predicts the scale linearly, so comparing scale or log-scale gives the same index.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from nvc.deploy import with_frame_models
from nvc.entropy.multistep import MultiStepLatentCodec, gather, step_masks

MEAN_FRAC = 8  # means and y_hat on the 1/256 grid
PARAM_FRAC = 16  # conv outputs and base parameters in 2^-16
Z_FRAC = 8  # the hyper-latent (integers + medians) read at 1/256
MV_FRAC = 6  # a quarter-pel luma vector is 1/64 latent pixel
WARP_FRAC = MEAN_FRAC + 2 * MV_FRAC  # bilinear weights in 1/4096 on a 1/256 latent
MULT_BITS = 24  # requantization multipliers < 2^24
FP32_EXACT = 2**24
FP64_EXACT = 2**53


# ---------------------------------------------------------------- constants (built once)


@dataclass(frozen=True)
class QuantConfig:
    """Bit widths of the weights and of each conv's (dynamically quantized) input. Inputs after a
    ReLU are unsigned (`relu_bits`), the others (hyper-latent, latents, parameters) signed
    (`signed_bits`). `overrides`: (fnmatch pattern on the layer name, weight bits, input bits),
    the first match wins; layer names: h_s.0-2, temporal.0-1, base.0-1, context.<i>.known/base/out.
    Every choice is exact; bits only trade accuracy (rate) against speed."""

    weight_bits: int = 8
    relu_bits: int = 8
    signed_bits: int = 16
    overrides: tuple[tuple[str, int, int], ...] = ()

    def bits(self, name: str, relu_input: bool) -> tuple[int, int]:
        for pattern, w, a in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                return w, a
        return self.weight_bits, self.relu_bits if relu_input else self.signed_bits


_ONE_BY_ONE = ("base.*", "temporal.1", "context.*.base", "context.*.out")
PRESETS = {
    # Where the MACs are, the 3x3 convs (h_s, temporal.0, context.known: ~85 % of them), int8
    # weights with uint8 inputs after a ReLU (float32 GEMMs) or int16 signed inputs (the hyper-latent,
    # the warped latent, the known symbols). The 1x1 convs that lead to the means and scales
    # (base, temporal.1, context.base / .out) in int16 weights and inputs: in 8 bits they alone
    # flip ~40 % of the scale indexes of a trained I-frame at the top quality (6 % scale error).
    "default": QuantConfig(overrides=tuple((name, 16, 16) for name in _ONE_BY_ONE)),
    "int8": QuantConfig(signed_bits=8),  # every weight and input in 8 bits: every GEMM in float32
    "int16": QuantConfig(weight_bits=16, relu_bits=16),  # 16 bits everywhere: float64 GEMMs, ~float accuracy
}


@dataclass(frozen=True)
class IntConv:
    """One convolution in integers: y (frac 16) = round(acc * mult >> shift) + bias, where
    acc = weight @ im2col(x_q) exactly and x_q is the input quantized to `in_bits`."""

    name: str
    weight_bits: int
    weight: np.ndarray  # int64 (Cout, Cin * k * k), |w| <= 2^(weight_bits-1) - 1
    mult: np.ndarray  # int64 (Cout,), < 2^MULT_BITS: the per-channel weight scale * 2^shift
    shift: int
    bias: np.ndarray  # int64 (Cout,), frac 16
    kernel: int
    in_bits: int
    unsigned_input: bool

    @property
    def in_limit(self) -> int:
        return (1 << self.in_bits) - 1 if self.unsigned_input else (1 << (self.in_bits - 1)) - 1

    @property
    def acc_bound(self) -> int:
        """Bound on |any partial sum| of the GEMM: max row L1 norm * max |input|."""
        return int(np.abs(self.weight).sum(1).max(initial=0)) * self.in_limit


def _int_conv(name: str, conv: torch.nn.Conv2d, weight_bits: int, in_bits: int, unsigned_input: bool) -> IntConv:
    if conv.groups != 1 or conv.stride != (1, 1) or conv.dilation != (1, 1):
        raise ValueError(f"{name}: only plain stride-1 convolutions are supported")
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or conv.padding != (k // 2, k // 2):
        raise ValueError(f"{name}: square 'same' kernels only")
    # from the fp16 values the weights file ships (`nvc.model.save_weights`): the identity on a loaded
    # model, and a twin built from a training module in float32 gets the same integers
    w = conv.weight.detach().cpu().half().double().numpy().reshape(conv.out_channels, -1)
    b = conv.bias.detach().cpu().half().double().numpy() if conv.bias is not None else np.zeros(conv.out_channels)
    qmax = (1 << (weight_bits - 1)) - 1
    amax = np.abs(w).max(1)
    safe = np.where(amax > 0, amax, 1.0)
    w_int = np.round(w * qmax / safe[:, None]).astype(np.int64)  # w * qmax is exact in float64
    scale = amax / qmax  # per output channel (0 for an all-zero channel)
    in_limit = (1 << in_bits) - 1 if unsigned_input else (1 << (in_bits - 1)) - 1
    acc_bound = int(np.abs(w_int).sum(1).max(initial=0)) * in_limit
    mult_bits = min(MULT_BITS, 61 - acc_bound.bit_length())  # acc * mult (+ bias << shift) stays in int64
    if mult_bits < 12:
        raise ValueError(f"{name}: accumulator too wide for an exact requantization")
    top = float(scale.max())
    shift = mult_bits - math.frexp(top)[1] if top > 0 else 0  # scale * 2^shift < 2^mult_bits
    mult = np.round(amax * 2.0**shift / qmax).astype(np.int64)
    bias = np.round(b * 2.0**PARAM_FRAC).astype(np.int64)
    return IntConv(name, weight_bits, w_int, mult, shift, bias, k, in_bits, unsigned_input)


@dataclass(frozen=True)
class _Context:
    known: IntConv
    base: IntConv
    out: IntConv


@dataclass(frozen=True)
class IntegerPlan:
    """Every integer constant of the twin: plain numpy arrays, the same for every implementation."""

    latent_channels: int
    steps: int
    h_s: tuple[IntConv, ...]
    temporal: tuple[IntConv, ...] | None
    base: tuple[IntConv, ...]
    context: tuple[_Context, ...]
    thresholds: np.ndarray  # int64 (63,): floor(scale_table[j] * 2^16), j < 63
    selections: dict = field(default_factory=dict, compare=False, repr=False)  # (s, h, w) -> Selection

    def selection(self, s: int, height: int, width: int, steps: int | None = None) -> "Selection":
        """The channels x positions that step s of a `steps`-step schedule decodes (`step_masks`):
        the full schedule (`self.steps`) or 1 (every symbol at step 0, no context)."""
        steps = steps or self.steps
        if steps not in (1, self.steps) or not 0 <= s < steps:
            raise ValueError(f"step {s} of a {steps}-step schedule (1 or {self.steps} steps)")
        key = (s, height, width, steps)
        if key not in self.selections:
            mask = step_masks(steps, self.latent_channels, height, width)[s].numpy()
            channels = np.flatnonzero(mask.any((1, 2)))
            positions = np.flatnonzero(mask.any(0))
            flat = mask.reshape(mask.shape[0], -1)
            if not flat[np.ix_(channels, positions)].all() or flat.sum() != channels.size * positions.size:
                raise ValueError("step masks must be channels x positions")
            rows = np.concatenate([channels, self.latent_channels + channels])
            self.selections[key] = Selection(key, channels, positions, rows)
        return self.selections[key]

    @classmethod
    def from_codec(cls, codec: MultiStepLatentCodec, config: QuantConfig | None = None) -> "IntegerPlan":
        cfg = config or PRESETS["default"]

        def conv(name, module, relu_input):
            wbits, abits = cfg.bits(name, relu_input)
            return _int_conv(name, module, wbits, abits, unsigned_input=relu_input)

        hs = [m for m in codec.h_s.net if isinstance(m, torch.nn.Conv2d)]
        if len(hs) != 3:
            raise ValueError("unexpected HyperSynthesis layout")
        h_s = (conv("h_s.0", hs[0], False), conv("h_s.1", hs[1], True), conv("h_s.2", hs[2], True))
        temporal = None
        if codec.temporal is not None:
            tn = [m for m in codec.temporal.net if isinstance(m, torch.nn.Conv2d)]
            temporal = (conv("temporal.0", tn[0], False), conv("temporal.1", tn[1], True))
        bn = [m for m in codec.base if isinstance(m, torch.nn.Conv2d)]
        base = (conv("base.0", bn[0], True), conv("base.1", bn[1], True))
        context = tuple(_Context(conv(f"context.{i}.known", c.known, False), conv(f"context.{i}.base", c.base, False),
                                 conv(f"context.{i}.out", c.out, True)) for i, c in enumerate(codec.context))
        table = codec.y_codec.scale_table.detach().cpu().to(torch.float64).numpy()
        if table.size < 2:
            raise RuntimeError("the codec's scale table is not built: call update() first")
        thresholds = np.floor(table[:-1] * 2.0**PARAM_FRAC).astype(np.int64)
        return cls(codec.base[-1].out_channels // 2, codec.steps, h_s, temporal, base, context, thresholds)

    def layers(self) -> list[IntConv]:
        out = list(self.h_s) + list(self.temporal or ()) + list(self.base)
        for c in self.context:
            out += [c.known, c.base, c.out]
        return out


# ---------------------------------------------------------------- the network, on either implementation
#
# `_base` and `_step` are written once against an `ops` object; `TorchOps` (channels-last, exact float
# GEMMs) and `NumpyOps` (channels-first, int64 matmul) implement it independently.


@dataclass(frozen=True)
class Selection:
    """The symbols of one step: `channels` x flat `positions` (row-major over H x W)."""

    key: tuple
    channels: np.ndarray
    positions: np.ndarray
    rows: np.ndarray  # the parameter channels: means then scales of `channels`
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # per-implementation copies


def _base(ops, plan: IntegerPlan, z, prior):
    """z: (Z, h, w) frac Z_FRAC; prior None or (y_ref (M, H, W) frac 8, mv (2, H, W)) -> (2M, H, W) frac 16."""
    h = ops.relu(ops.conv(z, Z_FRAC, plan.h_s[0]))
    h = ops.relu(ops.pixel_shuffle(ops.conv(h, PARAM_FRAC, plan.h_s[1])))
    h = ops.relu(ops.pixel_shuffle(ops.conv(h, PARAM_FRAC, plan.h_s[2])))
    if plan.temporal is not None:
        y_ref, mv = prior
        warped = ops.warp(y_ref, mv)  # frac WARP_FRAC
        t = ops.cat([warped, ops.cast_like(mv, warped) * (1 << (WARP_FRAC - MV_FRAC))])
        t = ops.relu(ops.conv(t, WARP_FRAC, plan.temporal[0]))
        t = ops.relu(ops.conv(t, PARAM_FRAC, plan.temporal[1]))
        h = ops.cat([h, t])
    h = ops.relu(ops.conv(h, PARAM_FRAC, plan.base[0]))
    return ops.conv(h, PARAM_FRAC, plan.base[1])


def _step(ops, plan: IntegerPlan, s: int, base, y_known, steps: int):
    """base (2M, H, W) frac 16, y_known (M, H, W) frac 8 -> means (frac 8), index: (M, H, W) each,
    at the symbols of step s of a `steps`-step schedule (zero elsewhere)."""
    m = plan.latent_channels
    hgt, wid = ops.spatial(base)
    sel = plan.selection(s, hgt, wid, steps)
    at = ops.select(base, sel)  # (2M channels) x (the step's positions)
    params = ops.rows(at, sel)
    if s > 0:
        ctx = plan.context[s - 1]
        hidden = ops.relu(ops.conv(y_known, MEAN_FRAC, ctx.known, sel=sel) + ops.conv(at, PARAM_FRAC, ctx.base))
        params = params + ops.conv(hidden, PARAM_FRAC, ctx.out, sel=sel, rows=True)
    k = sel.channels.size
    means = ops.round_shift(ops.channels(params, 0, k), PARAM_FRAC - MEAN_FRAC)
    index = ops.bucketize(ops.channels(params, k, 2 * k))
    return ops.scatter(means, sel, (m, hgt, wid)), ops.scatter(index, sel, (m, hgt, wid))


def _quantize_shift(max_abs: int, bits: int, unsigned: bool) -> tuple[int, int]:
    """(right shift r, clamp limit) that bring |x| <= max_abs into `bits`: x_q = round(x / 2^r)."""
    limit = (1 << bits) - 1 if unsigned else (1 << (bits - 1)) - 1
    return max(0, max_abs.bit_length() - limit.bit_length()), limit


def _requant_shift(layer: IntConv, in_frac: int) -> int:
    """acc = sum w_int * x_q (x_q at frac in_frac); y (frac 16) = round(acc * mult / 2^result) + bias."""
    sh = layer.shift + in_frac - PARAM_FRAC
    if sh < 1:
        raise ValueError(f"{layer.name}: requantization out of range (shift {sh})")
    return sh


def _shift_round(x, r: int):
    """round(x / 2^r), halves up, on torch or numpy int64 (r >= 0)."""
    return (x + (1 << (r - 1))) >> r if r > 0 else x


class NumpyOps:
    """The network in numpy int64 only, channels first: the reference the torch one is tested against."""

    def __init__(self, plan: IntegerPlan):
        self.plan = plan

    def from_chw(self, x: torch.Tensor) -> np.ndarray:
        return x.cpu().numpy().astype(np.int64)

    @staticmethod
    def to_chw(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x))

    @staticmethod
    def spatial(x: np.ndarray) -> tuple[int, int]:
        return x.shape[1], x.shape[2]

    @staticmethod
    def channels(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
        return x[lo:hi]

    @staticmethod
    def select(x: np.ndarray, sel: Selection) -> np.ndarray:
        return x.reshape(x.shape[0], -1)[:, sel.positions]

    @staticmethod
    def rows(x: np.ndarray, sel: Selection) -> np.ndarray:
        return x[sel.rows]

    def conv(self, x: np.ndarray, frac: int, layer: IntConv, sel: Selection | None = None, rows: bool = False):
        """x (C, H, W) or (C, N) -> (Cout, H, W), or (Cout', N) at the selected positions / rows."""
        out_hw = x.shape[1:] if x.ndim == 3 and sel is None else None
        if x.ndim == 3 and layer.kernel == 1:
            x = x.reshape(x.shape[0], -1)
            if sel is not None:  # a 1x1 conv at some positions: those positions are its input
                x = x[:, sel.positions]
        r, limit = _quantize_shift(int(np.abs(x).max(initial=0)), layer.in_bits, layer.unsigned_input)
        xq = np.clip(_shift_round(x, r), -limit, limit)
        if x.ndim == 2:
            cols = xq
        else:
            k, p = layer.kernel, layer.kernel // 2
            c, h, w = xq.shape
            padded = np.pad(xq, ((0, 0), (p, p), (p, p)))
            taps = [padded[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]
            cols = np.stack(taps, 1).reshape(c * k * k, h * w)
            if sel is not None:
                cols = cols[:, sel.positions]
        weight, mult, bias = layer.weight, layer.mult, layer.bias
        if rows:
            weight, mult, bias = weight[sel.rows], mult[sel.rows], bias[sel.rows]
        acc = weight @ cols  # int64, exact
        y = _shift_round(acc * mult[:, None], _requant_shift(layer, frac - r)) + bias[:, None]
        return y if out_hw is None else y.reshape(-1, *out_hw)

    @staticmethod
    def relu(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)

    @staticmethod
    def pixel_shuffle(x: np.ndarray, r: int = 2) -> np.ndarray:
        c, h, w = x.shape
        out = np.empty((c // (r * r), h * r, w * r), x.dtype)
        for i in range(r):
            for j in range(r):
                out[:, i::r, j::r] = x[i * r + j::r * r]
        return out

    @staticmethod
    def cat(xs) -> np.ndarray:
        return np.concatenate(xs, 0)

    @staticmethod
    def cast_like(x: np.ndarray, like: np.ndarray) -> np.ndarray:
        return x.astype(like.dtype)

    @staticmethod
    def round_shift(x: np.ndarray, r: int) -> np.ndarray:
        return _shift_round(x, r).astype(np.int32)

    def bucketize(self, x: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.plan.thresholds, x, side="left").astype(np.int32)  # #{j : t_j < x}

    @staticmethod
    def scatter(values: np.ndarray, sel: Selection, shape) -> torch.Tensor:
        out = np.zeros((shape[0], shape[1] * shape[2]), values.dtype)
        out[np.ix_(sel.channels, sel.positions)] = values
        return torch.from_numpy(out.reshape(shape))

    @staticmethod
    def warp(y: np.ndarray, mv: np.ndarray) -> np.ndarray:
        """out[p] = bilinear y at p + mv[p] / 64, coordinates clamped to the frame (border padding)."""
        c, h, w = y.shape
        one = 1 << MV_FRAC
        out = np.zeros_like(y)
        for i in range(h):
            for j in range(w):
                px = min(max(j * one + int(mv[0, i, j]), 0), one * (w - 1))
                py = min(max(i * one + int(mv[1, i, j]), 0), one * (h - 1))
                x0, fx, y0, fy = px // one, px % one, py // one, py % one
                x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
                out[:, i, j] = (y[:, y0, x0] * ((one - fx) * (one - fy)) + y[:, y0, x1] * (fx * (one - fy))
                                + y[:, y1, x0] * ((one - fx) * fy) + y[:, y1, x1] * (fx * fy))
        return out


class _Bucketizer:
    """#{j : t_j < x} for int64 x (torch.bucketize's answer) by a lookup table: buckets of 2^k, no
    wider than the smallest gap between thresholds, hold at most one threshold, so the index is
    below[b] + (x > inside[b]) for b = x >> k. Several times faster than a binary search here."""

    def __init__(self, thresholds: np.ndarray, device: torch.device):
        gaps = np.diff(np.concatenate([[0], thresholds]))
        self.k = int(gaps.min()).bit_length() - 1 if gaps.min() > 0 else -1
        self.thresholds = torch.from_numpy(thresholds).to(device)
        if self.k < 2 or (int(thresholds[-1]) >> self.k) > 1 << 20:
            self.k = -1  # no compact table: binary search
            return
        n = (int(thresholds[-1]) >> self.k) + 2
        below = np.searchsorted(thresholds, np.arange(n, dtype=np.int64) << self.k, side="left")
        inside = np.full(n, np.iinfo(np.int64).max, np.int64)
        inside[thresholds >> self.k] = thresholds
        self.below = torch.from_numpy(below.astype(np.int32)).to(device)
        self.inside = torch.from_numpy(inside).to(device)
        self.last = n - 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.k < 0:
            return torch.bucketize(x, self.thresholds).to(torch.int32)
        flat = x.reshape(-1)
        b = (flat >> self.k).clamp_(0, self.last)
        return (self.below.index_select(0, b) + (flat > self.inside.index_select(0, b))).reshape(x.shape)


def _max_abs(x: torch.Tensor, nonnegative: bool) -> int:
    if x.numel() == 0:
        return 0
    if nonnegative:
        return int(x.max())
    lo, hi = x.aminmax()
    return max(-int(lo), int(hi))


class TorchOps:
    """The network on torch tensors (CPU or CUDA), channels last, GEMMs in float on exact integers."""

    def __init__(self, plan: IntegerPlan, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        exact32 = torch.get_float32_matmul_precision() == "highest"
        self._layers = {}
        for layer in plan.layers():
            if layer.acc_bound >= FP64_EXACT:
                raise ValueError(f"{layer.name}: accumulator bound {layer.acc_bound} is too large")
            dtype = torch.float32 if exact32 and layer.acc_bound < FP32_EXACT else torch.float64
            cout, k = layer.weight.shape[0], layer.kernel
            # (Cout, Cin * k * k) channel-major -> (k * k * Cin, Cout): the channels-last im2col order
            w = torch.from_numpy(layer.weight).reshape(cout, -1, k * k).permute(2, 1, 0).reshape(-1, cout)
            self._layers[layer.name] = (w.to(self.device, dtype).contiguous(),
                                        torch.from_numpy(layer.mult).to(self.device),
                                        torch.from_numpy(layer.bias).to(self.device),
                                        int(np.abs(layer.bias).max(initial=0)))
        self._bucketize = _Bucketizer(plan.thresholds, self.device)
        self._index = {}

    def from_chw(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, torch.int64).permute(1, 2, 0).contiguous()

    @staticmethod
    def to_chw(x: torch.Tensor) -> torch.Tensor:
        return x.permute(2, 0, 1).contiguous()

    @staticmethod
    def spatial(x: torch.Tensor) -> tuple[int, int]:
        return x.shape[0], x.shape[1]

    @staticmethod
    def channels(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return x[..., lo:hi]

    def _sel(self, sel: Selection) -> dict:
        d = sel.cache.get(self.device)
        if d is None:
            d = {"positions": torch.from_numpy(sel.positions).to(self.device),
                 "rows": torch.from_numpy(sel.rows).to(self.device)}
            sel.cache[self.device] = d
        return d

    def select(self, x: torch.Tensor, sel: Selection) -> torch.Tensor:
        return x.reshape(-1, x.shape[-1]).index_select(0, self._sel(sel)["positions"])

    def rows(self, x: torch.Tensor, sel: Selection) -> torch.Tensor:
        return x.index_select(1, self._sel(sel)["rows"])

    def _im2col_index(self, h: int, w: int, k: int, sel: Selection | None) -> torch.Tensor:
        """Rows of the padded (H + k - 1) x (W + k - 1) frame that form each output position's window."""
        key = (h, w, k, None if sel is None else sel.key)
        idx = self._index.get(key)
        if idx is None:
            wp = w + k - 1
            pos = np.arange(h * w) if sel is None else sel.positions
            top_left = (pos // w) * wp + pos % w
            offsets = (np.arange(k)[:, None] * wp + np.arange(k)[None, :]).reshape(-1)
            idx = torch.from_numpy((top_left[:, None] + offsets[None, :]).reshape(-1)).to(self.device)
            self._index[key] = idx
        return idx

    def conv(self, x: torch.Tensor, frac: int, layer: IntConv, sel: Selection | None = None, rows: bool = False):
        """x (H, W, C) or (N, C) int64 -> (H, W, Cout), or (N', Cout') at the selected positions / rows."""
        w, mult, bias, bias_max = self._layers[layer.name]
        if rows:
            r_idx = self._sel(sel)["rows"]
            w, mult, bias = w.index_select(1, r_idx), mult[r_idx], bias[r_idx]
        out_hw = x.shape[:2] if x.dim() == 3 and sel is None else None  # None: (N, Cout) out
        if x.dim() == 3 and layer.kernel == 1:
            x = x.reshape(-1, x.shape[-1])
            if sel is not None:  # a 1x1 conv at some positions: those positions are its input
                x = x.index_select(0, self._sel(sel)["positions"])
        r, limit = _quantize_shift(_max_abs(x, layer.unsigned_input), layer.in_bits, layer.unsigned_input)
        if x.dim() == 2:
            cols = (_shift_round(x, r).clamp_(-limit, limit) if r else x).to(w.dtype)
        else:  # im2col of a 3x3 conv: gathered in the narrowest integer type, then made float
            store = torch.int8 if limit < 128 else torch.int16 if limit < 32768 else torch.int64
            xq = (_shift_round(x, r).clamp_(-limit, limit) if r else x).to(store)
            h, wd, c = xq.shape
            p = layer.kernel // 2
            padded = F.pad(xq, (0, 0, p, p, p, p)).reshape(-1, c)
            cols = padded.index_select(0, self._im2col_index(h, wd, layer.kernel, sel))
            cols = cols.reshape(-1, layer.kernel ** 2 * c).to(w.dtype)
        acc = (cols @ w).to(torch.int64)  # exact: every partial sum is an integer below the dtype's 2^24 / 2^53
        sh = _requant_shift(layer, frac - r)
        if bias_max.bit_length() + sh <= 61:  # fold bias and rounding into one add: (a + b 2^sh + h) >> sh
            acc.mul_(mult).add_((bias << sh) + (1 << (sh - 1))).bitwise_right_shift_(sh)
        else:
            acc.mul_(mult).add_(1 << (sh - 1)).bitwise_right_shift_(sh).add_(bias)
        return acc if out_hw is None else acc.reshape(*out_hw, -1)

    @staticmethod
    def relu(x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min_(0)

    @staticmethod
    def pixel_shuffle(x: torch.Tensor, r: int = 2) -> torch.Tensor:
        h, w, c = x.shape
        return x.reshape(h, w, c // (r * r), r, r).permute(0, 3, 1, 4, 2).reshape(h * r, w * r, c // (r * r))

    @staticmethod
    def cat(xs) -> torch.Tensor:
        return torch.cat(xs, -1)

    @staticmethod
    def cast_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.to(like.dtype)

    @staticmethod
    def round_shift(x: torch.Tensor, r: int) -> torch.Tensor:
        return _shift_round(x, r).to(torch.int32)

    def bucketize(self, x: torch.Tensor) -> torch.Tensor:
        return self._bucketize(x)

    def scatter(self, values: torch.Tensor, sel: Selection, shape) -> torch.Tensor:
        """(N, k) values at the selection -> (M, H, W), zeros elsewhere."""
        d = self._sel(sel)
        out = torch.zeros(shape[0], shape[1] * shape[2], dtype=values.dtype, device=self.device)
        c0, k = int(sel.channels[0]), sel.channels.size
        if np.array_equal(sel.channels, np.arange(c0, c0 + k)):  # a channel range (every schedule here)
            out[c0:c0 + k].index_copy_(1, d["positions"], values.t())
        else:
            out[d["rows"][:k, None], d["positions"][None, :]] = values.t()
        return out.reshape(shape)

    @staticmethod
    def warp(y: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
        """y (H, W, C) frac 8, mv (H, W, 2) -> (H, W, C) frac WARP_FRAC (see NumpyOps.warp)."""
        h, w, c = y.shape
        one = 1 << MV_FRAC
        if _max_abs(y, False) < 1 << 18 and _max_abs(mv, False) < 1 << 16:
            y, mv = y.to(torch.int32), mv.to(torch.int32)  # every sum below 2^31: half the memory traffic
        px = (torch.arange(w, device=y.device) * one)[None, :] + mv[..., 0]
        py = (torch.arange(h, device=y.device) * one)[:, None] + mv[..., 1]
        px, py = px.clamp(0, one * (w - 1)), py.clamp(0, one * (h - 1))
        x0, y0, fx, fy = px >> MV_FRAC, py >> MV_FRAC, px & (one - 1), py & (one - 1)
        x1, y1 = (x0 + 1).clamp_max(w - 1), (y0 + 1).clamp_max(h - 1)
        flat = y.reshape(h * w, c)
        out = None
        for yy, xx, wgt in ((y0, x0, (one - fx) * (one - fy)), (y0, x1, fx * (one - fy)),
                            (y1, x0, (one - fx) * fy), (y1, x1, fx * fy)):
            term = flat.index_select(0, (yy * w + xx).reshape(-1)).mul_(wgt.reshape(-1, 1).to(flat.dtype))
            out = term if out is None else out.add_(term)
        return out.reshape(h, w, c)


# ---------------------------------------------------------------- the public twin


class BaseParameters:
    """What `IntegerEntropyParameters.base` returns: the base parameters in the implementation's own
    layout; `.fixed` is the (1, 2M, H, W) int64 tensor, frac 16 (means, then scales)."""

    def __init__(self, data, ops):
        self.data, self._ops = data, ops

    @property
    def fixed(self) -> torch.Tensor:
        return self._ops.to_chw(self.data)[None]


class IntegerEntropyParameters:
    """The integer twin of one `MultiStepLatentCodec` (see the module docstring for units)."""

    def __init__(self, plan: IntegerPlan, device: torch.device | str = "cpu", implementation: str = "torch"):
        if implementation not in ("torch", "numpy"):
            raise ValueError("implementation: 'torch' or 'numpy'")
        self.plan = plan
        self.implementation = implementation
        self.device = torch.device(device)
        self._ops = TorchOps(plan, self.device) if implementation == "torch" else NumpyOps(plan)

    @classmethod
    def from_codec(cls, codec: MultiStepLatentCodec, config: QuantConfig | None = None,
                   device: torch.device | str = "cpu", implementation: str = "torch") -> "IntegerEntropyParameters":
        return cls(IntegerPlan.from_codec(codec, config), device, implementation)

    def to(self, device: torch.device | str) -> "IntegerEntropyParameters":
        return IntegerEntropyParameters(self.plan, device, self.implementation)

    def numpy(self) -> "IntegerEntropyParameters":
        """The same twin evaluated by the numpy int64 implementation (slow; a cross-check)."""
        return IntegerEntropyParameters(self.plan, "cpu", "numpy")

    @property
    def steps(self) -> int:
        return self.plan.steps

    def _fixed(self, x: torch.Tensor, frac: int):
        """round(x * 2^frac) of one frame (1, C, H, W) float -> the implementation's int64 layout.
        Exact: scaling by a power of two and rounding to an integer are exact in float32."""
        return self._ops.from_chw(torch.round(x[0].to(self.device, torch.float32) * float(1 << frac)))

    @torch.no_grad()
    def base(self, z_hat: torch.Tensor, prior: tuple[torch.Tensor, torch.Tensor] | None = None) -> BaseParameters:
        """Base parameters (step 0) of a frame. `z_hat` (1, Z, h, w) as the z codec decodes it; `prior`
        (P-frames): (y_ref_hat (1, M, H, W), mv (1, 2, H, W) int quarter-pel), y_ref *not* warped."""
        if z_hat.size(0) != 1:
            raise ValueError("one frame at a time")
        p = None
        if self.plan.temporal is not None:
            if prior is None:
                raise ValueError("a P-frame latent needs the reference latent and the motion")
            y_ref, mv = prior
            p = (self._fixed(y_ref, MEAN_FRAC), self._ops.from_chw(mv[0]))
        return BaseParameters(_base(self._ops, self.plan, self._fixed(z_hat, Z_FRAC), p), self._ops)

    @torch.no_grad()
    def step(self, s: int, base: BaseParameters, y_known: torch.Tensor | None,
             steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(means_fixed int32 in 1/256, scale_index int32), each (1, M, H, W), at the symbols of
        step s (0 elsewhere). `y_known` (1, M, H, W): y_hat of the steps before s, zeros elsewhere
        (unused at s = 0). `steps`: the schedule, the codec's (default) or 1 (step 0 = everything)."""
        y = self._fixed(y_known, MEAN_FRAC) if s else None
        means, index = _step(self._ops, self.plan, s, base.data, y, steps or self.plan.steps)
        return means.to(self.device)[None], index.to(self.device)[None]


# ---------------------------------------------------------------- the codec's switch


class IntegerLatentCodec:
    """A `MultiStepLatentCodec` whose entropy parameters are the integer twin's: the same
    `compress` / `decompress` calls (streams laid out alike), except that a P-frame's `prior` is
    (previous y_hat, mv) *unwarped* (`warps_prior`: the twin warps it in integers). Anything else
    (tables, `steps`, the nets) is the float codec's."""

    warps_prior = True

    def __init__(self, codec: MultiStepLatentCodec, twin: IntegerEntropyParameters):
        self.codec, self.twin = codec, twin

    def __getattr__(self, name):
        return getattr(self.__dict__["codec"], name)

    def coding_base(self, z_hat: torch.Tensor, prior: tuple | None):
        return self.twin.base(z_hat, prior)

    def coding_parameters(self, s: int, steps: int, base, y_hat: torch.Tensor,
                          positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        means_fixed, indexes = self.twin.step(s, base, y_hat, steps)
        pos = positions.to(means_fixed.device)
        means = gather(means_fixed, pos).float() / float(1 << MEAN_FRAC)
        return means.to(y_hat.device), gather(indexes, pos).to(y_hat.device)

    # The float codec's coding loops, with the parameters above (`self` stands in for the codec).
    compress = MultiStepLatentCodec.compress
    decompress = MultiStepLatentCodec.decompress


def with_integer_parameters(model, preset: str = "default"):
    """A copy of a v2 model (`LeanVideoModel`, or a copy from `nvc.deploy.int8.with_synthesis`) whose
    I- and P-frame models code their latents with integer entropy parameters (`PRESETS[preset]`,
    built from the model's weights); weights are shared and `model` is unchanged. Encoder and
    decoder must both use it: the symbols differ from those of the float parameters."""
    import copy

    def integer(kind, frame_model):
        twin = copy.copy(frame_model)
        codec = frame_model.latent_codec
        object.__setattr__(twin, "latent_codec", IntegerLatentCodec(
            codec, IntegerEntropyParameters.from_codec(codec, PRESETS[preset])))
        return twin

    return with_frame_models(model, integer)
