"""The intra frame model: transforms (`models.transforms`) plus the hyperprior latent codec
(`entropy.hyperprior`), with CompressAI's contract:

- `forward(x, quality)` -> reconstruction and likelihoods (training);
- `compress(x, quality)` -> latent streams, and the reconstruction the decoder will produce;
- `decompress(streams, shape, quality)` -> reconstruction.

x is a packed YUV420 tensor (B, 6, H/2, W/2) in [0, 1], H and W multiples of 64.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from entropy.hyperprior import HyperpriorLatentCodec, LatentStreams
from models import transforms as T
from models.config import HyperpriorConfig
from models.registry import ModelEntry, weights_hash


@dataclass(frozen=True)
class ModelOutput:
    x_hat: torch.Tensor
    y_likelihoods: torch.Tensor
    z_likelihoods: torch.Tensor


class IntraModel(nn.Module):
    def __init__(self, config: HyperpriorConfig):
        super().__init__()
        self.config = config
        self.g_a = T.analysis_transform(config)
        self.g_s = T.synthesis_transform(config)
        self.gain = T.QualityGain(config.quality_levels, config.latent_channels)
        self.latent_codec = HyperpriorLatentCodec(
            T.hyper_analysis(config), T.hyper_synthesis(config), config.channels, config.substreams
        )

    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> ModelOutput:
        y = self.gain.scale(self.g_a(x), quality)
        out = self.latent_codec(y)
        x_hat = self.g_s(self.gain.unscale(out.y_hat, quality))
        return ModelOutput(x_hat, out.y_likelihoods, out.z_likelihoods)

    @staticmethod
    def z_size(height: int, width: int) -> tuple[int, int]:
        """Hyper-latent size for a padded luma size."""
        return height // 64, width // 64

    @torch.no_grad()
    def compress(self, x: torch.Tensor, quality: int) -> tuple[LatentStreams, torch.Tensor]:
        q = torch.tensor([quality], device=x.device)
        streams, y_hat = self.latent_codec.compress(self.gain.scale(self.g_a(x), q))
        return streams, self.synthesize(y_hat, q)

    @torch.no_grad()
    def decompress(self, streams: LatentStreams, height: int, width: int, quality: int) -> torch.Tensor:
        y_hat = self.latent_codec.decompress(streams, self.z_size(height, width))
        return self.synthesize(y_hat.to(self.g_s[0].weight.device), torch.tensor([quality]))

    def synthesize(self, y_hat: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return self.g_s(self.gain.unscale(y_hat, quality.to(y_hat.device))).clamp_(0, 1)


def save_weights(model: IntraModel, path) -> None:
    """Save fp16 weights plus the integer CDF tables and the config (a file rebuilds its model).

    The CDF tables are rebuilt from the fp16-rounded weights, so that what is shipped is exactly
    what encoder and decoder use.
    """
    model = model.to("cpu").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    model.latent_codec.update()
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"config": model.config.to_dict(), "state_dict": state}, buf)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def load_weights(path) -> IntraModel:
    data = torch.load(path, map_location="cpu", weights_only=True)
    model = IntraModel(HyperpriorConfig.from_dict(data["config"]))
    # CompressAI's CDF buffers start empty; size them from the saved tables before loading.
    lc = model.latent_codec
    for codec, prefix in ((lc.z_codec, "latent_codec.z_codec."), (lc.y_codec, "latent_codec.y_codec.")):
        for name in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table"):
            key = prefix + name
            if key in data["state_dict"] and hasattr(codec, name):
                getattr(codec, name).resize_(data["state_dict"][key].shape)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()})
    return model.eval()


@lru_cache(maxsize=4)
def load_shipped(entry: ModelEntry, device: str = "cpu") -> tuple[IntraModel, bytes]:
    """The shipped model for a table entry, and the hash of its weights file."""
    if not entry.weights_path.exists():
        raise FileNotFoundError(f"weights for {entry.name} are missing: {entry.weights_path}")
    model = load_weights(entry.weights_path).to(device)
    return model, weights_hash(entry.weights_path)
