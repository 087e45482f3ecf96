"""Multiply-accumulates of a network path, counted from the layers it actually runs.

Forward hooks on every convolution, transposed convolution, GDN and motion compensation (a bilinear
warp: 4 MACs per output sample) record the MACs of one call;
dividing by the luma pixels gives kMAC per pixel, the resolution-independent cost figure of
DCVC-RT and of Qualcomm's on-device codecs.
"""

from __future__ import annotations

from typing import Callable

import torch
from compressai.layers import GDN
from torch import nn

from nvc.models.motion import MotionCompensation


def _macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    if isinstance(module, nn.ConvTranspose2d):  # every input tap hits a k x k x out_channels window
        k = module.kernel_size[0] * module.kernel_size[1]
        return inputs[0][0].numel() * module.out_channels * k // module.groups
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return output[0].numel() * module.in_channels * k // module.groups
    if isinstance(module, GDN):  # the 1x1 normalisation pool
        return output[0].numel() * output.shape[1]
    if isinstance(module, MotionCompensation):  # bilinear: 4 taps per output sample
        return 4 * output[0].numel()
    return 0


def kmac_per_pixel(run: Callable[[], object], modules: list[nn.Module], luma_pixels: int) -> float:
    """kMAC per luma pixel of `run()` (batch 1), counting the layers inside `modules`."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += _macs(module, inputs, output)

    handles = [m.register_forward_hook(hook) for root in modules for m in root.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, GDN, MotionCompensation))]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total / luma_pixels / 1e3
