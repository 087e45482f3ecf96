"""Entropy models and coders: the hyperprior latent codec, its temporal variant, and substreams."""

from entropy.hyperprior import HyperpriorLatentCodec, LatentStreams
from entropy.temporal import TemporalHyperpriorLatentCodec

__all__ = ["HyperpriorLatentCodec", "LatentStreams", "TemporalHyperpriorLatentCodec"]
