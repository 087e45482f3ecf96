"""Cost and quality of the v2 motion field on real clips (JSON + table).

    python -m tools.bench_motion [CLIP ...] [--frames 6] [--json out.json] [--lmbda 128] [--passes 3] [--block 16]

For each clip (default: the held-out clips `../shared/data/heldout/*.mp4` and the bundled
`bigbuckbunny.mp4`), the first `--frames` + 1 frames are read and padded as the encoder pads them;
motion is searched between consecutive *source* frames, as `LeanInter.compress` does
(`nvc.models.motion.estimate_motion` on luma), coded with `nvc.entropy.motion.MotionCoder` (tables
built by `update()`, as in the shipped weights; every field is decoded again and checked), and the
previous source frame is warped with the decoded field (`predict_packed`, the decoder's warp).
Reported per clip: motion bytes per P-frame, bits per vector, the share of zero vectors, PSNR-Y of
the warped previous frame against the current one (over the unpadded picture, mean of per-frame
MSE) next to that of the previous frame itself (zero motion), and the search time per frame.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from nvc.codec import frame_to_tensor
from nvc.entropy.motion import MotionCoder
from nvc.lean_model import luma
from nvc.models.motion import estimate_motion, predict_packed
from nvc.video import read_frames, sample_clip

HELDOUT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "heldout"


def default_clips() -> list[Path]:
    return sorted(HELDOUT.glob("*.mp4")) + [sample_clip("bigbuckbunny.mp4")]


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def measure_clip(path: Path, frames: int, coder: MotionCoder, fields: list | None = None, **search) -> dict:
    src = read_frames(path, frames + 1)
    h, w = src[0].height, src[0].width
    xs = [frame_to_tensor(f) for f in src]
    rows = []
    for prev, cur in zip(xs, xs[1:]):
        t0 = time.perf_counter()
        mv = estimate_motion(luma(cur), luma(prev), **search)
        seconds = time.perf_counter() - t0
        if fields is not None:
            fields.append(mv[0].numpy())
        data = coder.encode(mv)
        decoded = coder.decode(data, tuple(mv.shape[-2:]))
        if not torch.equal(decoded, mv):
            raise AssertionError(f"{path.name}: the motion field does not round-trip")
        pred = luma(predict_packed(prev, decoded))[..., :h, :w]
        target, still = luma(cur)[..., :h, :w], luma(prev)[..., :h, :w]
        vectors = mv.shape[-2] * mv.shape[-1]
        rows.append({
            "bytes": len(data),
            "bits_per_vector": 8 * len(data) / vectors,
            "zero_share": float((mv[0] == 0).all(0).float().mean()),
            "mse_pred": float(((pred - target) ** 2).mean()),
            "mse_still": float(((still - target) ** 2).mean()),
            "search_s": seconds,
        })
    n = len(rows)
    return {
        "clip": path.name,
        "size": [w, h],
        "p_frames": n,
        "vectors_per_frame": int(mv.shape[-2] * mv.shape[-1]),
        "motion_bytes_per_frame": sum(r["bytes"] for r in rows) / n,
        "motion_bpp": sum(r["bytes"] for r in rows) * 8 / (n * w * h),
        "bits_per_vector": sum(r["bits_per_vector"] for r in rows) / n,
        "zero_vector_share": sum(r["zero_share"] for r in rows) / n,
        "psnr_y_pred": psnr(sum(r["mse_pred"] for r in rows) / n),
        "psnr_y_still": psnr(sum(r["mse_still"] for r in rows) / n),
        "search_s_per_frame": sum(r["search_s"] for r in rows) / n,
        "bytes_per_frame": [r["bytes"] for r in rows],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", type=Path, help="clips (default: held-out clips and bigbuckbunny.mp4)")
    ap.add_argument("--frames", type=int, default=6, help="P-frames per clip")
    ap.add_argument("--lmbda", type=float, default=None, help="rate weight of the search (default: the encoder's)")
    ap.add_argument("--passes", type=int, default=None, help="smoothing passes (default: the encoder's)")
    ap.add_argument("--block", type=int, default=None, help="luma pixels per searched vector, a multiple of 16 (default: 16)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--save-fields", type=Path, help="an .npz of the searched fields (one array per clip)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    search = {k: v for k, v in (("lmbda", args.lmbda), ("passes", args.passes), ("block", args.block)) if v is not None}
    coder = MotionCoder()
    coder.update()
    results, fields = [], {}
    for p in args.clips or default_clips():
        fields[p.stem] = []
        results.append(measure_clip(p, args.frames, coder, fields[p.stem], **search))
    if args.save_fields:
        np.savez_compressed(args.save_fields, **{k: np.stack(v) for k, v in fields.items()})
    print(f"{'clip':28s} {'bytes/P':>8s} {'bpp':>7s} {'bits/mv':>7s} {'zero':>5s} {'PSNR-Y pred':>11s} {'still':>6s} {'s/frame':>7s}")
    for r in results:
        print(f"{r['clip']:28s} {r['motion_bytes_per_frame']:8.0f} {r['motion_bpp']:7.4f} {r['bits_per_vector']:7.2f} "
              f"{r['zero_vector_share']:5.2f} {r['psnr_y_pred']:11.2f} {r['psnr_y_still']:6.2f} {r['search_s_per_frame']:7.2f}")
    if args.json:
        out = {"search": search, "frames": args.frames, "load_average": os.getloadavg()[0], "clips": results}
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
