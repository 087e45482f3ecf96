"""The hyper-latent z coded as CompressAI's `EntropyBottleneck` codes it (one integer CDF per channel,
symbols around the channel's median; the same bytes), but through `nvc.entropy.coder`: the native
coder, which checks its bounds on damaged data where CompressAI's reads past its buffer."""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck

from nvc.entropy import coder


def _medians_indexes(eb: EntropyBottleneck, shape) -> tuple[torch.Tensor, torch.Tensor]:
    medians = eb.quantiles[:, :, 1].detach().reshape(1, -1, 1, 1)
    indexes = torch.arange(shape[1], dtype=torch.int32).reshape(1, -1, 1, 1).expand(shape)
    return medians, indexes


def encode(eb: EntropyBottleneck, z: torch.Tensor, cache: coder.TableCache) -> tuple[bytes, torch.Tensor]:
    """z (1, C, h, w) -> (stream, z_hat)."""
    medians, indexes = _medians_indexes(eb, z.shape)
    symbols = torch.round(z - medians)
    data = coder.encode(symbols.int().flatten().cpu().numpy(), indexes.flatten().numpy(), cache.of(eb))
    return data, symbols + medians


def decode(eb: EntropyBottleneck, data: bytes, shape: tuple[int, int, int, int], cache: coder.TableCache) -> torch.Tensor:
    """The z_hat of `encode`, given its shape; a damaged stream raises NvcError."""
    medians, indexes = _medians_indexes(eb, shape)
    values = coder.decode(data, indexes.flatten().numpy(), cache.of(eb))
    return torch.from_numpy(values).reshape(shape).to(medians) + medians
