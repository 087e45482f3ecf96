"""Entropy models and coders: the hyperprior latent codec and its substreams."""

from entropy.hyperprior import HyperpriorLatentCodec, LatentStreams

__all__ = ["HyperpriorLatentCodec", "LatentStreams"]
