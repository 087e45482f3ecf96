"""The frame models, with CompressAI's contract, and the shipped set of weights.

- `IntraModel`: I-frames, `nvc.models.transforms` plus the hyperprior latent codec (`nvc.entropy.hyperprior`).
- `InterModel`: P-frames, conditional coding on the previous decoded frame (`nvc.models.inter`) plus the
  hyperprior with a latent-domain temporal prior (`nvc.entropy.temporal`).
- `VideoModel`: what one weights file holds, an intra model and (from model id 2) an inter model.

Every frame model, I or P, v1 or v2 (`nvc.lean_model`), answers one frame-codec contract, so that the
GOP code dispatches once:

    compress(x, ref, quality) -> (streams, Reconstruction)        streams: list of container `Stream`s
    decode_latent(streams, ref, height, width) -> DecodedLatent    entropy decoding (no pixels needed)
    synthesize(latent, ref, quality) -> Reconstruction             the pixel-rate half
    decompress(streams, ref, height, width, quality) = synthesize(decode_latent(...))

`ref` is the reference frame's `Reconstruction` (None, and ignored, for I-frames). `forward` is the
training path (reconstruction and likelihoods) and differs between I and P.
A `Reconstruction` is a decoded-picture-buffer entry: the frame, rounded to 8 bits exactly as it is
output, and its latent y_hat, the temporal prior of the next frame's entropy model.

x is a packed YUV420 tensor (B, 6, H/2, W/2) in [0, 1], H and W multiples of 64.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import nn

from nvc.container import Stream, StreamKind
from nvc.entropy.hyperprior import HyperpriorLatentCodec, LatentStreams
from nvc.errors import NvcError
from nvc.entropy.temporal import TemporalHyperpriorLatentCodec
from nvc.models import inter as I
from nvc.models import transforms as T
from nvc.models.config import HyperpriorConfig
from nvc.models.registry import ModelEntry, weights_hash


@dataclass(frozen=True)
class ModelOutput:
    x_hat: torch.Tensor
    y_hat: torch.Tensor
    y_likelihoods: torch.Tensor
    z_likelihoods: torch.Tensor


@dataclass(frozen=True)
class Reconstruction:
    x_hat: torch.Tensor  # (1, 6, H/2, W/2), on the 8-bit grid: exactly the output frame
    y_hat: torch.Tensor  # (1, M, H/16, W/16), quantized latent (gain-scaled domain)
    source: torch.Tensor | None = None  # encoder only: the original frame (v2 searches motion on originals)
    x_bytes: torch.Tensor | None = None  # x_hat * 255 as uint8, when the synthesis made it (int8 engines)
    z_hat: torch.Tensor | None = None  # a v2 P-frame's hyper-latent, which the next P-frame may repeat


@dataclass(frozen=True)
class DecodedLatent:
    """What entropy decoding of one frame yields: the input of its synthesis."""

    y_hat: torch.Tensor
    mv: torch.Tensor | None = None  # a P-frame's decoded motion field (v2)
    z_hat: torch.Tensor | None = None  # a v2 P-frame's hyper-latent (kept in its `Reconstruction`)
    # Synthesis inputs that depend on the latent and motion only, made early by a deployed model's
    # `prepare_synthesis` (on the decoder's entropy thread); None: `synthesize` makes what it needs.
    prepared: dict | None = None


def z_size(height: int, width: int) -> tuple[int, int]:
    """Hyper-latent size for a padded luma size."""
    return height // 64, width // 64


def yuv_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample (6 MSE_Y + MSE_U + MSE_V) / 8 on packed YUV420 tensors: the distortion every model
    is trained under (and the v2 encoder's choices are scored with)."""
    err = (x_hat - x).pow(2).mean(dim=(2, 3))
    return (6 * err[:, :4].mean(1) + err[:, 4] + err[:, 5]) / 8


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul_(255).round_().div_(255)


def _v1_streams(ls: LatentStreams) -> list[Stream]:
    """A v1 latent's streams (z and K y substreams) as the packet's list of typed streams."""
    return [Stream(StreamKind.HYPER, 0, 0, ls.z)] + [Stream(StreamKind.LATENT, 0, k, s) for k, s in enumerate(ls.y)]


def _v1_latent_streams(streams: list[Stream]) -> LatentStreams:
    z = [s.data for s in streams if s.kind == StreamKind.HYPER]
    y = [s for s in streams if s.kind == StreamKind.LATENT and s.step == 0]
    if len(z) != 1 or len(y) + 1 != len(streams) or [s.part for s in y] != list(range(len(y))):
        raise NvcError("malformed packet: not the streams of a v1 model")
    return LatentStreams(z[0], tuple(s.data for s in y))


