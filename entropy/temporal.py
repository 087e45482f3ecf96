"""Hyperprior with a latent-domain temporal prior, for P-frames.

The entropy parameters of frame t come from its own hyper-latent z_hat_t *and* the previous frame's
decoded latent y_hat_{t-1}, as in DCVC-DC's latent prior (Li et al., "Neural Video Compression with
Diverse Contexts", CVPR 2023). Nothing here depends on decoded pixels, so entropy decoding of frame
t+1 needs only frame t's latents and can run ahead of frame t's synthesis (DESIGN.md, "Data flow").
The prior is convolutional, not autoregressive: every symbol of a frame still decodes in parallel.
"""

from __future__ import annotations

import torch
from compressai.models.utils import conv
from torch import nn

from nvc.entropy.hyperprior import HyperpriorLatentCodec


class TemporalHyperpriorLatentCodec(HyperpriorLatentCodec):
    """(means, scales) = h_s(z_hat) + fuse(h_s(z_hat), temporal(y_hat_{t-1})).

    `fuse` ends in a zero-initialised layer, so an untrained prior equals the plain hyperprior.
    """

    def __init__(self, h_a: nn.Module, h_s: nn.Module, z_channels: int, latent_channels: int, substreams: int):
        super().__init__(h_a, h_s, z_channels, substreams)
        m = latent_channels
        self.temporal = nn.Sequential(
            conv(m, m, kernel_size=3, stride=1),
            nn.LeakyReLU(0.1, inplace=True),
            conv(m, m, kernel_size=3, stride=1),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.fuse = nn.Sequential(
            conv(3 * m, 2 * m, kernel_size=1, stride=1),
            nn.LeakyReLU(0.1, inplace=True),
            conv(2 * m, 2 * m, kernel_size=1, stride=1),
        )
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    def _entropy_parameters(self, z_hat: torch.Tensor, prior: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if prior is None:
            raise ValueError("a P-frame latent needs the reference frame's latent")
        params = self.h_s(z_hat)
        params = params + self.fuse(torch.cat([params, self.temporal(prior)], dim=1))
        means, scales = params.chunk(2, dim=1)
        return means, scales
