"""The v2 frame models ("lean-mc", model id 3): lean int8-friendly transforms (`nvc.models.lean`),
block motion (`nvc.models.motion`, `nvc.entropy.motion`) and the multi-step latent codec
(`nvc.entropy.multistep`).

Both frame models answer the one frame-codec contract of `nvc.model` (`compress(x, ref, quality)`,
`decode_latent(streams, ref, height, width)`, `synthesize(latent, ref, quality)`,
`decompress(...)`); the I-frame model ignores `ref`. `decode_latent` reads only `ref.y_hat`.

Synthesis runs on one CPU thread, in the encoder and the decoder alike: float results depend on
how a reduction is split over threads, and one thread is what the real-time decoder gives it
anyway (the other core decodes symbols), so decoded pixels do not depend on the caller's thread
count. Across machines they may still differ by an 8-bit step. These modules are the reference;
the deployed variants are copies that share the weights (`nvc.codec.deployed_model`): synthesis
in an int8 engine (`nvc.deploy.int8.with_synthesis`) and integer entropy parameters
(`nvc.deploy.integer.with_integer_parameters`), both named in the stream header.

    I:  x -g_a-> y -[hyper + 4-step context]-> y_hat -g_s-> x_hat
    P:  mv = block matching(x, x_ref)  ->  pred = warp(x_ref, mv)
        x, pred -g_a-> y -[hyper + warped y_ref prior + 2-step context]-> y_hat -g_s(pred)-> x_hat
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from nvc.container import Stream, StreamKind
from nvc.entropy.hyperprior import single_threaded
from nvc.entropy.motion import MotionCoder
from nvc.entropy.multistep import MultiStepLatentCodec, RdoRounding
from nvc.errors import NvcError
from nvc.model import DecodedLatent, ModelOutput, Reconstruction, to_8bit, yuv_mse
from nvc.models.lean import Analysis, LeanConfig, QualityGain, Synthesis
from nvc.models.motion import MotionCompensation, estimate_motion, warp_latent

# An encoder choice (the stream is the same): one vector per 32x32 block (repeated on the 16x16 grid,
# so 3 in 4 are coded as merges and the coder codes the field on the 32x32 grid), at every level.
# `tools.bench_motion --block 32` on three held-out clips: -42..-47 % motion bytes for a prediction
# PSNR-Y -0.4 (cyclist), +0.3 (driving), -1.0 dB (butterfly); first chosen at q0 and q1 only. Coded,
# the 32x32 field wins at every level: the summed cost (`coding_cost`) of the P-frames at levels 2-7
# coded with fields of both sizes (four training clips, 16 frames, q0 2 4 6), 32x32 against 16x16
# under MOTION_LAMBDAS: 16_robotarm -0.85, 21_biker -6.14, 11_polevault -2.78, 02_cups +0.22 %;
# BD-rate, 32x32 at every level against 16x16 from q2: -2.25, -12.21, -6.13, +0.44 %.
MOTION_SEARCH_BLOCK = 32
# An encoder choice (the stream is the same): rate-distortion optimised rounding of the latent residuals
# (`nvc.entropy.multistep.RdoRounding`), each channel's distortion weighted this many times the loss of a
# unit latent step through the synthesis (`unit_energy`; I, P): the measured energy undercounts what a
# step costs (the nonlinear synthesis, the context a symbol feeds). It replaced dead-zone rounding (0.05 /
# 0.10, HEVC's HM rounds with offsets 1/3 and 1/6). Chosen on two training clips (16 frames, q0 2 4 6),
# BD-rate against the dead zones, 02_cups / 21_biker: I-frames alone x4 -0.83 / -0.47 %; with P x2 +1.03 /
# +4.33, x4 -1.56 / -0.47, x8 -1.69 / -1.48 %; x16 against x8 on 02_cups +0.93 % (`tools.rd_check --rdo-weight`).
RDO_WEIGHT = (4.0, 8.0)
# An encoder choice (the stream is the same): the block matching's rate weight (SAD + lambda * bits,
# `nvc.models.motion.estimate_motion`). One weight for every clip helps some and hurts others (BD-rate of
# 48 against 128 on training clips, 16 frames: 21_biker -2.82, 11_polevault -3.34, 16_robotarm +8.90 %),
# so a P-frame is searched with each of these weights, coded with each distinct field, and the
# coding of lowest cost (`coding_cost`, `DECISION_WEIGHT`) is kept, as an HEVC encoder tries its modes. Chosen on
# four training clips (16 frames, q0 2 4 6; every P-frame coded with 128, 40, 16 and 400): summed
# cost against 128 alone, mean over the clips, (128, 40) -1.09 %, (400, 40) -1.45 %, (400, 40, 16)
# -1.81 % for a third coding. BD-rate of (400, 40) against 128 (16x16 search from q2 then): 21_biker -3.20, 16_robotarm -4.17,
# 11_polevault -3.78, 02_cups -1.47 %; P-frames take two codings to encode.
MOTION_LAMBDAS = (400.0, 40.0)
# An encoder choice (format 4 decodes either): a P-frame whose reference is a P-frame is also coded with
# the reference's hyper-latent (an empty hyper stream) and keeps that coding where its cost
# (`DECISION_WEIGHT`) is lower. False: never (`tools.rd_check --repeat-ablation`).
REPEAT_HYPER = True
# An encoder choice (the stream is the same): a P-frame's choices between its codings (the motion fields,
# the repeated hyper-latent) weigh its distortion this many times its level's lambda, since its errors
# carry into the frames that predict from it (as `RDO_WEIGHT` does for rounding). BD-rate against 1 on the
# centre 640x352 of six training clips, 32 frames, levels 0 2 4 6 (`tools.rd_check --decision-weight W`):
# 2: 02_cups -1.10, 16_robotarm -0.22, 21_biker -0.63, 11_polevault -1.78, intel-one-by-one-person-detection
# -0.60, 04_coffee +0.01 % (mean -0.72); 3: -0.95, -0.40, -0.58, -1.71, -0.47, 0.00 (-0.69); 8 on the first
# four: -0.63, -0.23, -0.13, -0.88 %.
DECISION_WEIGHT = 2.0


def luma(x: torch.Tensor) -> torch.Tensor:
    """Packed YUV420 (B, 6, H/2, W/2) -> luma plane (B, 1, H, W)."""
    return F.pixel_shuffle(x[:, :4], 2)


def coding_cost(x_hat: torch.Tensor, x: torch.Tensor, bits: int, lmbda: float) -> float:
    """The training loss of one coded frame (bpp + lambda * 255^2 * `yuv_mse`) times its luma pixels: bits."""
    luma_pixels = 4 * x.shape[-2] * x.shape[-1]
    return float(lmbda * 255**2 * yuv_mse(x_hat.double(), x.double()).item()) * luma_pixels + bits


def latent_streams(z: bytes, steps: list[list[bytes]]) -> list[Stream]:
    return [Stream(StreamKind.HYPER, 0, 0, z)] + [Stream(StreamKind.LATENT, s, k, data)
                                                 for s, parts in enumerate(steps) for k, data in enumerate(parts)]


def split_streams(streams: list[Stream]) -> tuple[bytes, list[list[bytes]], bytes | None]:
    """(hyper stream, latent substreams by step, motion stream or None) of a packet."""
    z = [s.data for s in streams if s.kind == StreamKind.HYPER]
    motion = [s.data for s in streams if s.kind == StreamKind.MOTION]
    latent = [s for s in streams if s.kind == StreamKind.LATENT]
    if len(z) != 1 or len(motion) > 1:
        raise NvcError("malformed packet: wrong number of hyper or motion streams")
    steps = 1 + max((s.step for s in latent), default=-1)
    parts: list[list[bytes]] = [[] for _ in range(steps)]
    for s in sorted(latent, key=lambda s: (s.step, s.part)):
        if s.part != len(parts[s.step]):
            raise NvcError("malformed packet: latent substreams out of order")
        parts[s.step].append(s.data)
    return z[0], parts, motion[0] if motion else None


class _LeanFrameModel(nn.Module):
    def __init__(self, cfg: LeanConfig, in_channels: int, conditional: bool, steps: int):
        super().__init__()
        self.config = cfg
        self.g_a = Analysis(cfg, in_channels)
        self.g_s = Synthesis(cfg, conditional)
        self.gain = QualityGain(cfg.quality_levels, cfg.latent_channels)
        self.latent_codec = MultiStepLatentCodec(cfg, steps, temporal=conditional)

    def _latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return self.config.latent_channels, height // 16, width // 16

    def _device(self) -> torch.device:
        return self.gain.enc_gain.device

    @torch.no_grad()
    def unit_energy(self, quality: int) -> torch.Tensor:
        """(M,): the loss units (`yuv_mse` x luma pixels) a step of +1 in one latent symbol of each channel
        adds to the synthesis's output at this level, from an impulse at the centre of a 6x6 zero latent
        (and, for P-frames, a mid-grey prediction). Nearly content-independent (within 0.1 % between
        two training frames' latents; within 0.2 % of -1 steps on a 12x12 latent); cached per level."""
        cache = self.__dict__.setdefault("_unit_energy", {})
        if quality not in cache:
            m, n = self.config.latent_channels, 6
            q = torch.tensor([quality], device=self._device())
            impulses = torch.zeros(m + 1, m, n, n, device=q.device)  # the last: no impulse
            channels = torch.arange(m, device=q.device)
            impulses[channels, channels, n // 2, n // 2] = 1.0
            pred = torch.full((m + 1, 6, 8 * n, 8 * n), 0.5, device=q.device) if self.g_s.conditional else None
            with single_threaded():
                out = self.g_s(self.gain.unscale(impulses, q), pred)
            cache[quality] = yuv_mse(out[:-1], out[-1:]) * 4 * out.shape[-2] * out.shape[-1]
        return cache[quality]

    def rounding(self, quality: int, latent_shape: tuple[int, ...]) -> RdoRounding:
        """The encoder's rounding of this frame type's latent at `quality` (`RDO_WEIGHT`)."""
        weight = RDO_WEIGHT[1 if self.g_s.conditional else 0] * self.config.lambdas[quality] * 255**2
        return RdoRounding(weight * self.unit_energy(quality), self.latent_codec.y_codec.scale_table,
                           latent_shape[-2] * latent_shape[-1])


class LeanIntra(_LeanFrameModel):
    def __init__(self, cfg: LeanConfig):
        super().__init__(cfg, 6, False, cfg.intra_steps)

    def entropy_parameter_modules(self) -> list[nn.Module]:
        lc = self.latent_codec
        return [lc.h_s, lc.base, lc.context]

    def synthesis_modules(self) -> list[nn.Module]:
        return [self.g_s]

    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> ModelOutput:
        y = self.gain.scale(self.g_a(x), quality)
        out = self.latent_codec(y)
        x_hat = self.g_s(self.gain.unscale(out.y_hat, quality))
        return ModelOutput(x_hat, out.y_hat, out.y_likelihoods, out.z_likelihoods)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, ref: Reconstruction | None, quality: int, steps: int | None = None,
                 stats: dict | None = None) -> tuple[list[Stream], Reconstruction]:
        """`steps` overrides the decoding schedule (1: no context); `stats` receives symbol counts."""
        q = torch.tensor([quality], device=x.device)
        y = self.gain.scale(self.g_a(x), q)
        z, parts, y_hat = self.latent_codec.compress(y, steps=steps, stats=stats, rounding=self.rounding(quality, y.shape))
        return latent_streams(z, parts), replace(self.synthesize(DecodedLatent(y_hat), ref, quality), source=x)

    @torch.no_grad()
    def decode_latent(self, streams: list[Stream], ref: Reconstruction | None, height: int, width: int) -> DecodedLatent:
        z, parts, motion = split_streams(streams)
        if motion is not None:
            raise NvcError("malformed packet: an I-frame with a motion stream")
        y_hat = self.latent_codec.decompress(z, parts, self._latent_shape(height, width))
        return DecodedLatent(y_hat.to(self._device()))

    @torch.no_grad()
    def synthesize(self, latent: DecodedLatent, ref: Reconstruction | None, quality: int) -> Reconstruction:
        q = torch.tensor([quality], device=latent.y_hat.device)
        with single_threaded():  # the same pixels whatever the caller's thread count (see module docstring)
            x_hat = to_8bit(self.g_s(self.gain.unscale(latent.y_hat, q)))
        return Reconstruction(x_hat, latent.y_hat)

    def decompress(self, streams, ref, height: int, width: int, quality: int) -> Reconstruction:
        return self.synthesize(self.decode_latent(streams, ref, height, width), ref, quality)


class LeanInter(_LeanFrameModel):
    def __init__(self, cfg: LeanConfig):
        super().__init__(cfg, 12, True, cfg.inter_steps)
        self.motion_compensation = MotionCompensation()
        self.motion_coder = MotionCoder()

    def entropy_parameter_modules(self) -> list[nn.Module]:
        lc = self.latent_codec
        return [lc.h_s, lc.temporal, lc.base, lc.context]

    def _prior(self, y_ref: torch.Tensor, mv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent codec's temporal prior: the previous latent warped by the motion, or unwarped
        for a codec that warps it itself (`nvc.deploy.integer.IntegerLatentCodec`, in integers)."""
        if getattr(self.latent_codec, "warps_prior", False):
            return y_ref, mv
        return warp_latent(y_ref, mv), mv

    @torch.no_grad()
    def init_from(self, intra: LeanIntra) -> None:
        """Become a copy of the I-frame model that ignores the prediction: its weights where the
        shapes match, zeros on the prediction and temporal inputs, and an output layer that
        subtracts the prediction it is added to. Training then learns to use the prediction."""

        def copy_into(dst: nn.Conv2d, src: nn.Conv2d) -> None:
            dst.weight.zero_()
            dst.weight[:, : src.in_channels] = src.weight
            dst.bias.copy_(src.bias)

        for dst, src in zip(self.g_a.net, intra.g_a.net):
            if isinstance(dst, nn.Conv2d):
                copy_into(dst, src)
        g, gi = self.g_s, intra.g_s
        g.up16.load_state_dict(gi.up16.state_dict())
        g.up8.load_state_dict(gi.up8.state_dict())
        g.up4.load_state_dict(gi.up4.state_dict())
        copy_into(g.mix4[0], gi.mix4[0])
        copy_into(g.out, gi.out)
        for c in range(6):  # x_hat = pred + out(...): start with out = intra output - pred
            g.out.weight[c, gi.out.in_channels + c, 1, 1] = -1.0
        self.gain.load_state_dict(intra.gain.state_dict())
        lc, lci = self.latent_codec, intra.latent_codec
        for name in ("h_a", "h_s", "z_codec"):
            getattr(lc, name).load_state_dict(getattr(lci, name).state_dict())
        copy_into(lc.base[0], lci.base[0])
        lc.base[2].load_state_dict(lci.base[2].state_dict())

    def synthesis_modules(self) -> list[nn.Module]:
        return [self.motion_compensation, self.g_s]

    def forward(self, x: torch.Tensor, ref_x: torch.Tensor, ref_y: torch.Tensor, quality: torch.Tensor,
                mv: torch.Tensor | None = None) -> ModelOutput:
        if mv is None:  # training: one smoothing pass is enough and keeps steps fast
            mv = estimate_motion(luma(x), luma(ref_x.detach()), passes=1)
        pred = self.motion_compensation(ref_x, mv)
        y = self.gain.scale(self.g_a(torch.cat([x, pred], dim=1)), quality)
        out = self.latent_codec(y, (warp_latent(ref_y, mv), mv))
        x_hat = self.g_s(self.gain.unscale(out.y_hat, quality), pred)
        return ModelOutput(x_hat, out.y_hat, out.y_likelihoods, out.z_likelihoods)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, ref: Reconstruction, quality: int, steps: int | None = None,
                 stats: dict | None = None) -> tuple[list[Stream], Reconstruction]:
        # Motion between the originals when the encoder has them: true motion, a smooth cheap field
        # (against a coarse reconstruction the search fits its noise: 20x the motion bits on a still camera).
        cur, searched = luma(x), luma(ref.source if ref.source is not None else ref.x_hat)
        fields = []
        for lmbda in MOTION_LAMBDAS:
            mv = estimate_motion(cur, searched, lmbda=lmbda, block=MOTION_SEARCH_BLOCK)
            if not any(torch.equal(mv, f) for f in fields):
                fields.append(mv)
        analyses = [self._analyse(x, ref, quality, mv) for mv in fields]
        codings = [self._code(x, ref, quality, mv, a, steps) for mv, a in zip(fields, analyses)]
        i = min(range(len(codings)), key=lambda i: codings[i][-1])
        best = codings[i]
        if REPEAT_HYPER and ref.z_hat is not None:  # with the reference's hyper-latent: no hyper bytes
            repeat = self._code(x, ref, quality, fields[i], analyses[i], steps, hyper=(b"", ref.z_hat))
            best = min(best, repeat, key=lambda c: c[-1])
        streams, rec, frame_stats, _ = best
        if stats is not None:
            for k, v in frame_stats.items():
                stats[k] = stats.get(k, 0) + v
        return streams, rec

    def _analyse(self, x: torch.Tensor, ref: Reconstruction, quality: int, mv: torch.Tensor) -> tuple[bytes, torch.Tensor]:
        """(motion stream, latent y) of the frame predicted with motion `mv`: what every coding of the
        frame with that field shares."""
        q = torch.tensor([quality], device=x.device)
        pred = self.motion_compensation(ref.x_hat, mv)
        return self.motion_coder.encode(mv), self.gain.scale(self.g_a(torch.cat([x, pred], dim=1)), q)

    def _code(self, x: torch.Tensor, ref: Reconstruction, quality: int, mv: torch.Tensor,
              analysis: tuple[bytes, torch.Tensor], steps: int | None, hyper: tuple[bytes, torch.Tensor] | None = None):
        """(streams, reconstruction, latent statistics, `coding_cost` at `DECISION_WEIGHT` times the level's
        lambda) of the frame coded with motion `mv` (`analysis`: its `_analyse`) and hyper-latent `hyper`
        ((stream, z_hat); default: the frame's own)."""
        motion, y = analysis
        lc, stats = self.latent_codec, {}
        z, z_hat = hyper if hyper is not None else lc.encode_hyper(y)
        _, parts, y_hat = lc.compress(y, self._prior(ref.y_hat, mv), steps=steps, stats=stats,
                                      rounding=self.rounding(quality, y.shape), hyper=(z, z_hat))
        streams = [Stream(StreamKind.MOTION, 0, 0, motion)] + latent_streams(z, parts)
        rec = replace(self.synthesize(DecodedLatent(y_hat, mv, z_hat), ref, quality), source=x)
        bits = 8 * sum(len(s.data) for s in streams)
        return streams, rec, stats, coding_cost(rec.x_hat, x, bits, DECISION_WEIGHT * self.config.lambdas[quality])

    @torch.no_grad()
    def decode_latent(self, streams: list[Stream], ref: Reconstruction, height: int, width: int) -> DecodedLatent:
        """Entropy decoding: needs the reference's latent and the decoded motion, never pixels."""
        z, parts, motion = split_streams(streams)
        if motion is None:
            raise NvcError("malformed packet: a P-frame without a motion stream")
        mv = self.motion_coder.decode(motion, (height // 16, width // 16)).to(ref.y_hat.device)
        shape = self._latent_shape(height, width)
        z_hat = self.latent_codec.decode_hyper(z, shape, ref.z_hat)
        y_hat = self.latent_codec.decompress(z, parts, shape, self._prior(ref.y_hat, mv), z_hat)
        return DecodedLatent(y_hat, mv, z_hat)

    @torch.no_grad()
    def synthesize(self, latent: DecodedLatent, ref: Reconstruction, quality: int) -> Reconstruction:
        q = torch.tensor([quality], device=latent.y_hat.device)
        with single_threaded():
            pred = self.motion_compensation(ref.x_hat, latent.mv)
            x_hat = to_8bit(self.g_s(self.gain.unscale(latent.y_hat, q), pred))
        return Reconstruction(x_hat, latent.y_hat, z_hat=latent.z_hat)

    def decompress(self, streams, ref, height: int, width: int, quality: int) -> Reconstruction:
        return self.synthesize(self.decode_latent(streams, ref, height, width), ref, quality)


class LeanVideoModel(nn.Module):
    """One shipped set of v2 weights: the I-frame and the P-frame model."""

    def __init__(self, config: LeanConfig):
        super().__init__()
        self.config = config
        self.intra = LeanIntra(config)
        self.inter = LeanInter(config)