class IntraModel(nn.Module):
    """The v1 I-frame model; answers the frame-codec contract (`ref` is ignored)."""

    def __init__(self, config: HyperpriorConfig):
        super().__init__()
        self.config = config
        self.g_a = T.analysis_transform(config)
        self.g_s = T.synthesis_transform(config)
        self.gain = T.QualityGain(config.quality_levels, config.latent_channels)
        self.latent_codec = HyperpriorLatentCodec(
            T.hyper_analysis(config), T.hyper_synthesis(config), config.channels, config.substreams
        )

    def entropy_parameter_modules(self) -> list[nn.Module]:
        return [self.latent_codec.h_s]

    def synthesis_modules(self) -> list[nn.Module]:
        return [self.g_s]

    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> ModelOutput:
        y = self.gain.scale(self.g_a(x), quality)
        out = self.latent_codec(y)
        x_hat = self.g_s(self.gain.unscale(out.y_hat, quality))
        return ModelOutput(x_hat, out.y_hat, out.y_likelihoods, out.z_likelihoods)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, ref: Reconstruction | None, quality: int) -> tuple[list[Stream], Reconstruction]:
        q = torch.tensor([quality], device=x.device)
        streams, y_hat = self.latent_codec.compress(self.gain.scale(self.g_a(x), q))
        return _v1_streams(streams), self.synthesize(DecodedLatent(y_hat), ref, quality)

    @torch.no_grad()
    def decode_latent(self, streams: list[Stream], ref: Reconstruction | None, height: int, width: int) -> DecodedLatent:
        """Entropy decoding, the first half of `decompress`: streams -> y_hat on the model's device."""
        y_hat = self.latent_codec.decompress(_v1_latent_streams(streams), z_size(height, width))
        return DecodedLatent(y_hat.to(self.g_s[0].weight.device))

    @torch.no_grad()
    def synthesize(self, latent: DecodedLatent, ref: Reconstruction | None, quality: int) -> Reconstruction:
        q = torch.tensor([quality], device=latent.y_hat.device)
        return Reconstruction(to_8bit(self.g_s(self.gain.unscale(latent.y_hat, q))), latent.y_hat)

    def decompress(self, streams, ref, height: int, width: int, quality: int) -> Reconstruction:
        return self.synthesize(self.decode_latent(streams, ref, height, width), ref, quality)


class InterModel(nn.Module):
    """v1 P-frame model: x_t coded given the reference frame's pixels (transforms) and latent (entropy)."""

    def __init__(self, config: HyperpriorConfig):
        super().__init__()
        self.config = config
        self.context = I.ContextPyramid()
        self.g_a = I.ConditionalAnalysis(config)
        self.g_s = I.ConditionalSynthesis(config)
        self.gain = T.QualityGain(config.quality_levels, config.latent_channels)
        self.latent_codec = TemporalHyperpriorLatentCodec(
            T.hyper_analysis(config), T.hyper_synthesis(config), config.channels, config.latent_channels,
            config.substreams,
        )

    def entropy_parameter_modules(self) -> list[nn.Module]:
        lc = self.latent_codec
        return [lc.h_s, lc.temporal, lc.fuse]

    def synthesis_modules(self) -> list[nn.Module]:
        return [self.context, self.g_s]

    @torch.no_grad()
    def init_from(self, intra: IntraModel) -> None:
        """Start from the intra model: with its zero-initialised context paths it codes the same."""
        self.g_a.init_from(intra.g_a)
        self.g_s.init_from(intra.g_s)
        self.gain.load_state_dict(intra.gain.state_dict())
        own = self.latent_codec.state_dict()
        own.update({k: v for k, v in intra.latent_codec.state_dict().items() if k in own and v.shape == own[k].shape})
        self.latent_codec.load_state_dict(own)

    def forward(self, x: torch.Tensor, ref_x: torch.Tensor, ref_y: torch.Tensor, quality: torch.Tensor) -> ModelOutput:
        ctx = self.context(ref_x)
        y = self.gain.scale(self.g_a(x, ctx), quality)
        out = self.latent_codec(y, ref_y)
        x_hat = self.g_s(self.gain.unscale(out.y_hat, quality), ctx)
        return ModelOutput(x_hat, out.y_hat, out.y_likelihoods, out.z_likelihoods)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, ref: Reconstruction, quality: int) -> tuple[list[Stream], Reconstruction]:
        q = torch.tensor([quality], device=x.device)
        ctx = self.context(ref.x_hat)
        streams, y_hat = self.latent_codec.compress(self.gain.scale(self.g_a(x, ctx), q), ref.y_hat)
        x_hat = to_8bit(self.g_s(self.gain.unscale(y_hat, q), ctx))
        return _v1_streams(streams), Reconstruction(x_hat, y_hat)

    @torch.no_grad()
    def decode_latent(self, streams: list[Stream], ref: Reconstruction, height: int, width: int) -> DecodedLatent:
        """Entropy decoding, the first half of `decompress`: needs the reference's latent only."""
        y_hat = self.latent_codec.decompress(_v1_latent_streams(streams), z_size(height, width), ref.y_hat)
        return DecodedLatent(y_hat.to(ref.y_hat.device))

    @torch.no_grad()
    def synthesize(self, latent: DecodedLatent, ref: Reconstruction, quality: int) -> Reconstruction:
        """The second half of `decompress`: y_hat and the reference's pixels -> the frame."""
        q = torch.tensor([quality], device=latent.y_hat.device)
        x_hat = to_8bit(self.g_s(self.gain.unscale(latent.y_hat, q), self.context(ref.x_hat)))
        return Reconstruction(x_hat, latent.y_hat)

    def decompress(self, streams, ref, height: int, width: int, quality: int) -> Reconstruction:
        return self.synthesize(self.decode_latent(streams, ref, height, width), ref, quality)


