"""Motion for P-frames: block matching in the encoder, a smooth warp in both encoder and decoder.

The recipe of the design notes (docs/ARCHITECTURE.md, "Motion"): the encoder finds one vector per
16x16 luma block (the latent's 1/16 grid) by block matching on luma, coarse to fine (a +-8 search
at 1/4 scale covers +-32 px, then +-2 px at full scale, then half- and quarter-pel), preferring
zero, the neighbours' vectors and their median when they match about as well, so that fields stay
smooth and cost few bits. Vectors are in quarter luma pixels (integers): that is what the motion stream codes.

The decoder interpolates the block field bilinearly between block centres (no block edges in the
prediction, as overlapped block motion compensation intends) and warps the reference frame with
it: luma at full resolution, chroma at half, bilinear, borders replicated. The same field, divided
by 16, warps the previous latent for the entropy model's temporal prior.

    mv (2 x H/16 x W/16, quarter-pel ints) -upsample-> flow (2 x H x W, px) -warp-> prediction
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 16  # luma pixels per motion vector (the latent grid)
MV_UNITS = 4  # quarter-pel: a coded vector is in 1/4 luma pixels
SEARCH_COARSE = 8  # +-8 at 1/4 scale = +-32 luma pixels
SEARCH_FINE = 2


def _grid(flow: torch.Tensor) -> torch.Tensor:
    """Flow in pixels (B, 2, H, W) -> grid_sample's normalised sampling grid (align_corners=True)."""
    b, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype)
    gx = (xs[None, None, :] + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys[None, :, None] + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack([gx, gy], dim=-1)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear backward warp: out[p] = x[p + flow[p]], borders replicated."""
    return F.grid_sample(x, _grid(flow), mode="bilinear", padding_mode="border", align_corners=True)


def upsample_field(mv: torch.Tensor, scale: int) -> torch.Tensor:
    """Block field (quarter-pel, one vector per 16x16 luma block) -> per-pixel flow in pixels of a
    plane that has `scale` samples per block side (16: luma, 8: chroma and packed planes, 1: latent),
    interpolated bilinearly between block centres."""
    b, _, hb, wb = mv.shape
    flow = F.interpolate(mv.float(), size=(hb * scale, wb * scale), mode="bilinear", align_corners=False)
    return flow * (scale / (BLOCK * MV_UNITS))


def predict_packed(ref: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
    """Motion-compensated prediction of a packed YUV420 frame (B, 6, H/2, W/2): luma is unpacked and
    warped at full resolution (sub-pel accuracy where it is needed), chroma at half."""
    y = F.pixel_shuffle(ref[:, :4], 2)
    y = warp(y, upsample_field(mv, BLOCK))
    uv = warp(ref[:, 4:], upsample_field(mv, BLOCK // 2))
    return torch.cat([F.pixel_unshuffle(y, 2), uv], dim=1)


class MotionCompensation(nn.Module):
    """`predict_packed` as a module, so that `nvc.models.macs` counts the warp (4 MACs a sample)."""

    def forward(self, ref: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
        return predict_packed(ref, mv)


def warp_latent(y: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
    """The previous latent moved by the same field (one vector per latent position)."""
    return warp(y, upsample_field(mv, 1))


# ---------------------------------------------------------------- encoder-side motion search


def _block_sad(cur: torch.Tensor, pred: torch.Tensor, block: int) -> torch.Tensor:
    return F.avg_pool2d((cur - pred).abs(), block) * (block * block)


def _warped_block_sad(cur: torch.Tensor, ref: torch.Tensor, mv: torch.Tensor, block: int) -> torch.Tensor:
    """Per block, the SAD of cur against ref moved by the block's quarter-pel vector (bilinear,
    borders replicated): natively (`models/motion_search.cpp`, one pass) on the CPU, ~10x faster at
    720p than building each candidate field's sampling grid; in torch elsewhere (CUDA)."""
    if cur.device.type != "cpu" or cur.requires_grad:
        return _block_sad(cur, warp(ref, _block_flow(mv, block)), block)
    from nvc.models import _motion_search

    b, _, h, w = cur.shape
    out = torch.empty(b, 1, h // block, w // block)
    vectors = mv.round().to(torch.int32).contiguous()
    for i in range(b):
        _motion_search.block_sad(cur[i, 0].contiguous().numpy(), ref[i, 0].contiguous().numpy(), vectors[i].numpy(),
                                 out[i, 0].numpy(), block)
    return out


def _block_flow(mv: torch.Tensor, block: int) -> torch.Tensor:
    """Quarter-pel block vectors -> piecewise-constant per-pixel flow in pixels of the search scale."""
    return mv.float().repeat_interleave(block, -2).repeat_interleave(block, -1) / MV_UNITS


def _vector_bits(d: torch.Tensor) -> torch.Tensor:
    """Approximate bits of a vector difference (B, 2, h, w) in quarter pixels: ~0 when it is zero."""
    mag = d.abs().float()
    return torch.where(mag > 0, 2.0 + 2.0 * torch.log2(1.0 + mag), torch.zeros_like(mag)).sum(1, keepdim=True)


def _neighbour(mv: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The field moved so that each block sees its neighbour at (dy, dx), edges replicated."""
    padded = F.pad(mv.float(), (1, 1, 1, 1), mode="replicate")
    h, w = mv.shape[-2:]
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def _median_prediction(mv: torch.Tensor) -> torch.Tensor:
    """Each block's median of its left, top and top-right neighbours, component-wise: the vector
    that `nvc.entropy.motion` codes as MEDIAN, nearly free (edges replicated)."""
    left, top, corner = (_neighbour(mv, dy, dx) for dy, dx in ((0, -1), (-1, 0), (-1, 1)))
    return torch.stack([left, top, corner]).median(0).values


@torch.no_grad()
def estimate_motion(cur: torch.Tensor, ref: torch.Tensor, lmbda: float = 128.0, passes: int = 3,
                    block: int = BLOCK) -> torch.Tensor:
    """Rate-constrained block matching of luma planes (B, 1, H, W), H and W multiples of 16, in [0, 1].

    Returns (B, 2, H/16, W/16) int32 vectors in quarter pixels (x, y): ref[p + mv] predicts cur[p].
    Each block minimises SAD + lmbda * bits, SAD in 8-bit steps over the block and bits the
    approximate cost of its differences to its four neighbours (a smoothness proxy for what
    `nvc.entropy.motion` codes: merges with a neighbour and median prediction), by a few passes over
    the two checkerboard halves of the field (iterated conditional modes) among its own best vector,
    zero, the median of its left, top and top-right neighbours (the coder's prediction) and its
    neighbours' vectors. Larger `lmbda`: smoother, cheaper fields.

    `block` (a multiple of 16) searches one vector per block x block area and repeats it over the
    16x16 grid: the coder then codes 3 of every 4 vectors (block 32) as merges with their left or top
    neighbour, the same stream format for fewer bits where the motion is smooth.
    """
    out_h, out_w = cur.shape[-2] // BLOCK, cur.shape[-1] // BLOCK
    if block != BLOCK:  # pad to whole blocks (edges replicated); the field is cut back at the end
        pad = (0, -cur.shape[-1] % block, 0, -cur.shape[-2] % block)
        cur, ref = F.pad(cur.float(), pad, mode="replicate"), F.pad(ref.float(), pad, mode="replicate")
    cur = cur.float() * 255
    ref = ref.float() * 255
    b, _, h, w = cur.shape
    hb, wb = h // block, w // block

    # 1. coarse: integer search at 1/4 scale (blocks of 4x4)
    c4, r4 = F.avg_pool2d(cur, 4), F.avg_pool2d(ref, 4)
    best = torch.full((b, 1, hb, wb), float("inf"), device=cur.device)
    mv = torch.zeros(b, 2, hb, wb, device=cur.device)
    for dy in range(-SEARCH_COARSE, SEARCH_COARSE + 1):
        for dx in range(-SEARCH_COARSE, SEARCH_COARSE + 1):
            # ties (flat or padded areas) go to the shorter vector: a tiny cost per pixel of length
            shift = torch.tensor([dx * MV_UNITS, dy * MV_UNITS], device=cur.device)[None, :, None, None].expand_as(mv)
            sad = _warped_block_sad(c4, r4, shift, block // 4) + 1e-3 * (abs(dx) + abs(dy))
            better = sad < best
            best = torch.where(better, sad, best)
            mv = torch.where(better, torch.tensor([dx * 4.0, dy * 4.0], device=cur.device)[None, :, None, None], mv)
    mv = mv * MV_UNITS  # full-scale pixels -> quarter pixels

    still_sad = _block_sad(cur, ref, block)  # exact: the bilinear warp's float error (~1e-3 a pixel) could outweigh the tie-break

    def cost(candidate: torch.Tensor) -> torch.Tensor:
        length = candidate.abs().sum(1, keepdim=True) * 1e-3
        sad = _warped_block_sad(cur, ref, candidate, block)
        return torch.where((candidate == 0).all(1, keepdim=True), still_sad, sad) + length

    # 2. fine: integer, then half- and quarter-pel refinement around the best vector
    best = cost(mv)
    for step, radius in ((MV_UNITS, SEARCH_FINE), (MV_UNITS // 2, 1), (MV_UNITS // 4, 1)):
        centre = mv.clone()
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if dx == dy == 0:
                    continue
                cand = centre + torch.tensor([dx * step, dy * step], device=cur.device, dtype=mv.dtype)[None, :, None, None]
                sad = cost(cand)
                better = sad < best
                best = torch.where(better, sad, best)
                mv = torch.where(better, cand, mv)

    # 3. rate: each half of the checkerboard in turn picks, among its own best vector, zero, the
    # median prediction and its four neighbours' vectors, the one with the lowest SAD + lmbda * bits
    # against its neighbours (a rate term with the coder's own mode costs was tried: at the same
    # prediction PSNR it gave more bytes, its ICM settling in more local minima)
    own, own_sad = mv, best
    yy, xx = torch.meshgrid(torch.arange(hb, device=cur.device), torch.arange(wb, device=cur.device), indexing="ij")
    phases = [((yy + xx) % 2 == k)[None, None] for k in (0, 1)]
    for _ in range(passes):
        for phase in phases:
            neighbours = [_neighbour(mv, dy, dx) for dy, dx in ((0, -1), (-1, 0), (0, 1), (1, 0))]

            def rd(cand: torch.Tensor, sad: torch.Tensor) -> torch.Tensor:
                return sad + lmbda * sum(_vector_bits(cand - n) for n in neighbours)

            best_v, best_j = own, rd(own, own_sad)
            for cand in [torch.zeros_like(mv), _median_prediction(mv)] + neighbours:
                j = rd(cand, cost(cand))
                better = j < best_j
                best_j = torch.where(better, j, best_j)
                best_v = torch.where(better, cand, best_v)
            mv = torch.where(phase, best_v, mv)
    mv = mv.round().to(torch.int32)
    if block != BLOCK:
        r = block // BLOCK
        mv = mv.repeat_interleave(r, -2).repeat_interleave(r, -1)[..., :out_h, :out_w].contiguous()
    return mv
