"""The PQ-MIM frame model ("pq-mim-v1", model id 4): product-quantized latents coded by a
masked-token entropy model, after El-Nouby et al., "Image Compression with Product Quantized Masked
Image Modeling" (TMLR 2023), with M2T's fixed decoding schedule (Mentzer et al., ICCV 2023).

    x (6 x H/2) -g_a-> y (D x H/16) -product quantizer-> tokens (M x H/16, first A coded)
    tokens -[masked-token model, S steps]-> S streams            (nvc.entropy.token_model)
    tokens -codebook lookup (inactive -> learned default)-> y_hat -g_s-> x_hat

g_a and g_s are the lean v2 transforms (`nvc.models.lean`: the decoder is 3x3 conv, ReLU and
PixelShuffle only, 5.3 kMAC/px); the quantizer is `nvc.models.pq`. A quality level sets A, the number
of coded sub-vectors per position (`PQMimConfig.active_codebooks`), so one set of weights serves
every level. The model answers the frame-codec contract of `nvc.model`.

I-frames only: there is no temporal conditioning yet. So that the codec runs at any intra period
(`nvc encode`, `nvc eval` at intra period 32), `PQMimVideoModel.inter` codes a P-frame exactly as an
I-frame (it ignores `ref`): the rate of such a stream is the all-intra rate.

Packet streams (container format 3, no new stream kind): one LATENT stream per decoding step
(step s, part 0; S = the number of streams, 1..8). Step 0's payload starts with one byte, the number
of coded sub-vectors A (1..M), so that `decode_latent` needs no quality level; the rest of each
payload is the step's ANS words (`nvc.entropy.token_model`).

Token probabilities and synthesis run on one CPU thread in the encoder and the decoder alike, so a
decoder reproduces the encoder's tokens and pixels bit for bit on the same machine whatever the
process's thread count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from nvc.container import Stream, StreamKind
from nvc.entropy.hyperprior import single_threaded
from nvc.entropy.token_model import MaskedTokenModel, decode_tokens, encode_tokens
from nvc.errors import NvcError
from nvc.model import DecodedLatent, Reconstruction, to_8bit
from nvc.models.lean import Analysis, Synthesis
from nvc.models.pq import PQMimConfig, ProductQuantizer, Quantized, active_mask


@dataclass(frozen=True)
class PQMimOutput:
    """Training-time output of one frame."""

    x_hat: torch.Tensor  # (B, 6, H/2, W/2), not rounded
    quantized: Quantized  # y_hat, tokens, active counts, commitment loss, the unquantized sub-vectors
    bits: torch.Tensor  # (B,) bits of the tokens under the token model (gradient to the token model only)


class PQMimIntra(nn.Module):
    """The PQ-MIM I-frame model."""

    def __init__(self, cfg: PQMimConfig):
        super().__init__()
        self.config = cfg
        self.g_a = Analysis(cfg, 6)  # reads cfg.latent_channels
        self.quantizer = ProductQuantizer(cfg.latent_channels, cfg.codebooks, cfg.codebook_size, cfg.ema_decay,
                                          cfg.dead_fraction)
        self.g_s = Synthesis(cfg, conditional=False)  # reads cfg.latent_channels, cfg.synthesis_width
        self.token_model = MaskedTokenModel(cfg.codebooks, cfg.codebook_size, cfg.token_width, cfg.token_dilations)
        self.register_buffer("active_table", torch.tensor(cfg.active_codebooks), persistent=False)

    def entropy_parameter_modules(self) -> list[nn.Module]:
        return [self.token_model]

    def synthesis_modules(self) -> list[nn.Module]:
        return [self.g_s]

    def active(self, quality: torch.Tensor) -> torch.Tensor:
        """(B,) quality levels -> (B,) coded sub-vectors per position."""
        return self.active_table[quality]

    def forward(self, x: torch.Tensor, quality: torch.Tensor, steps: int) -> PQMimOutput:
        """Training: reconstruction (straight-through) and the bits of the `steps`-step schedule."""
        q = self.quantizer(self.g_a(x), self.active(quality))
        bits = self.token_model.rate_bits(q.tokens, q.active, steps)
        return PQMimOutput(self.g_s(q.y_hat), q, bits)

    @torch.no_grad()
    def tokens(self, x: torch.Tensor, quality: int) -> tuple[torch.Tensor, int]:
        """The encoder's tokens (1, M, h, w) of a frame and the number of coded sub-vectors."""
        active = int(self.config.active_codebooks[quality])
        t = self.quantizer.nearest(self.quantizer.subvectors(self.g_a(x)))
        return t * active_mask(torch.tensor([active], device=x.device), self.config.codebooks)[:, :, None, None], active

    @torch.no_grad()
    def compress(self, x: torch.Tensor, ref: Reconstruction | None, quality: int, steps: int | None = None,
                 stats: dict | None = None) -> tuple[list[Stream], Reconstruction]:
        """`steps` overrides the decoding schedule (1..8); `stats` receives the tokens and bits per step."""
        if not 0 <= quality < self.config.quality_levels:
            raise NvcError(f"quality must be 0..{self.config.quality_levels - 1}, got {quality}")
        tokens, active = self.tokens(x, quality)
        bits: list[float] = []
        parts = encode_tokens(self.token_model, tokens, active, steps or self.config.steps, bits)
        streams = [Stream(StreamKind.LATENT, s, 0, (bytes([active]) if s == 0 else b"") + data)
                   for s, data in enumerate(parts)]
        if stats is not None:
            stats.update(tokens=tokens, active=active, bits_per_step=bits)
        y_hat = self.quantizer.lookup(tokens, torch.tensor([active], device=x.device))
        return streams, replace(self.synthesize(DecodedLatent(y_hat), ref, quality), source=x)

    def decode_tokens(self, streams: list[Stream], height: int, width: int) -> tuple[torch.Tensor, int]:
        """Entropy decoding proper: (tokens (1, M, H/16, W/16), coded sub-vectors) of a packet's streams."""
        latent = sorted((s for s in streams if s.kind == StreamKind.LATENT), key=lambda s: s.step)
        if len(latent) != len(streams) or not latent or [s.step for s in latent] != list(range(len(latent))) \
                or any(s.part for s in latent):
            raise NvcError("malformed packet: not the streams of a PQ-MIM frame")
        if not latent[0].data:
            raise NvcError("malformed packet: empty PQ-MIM token stream")
        active = latent[0].data[0]
        if not 1 <= active <= self.config.codebooks:
            raise NvcError(f"malformed packet: {active} coded sub-vectors (this model has {self.config.codebooks})")
        parts = [latent[0].data[1:]] + [s.data for s in latent[1:]]
        tokens = decode_tokens(self.token_model, parts, active, (height // 16, width // 16), self._device())
        return tokens, active

    @torch.no_grad()
    def decode_latent(self, streams: list[Stream], ref: Reconstruction | None, height: int, width: int) -> DecodedLatent:
        tokens, active = self.decode_tokens(streams, height, width)
        return DecodedLatent(self.quantizer.lookup(tokens, torch.tensor([active], device=tokens.device)))

    @torch.no_grad()
    def synthesize(self, latent: DecodedLatent, ref: Reconstruction | None, quality: int) -> Reconstruction:
        with single_threaded():  # the same pixels whatever the caller's thread count
            x_hat = to_8bit(self.g_s(latent.y_hat))
        return Reconstruction(x_hat, latent.y_hat)

    def decompress(self, streams, ref, height: int, width: int, quality: int) -> Reconstruction:
        return self.synthesize(self.decode_latent(streams, ref, height, width), ref, quality)

    def _device(self) -> torch.device:
        return self.quantizer.codewords.device


class _IntraAsInter:
    """The P-frame slot of an I-frame-only model: codes a P-frame as an I-frame, ignoring `ref`."""

    def __init__(self, intra: PQMimIntra):
        self.intra = intra
        self.config = intra.config

    def compress(self, x, ref, quality, **kwargs):
        return self.intra.compress(x, None, quality, **kwargs)

    def decode_latent(self, streams, ref, height, width):
        return self.intra.decode_latent(streams, None, height, width)

    def synthesize(self, latent, ref, quality):
        return self.intra.synthesize(latent, None, quality)

    def decompress(self, streams, ref, height, width, quality):
        return self.intra.decompress(streams, None, height, width, quality)


class PQMimVideoModel(nn.Module):
    """One shipped set of PQ-MIM weights: the I-frame model (P-frames are coded as I-frames)."""

    def __init__(self, config: PQMimConfig):
        super().__init__()
        self.config = config
        self.intra = PQMimIntra(config)

    @property
    def inter(self) -> _IntraAsInter:
        return _IntraAsInter(self.intra)
