"""Transforms of the intra codec, built from CompressAI's layers.

The codec is the mean-scale hyperprior of Minnen, Ballé & Toderici, "Joint Autoregressive and
Hierarchical Priors for Learned Image Compression" (NeurIPS 2018) *without* its autoregressive
context model, so every latent symbol can be decoded in parallel. Frames are coded in their native
YUV420 planes, packed as DCVC-RT does (Jia et al., "Towards Practical Real-Time Neural Video
Compression", CVPR 2025): luma is pixel-unshuffled by 2 and stacked with the two chroma planes.

    Y (H x W), U, V (H/2 x W/2)
        -pack-> x: 6 x H/2 x W/2
        -g_a-> y: M x H/16 x W/16 -h_a-> z: N x H/64 x W/64
                                          z_hat -h_s-> (means, scales) of y
        y_hat -g_s-> x_hat: 6 x H/2 x W/2 -unpack-> Y, U, V

Variable rate follows DCVC-FM (Li et al., CVPR 2024): one learned gain vector per quality level
scales y before rounding (encoder) and rescales y_hat after it (decoder).
"""

from __future__ import annotations

import torch
from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import nn

from nvc.models.config import HyperpriorConfig

PAD_MULTIPLE = 64  # luma size must be a multiple of this (z is at 1/64 resolution)


def pack_yuv420(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W), (B,1,H/2,W/2) x2 -> (B,6,H/2,W/2)."""
    return torch.cat([nn.functional.pixel_unshuffle(y, 2), u, v], dim=1)


def unpack_yuv420(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,6,H/2,W/2) -> Y (B,1,H,W), U, V (B,1,H/2,W/2)."""
    return nn.functional.pixel_shuffle(x[:, :4], 2), x[:, 4:5], x[:, 5:6]


def analysis_transform(cfg: HyperpriorConfig) -> nn.Module:
    """g_a: 6 x H/2 x W/2 -> M x H/16 x W/16."""
    n, m = cfg.channels, cfg.latent_channels
    return nn.Sequential(
        conv(6, n, kernel_size=3, stride=1),
        GDN(n),
        conv(n, n),
        GDN(n),
        conv(n, n),
        GDN(n),
        conv(n, m),
    )


def synthesis_transform(cfg: HyperpriorConfig) -> nn.Module:
    """g_s: M x H/16 x W/16 -> 6 x H/2 x W/2 (the decoder's pixel-rate cost)."""
    n, m = cfg.channels, cfg.latent_channels
    return nn.Sequential(
        deconv(m, n),
        GDN(n, inverse=True),
        deconv(n, n),
        GDN(n, inverse=True),
        deconv(n, n),
        GDN(n, inverse=True),
        conv(n, 6, kernel_size=3, stride=1),
    )


def hyper_analysis(cfg: HyperpriorConfig) -> nn.Module:
    """h_a: y -> z (M x H/16 -> N x H/64)."""
    n, m = cfg.channels, cfg.latent_channels
    return nn.Sequential(
        conv(m, n, kernel_size=3, stride=1),
        nn.LeakyReLU(inplace=True),
        conv(n, n),
        nn.LeakyReLU(inplace=True),
        conv(n, n),
    )


def hyper_synthesis(cfg: HyperpriorConfig) -> nn.Module:
    """h_s: z_hat -> (means, scales) of y, concatenated on channels (2M x H/16)."""
    n, m = cfg.channels, cfg.latent_channels
    return nn.Sequential(
        deconv(n, m),
        nn.LeakyReLU(inplace=True),
        deconv(m, m * 3 // 2),
        nn.LeakyReLU(inplace=True),
        conv(m * 3 // 2, m * 2, kernel_size=3, stride=1),
    )


class QualityGain(nn.Module):
    """Per-level channel gains: y * enc_gain[q] before rounding, y_hat * dec_gain[q] after."""

    def __init__(self, levels: int, channels: int):
        super().__init__()
        # Geometric initial spacing (coarse steps at level 0, fine at the top); learned in training.
        init = torch.logspace(-1.5, 1.0, levels, base=2.0)[:, None].repeat(1, channels)
        self.enc_gain = nn.Parameter(init.clone())
        self.dec_gain = nn.Parameter(1.0 / init)

    def scale(self, y: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return y * self.enc_gain[quality][:, :, None, None]

    def unscale(self, y_hat: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return y_hat * self.dec_gain[quality][:, :, None, None]
