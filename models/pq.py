"""Product quantizer of the PQ-MIM codec, and the codec's architecture config.

Follows El-Nouby et al., "Image Compression with Product Quantized Masked Image Modeling" (TMLR
2023): the VQ-VAE's vector quantizer is replaced by a product quantizer. The latent vector at each
position (D channels) is split into M sub-vectors of D/M channels, and each sub-vector is replaced
by the nearest of the K codewords of its own codebook, so a position costs at most M * log2 K bits
before entropy coding (`nvc.entropy.token_model` codes the indices)::

    y (B, D, h, w) -split, l2-normalise-> z (B, M, D/M, h, w) -nearest codeword-> tokens (B, M, h, w)
    tokens -lookup-> q (B, M, D/M, h, w) ; inactive sub-vectors (m >= active) -> learned default
    y_hat = z + sg(q - z)   (straight-through gradient)       commitment = mean ||z - sg(q)||^2

Rate control: a quality level sets how many sub-vectors are active (coded); the others are not
coded and the decoder puts a learned default vector in their place. Training samples a level per
image, so sub-vector 0 learns to carry the most (nested, as in nested dropout).

Sub-vectors and codewords are l2-normalised (Yu et al., "Vector-quantized image modeling with
improved VQGAN", ICLR 2022): the encoder cannot drift away from the codebooks in scale, which is
what collapses EMA codebooks early in training (seen here: perplexity 1 within 20 steps without it).

Keeping codebooks alive (van den Oord et al. 2017; Razavi et al. 2019; Dhariwal et al. 2020,
Jukebox): codebooks are initialised by k-means on the first batch (`kmeans_init`), follow
exponential moving averages of their assigned vectors (`ema_update`, called by the training loop
after the backward pass, never inside `forward`), and codewords that stopped being used are
restarted on random encoder outputs of the current batch. `usage()` and `perplexity()` report
each codebook's health for the training log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from nvc.models.config import SavedConfig


@dataclass(frozen=True)
class PQMimConfig(SavedConfig):
    """The PQ-MIM architecture (`pq-mim-v1`); saved in the weights file, so a file rebuilds its model."""

    architecture: ClassVar[str] = "pq-mim"  # what a weights file records to rebuild the model
    block_transform: ClassVar[bool] = False  # its lean g_a / g_s run without `models.lean.BlockTransform`

    latent_channels: int = 96  # D: channels of y at 1/16 luma resolution (the lean g_a / g_s of v2)
    codebooks: int = 8  # M: sub-vectors per position, one codebook each (sub-vector dim D/M)
    codebook_size: int = 256  # K: codewords per codebook (8 bits per token before entropy coding)
    synthesis_width: tuple[int, int, int] = (128, 64, 32)  # g_s channels at 1/16, 1/8, 1/4 (models.lean)
    token_width: int = 64  # C: channels of the masked-token model's trunk
    token_dilations: tuple[int, ...] = (1, 2, 4)  # one residual 3x3 block per entry (receptive field 15x15)
    quality_levels: int = 6
    active_codebooks: tuple[int, ...] = (1, 2, 3, 4, 6, 8)  # sub-vectors coded at each quality level
    # loss = lambda * 255^2 * MSE_yuv + bpp (the bpp term trains the token model only: tokens are discrete)
    lambdas: tuple[float, ...] = field(default=(0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512))
    steps: int = 8  # S: decoding steps of the token model when encoding (1..8; 1, 4, 8 are trained)
    train_steps: tuple[int, ...] = (1, 4, 8)  # schedules the token model is trained on
    ema_decay: float = 0.9  # codebook EMA (0.99 lets an early-training encoder run away from its codebooks)
    commitment: float = 0.25  # beta of the commitment loss
    dead_fraction: float = 0.1  # a codeword used less than this share of the mean use is restarted

    def __post_init__(self) -> None:
        if len(self.lambdas) != self.quality_levels or len(self.active_codebooks) != self.quality_levels:
            raise ValueError("one lambda and one active-codebook count per quality level")
        if self.latent_channels % self.codebooks:
            raise ValueError("latent_channels must divide into codebooks")
        if not all(1 <= a <= self.codebooks for a in self.active_codebooks) or \
                list(self.active_codebooks) != sorted(set(self.active_codebooks)):
            raise ValueError("active_codebooks must increase strictly, within 1..codebooks")
        if not 1 <= self.steps <= 8 or not all(1 <= s <= 8 for s in self.train_steps):
            raise ValueError("decoding steps must be 1..8 (the container's step field)")
        if not 2 <= self.codebook_size <= 4096:
            raise ValueError("codebook_size must be 2..4096 (16-bit probability tables)")


@dataclass(frozen=True)
class Quantized:
    """What the quantizer makes of a latent."""

    y_hat: torch.Tensor  # (B, D, h, w) quantized latent, straight-through gradient to y
    tokens: torch.Tensor  # (B, M, h, w) int64 codeword indices (inactive sub-vectors hold 0)
    active: torch.Tensor  # (B,) int64 active sub-vectors per sample
    commitment: torch.Tensor  # scalar: mean ||z - sg(q)||^2 over the active sub-vectors
    z: torch.Tensor  # (B, M, d, h, w) the unquantized sub-vectors, detached (for `ema_update`)


def active_mask(active: torch.Tensor, codebooks: int) -> torch.Tensor:
    """(B,) active counts -> (B, M) bool: which sub-vectors are coded."""
    return torch.arange(codebooks, device=active.device)[None, :] < active[:, None]


class ProductQuantizer(nn.Module):
    """M codebooks of K codewords of dimension D/M; EMA codebooks with k-means init and restarts."""

    def __init__(self, dim: int, codebooks: int, size: int, decay: float = 0.99, dead_fraction: float = 0.03):
        super().__init__()
        if dim % codebooks:
            raise ValueError("dim must divide into codebooks")
        self.dim, self.codebooks, self.size, self.sub_dim = dim, codebooks, size, dim // codebooks
        self.decay, self.dead_fraction = decay, dead_fraction
        d = self.sub_dim
        # Codebooks are buffers: they follow the EMA, not the optimiser (kept fp32 in the weights file).
        self.register_buffer("codewords", torch.randn(codebooks, size, d) * 0.1)
        self.register_buffer("ema_count", torch.ones(codebooks, size))
        self.register_buffer("ema_sum", self.codewords.clone())
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.default = nn.Parameter(torch.zeros(codebooks, d))  # what an inactive sub-vector decodes to

    # ---- shapes ---------------------------------------------------------------------------
    def split(self, y: torch.Tensor) -> torch.Tensor:
        b, _, h, w = y.shape
        return y.reshape(b, self.codebooks, self.sub_dim, h, w)

    def subvectors(self, y: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) latent -> (B, M, d, h, w) unit-length sub-vectors, what is quantized."""
        return F.normalize(self.split(y), dim=2)

    def nearest(self, z: torch.Tensor, codewords: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M, d, h, w) sub-vectors -> (B, M, h, w) index of the nearest codeword (encoder only);
        `codewords` (M, K, d): the codebooks of these M sub-vectors, when not all of them."""
        c = self.codewords if codewords is None else codewords
        b, m, _, h, w = z.shape
        zf = z.permute(1, 0, 3, 4, 2).reshape(m, -1, self.sub_dim)  # (M, N, d)
        dist = zf.pow(2).sum(-1, keepdim=True) - 2 * zf @ c.transpose(1, 2) + c.pow(2).sum(-1)[:, None, :]  # (M, N, K)
        return dist.argmin(-1).reshape(m, b, h, w).transpose(0, 1)

    def tokens_of(self, y_hat: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) decoded latent -> (B, M, h, w) the nearest codewords of its unit sub-vectors:
        its tokens where coded; where a codebook holds its default everywhere (not coded), the
        default's nearest codeword, found once rather than at every position."""
        q = self.split(y_hat)
        tokens = torch.empty(q.size(0), self.codebooks, *q.shape[3:], dtype=torch.int64, device=y_hat.device)
        coded = []
        for m in range(self.codebooks):
            default = self.default[m].detach().to(q.dtype)[None, :, None, None]
            if torch.equal(q[:, m], default.expand_as(q[:, m])):
                tokens[:, m] = self.nearest(F.normalize(default, dim=1)[:, None], self.codewords[m : m + 1])[0, 0, 0, 0]
            else:
                coded.append(m)
        if coded:
            tokens[:, coded] = self.nearest(F.normalize(q[:, coded], dim=2), self.codewords[coded])
        return tokens

    def distance(self, z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, M, d, h, w) sub-vectors, (B, M, h, w) tokens -> (B, M, h, w) squared distance from each
        sub-vector to the codeword its token names."""
        q = self.split(self.lookup(tokens, torch.full((tokens.size(0),), self.codebooks, device=tokens.device)))
        return (z - q).pow(2).sum(2)

    def lookup(self, tokens: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """(B, M, h, w) tokens and (B,) active counts -> (B, D, h, w) latent; inactive -> default."""
        b, m, h, w = tokens.shape
        offsets = torch.arange(m, device=tokens.device)[None, :, None, None] * self.size
        q = F.embedding(tokens + offsets, self.codewords.reshape(-1, self.sub_dim))  # (B, M, h, w, d)
        keep = active_mask(active, m)[:, :, None, None, None]
        q = torch.where(keep, q, self.default[None, :, None, None, :].to(q.dtype))
        return q.permute(0, 1, 4, 2, 3).reshape(b, m * self.sub_dim, h, w)

    def forward(self, y: torch.Tensor, active: torch.Tensor) -> Quantized:
        z = self.subvectors(y)
        tokens = self.nearest(z.detach()) * active_mask(active, self.codebooks)[:, :, None, None]
        q = self.lookup(tokens, active)
        zq = self.split(q)
        keep = active_mask(active, self.codebooks)[:, :, None, None, None].to(y.dtype)
        # Straight-through for active sub-vectors; inactive ones are the default (gradient to it only).
        y_hat = (z + (zq - z).detach()) * keep + zq * (1 - keep)
        err = (z - zq.detach()).pow(2).mean(2)  # (B, M, h, w)
        commitment = (err * keep[:, :, 0]).sum() / (keep[:, :, 0].sum() * err.shape[-1] * err.shape[-2]).clamp_min(1)
        return Quantized(y_hat.reshape_as(y), tokens, active, commitment, z.detach())

    # ---- codebook maintenance (training only, called explicitly by the training loop) -------
    def _active_vectors(self, z: torch.Tensor, active: torch.Tensor | None, m: int) -> torch.Tensor:
        """(N, d) sub-vectors of codebook m from the samples where it is active."""
        zm = z[:, m]  # (B, d, h, w)
        if active is not None:
            zm = zm[active > m]
        return zm.permute(0, 2, 3, 1).reshape(-1, self.sub_dim)

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, iterations: int = 10, seed: int = 0) -> None:
        """Lloyd's k-means per codebook on a batch of sub-vectors (B, M, d, h, w); marks initialised."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        for m in range(self.codebooks):
            x = self._active_vectors(z, None, m).float()
            pick = torch.randint(x.size(0), (self.size,), generator=g).to(x.device)
            c = x[pick] + 1e-3 * torch.randn(self.size, self.sub_dim, generator=g).to(x.device)
            for _ in range(iterations):
                assign = torch.cdist(x, c).argmin(1)
                count = torch.bincount(assign, minlength=self.size).float()
                total = torch.zeros_like(c).index_add_(0, assign, x)
                used = count > 0
                c[used] = total[used] / count[used, None]
            self.codewords[m] = F.normalize(c, dim=1)
            count = torch.full((self.size,), x.size(0) / self.size, device=x.device)
            self.ema_count[m] = count
            self.ema_sum[m] = c * count[:, None]
        self.initialised.fill_(True)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, tokens: torch.Tensor, active: torch.Tensor, seed: int = 0) -> int:
        """Move each codeword to the EMA of the sub-vectors assigned to it; restart dead codewords
        on random sub-vectors of this batch. Returns the number of codewords restarted."""
        decay, restarted = self.decay, 0
        g = torch.Generator(device="cpu").manual_seed(seed)
        for m in range(self.codebooks):
            x = self._active_vectors(z, active, m).float()
            if x.size(0) == 0:
                continue
            idx = tokens[:, m][active > m].reshape(-1)
            count = torch.bincount(idx, minlength=self.size).float()
            total = torch.zeros(self.size, self.sub_dim, device=x.device).index_add_(0, idx, x)
            self.ema_count[m].mul_(decay).add_(count, alpha=1 - decay)
            self.ema_sum[m].mul_(decay).add_(total, alpha=1 - decay)
            n = self.ema_count[m].sum()
            smoothed = (self.ema_count[m] + 1e-5) / (n + self.size * 1e-5) * n  # Laplace smoothing
            self.codewords[m] = F.normalize(self.ema_sum[m] / smoothed[:, None], dim=1)
            dead = self.ema_count[m] < self.dead_fraction * self.ema_count[m].mean()
            k = int(dead.sum())
            if k:
                pick = torch.randint(x.size(0), (k,), generator=g).to(x.device)
                fresh = x[pick] + 1e-3 * torch.randn(k, self.sub_dim, generator=g).to(x.device)
                mean = self.ema_count[m].mean()
                self.codewords[m, dead] = fresh
                self.ema_count[m, dead] = mean
                self.ema_sum[m, dead] = fresh * mean
                restarted += k
        return restarted

    # ---- health -------------------------------------------------------------------------
    @torch.no_grad()
    def usage(self) -> torch.Tensor:
        """(M,) share of each codebook's codewords in use (EMA count above the restart threshold)."""
        mean = self.ema_count.mean(1, keepdim=True)
        return (self.ema_count >= self.dead_fraction * mean).float().mean(1)

    @torch.no_grad()
    def perplexity(self, tokens: torch.Tensor | None = None, active: torch.Tensor | None = None) -> torch.Tensor:
        """(M,) exp(entropy) of each codebook's use: of a batch's tokens when given, else of the EMA
        counts. K means uniform use, 1 a collapsed codebook."""
        if tokens is None:
            p = self.ema_count / self.ema_count.sum(1, keepdim=True)
        else:
            rows = []
            for m in range(self.codebooks):
                idx = tokens[:, m][active > m].reshape(-1) if active is not None else tokens[:, m].reshape(-1)
                rows.append(torch.bincount(idx, minlength=self.size).float())
            counts = torch.stack(rows)
            p = counts / counts.sum(1, keepdim=True).clamp_min(1)
        return torch.exp(-(p * p.clamp_min(1e-12).log()).sum(1))
