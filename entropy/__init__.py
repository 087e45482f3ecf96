"""Entropy models and coders: hyperprior latent codecs (v1), the multi-step latent codec and the
motion-field coder (v2), and the table-driven symbol coder they share."""
