"""How the PQ-MIM decoding schedule trades rate against decode time: S = 1, 4, 8 steps.

    python -m tools.bench_pq_mim ../shared/data/heldout/08_driving.mp4 --frames 3 --json results/bench-pq-mim.json

For each quality level asked and each S, the shipped pq-mim-v1 codes the first frames of the clip
with an S-step schedule, the first as an I-frame and the others as P-frames (each from the one
before); reported per frame type: rate from the real stream bytes (bpp), PSNR-YUV, and decode time
split into token decoding (the masked-token model and constriction, per step and in total) and
synthesis (codebook lookup and g_s), on one thread. S changes only the entropy coding, so PSNR is
the same for every S at a level.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nvc.codec import frame_to_tensor, padded_size, tensor_to_frame
from nvc.metrics import frame_psnr
from nvc.model import load_shipped
from nvc.models.registry import entry_by_name
from nvc.video import VideoSource


class _Sums:
    """What one frame type's frames added up to at one level and schedule."""

    def __init__(self):
        self.bytes, self.token_s, self.synth_s, self.psnr = 0, 0.0, 0.0, []


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip")
    ap.add_argument("--frames", type=int, default=3, help="frames coded: one I-frame, then P-frames")
    ap.add_argument("--qualities", type=int, nargs="+", default=[0, 5])
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    model = load_shipped(entry_by_name("pq-mim-v1"))[0]
    with VideoSource(args.clip) as src:
        info = src.info
        frames = [f for _, f in zip(range(args.frames), src)]
    h, w = padded_size(info.height), padded_size(info.width)
    rows = []
    for q in args.qualities:
        for s in args.steps:
            by_type = {"I": _Sums(), "P": _Sums()}
            ref = None
            for frame in frames:
                kind, codec = ("I", model.intra) if ref is None else ("P", model.inter)
                sums = by_type[kind]
                streams, _ = codec.compress(frame_to_tensor(frame), ref, q, steps=s)
                sums.bytes += sum(len(st.data) for st in streams)
                t0 = time.perf_counter()
                latent = codec.decode_latent(streams, ref, h, w)
                t1 = time.perf_counter()
                ref = codec.synthesize(latent, ref, q)
                t2 = time.perf_counter()
                sums.token_s += t1 - t0
                sums.synth_s += t2 - t1
                sums.psnr.append(frame_psnr(frame, tensor_to_frame(ref.x_hat, info.height, info.width)).yuv)
            for kind, sums in by_type.items():
                n = len(sums.psnr)
                if not n:
                    continue
                row = {"frame_type": kind, "quality": q, "steps": s, "frames": n,
                       "bpp": sums.bytes * 8 / (n * info.width * info.height), "psnr_yuv": sum(sums.psnr) / n,
                       "token_decode_ms": 1e3 * sums.token_s / n,
                       "token_decode_ms_per_step": 1e3 * sums.token_s / n / s,
                       "synthesis_ms": 1e3 * sums.synth_s / n}
                rows.append(row)
                print(f"{kind} q{q} S={s}: {row['bpp']:.4f} bpp, {row['psnr_yuv']:.2f} dB, tokens "
                      f"{row['token_decode_ms']:.0f} ms ({row['token_decode_ms_per_step']:.0f} ms/step), "
                      f"synthesis {row['synthesis_ms']:.0f} ms")
    result = {"clip": args.clip, "size": f"{info.width}x{info.height}", "frames": len(frames), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
