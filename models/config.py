"""Architecture configs: one frozen dataclass per architecture, saved inside the weights file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

DEFAULT_QUALITY = 3  # the quality level used when none is asked for


class SavedConfig:
    """What every architecture config shares: its dict form, saved in the weights file, and back.
    Sequences come back as tuples (the configs are frozen and hashable); fields that files written
    before them lack take the value in `defaults_of_older_files`, not the field's default."""

    defaults_of_older_files: ClassVar[dict] = {}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{**cls.defaults_of_older_files,
                      **{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()}})


@dataclass(frozen=True)
class HyperpriorConfig(SavedConfig):
    """Mean-scale hyperprior intra codec on packed YUV420 (see `nvc.models.transforms`)."""

    architecture: ClassVar[str] = "hyperprior"  # what a weights file records to rebuild the model

    channels: int = 64  # N: hidden channels of g_a, g_s, h_a and h_s
    latent_channels: int = 128  # M: channels of the main latent y (1/16 resolution)
    quality_levels: int = 6  # number of rate points served by one set of weights
    substreams: int = 4  # K: channel groups of y coded as independent streams
    # Rate-distortion trade-off per quality level (loss = lambda * 255^2 * MSE_yuv + bpp),
    # the CompressAI/Ballé lambdas for its quality 1..6.
    lambdas: tuple[float, ...] = field(default=(0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483))

    def __post_init__(self) -> None:
        if len(self.lambdas) != self.quality_levels:
            raise ValueError("one lambda per quality level")
        if self.latent_channels % self.substreams:
            raise ValueError("latent_channels must divide into substreams")
