"""Masked-token entropy model of the PQ-MIM codec: categorical distributions over product-quantizer
tokens, decoded in a fixed schedule of S steps, and their coding with constriction.

Follows El-Nouby et al., "Image Compression with Product Quantized Masked Image Modeling" (TMLR
2023) for the model (a masked-image-modeling network predicts, for every masked token, a categorical
distribution over the K codewords of its codebook, given the tokens already decoded) and Mentzer et
al., "M2T: Masking Transformers Twice for Faster Decoding of Compressed Images" (ICCV 2023) for the
decoding order: a deterministic low-discrepancy order over the tokens cut into S steps by a power
law (the fraction decoded after step s is ((s+1)/S)^2.2), so that early steps, coded with little
context, hold few tokens. Tokens within a step are decoded in parallel.

Sized for a 2-core CPU, the network is a conv mixer rather than a transformer: a sum of per-codebook
token embeddings (a mask embedding for unknown tokens) and of an embedding of the number of active
codebooks, three dilated residual 3x3 blocks (receptive field 15 x 15 positions), and one linear
head per codebook, evaluated only at the tokens of the step being decoded::

    tokens (M, h, w), known mask ─embed, sum over M─► (C, h, w) ─3 dilated res. blocks─► features
    features at the step's tokens of codebook m ─head_m─► logits (n_m, K) ─softmax─► 16-bit freqs
    freqs, tokens ─constriction ANS (Categorical, perfect=False)─► one stream per step

P-frames use the same network with `temporal=True`: the previous frame's tokens at each position
add their own embeddings, and a copy logit per codebook (a linear function of the features) is
added to the logit of the previous frame's token there, so that unchanged content can be coded as
"same as before" almost for free (a conditional entropy model of tokens, as DCVC conditions latents
on a temporal context).

Determinism: a step's logits are computed on one CPU thread (`single_threaded`, as the v2 entropy
parameters are) with exactly the same calls and shapes in the encoder and the decoder, then
quantized to integer frequencies (every symbol >= 1, total <= 2^16) before constriction sees them,
so both sides code with identical tables on one machine whatever the process's thread count (across
CPU types an integer path would be needed, as for v2). The schedule is pure integer arithmetic.

Stream format (the container's LATENT streams, step s = 0..S-1, part 0): the ANS words of the step's
tokens as little-endian uint32, codebook-major then raster order; an empty step is an empty stream.
A stream that does not decode to exactly its tokens (left-over words, exhausted early, wrong length)
raises `NvcError`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nvc.entropy.hyperprior import single_threaded
from nvc.errors import NvcError

PRECISION = 16  # frequencies of a table sum to at most 2^16
# Roberts' R_3 sequence: alpha_j = 1 / phi_3^(j+1), phi_3 the real root of x^4 = x + 1, in 0.32 fixed point.
_R3 = np.array([3518319155, 2882110345, 2360945575], dtype=np.uint64)
_ALPHA_NUM, _ALPHA_DEN = 11, 5  # the power law's exponent, 2.2 = 11/5 (exact in integers)


# ---- schedule --------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def token_order(codebooks: int, height: int, width: int) -> np.ndarray:
    """Token indices (into the raster (M, h, w) grid) in a low-discrepancy order: the order in which
    the R_3 sequence, quantized to the grid, first visits each cell (M2T's quantized LDS); cells it
    has not reached after 32 passes follow in raster order. Integer arithmetic only."""
    total = codebooks * height * width
    i = np.arange(1, 32 * total + 1, dtype=np.uint64)[:, None]
    u = (i * _R3[None, :]) & np.uint64(0xFFFFFFFF)  # fractional parts in 0.32 fixed point
    shape = np.array([codebooks, height, width], dtype=np.uint64)
    cell = (u * shape[None, :]) >> np.uint64(32)
    flat = (cell[:, 0] * np.uint64(height * width) + cell[:, 1] * np.uint64(width) + cell[:, 2]).astype(np.int64)
    _, first = np.unique(flat, return_index=True)
    visited = flat[np.sort(first)]
    missing = np.setdiff1d(np.arange(total, dtype=np.int64), visited, assume_unique=True)
    return np.concatenate([visited, missing])


def _iroot(n: int, k: int) -> int:
    """floor(n ** (1/k)) for non-negative integers, exactly."""
    lo, hi = 0, 1 << (n.bit_length() // k + 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid**k <= n:
            lo = mid
        else:
            hi = mid - 1
    return lo


@lru_cache(maxsize=16)
def step_fractions(steps: int) -> tuple[int, ...]:
    """Cumulative share of tokens decoded after each step, in 1/2^16: floor(2^16 ((s+1)/S)^2.2)."""
    scale = 1 << PRECISION
    return tuple(_iroot(scale**_ALPHA_DEN * (s + 1) ** _ALPHA_NUM // steps**_ALPHA_NUM, _ALPHA_DEN)
                 for s in range(steps))


@lru_cache(maxsize=64)
def schedule(steps: int, codebooks: int, height: int, width: int) -> np.ndarray:
    """Step id (0..steps-1) of every token of an (M, h, w) grid: the low-discrepancy order cut by
    the power law. Deterministic; read-only (cached)."""
    if not 1 <= steps <= 8:
        raise ValueError("steps must be 1..8")
    total = codebooks * height * width
    ends = np.array([total * f >> PRECISION for f in step_fractions(steps)], dtype=np.int64)
    ends[-1] = total
    rank = np.empty(total, dtype=np.int64)
    rank[token_order(codebooks, height, width)] = np.arange(total)
    out = np.searchsorted(ends, rank, side="right").astype(np.int8).reshape(codebooks, height, width)
    out.setflags(write=False)
    return out


def step_map(steps: int, active: torch.Tensor, codebooks: int, height: int, width: int) -> torch.Tensor:
    """(B,) active counts -> (B, M, h, w) int64 step ids, -1 for the inactive codebooks."""
    rows = []
    for a in active.tolist():
        s = torch.full((codebooks, height, width), -1, dtype=torch.int64)
        s[:a] = torch.from_numpy(schedule(steps, a, height, width).astype(np.int64))
        rows.append(s)
    return torch.stack(rows).to(active.device)


# ---- probabilities ------------------------------------------------------------------------------
def quantize_probabilities(logits: torch.Tensor) -> np.ndarray:
    """(n, K) logits -> (n, K) int32 frequencies, each >= 1, each row summing to at most 2^16."""
    k = logits.size(-1)
    p = torch.softmax(logits.float(), dim=-1)
    freq = torch.floor(p * float((1 << PRECISION) - k)).to(torch.int32) + 1
    return freq.cpu().numpy()


# ---- the network ----------------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Conv2d(width, width, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.mix(F.relu(self.conv(F.relu(h))))


class MaskedTokenModel(nn.Module):
    """p(token | known tokens, active codebooks[, previous frame's tokens]) for every token of an
    (M, h, w) grid.

    `temporal=True` makes the P-frame model: the previous frame's tokens (`prev`, (B, M, h, w), at
    the same positions) add their own embeddings to the trunk's input, and each codebook gets a
    *copy* logit, a linear function of the features added to the logit of the token the previous
    frame had there, so that where the content did not change the model can put almost all the
    probability on "same as before" (static content nearly free). Both start at zero: a fresh
    temporal model predicts exactly as the I-frame model it is copied from.
    """

    def __init__(self, codebooks: int, size: int, width: int = 64, dilations: tuple[int, ...] = (1, 2, 4),
                 temporal: bool = False):
        super().__init__()
        self.codebooks, self.size, self.width, self.temporal = codebooks, size, width, temporal
        self.embed = nn.Embedding(codebooks * (size + 1), width)  # K codewords + the mask token, per codebook
        self.active_embed = nn.Embedding(codebooks + 1, width)
        self.blocks = nn.Sequential(*[_Block(width, d) for d in dilations])
        self.head_weight = nn.Parameter(torch.randn(codebooks, width, size) * width**-0.5)
        self.head_bias = nn.Parameter(torch.zeros(codebooks, size))
        if temporal:
            self.prev_embed = nn.Embedding(codebooks * size, width)
            nn.init.zeros_(self.prev_embed.weight)
            self.copy_weight = nn.Parameter(torch.zeros(codebooks, width))
            self.copy_bias = nn.Parameter(torch.zeros(codebooks))

    def _active(self, active: torch.Tensor, dtype) -> torch.Tensor:
        """(B,) active counts -> (B, M, 1, 1, 1) 0/1 weights of the coded codebooks."""
        keep = torch.arange(self.codebooks, device=active.device)[None, :] < active[:, None]
        return keep.to(dtype)[:, :, None, None, None]

    def features(self, tokens: torch.Tensor, known: torch.Tensor, active: torch.Tensor,
                 prev: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, M, h, w) int64, known (B, M, h, w) bool, active (B,), prev (B, M, h, w) int64
        (temporal model only) -> features (B, C, h, w)."""
        m, k = self.codebooks, self.size
        offsets = torch.arange(m, device=tokens.device)[None, :, None, None]
        e = self.embed(torch.where(known, tokens, k) + offsets * (k + 1))  # (B, M, h, w, C)
        if self.temporal:
            e = e + self.prev_embed(prev + offsets * k)
        h = (e * self._active(active, e.dtype)).sum(1).permute(0, 3, 1, 2)
        h = h + self.active_embed(active)[:, :, None, None]
        return F.relu(self.blocks(h))

    def forward(self, tokens: torch.Tensor, known: torch.Tensor, active: torch.Tensor,
                prev: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of every token: (B, M, K, h, w). The training path."""
        f = self.features(tokens, known, active, prev)
        logits = torch.einsum("bchw,mck->bmkhw", f, self.head_weight) + self.head_bias[None, :, :, None, None]
        if self.temporal:
            copy = torch.einsum("bchw,mc->bmhw", f, self.copy_weight) + self.copy_bias[None, :, None, None]
            logits = logits.scatter_add(2, prev[:, :, None], copy[:, :, None])
        return logits

    def rate_bits(self, tokens: torch.Tensor, active: torch.Tensor, steps: int,
                  prev: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) bits of coding the active tokens in the `steps`-step schedule: every step's tokens
        under the model given the tokens of the steps before (all steps in one batch)."""
        b, m, h, w = tokens.shape
        smap = step_map(steps, active, m, h, w)  # (B, M, h, w)
        s = torch.arange(steps, device=tokens.device)[:, None, None, None, None]
        known = (smap[None] < s) & (smap[None] >= 0)  # (S, B, M, h, w)
        target = smap[None] == s
        logits = self(tokens.repeat(steps, 1, 1, 1), known.reshape(steps * b, m, h, w), active.repeat(steps),
                      None if prev is None else prev.repeat(steps, 1, 1, 1))
        logp = torch.log_softmax(logits, dim=2).gather(2, tokens.repeat(steps, 1, 1, 1)[:, :, None]).squeeze(2)
        bits = -(logp.reshape(steps, b, m, h, w) * target) / np.log(2.0)
        return bits.sum(dim=(0, 2, 3, 4))

    def step_frequencies(self, tokens: torch.Tensor, known: torch.Tensor, active: int,
                         positions: list[torch.Tensor], prev: torch.Tensor | None = None) -> np.ndarray:
        """Integer frequency tables (n, K) of one step's tokens, codebook-major: `positions[m]` are the
        flat (h*w) positions of codebook m's tokens in this step. tokens, known, prev: (1, M, h, w).
        The same calls in the encoder and the decoder, on one thread: identical tables."""
        with single_threaded(), torch.no_grad():
            f = self.features(tokens, known, torch.tensor([active], device=tokens.device), prev)
            f = f.reshape(self.width, -1)
            logits = [self._step_logits(f[:, pos].t(), m, None if prev is None else prev[0, m].reshape(-1)[pos])
                      for m, pos in enumerate(positions) if pos.numel()]
            if not logits:
                return np.zeros((0, self.size), np.int32)
            return quantize_probabilities(torch.cat(logits))

    def _step_logits(self, f: torch.Tensor, m: int, prev: torch.Tensor | None) -> torch.Tensor:
        """(n, C) features of codebook m's tokens in a step -> (n, K) logits (with the copy logit)."""
        logits = f @ self.head_weight[m] + self.head_bias[m]
        if self.temporal:
            copy = f @ self.copy_weight[m] + self.copy_bias[m]
            logits = logits.scatter_add(1, prev[:, None], copy[:, None])
        return logits


# ---- coding ---------------------------------------------------------------------------------
def _family():
    try:
        import constriction
    except ImportError:
        raise NvcError("the PQ-MIM codec needs constriction (pip install constriction)") from None
    return constriction, constriction.stream.model.Categorical(perfect=False)


def _step_positions(smap: np.ndarray, step: int, device) -> list[torch.Tensor]:
    """Flat positions of each codebook's tokens in `step` (raster order)."""
    flat = smap.reshape(smap.shape[0], -1)
    return [torch.from_numpy(np.flatnonzero(row == step)).to(device) for row in flat]


def encode_tokens(model: MaskedTokenModel, tokens: torch.Tensor, active: int, steps: int,
                  bits: list | None = None, prev: torch.Tensor | None = None) -> list[bytes]:
    """tokens (1, M, h, w) of which the first `active` codebooks are coded -> one stream per step.
    `bits`, when given, receives each step's information content under the tables (bits); `prev`:
    the previous frame's tokens (1, M, h, w), for a temporal model."""
    constriction, family = _family()
    _, m, h, w = tokens.shape
    smap = schedule(steps, active, h, w)
    known = torch.zeros_like(tokens, dtype=torch.bool)
    streams = []
    for s in range(steps):
        positions = _step_positions(smap, s, tokens.device)
        freq = model.step_frequencies(tokens, known, active, positions, prev)
        symbols = torch.cat([tokens[0, i].reshape(-1)[pos] for i, pos in enumerate(positions)]).cpu().numpy()
        if symbols.size == 0:
            streams.append(b"")
            if bits is not None:
                bits.append(0.0)
            continue
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols.astype(np.int32), family, freq.astype(np.float64))
        streams.append(coder.get_compressed().astype("<u4").tobytes())
        if bits is not None:
            chosen = freq[np.arange(symbols.size), symbols].astype(np.float64)
            bits.append(float(-np.log2(chosen / freq.sum(1)).sum()))
        for i, pos in enumerate(positions):
            known[0, i].view(-1)[pos] = True
    return streams


def decode_tokens(model: MaskedTokenModel, streams: list[bytes], active: int, shape: tuple[int, int],
                  device: torch.device | str = "cpu", prev: torch.Tensor | None = None) -> torch.Tensor:
    """The tokens (1, M, h, w) of `encode_tokens` (inactive codebooks hold 0); NvcError on a corrupt stream."""
    constriction, family = _family()
    h, w = shape
    steps, m = len(streams), model.codebooks
    if not 1 <= steps <= 8 or not 1 <= active <= m:
        raise NvcError(f"malformed token streams ({steps} steps, {active} active codebooks)")
    smap = schedule(steps, active, h, w)
    tokens = torch.zeros(1, m, h, w, dtype=torch.int64, device=device)
    known = torch.zeros_like(tokens, dtype=torch.bool)
    for s, data in enumerate(streams):
        positions = _step_positions(smap, s, tokens.device)
        n = sum(int(p.numel()) for p in positions)
        if n == 0:
            if data:
                raise NvcError(f"corrupt token stream in step {s} (data in an empty step)")
            continue
        if not data or len(data) % 4:
            raise NvcError(f"corrupt token stream in step {s} (truncated)")
        freq = model.step_frequencies(tokens, known, active, positions, prev)
        try:
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
            symbols = coder.decode(family, freq.astype(np.float64))
            leftover = not coder.is_empty()
        except Exception as e:  # noqa: BLE001 - whatever constriction raises on garbage is a corrupt stream
            raise NvcError(f"corrupt token stream in step {s} ({type(e).__name__})") from None
        if leftover or len(symbols) != n:
            raise NvcError(f"corrupt token stream in step {s}")
        values = torch.from_numpy(np.asarray(symbols, dtype=np.int64)).to(tokens.device)
        at = 0
        for i, pos in enumerate(positions):
            tokens[0, i].view(-1)[pos] = values[at : at + pos.numel()]
            known[0, i].view(-1)[pos] = True
            at += pos.numel()
    return tokens
