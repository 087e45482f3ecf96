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

P-frames (`PQMimInter`) are coded with the same transforms and codebooks, so their pixels are those
of an I-frame; what changes is the token model: a temporal one that also sees the previous frame's
tokens (recovered from its decoded latent, `PQMimIntra.reference_tokens`) and can put its
probability on "the same token as before", so static content costs few bits::

    ref y_hat -nearest codewords-> prev tokens ─┐
    tokens -[temporal masked-token model, S steps, given prev]-> S streams

Packet streams (container formats 3 to 5, no new stream kind): one LATENT stream per decoding step
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


# An encoder choice (the stream is the same): a P-frame keeps the previous frame's token where its
# codeword is within this squared distance of the nearest one (`PQMimIntra.tokens`; unit vectors,
# so distances are 0..4), one margin per quality level. 0.2 at every level was chosen on three
# training clips, 6 frames (I + 5 P), q0/2/4/5, BD-rate against margin 0 at 0.2 / 0.4 / 0.8:
# 16_robotarm -12.8 / -14.4 / -12.6 %, 11_polevault -14.3 / -12.3 / -10.6 %, intel-one-by-one
# -2.3 % at each (PSNR within 0.1 dB at 0.2). Over a GOP it was too wide at the levels that code
# more sub-vectors (the kept tokens cost up to 2 dB by the last P-frame), so it now narrows from
# q3; 16 frames (I + 15 P), q0/1/3/5, BD-rate against 0.2 at every level (0.1 at every level):
# 11_polevault -5.30 (-6.96), 16_robotarm -0.25 (+2.78), 21_biker -0.57 (-3.71) %.
STICKY_MARGINS = (0.2, 0.2, 0.15, 0.1, 0.07, 0.05)


