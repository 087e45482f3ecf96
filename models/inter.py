"""Transforms of the P-frame model: conditional coding on the previous decoded frame, no optical flow.

Temporal context mining after DCVC-TCM (Sheng et al., "Temporal Context Mining for Learned Video
Compression", IEEE TMM 2022), used implicitly as in DCVC-RT (Jia et al., CVPR 2025): a small feature
pyramid of the reference frame feeds the analysis transform at its input and the synthesis
transform at 1/8, 1/4 and 1/2 of the luma resolution. The encoder codes x_t given the context; the
decoder rebuilds it from y_hat_t and the same context.

    reference x_hat_{t-1} (6 x H/2) -ContextPyramid-> c1 (H/2), c2 (H/4), c3 (H/8)
    x_t, c1 -ConditionalAnalysis-> y_t          y_hat_t, c3, c2, c1 -ConditionalSynthesis-> x_hat_t

Both transforms start as copies of the intra ones with zero-initialised context paths, so an
untrained P-model codes exactly like the intra model and training only has to learn what the
reference adds.
"""

from __future__ import annotations

import torch
from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import nn

from nvc.models.config import HyperpriorConfig

CONTEXT_CHANNELS = 32


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


def _zero(layer: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ContextPyramid(nn.Module):
    """Reference frame -> (reference + features at H/2, features at H/4, features at H/8)."""

    def __init__(self, c: int = CONTEXT_CHANNELS):
        super().__init__()
        self.level1 = nn.Sequential(conv(6, c, kernel_size=3, stride=1), _act())
        self.level2 = nn.Sequential(conv(c, c, kernel_size=3, stride=2), _act())
        self.level3 = nn.Sequential(conv(c, c, kernel_size=3, stride=2), _act())

    def forward(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.level1(ref)
        f2 = self.level2(f1)
        return torch.cat([ref, f1], dim=1), f2, self.level3(f2)


class ConditionalAnalysis(nn.Module):
    """g_a of a P-frame: the intra g_a with the context concatenated to its input."""

    def __init__(self, cfg: HyperpriorConfig, c: int = CONTEXT_CHANNELS):
        super().__init__()
        n, m = cfg.channels, cfg.latent_channels
        self.head = conv(6 + 6 + c, n, kernel_size=3, stride=1)
        self.body = nn.Sequential(GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m))

    def forward(self, x: torch.Tensor, ctx: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.body(self.head(torch.cat([x, ctx[0]], dim=1)))

    @torch.no_grad()
    def init_from(self, g_a: nn.Sequential) -> None:
        nn.init.zeros_(self.head.weight)
        self.head.weight[:, :6] = g_a[0].weight
        self.head.bias.copy_(g_a[0].bias)
        self.body.load_state_dict(nn.Sequential(*g_a[1:]).state_dict())


class ConditionalSynthesis(nn.Module):
    """g_s of a P-frame: the intra g_s with residual context mixing after each upsampling."""

    def __init__(self, cfg: HyperpriorConfig, c: int = CONTEXT_CHANNELS):
        super().__init__()
        n, m = cfg.channels, cfg.latent_channels
        self.up1 = nn.Sequential(deconv(m, n), GDN(n, inverse=True))  # -> H/8
        self.mix1 = _zero(conv(n + c, n, kernel_size=3, stride=1))
        self.up2 = nn.Sequential(deconv(n, n), GDN(n, inverse=True))  # -> H/4
        self.mix2 = _zero(conv(n + c, n, kernel_size=3, stride=1))
        self.up3 = nn.Sequential(deconv(n, n), GDN(n, inverse=True))  # -> H/2
        self.out = conv(n, 6, kernel_size=3, stride=1)
        self.refine = nn.Sequential(conv(n + 6 + c, c, kernel_size=3, stride=1), _act(),
                                    _zero(conv(c, 6, kernel_size=3, stride=1)))

    def forward(self, y_hat: torch.Tensor, ctx: tuple[torch.Tensor, ...]) -> torch.Tensor:
        c1, c2, c3 = ctx
        h = self.up1(y_hat)
        h = h + self.mix1(torch.cat([h, c3], dim=1))
        h = self.up2(h)
        h = h + self.mix2(torch.cat([h, c2], dim=1))
        h = self.up3(h)
        return self.out(h) + self.refine(torch.cat([h, c1], dim=1))

    @torch.no_grad()
    def init_from(self, g_s: nn.Sequential) -> None:
        for dst, src in ((self.up1, g_s[0:2]), (self.up2, g_s[2:4]), (self.up3, g_s[4:6])):
            dst.load_state_dict(nn.Sequential(*src).state_dict())
        self.out.load_state_dict(g_s[6].state_dict())
