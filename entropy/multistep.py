"""Multi-step (masked-token) latent codec: a hyperprior, an optional temporal prior, and S decoding
steps, each conditioned on the symbols of the steps before it and parallel within itself.

The schedule follows DCVC-RT (Jia et al., CVPR 2025), which decodes I-frame latents in 4 steps
(channel halves x the two phases of a checkerboard) and P-frame latents in 2 (checkerboard), and the
checkerboard context of He et al. ("Checkerboard Context Model for Efficient Learned Image
Compression", CVPR 2021)::

    z_hat -h_s-> hyper features ─┐
    (P) y_hat_{t-1} warped by mv ┴─base─> params_0 ──────────────► step 0 symbols
                                        params_0 + ctx_1(y_hat known so far) ─► step 1 symbols ...

Symbols whose predicted scale falls in the skip class (table index 0, scale <= 0.12) are not coded:
both sides set them to their mean. Everything that decides the symbols comes from latents, the
hyper-latent and the decoded motion, never from pixels, so entropy decoding of frame t+1 can run
while frame t is synthesised. With `steps=1` every symbol uses params_0: the same model without the
multi-step context (what the BD-rate gain of the context is measured against).

Each step's symbols are coded as up to K substreams (`LeanConfig.substreams`, channel groups) that
a decoder may decode in parallel; a step whose K substreams would total under SPLIT_MIN_BYTES is
coded as one instead (an encoder choice the packet's stream list shows): every rANS substream ends
with its state (8 bytes once it has emitted a word; whole 32-bit words) and a packet names each
substream, which at the lowest rates of small frames is a tenth of the bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.ops import quantize_ste
from torch import nn

from nvc.entropy import bottleneck, coder
from nvc.entropy.hyperprior import single_threaded
from nvc.errors import NvcError
from nvc.models.lean import HyperAnalysis, HyperSynthesis, LeanConfig, act, conv1, conv3


SPLIT_MIN_BYTES = 4096


Rounding = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""How the encoder turns latent residuals into symbols: (residuals y - mean, table indexes, flat
positions in the latent) -> integer-valued symbols. An encoder choice: the decoder reads symbols."""


