"""Encoder-side latent refinement: the latent a frame is coded with, optimised for that frame's
rate-distortion loss by gradient descent through the decoder (Campos et al., "Content adaptive
optimization for neural image compression", CVPR workshops 2019; Yang, Bamler & Mandt, "Improving
inference for neural image compression", NeurIPS 2020). An encoder choice: the stream and the
decoder are unchanged, the analysis transform only gives the starting point.

The loss is the training loss of the one frame, bits + lambda * 255^2 * `yuv_mse` * luma pixels,
with the hyper-latent (and so the step-0 parameters) held at the coding's own, the later steps'
parameters recomputed from the latent being optimised, skipped symbols (scale class 0) costing
nothing and set to their means, and rounding relaxed away ("soft": the residuals stay real
numbers, their rate the Gaussian's mass over [r - 1/2, r + 1/2]). The coder then rounds the
refined latent (RDOQ), and the caller keeps whichever coding, refined or not, costs less.
"""

from __future__ import annotations

import math

import torch

from nvc.entropy import coder
from nvc.entropy.multistep import MultiStepLatentCodec, step_masks
from nvc.model import yuv_mse

LEARNING_RATE = 0.02


def relaxed_rate(codec: MultiStepLatentCodec, y: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latent as the synthesis sees it, bits) of `y` under the multi-step model with base parameters
    `base`, rounding relaxed: coded symbols stay real, skipped ones take their mean."""
    masks = step_masks(codec.steps, *y.shape[1:], device=y.device)
    y_hat, bits = torch.zeros_like(y), y.new_zeros(())
    for s in range(codec.steps):
        means, scales = codec.step_parameters(s, base, y_hat)
        with torch.no_grad():
            coded = coder.scale_indexes(scales.contiguous(), codec.y_codec.scale_table.to(y)) > 0
        take = masks[s][None] & coded
        r = y - means
        sigma = scales.clamp_min(0.11) * math.sqrt(2)
        p = 0.5 * (torch.erf((r + 0.5) / sigma) - torch.erf((r - 0.5) / sigma))
        bits = bits + torch.where(take, -torch.log2(p.clamp_min(1e-9)), torch.zeros_like(p)).sum()
        y_hat = torch.where(masks[s][None], torch.where(coded, y, means), y_hat)
    return y_hat, bits


def refine_latent(y: torch.Tensor, synthesize, codec: MultiStepLatentCodec, base: torch.Tensor,
                  x: torch.Tensor, lmbda: float, iterations: int) -> torch.Tensor:
    """`y` after `iterations` Adam steps on the frame's relaxed loss. `synthesize(y_hat)`: the
    frame's pixels from a latent (its prediction and gain bound in), differentiable."""
    y = y.detach().clone().requires_grad_(True)
    base = base.detach()
    weight = lmbda * 255**2 * 4 * x.shape[-2] * x.shape[-1]
    opt = torch.optim.Adam([y], lr=LEARNING_RATE)
    with torch.enable_grad():
        for _ in range(iterations):
            y_hat, bits = relaxed_rate(codec, y, base)
            loss = bits + weight * yuv_mse(synthesize(y_hat), x).sum()
            (y.grad,) = torch.autograd.grad(loss, [y])  # the weights get no gradients
            opt.step()
    return y.detach()