def sticky_margin(quality: int) -> float:
    """The encoder's margin at a quality level (0 outside the levels, which coding refuses)."""
    return STICKY_MARGINS[quality] if 0 <= quality < len(STICKY_MARGINS) else 0.0


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
    def tokens(self, x: torch.Tensor, quality: int, prev: torch.Tensor | None = None,
               margin: float = 0.0) -> tuple[torch.Tensor, int]:
        """The encoder's tokens (1, M, h, w) of a frame and the number of coded sub-vectors. With
        `prev` (a P-frame's reference tokens), a sub-vector keeps the previous token wherever its
        squared distance to that codeword exceeds the nearest one's by less than `margin`: noise
        does not flip tokens of unchanged content, which the temporal model codes almost for free."""
        active = int(self.config.active_codebooks[quality])
        z = self.quantizer.subvectors(self.g_a(x))
        t = self.quantizer.nearest(z)
        if prev is not None and margin > 0:
            t = torch.where(self.quantizer.distance(z, prev) - self.quantizer.distance(z, t) < margin,
                            prev, t)
        return t * active_mask(torch.tensor([active], device=x.device), self.config.codebooks)[:, :, None, None], active

    def reference_tokens(self, ref: Reconstruction) -> torch.Tensor:
        """The previous frame's tokens (1, M, h, w) as a P-frame's token model sees them: the nearest
        codewords of its decoded latent (exactly its tokens where coded; a fixed token where the
        default vector stood). Derived from `y_hat` alone, so the encoder, the serial decoder and the
        pipelined decoder's entropy thread (which holds latents, not tokens) agree."""
        with single_threaded(), torch.no_grad():
            return self.quantizer.tokens_of(ref.y_hat)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, ref: Reconstruction | None, quality: int, steps: int | None = None,
                 stats: dict | None = None) -> tuple[list[Stream], Reconstruction]:
        """`steps` overrides the decoding schedule (1..8); `stats` receives the tokens and bits per step."""
        return self.code_frame(x, self.token_model, None, quality, steps, stats)

    def code_frame(self, x: torch.Tensor, token_model: MaskedTokenModel, prev: torch.Tensor | None, quality: int,
                   steps: int | None, stats: dict | None, margin: float = 0.0) -> tuple[list[Stream], Reconstruction]:
        """Encode a frame's tokens with `token_model` (given the previous frame's tokens `prev` for
        the temporal one, kept within `margin`: `tokens`) and synthesize its reconstruction."""
        if not 0 <= quality < self.config.quality_levels:
            raise NvcError(f"quality must be 0..{self.config.quality_levels - 1}, got {quality}")
        tokens, active = self.tokens(x, quality, prev, margin)
        bits: list[float] = []
        parts = encode_tokens(token_model, tokens, active, steps or self.config.steps, bits, prev)
        streams = [Stream(StreamKind.LATENT, s, 0, (bytes([active]) if s == 0 else b"") + data)
                   for s, data in enumerate(parts)]
        if stats is not None:
            stats.update(tokens=tokens, active=active, bits_per_step=bits)
        y_hat = self.quantizer.lookup(tokens, torch.tensor([active], device=x.device))
        return streams, replace(self.synthesize(DecodedLatent(y_hat), None, quality), source=x)

    def decode_tokens(self, streams: list[Stream], height: int, width: int,
                      token_model: MaskedTokenModel | None = None,
                      prev: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
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
        tokens = decode_tokens(token_model or self.token_model, parts, active, (height // 16, width // 16),
                               self._device(), prev)
        return tokens, active

    def latent_of(self, tokens: torch.Tensor, active: int) -> DecodedLatent:
        """Decoded tokens -> the synthesis input (codebook lookup; the default where not coded)."""
        return DecodedLatent(self.quantizer.lookup(tokens, torch.tensor([active], device=tokens.device)))

    @torch.no_grad()
    def decode_latent(self, streams: list[Stream], ref: Reconstruction | None, height: int, width: int) -> DecodedLatent:
        return self.latent_of(*self.decode_tokens(streams, height, width))

    @torch.no_grad()
    def synthesize(self, latent: DecodedLatent, ref: Reconstruction | None, quality: int) -> Reconstruction:
        with single_threaded():  # the same pixels whatever the caller's thread count
            x_hat = to_8bit(self.g_s(latent.y_hat))
        return Reconstruction(x_hat, latent.y_hat)

    def decompress(self, streams, ref, height: int, width: int, quality: int) -> Reconstruction:
        return self.synthesize(self.decode_latent(streams, ref, height, width), ref, quality)

    def _device(self) -> torch.device:
        return self.quantizer.codewords.device


class PQMimInter(nn.Module):
    """The PQ-MIM P-frame model: the I-frame model's transforms and codebooks, and its own temporal
    masked-token model conditioned on the previous frame's tokens (`MaskedTokenModel(temporal=True)`).
    The pixels are the I-frame model's (no motion compensation): a P-frame saves rate, where the
    content did not change, by predicting each token from the one before it."""

    def __init__(self, intra: PQMimIntra):
        super().__init__()
        cfg = intra.config
        self.config = cfg
        self._intra = (intra,)  # shared, not a submodule: its weights are saved once, under `intra.`
        self.token_model = MaskedTokenModel(cfg.codebooks, cfg.codebook_size, cfg.token_width, cfg.token_dilations,
                                            temporal=True)

    @property
    def intra(self) -> PQMimIntra:
        return self._intra[0]

    def entropy_parameter_modules(self) -> list[nn.Module]:
        return [self.token_model]

    def synthesis_modules(self) -> list[nn.Module]:
        return self.intra.synthesis_modules()

    def forward(self, x: torch.Tensor, prev: torch.Tensor, quality: torch.Tensor, steps: int) -> torch.Tensor:
        """Training: (B,) bits of frame x's tokens given the previous frame's (reference) tokens;
        the transforms and codebooks are the I-frame model's, not trained here."""
        intra = self.intra
        with torch.no_grad():
            q = intra.quantizer(intra.g_a(x), intra.active(quality))
        return self.token_model.rate_bits(q.tokens, q.active, steps, prev)

    @torch.no_grad()
    def compress(self, x, ref: Reconstruction, quality: int, steps: int | None = None, stats: dict | None = None):
        return self.intra.code_frame(x, self.token_model, self.intra.reference_tokens(ref), quality, steps, stats,
                                     sticky_margin(quality))

    @torch.no_grad()
    def decode_latent(self, streams, ref: Reconstruction, height: int, width: int) -> DecodedLatent:
        prev = self.intra.reference_tokens(ref)
        return self.intra.latent_of(*self.intra.decode_tokens(streams, height, width, self.token_model, prev))

    def synthesize(self, latent, ref, quality):
        return self.intra.synthesize(latent, None, quality)

    def decompress(self, streams, ref, height: int, width: int, quality: int) -> Reconstruction:
        return self.synthesize(self.decode_latent(streams, ref, height, width), ref, quality)


class PQMimVideoModel(nn.Module):
    """One shipped set of PQ-MIM weights: the I-frame model and the P-frame token model."""

    def __init__(self, config: PQMimConfig):
        super().__init__()
        self.config = config
        self.intra = PQMimIntra(config)
        self.inter = PQMimInter(self.intra)