def nearest(r: torch.Tensor, indexes: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return torch.round(r)


def symbol_bits(v: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """-log2 of the probability of integer symbols `v` under zero-mean Gaussians of `scales`
    integrated over [v - 1/2, v + 1/2] (the coder's tables quantize these; close enough to compare)."""
    a = torch.erfc((v - 0.5).abs() / (scales * math.sqrt(2)))
    b = torch.erfc((v + 0.5).abs() / (scales * math.sqrt(2)))
    p = torch.where(v == 0, 1 - b, (a - b).abs() / 2)
    return -torch.log2(p.clamp_min(1e-12))


@dataclass(frozen=True)
class RdoRounding:
    """Rate-distortion optimised rounding (RDOQ, as HEVC encoders decide their levels: Karczewicz et
    al., "Rate distortion optimized quantization", VCEG-AH21, 2008): each coded symbol is rounded to
    the nearest integer or one step towards the mean, whichever costs less of
    `weights[c]` * (v - r)^2 + bits(v), with bits from the symbol's Gaussian (its table scale) and
    `weights[c]` the loss of a unit latent error in channel c (lambda * 255^2 times the synthesis's
    energy per unit step, `nvc.lean_model`). Greedy: a choice's effect on later steps' parameters
    is not counted."""

    weights: torch.Tensor  # (C,)
    scale_table: torch.Tensor  # the coder's scales by table index
    plane: int  # H * W of the latent: a flat position's channel is position // plane

    def __call__(self, r: torch.Tensor, indexes: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        near = torch.round(r)
        toward = near - torch.sign(near)
        scales = self.scale_table.to(r)[indexes.long()]
        w = self.weights.to(r)[torch.div(positions, self.plane, rounding_mode="floor")]
        added = w * ((toward - r) ** 2 - (near - r) ** 2)
        saved = symbol_bits(near, scales) - symbol_bits(toward, scales)
        return torch.where(saved > added, toward, near)


def step_masks(steps: int, channels: int, height: int, width: int, device=None) -> torch.Tensor:
    """(S, C, H, W) bool: which symbols each step decodes. 1: all; 2: checkerboard; 4: channel
    halves x checkerboard."""
    yy, xx = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    phase = ((yy + xx) % 2 == 0)[None].expand(channels, height, width)
    everything = torch.ones(channels, height, width, dtype=torch.bool, device=device)
    if steps == 1:
        return everything[None]
    if steps == 2:
        return torch.stack([phase, ~phase])
    if steps == 4:
        first = torch.zeros(channels, 1, 1, dtype=torch.bool, device=device)
        first[: channels // 2] = True
        return torch.stack([first & phase, first & ~phase, ~first & phase, ~first & ~phase])
    raise ValueError(f"unsupported number of steps: {steps} (1, 2 or 4)")


def gather(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x.reshape(-1)[positions] (index_select: ~2x faster than indexing)."""
    return torch.index_select(x.reshape(-1), 0, positions)


@dataclass(frozen=True)
class StepPlan:
    """One decoding step as flat positions of the latent: `positions` (int64, C order) and, per
    substream, the span [a, b) of `positions` it codes."""

    positions: torch.Tensor
    spans: list[tuple[int, int]]


@dataclass(frozen=True)
class LatentForward:
    y_hat: torch.Tensor
    y_likelihoods: torch.Tensor
    z_likelihoods: torch.Tensor


class ContextStep(nn.Module):
    """params_s = params_0 + f(y_hat of earlier steps, params_0): one 3x3 conv over the known
    symbols (the checkerboard neighbourhood), one 1x1 over the base parameters."""

    def __init__(self, m: int, hidden: int):
        super().__init__()
        self.known = conv3(m, hidden)
        self.base = conv1(2 * m, hidden)
        self.out = conv1(hidden, 2 * m)
        self.act = act()
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, y_known: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        return base + self.out(self.act(self.known(y_known) + self.base(base)))


class TemporalPrior(nn.Module):
    """Features of the previous latent moved by the motion field (DCVC-DC's latent prior, aligned)."""

    def __init__(self, m: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(conv3(m + 2, hidden), act(), conv1(hidden, hidden), act())

    def forward(self, y_ref_warped: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([y_ref_warped, mv.float() / 64.0], dim=1))


class MultiStepLatentCodec(nn.Module):
    def __init__(self, cfg: LeanConfig, steps: int, temporal: bool):
        super().__init__()
        m, f = cfg.latent_channels, cfg.hyper_features
        self.steps = steps
        self.substreams = cfg.substreams
        self.h_a = HyperAnalysis(cfg)
        self.h_s = HyperSynthesis(cfg)
        self.temporal = TemporalPrior(m, f) if temporal else None
        self.base = nn.Sequential(conv1(f * (2 if temporal else 1), f), act(), conv1(f, 2 * m))
        self.context = nn.ModuleList(ContextStep(m, cfg.context_channels) for _ in range(steps - 1))
        self.z_codec = EntropyBottleneck(cfg.hyper_channels)
        self.y_codec = GaussianConditional(None)
        self._tables, self._z_tables = coder.TableCache(), coder.TableCache()
        self._plans: dict[tuple, list[StepPlan]] = {}

    @property
    def tables(self) -> coder.CdfTables:
        return self._tables.of(self.y_codec)

    # ---------------------------------------------------------------- parameters

    def base_parameters(self, z_hat: torch.Tensor, prior: tuple | None) -> torch.Tensor:
        feats = self.h_s(z_hat)
        if self.temporal is not None:
            if prior is None:
                raise ValueError("a P-frame latent needs the reference latent and the motion")
            feats = torch.cat([feats, self.temporal(*prior)], dim=1)
        return self.base(feats)

    def step_parameters(self, s: int, base: torch.Tensor, y_known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = base if s == 0 else self.context[s - 1](y_known, base)
        means, scales = params.chunk(2, dim=1)
        return means, scales

    # ---------------------------------------------------------------- training

    def forward(self, y: torch.Tensor, prior: tuple | None = None, z_hat: torch.Tensor | None = None) -> LatentForward:
        """Training pass. `z_hat`: a hyper-latent to code y with instead of its own (a repeated one, as
        `compress(hyper=(b"", z_hat))` codes it): it costs no bits."""
        if torch.is_autocast_enabled(y.device.type):  # the rate terms stay in fp32 under mixed precision
            with torch.autocast(y.device.type, enabled=False):
                return self.forward(y.float(), None if prior is None else tuple(p.float() for p in prior), z_hat)
        if z_hat is None:
            z_hat, z_likelihoods = self.z_codec(self.h_a(y))
        else:
            z_likelihoods = torch.ones(1, device=y.device)
        base = self.base_parameters(z_hat, prior)
        masks = step_masks(self.steps, y.size(1), y.size(2), y.size(3), y.device)
        y_hat = torch.zeros_like(y)
        means_all, scales_all = torch.zeros_like(y), torch.zeros_like(y)
        for s in range(self.steps):
            means, scales = self.step_parameters(s, base, y_hat)
            mask = masks[s][None]
            means_all = torch.where(mask, means, means_all)
            scales_all = torch.where(mask, scales, scales_all)
            # rounding with a straight-through gradient, around the step's mean (Minnen & Singh 2020)
            y_hat = torch.where(mask, quantize_ste(y - means) + means, y_hat)
        _, y_likelihoods = self.y_codec(y, scales_all, means=means_all)
        return LatentForward(y_hat, y_likelihoods, z_likelihoods)

    def aux_loss(self) -> torch.Tensor:
        return self.z_codec.loss()

    def update(self) -> None:
        """Build the integer CDF tables that coding uses (after training or loading floats)."""
        self.z_codec.update(force=True)
        self.y_codec.update_scale_table(coder.scale_table(), force=True)

    # ---------------------------------------------------------------- coding

    def _plan(self, steps: int, c: int, h: int, w: int, parts: int | None = None) -> list["StepPlan"]:
        """The schedule as flat positions (cached per shape): for each step, the positions it decodes
        in C order (channel-major, as `tensor[mask]` orders them) and the span of each of its
        `parts` substreams (default K): its channels split into contiguous groups (`torch.chunk`)."""
        key = (steps, c, h, w, parts or self.substreams)
        if key not in self._plans:
            plans = []
            for mask in step_masks(steps, c, h, w):
                channels = torch.nonzero(mask.flatten(1).any(1)).flatten()
                positions = torch.nonzero(mask.flatten()).flatten()
                per_channel = mask.flatten(1).sum(1)
                ends = [int(per_channel[: int(g[-1]) + 1].sum()) for g in channels.chunk(key[-1])]
                spans = list(zip([0] + ends[:-1], ends))
                plans.append(StepPlan(positions, spans))
            self._plans[key] = plans
        return self._plans[key]

    def coding_base(self, z_hat: torch.Tensor, prior: tuple | None) -> torch.Tensor:
        """`base_parameters` as coding computes them: on one thread, so that both sides agree."""
        with single_threaded():
            return self.base_parameters(z_hat, prior)

    def coding_parameters(self, s: int, steps: int, base: torch.Tensor, y_hat: torch.Tensor,
                          positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (float) and table indexes (int32) of the symbols at `positions` (flat) that step s
        of a `steps`-step schedule codes, given the symbols decoded so far (`y_hat`)."""
        with single_threaded():
            means, scales = self.step_parameters(s if steps == self.steps else 0, base, y_hat)
        return gather(means, positions), coder.scale_indexes(gather(scales, positions), self.y_codec.scale_table)

    def encode_hyper(self, y: torch.Tensor) -> tuple[bytes, torch.Tensor]:
        """The hyper stream of a latent and the z_hat the decoder rebuilds from it."""
        return bottleneck.encode(self.z_codec, self.h_a(y), self._z_tables)

    def decode_hyper(self, z_stream: bytes, latent_shape: tuple[int, int, int],
                     repeat: torch.Tensor | None = None) -> torch.Tensor:
        """z_hat of a hyper stream. An empty stream repeats `repeat`: the z_hat of the reference
        P-frame, which a P-frame of still content may reuse instead of sending its own."""
        if not z_stream:
            if repeat is None:
                raise NvcError("malformed packet: an empty hyper stream with no hyper-latent to repeat")
            return repeat
        _, h, w = latent_shape
        return bottleneck.decode(self.z_codec, z_stream, (1, self.z_codec.channels, h // 4, w // 4), self._z_tables)

    @torch.no_grad()
    def compress(self, y: torch.Tensor, prior: tuple | None = None, steps: int | None = None,
                 stats: dict | None = None, rounding: Rounding = nearest,
                 hyper: tuple[bytes, torch.Tensor] | None = None) -> tuple[bytes, list[list[bytes]], torch.Tensor]:
        """Code one latent (batch 1). Returns the hyper stream, the substreams of every step, and
        y_hat exactly as the decoder rebuilds it. `steps` overrides the schedule (1: no context);
        `stats`, when given, receives the numbers of symbols and of coded (not skipped) symbols;
        `rounding`: how residuals become symbols (an encoder choice the decoder need not know);
        `hyper`: (stream, z_hat) to code with, default `encode_hyper(y)` ((b"", z_ref): a repeat)."""
        if y.size(0) != 1:
            raise ValueError("compress codes one frame at a time")
        z_stream, z_hat = hyper if hyper is not None else self.encode_hyper(y)
        tables = self.tables
        steps = steps or self.steps
        y_hat = torch.zeros_like(y)
        out = []
        base = self.coding_base(z_hat, prior)
        for s, plan in enumerate(self._plan(steps, *y.shape[1:])):
            pos = plan.positions.to(y.device)
            means, indexes = self.coding_parameters(s, steps, base, y_hat, pos)
            symbols = rounding(gather(y, pos) - means, indexes, pos)
            coded = indexes > 0
            y_hat.view(-1).index_copy_(0, pos, torch.where(coded, symbols + means, means))
            if stats is not None:
                stats["symbols"] = stats.get("symbols", 0) + pos.numel()
                stats["coded"] = stats.get("coded", 0) + int(coded.sum())
            symbols, indexes, coded = symbols.int().cpu().numpy(), indexes.cpu().numpy(), coded.cpu().numpy()
            parts = [coder.encode(symbols[a:b][coded[a:b]], indexes[a:b][coded[a:b]], tables) for a, b in plan.spans]
            if len(parts) > 1 and sum(map(len, parts)) < SPLIT_MIN_BYTES:  # one substream: no flush per part
                parts = [coder.encode(symbols[coded], indexes[coded], tables)]
            out.append(parts)
        return z_stream, out, y_hat

    @torch.no_grad()
    def decompress(self, z_stream: bytes, y_streams: list[list[bytes]], latent_shape: tuple[int, int, int],
                   prior: tuple | None = None, z_hat: torch.Tensor | None = None) -> torch.Tensor:
        """Rebuild y_hat (1, C, H, W) from the streams; `len(y_streams)` is the number of steps;
        `z_hat`: the hyper-latent when the caller decoded it (`decode_hyper`), else from `z_stream`."""
        c, h, w = latent_shape
        steps = len(y_streams)
        if steps not in (1, self.steps) or any(not 1 <= len(s) <= self.substreams for s in y_streams):
            raise ValueError(f"expected {self.steps} steps of 1 to {self.substreams} substreams")
        if z_hat is None:
            z_hat = self.decode_hyper(z_stream, latent_shape)
        tables = self.tables
        y_hat = torch.zeros(1, c, h, w, device=z_hat.device)
        base = self.coding_base(z_hat, prior)
        for s in range(steps):
            plan = self._plan(steps, c, h, w, len(y_streams[s]))[s]
            if len(plan.spans) != len(y_streams[s]):  # fewer channels in the step than substreams
                raise ValueError(f"expected {len(plan.spans)} substreams in step {s}")
            pos = plan.positions.to(y_hat.device)
            means, indexes = self.coding_parameters(s, steps, base, y_hat, pos)
            indexes = indexes.cpu().numpy()
            symbols = np.zeros(pos.numel(), np.float32)
            for (a, b), data in zip(plan.spans, y_streams[s]):
                part = indexes[a:b]
                coded = part > 0
                symbols[a:b][coded] = coder.decode(data, part[coded], tables)
            y_hat.view(-1).index_copy_(0, pos, torch.from_numpy(symbols).to(means) + means)
        return y_hat
