"""Transforms of the v2 codec ("lean"): a decoder built for int8 engines and a 6 kMAC/px budget.

The decoder uses only 3x3 / 1x1 convolutions, ReLU and PixelShuffle (no GDN, no transposed or
depthwise convolution), and spends its MACs at low resolution, as DCVC-RT (Jia et al., "Towards
Practical Real-Time Neural Video Compression", CVPR 2025) and the on-device codecs of Qualcomm
(MobileNVC, van Rozendaal et al. 2024) do. Frames are packed YUV420 (6 x H/2 x W/2, see
`nvc.models.transforms`). The encoder may be heavier; it runs once per frame and is not budgeted.

I-frame::

    x (6 x H/2) -g_a-> y (M x H/16) -h_a-> z (Z x H/64)
    z_hat -h_s-> hyper features (F x H/16) -> entropy parameters of y (entropy.multistep)
    y_hat -g_s-> x_hat:  H/16 -conv,PS-> H/8 -conv,PS-> H/4 -conv,PS-> H/2 -conv-> 6

P-frame (conditional coding on a motion-compensated prediction, after DCVC, Li et al. NeurIPS 2021)::

    pred = warp(x_ref, mv)                                  (models.motion)
    x, pred -g_a-> y ;  y_hat, pred -g_s-> x_hat = pred + residual(y_hat, pred)

The P synthesis sees the prediction at 1/4 resolution (pixel-unshuffled) and at 1/2 (its output
layer), and adds its output to the prediction, so a latent of zeros reproduces the prediction: where
motion predicts well the codec needs no bits beyond the (skipped) latent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from nvc.models.config import SavedConfig

LEAN_PAD = 64  # luma sizes are padded to this multiple (z is at 1/64)


@dataclass(frozen=True)
class LeanConfig(SavedConfig):
    """The v2 architecture; saved in the weights file, so a file rebuilds its model."""

    architecture: ClassVar[str] = "lean"  # what a weights file records to rebuild the model

    latent_channels: int = 96  # M: channels of y (1/16 luma resolution)
    hyper_channels: int = 64  # Z: channels of z (1/64)
    hyper_features: int = 64  # F: h_s output features at 1/16, shared by the entropy-parameter nets
    context_channels: int = 48  # hidden width of each multi-step context net
    synthesis_width: tuple[int, int, int] = (128, 64, 32)  # g_s channels at 1/16, 1/8, 1/4
    quality_levels: int = 8
    # loss = lambda * 255^2 * MSE_yuv + bpp, one lambda per quality level (factor 2 apart).
    lambdas: tuple[float, ...] = field(default=(0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024))
    intra_steps: int = 4  # decoding steps of an I-frame latent: channel halves x checkerboard
    inter_steps: int = 2  # of a P-frame latent: checkerboard
    substreams: int = 2  # K: independent main-latent substreams (channel groups) per step
    skip_scale: float = 0.12  # symbols whose predicted scale is at most this are not coded (DCVC-RT)
    # A linear 16x16-block transform beside g_a and g_s (`BlockTransform`); files from before it lack it.
    block_transform: bool = True
    defaults_of_older_files: ClassVar[dict] = {"block_transform": False}

    def __post_init__(self) -> None:
        if len(self.lambdas) != self.quality_levels:
            raise ValueError("one lambda per quality level")
        if self.latent_channels % (2 * self.substreams):
            raise ValueError("latent_channels must divide into channel halves and substreams")


def conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def conv1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


def act() -> nn.Module:
    return nn.ReLU(inplace=True)


def up_block(cin: int, hidden: int, cout: int) -> nn.Sequential:
    """One resolution step up: 3x3 conv to `hidden` -> ReLU -> 3x3 conv to 4*cout -> PixelShuffle(2)."""
    return nn.Sequential(conv3(cin, hidden), act(), conv3(hidden, 4 * cout), nn.PixelShuffle(2), act())


BLOCK = 8  # packed samples per block side: a 16x16 luma block and its two 8x8 chroma blocks
BLOCK_SAMPLES = 6 * BLOCK * BLOCK


class BlockTransform(nn.Module):
    """A learned linear transform of 16x16 blocks (384 packed YUV420 samples) to or from the M latent
    channels: a 1x1 convolution on the pixel-(un)shuffled frame, started as the Karhunen-Loeve
    transform of training blocks (`tools.train_v2.start_block_transform`).

    It runs beside the nonlinear g_a / g_s (which add to it), so the codec is at worst a transform
    coder with a learned hyperprior, as in "nonlinear transform coding" (Ballé et al., IEEE JSTSP
    2021) where a linear transform is the baseline the nonlinear one refines. Measured before it
    existed: the nonlinear pair alone, after 8,700 CPU training steps, reconstructed an unquantized
    held-out frame at 28.9 dB, and the KLT keeping 96 of 384 coefficients at 40.9 dB.
    Decoder cost: M * 384 / 256 = 0.14 kMAC per luma pixel."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Conv2d(cin, cout, 1)

    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 6, H/2, W/2) -> (B, M, H/16, W/16)."""
        return self.linear(nn.functional.pixel_unshuffle(x, BLOCK))

    def synthesise(self, y: torch.Tensor) -> torch.Tensor:
        """(B, M, H/16, W/16) -> (B, 6, H/2, W/2)."""
        return nn.functional.pixel_shuffle(self.linear(y), BLOCK)


class Analysis(nn.Module):
    """g_a: packed frame (and, for P-frames, its prediction) -> y (M x H/16). Encoder only.

    With `cfg.block_transform`, y adds a linear block transform of the frame (of the frame minus
    its prediction for P-frames: the residual a hybrid codec transforms)."""

    def __init__(self, cfg: LeanConfig, in_channels: int):
        super().__init__()
        m = cfg.latent_channels
        self.block = BlockTransform(BLOCK_SAMPLES, m) if cfg.block_transform else None
        self.net = nn.Sequential(
            conv3(in_channels, 48), nn.LeakyReLU(0.1, inplace=True),
            conv3(48, 64, 2), nn.LeakyReLU(0.1, inplace=True),  # 1/4
            conv3(64, 64), nn.LeakyReLU(0.1, inplace=True),
            conv3(64, 96, 2), nn.LeakyReLU(0.1, inplace=True),  # 1/8
            conv3(96, 96), nn.LeakyReLU(0.1, inplace=True),
            conv3(96, 128, 2), nn.LeakyReLU(0.1, inplace=True),  # 1/16
            conv3(128, m),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if self.block is not None:
            y = y + self.block.analyse(x[:, :6] - x[:, 6:] if x.size(1) == 12 else x)
        return y


class Synthesis(nn.Module):
    """g_s: y_hat (M x H/16) -> packed frame (6 x H/2); with `conditional`, also the prediction.

    Cost per luma pixel (default widths): 1/16 stage 1.58 k, 1/8 stage 1.73 k, 1/4 stage 1.73 k
    (+0.43 k for the prediction), output 0.22 k (+0.08 k), block transform 0.14 k:
    I 5.4 kMAC/px, P 5.9 kMAC/px.
    """

    def __init__(self, cfg: LeanConfig, conditional: bool):
        super().__init__()
        m = cfg.latent_channels
        w16, w8, w4 = cfg.synthesis_width
        self.conditional = conditional
        extra4 = 24 if conditional else 0  # the prediction unshuffled to 1/4: 6 x 4 channels
        self.up16 = up_block(m, w16, w8)  # 1/16 -> 1/8
        self.up8 = up_block(w8, w8, w4)  # 1/8 -> 1/4
        self.mix4 = nn.Sequential(conv3(w4 + extra4, w4), act())
        self.up4 = nn.Sequential(conv3(w4, 4 * 16), nn.PixelShuffle(2), act())  # 1/4 -> 1/2
        self.out = conv3(16 + (6 if conditional else 0), 6)
        self.block = BlockTransform(m, BLOCK_SAMPLES) if cfg.block_transform else None
        if not conditional:  # start at mid-grey rather than black: early training is spent on PSNR, not on the mean
            nn.init.constant_(self.out.bias, 0.5)

    def forward(self, y_hat: torch.Tensor, pred: torch.Tensor | None = None) -> torch.Tensor:
        h = self.up8(self.up16(y_hat))
        if self.conditional:
            h = self.mix4(torch.cat([h, nn.functional.pixel_unshuffle(pred, 2)], dim=1))
            x_hat = pred + self.out(torch.cat([self.up4(h), pred], dim=1))
        else:
            x_hat = self.out(self.up4(self.mix4(h)))
        return x_hat if self.block is None else x_hat + self.block.synthesise(y_hat)


class HyperAnalysis(nn.Module):
    """h_a: y (M x H/16) -> z (Z x H/64). Encoder only."""

    def __init__(self, cfg: LeanConfig):
        super().__init__()
        m, z = cfg.latent_channels, cfg.hyper_channels
        self.net = nn.Sequential(conv3(m, z), nn.LeakyReLU(0.1, inplace=True), conv3(z, z, 2),
                                 nn.LeakyReLU(0.1, inplace=True), conv3(z, z, 2))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class HyperSynthesis(nn.Module):
    """h_s: z_hat (Z x H/64) -> hyper features (F x H/16), the input of the entropy parameters."""

    def __init__(self, cfg: LeanConfig):
        super().__init__()
        z, f = cfg.hyper_channels, cfg.hyper_features
        self.net = nn.Sequential(conv3(z, z), act(), conv3(z, 4 * z), nn.PixelShuffle(2), act(),
                                 conv3(z, 4 * f), nn.PixelShuffle(2), act())

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.net(z_hat)


class QualityGain(nn.Module):
    """Per-level channel gains (DCVC-FM): y * enc_gain[q] before rounding, y_hat * dec_gain[q] after."""

    def __init__(self, levels: int, channels: int):
        super().__init__()
        init = torch.logspace(-2.0, 1.5, levels, base=2.0)[:, None].repeat(1, channels)
        self.enc_gain = nn.Parameter(init.clone())
        self.dec_gain = nn.Parameter(1.0 / init)

    def scale(self, y: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return y * self.enc_gain[quality][:, :, None, None]

    def unscale(self, y_hat: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return y_hat * self.dec_gain[quality][:, :, None, None]