class VideoModel(nn.Module):
    """One shipped set of weights: the intra model and, unless `inter=False`, the P-frame model."""

    def __init__(self, config: HyperpriorConfig, inter: bool = True):
        super().__init__()
        self.config = config
        self.intra = IntraModel(config)
        self.inter = InterModel(config) if inter else None


def update_entropy_tables(model: nn.Module) -> None:
    from nvc.entropy.motion import MotionCoder
    from nvc.entropy.multistep import MultiStepLatentCodec

    for m in model.modules():
        if isinstance(m, (HyperpriorLatentCodec, MultiStepLatentCodec, MotionCoder)):
            m.update()


def save_weights(model: VideoModel, path) -> None:
    """Save fp16 weights plus the integer CDF tables and the config (a file rebuilds its model).

    The CDF tables are rebuilt from the fp16-rounded weights, so that what is shipped is exactly
    what encoder and decoder use. Buffers (scale table, bounds) stay in full precision.
    """
    model = model.to("cpu").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    update_entropy_tables(model)
    params = {name for name, _ in model.named_parameters()}
    state = {k: (v.half() if k in params else v) for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"architecture": model.config.architecture, "config": model.config.to_dict(),
                "inter": model.inter is not None, "state_dict": state}, buf)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def _build(architecture: str, config: dict, inter: bool) -> nn.Module:
    if architecture == "lean":
        from nvc.lean_model import LeanVideoModel
        from nvc.models.lean import LeanConfig

        return LeanVideoModel(LeanConfig.from_dict(config))
    if architecture == "pq-mim":
        from nvc.models.pq import PQMimConfig
        from nvc.pq_model import PQMimVideoModel

        return PQMimVideoModel(PQMimConfig.from_dict(config))
    return VideoModel(HyperpriorConfig.from_dict(config), inter=inter)


def load_weights(path) -> nn.Module:
    """The model a weights file describes (v1 `VideoModel`, v2 `LeanVideoModel` or `PQMimVideoModel`), in eval mode."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    state = data["state_dict"]
    if "inter" not in data:  # model id 1: an intra model saved on its own
        state = {f"intra.{k}": v for k, v in state.items()}
    model = _build(data.get("architecture", "hyperprior"), data["config"], bool(data.get("inter", False)))
    # CompressAI's CDF buffers start empty; size them from the saved tables before loading.
    for name, codec in model.named_modules():
        if isinstance(codec, (EntropyBottleneck, GaussianConditional)):
            for buf in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table"):
                key = f"{name}.{buf}"
                if key in state and hasattr(codec, buf):
                    getattr(codec, buf).resize_(state[key].shape)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    # Bounds are constants of the architecture, not learned: model 1's file stored them in fp16,
    # where the 1e-9 likelihood bound is 0.
    state.update({k: v for k, v in model.state_dict().items() if k.endswith(".bound")})
    model.load_state_dict(state)
    return model.eval()


@lru_cache(maxsize=4)
def load_shipped(entry: ModelEntry, device: str = "cpu") -> tuple[VideoModel, bytes]:
    """The shipped model for a table entry, and the hash of its weights file."""
    if not entry.weights_path.exists():
        raise FileNotFoundError(f"weights for {entry.name} are missing: {entry.weights_path}")
    model = load_weights(entry.weights_path).to(device)
    return model, weights_hash(entry.weights_path)
