"""Count the motion coder's merge modes by context on the training clips: the MODE_COUNTS table of
`nvc.entropy.motion`, printed as Python to paste there.

    python -m tools.fit_motion_contexts                  # every clip in ../shared/data/train
    python -m tools.fit_motion_contexts CLIP... --frames 9

Each clip's first --frames frames give --frames - 1 fields, searched as the encoder searches them
(`estimate_motion` between consecutive originals) with 16x16 and with 32x32 blocks, and their
modes on the grid the coder codes them on. Counts start at 1 (no mode is ever impossible).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nvc.codec import frame_to_tensor
from nvc.entropy.motion import ZERO, coded_modes, mode_contexts
from nvc.lean_model import luma
from nvc.models.motion import estimate_motion
from nvc.video import read_frames

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def count_modes(clips: list[Path], frames: int, blocks=(16, 32)) -> np.ndarray:
    counts = np.ones((16, 6), np.int64)
    for clip in tqdm(clips, desc="clips", unit="clip"):
        lumas = [luma(frame_to_tensor(f)) for f in read_frames(clip, frames)]
        for prev, cur in zip(lumas, lumas[1:]):
            for block in blocks:
                _, modes, _ = coded_modes(estimate_motion(cur, prev, block=block)[0].numpy())
                np.add.at(counts, (mode_contexts(modes).ravel(), modes.ravel() - ZERO), 1)
    return counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", type=Path, help=f"clips (default: every .mp4 in {TRAIN})")
    ap.add_argument("--frames", type=int, default=17, help="frames read from the start of each clip")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    counts = count_modes(args.clips or sorted(TRAIN.glob("*.mp4")), args.frames)
    rows = ",\n".join("    (" + ", ".join(str(int(c)) for c in row) + ")" for row in counts)
    print(f"MODE_COUNTS = (\n{rows},\n)")


if __name__ == "__main__":
    main()
