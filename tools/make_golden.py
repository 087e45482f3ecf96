"""Regenerate the golden `.nvc` file and the hashes `tests/test_golden.py` pins, in one command:

    python -m tools.make_golden            # after the v2 weights change; then commit both files

It writes the container version this encoder writes (tests/data/golden-v2.nvc); files of older
versions, where there are any, are frozen (see tests/test_golden.py).

The file: 4 frames (an I-frame and 3 P-frames) of a 128x128 crop of the bundled carphone clip, coded
by lean-mc-yuv420-v2 at quality 3 with the deterministic deployment choice: integer entropy
parameters (`nvc.deploy.integer`: the same symbols, latents and motion on any CPU, thread count or
CUDA) and torch fp32 synthesis on one thread (the same pixels on this machine whatever the thread
count; across CPU types a pixel may differ by one 8-bit step, which is why the latents are pinned
apart from the pixels). The int8 engines are not used: their pixels depend on the CPU's int8
instructions and on graphs built from the training clips.

Pinned: SHA-256 of the decoded frames (Y, U, V planes of every frame, in order) and of the decoded
latents (y_hat as float32 and the motion fields as int32, frame by frame), written between the
markers in tests/test_golden.py.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden-v2.nvc"
TEST = ROOT / "tests" / "test_golden.py"
MODEL, CLIP, FRAMES, QUALITY = "lean-mc-yuv420-v2", "carphone_pristine.mp4", 4, 3
CROP = (8, 24, 128, 128)  # top, left, height, width (luma; even)
ENGINE, ENTROPY = "torch", "integer"
BEGIN, END = "# >>> pinned by tools/make_golden.py", "# <<< pinned by tools/make_golden.py"


def source_frames():
    from nvc.frames import YUVFrame
    from nvc.video import read_frames, sample_clip

    top, left, h, w = CROP
    out = []
    for f in read_frames(sample_clip(CLIP), FRAMES):
        out.append(YUVFrame(np.ascontiguousarray(f.y[top : top + h, left : left + w]),
                            *(np.ascontiguousarray(p[top // 2 : (top + h) // 2, left // 2 : (left + w) // 2])
                              for p in (f.u, f.v))))
    return out


def frames_sha256(frames) -> str:
    h = hashlib.sha256()
    for f in frames:
        for plane in f.planes():
            h.update(np.ascontiguousarray(plane).tobytes())
    return h.hexdigest()


def latents_sha256(path: Path, implementation: str = "torch") -> str:
    """The entropy side alone (no pixels): each frame's y_hat and motion field, decoded by the
    integer entropy parameters in `implementation` ("torch" or "numpy")."""
    from nvc.codec import Reader, padded_size
    from nvc.container import FrameType
    from nvc.deploy.integer import IntegerLatentCodec
    from nvc.entropy.coder import stream_format
    from nvc.model import Reconstruction

    h = hashlib.sha256()
    with Reader(path) as reader:
        model = reader.load_model()
        frame_models = {FrameType.I: model.intra, FrameType.P: model.inter}
        if implementation == "numpy":  # copies of the frame models whose twins run in numpy int64
            for kind, fm in frame_models.items():
                frame_models[kind] = copy.copy(fm)
                object.__setattr__(frame_models[kind], "latent_codec",
                                   IntegerLatentCodec(fm.latent_codec.codec, fm.latent_codec.twin.numpy()))
        height, width = padded_size(reader.header.height), padded_size(reader.header.width)
        ref = None
        for packet in reader.packets():
            fm = frame_models[packet.frame_type]
            with stream_format(reader.header.substream_form):
                latent = fm.decode_latent(list(packet.streams), ref, height, width)
            h.update(latent.y_hat.float().contiguous().numpy().tobytes())
            if latent.mv is not None:
                h.update(latent.mv.to(torch.int32).contiguous().numpy().tobytes())
            ref = Reconstruction(None, latent.y_hat, z_hat=latent.z_hat)
    return h.hexdigest()


def make(path: Path = GOLDEN) -> dict:
    import nvc

    frames = source_frames()
    path.parent.mkdir(parents=True, exist_ok=True)
    with nvc.open(path, "w", width=CROP[3], height=CROP[2], fps=25, quality=QUALITY, model=MODEL,
                  intra_period=FRAMES, engine=ENGINE, entropy=ENTROPY) as enc:
        encoded = [enc.encode(f).reconstruction for f in frames]
    with nvc.open(path) as reader:
        decoded = list(reader)
    pinned = {"FRAMES_SHA256": frames_sha256(decoded), "LATENTS_SHA256": latents_sha256(path)}
    if frames_sha256(encoded) != pinned["FRAMES_SHA256"]:
        raise SystemExit("the decoder's frames differ from the encoder's reconstruction: not pinning that")
    return pinned


def pin(values: dict, test: Path = TEST) -> None:
    text = test.read_text()
    block = "\n".join([BEGIN] + [f'{k} = "{v}"' for k, v in values.items()] + [END])
    new, n = re.subn(re.escape(BEGIN) + r".*?" + re.escape(END), block, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{test}: the pinned block ({BEGIN!r} ... {END!r}) is missing")
    test.write_text(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="encode to a temporary file and compare, write nothing")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.check:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            values = make(Path(tmp) / "golden.nvc")
        print("\n".join(f"{k} = {v}" for k, v in values.items()))
        return 0
    values = make()
    pin(values)
    print(f"wrote {GOLDEN.relative_to(ROOT)} ({GOLDEN.stat().st_size} bytes) and pinned in "
          f"{TEST.relative_to(ROOT)}:", *(f"  {k} = {v}" for k, v in values.items()), sep="\n", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
