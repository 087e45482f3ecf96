"""Train the P-frame (or I-frame) entropy model on the latents the encoder actually codes, with the transforms fixed.

A P-frame's entropy-parameter networks (h_a, h_s, the temporal prior, the base and the context steps
of `nvc.entropy.multistep.MultiStepLatentCodec`) get their gradient from the rate alone: the
straight-through rounding around the mean passes none from the distortion. With g_a, the motion
search and the references fixed, their objective is therefore the bits of the latents the encoder
produces, and those can be computed once and reused: training at 1/16 of the luma resolution then
costs milliseconds a step instead of the second a step of `tools.train_v2`. As in the cascaded
training, a frame's prior is the reference latent the encoder really had (after drift, RDOQ and
its choices between codings), not one from a training run.

    # 1. code the centre 640x352 of the first GOP of training clips with the shipped weights, keeping
    #    every P-frame coding's latent y and prior (warped reference latent, motion)
    python -m tools.train_entropy cache --out runs/ent ../shared/data/train/*.mp4
    #    (--repeats: also the codings with a repeated hyper-latent, kept with the reference's z_hat;
    #    --qualities 2 4 6 0 --tag b: the other two levels of each clip, beside the first cache)
    # 2. train the P latent codec on them (rate only; --inter-steps 4: channel halves x checkerboard),
    #    keeping some clips out to check it (--validate)
    python -m tools.train_entropy train --out runs/ent --steps 4000 --validate 02_cups 16_robotarm 21_biker
    # 3. measure the snapshot end to end, against the shipped weights (tools.rd_check)
    python -m tools.rd_check CLIP... --crop 640x352 --frames 32 --checkpoints runs/ent/snap/step0.pt runs/ent/snap/step4000.pt
    # 4. ship it (models/weights/lean-mc-yuv420-v2.pt)
    python -m tools.train_entropy export runs/ent/snap/step4000.pt

The clips named with --validate stay out of training; at every snapshot the real bytes of a sample
of their latents are printed.

`--frame intra` (on `cache` and `train`) does the same for the I-frame latent codec (h_a, h_s, the base
and the context steps; no temporal prior): the cache holds g_a's latent of every --stride-th frame at the
levels the quality schedule gives I-frames, two a frame.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from nvc.cli import parse_size
from nvc.codec import frame_to_tensor
from nvc.gop import quality_schedule
from nvc.lean_model import LeanVideoModel
from nvc.model import load_shipped
from nvc.models.registry import entry_by_name
from nvc.video import read_frames
from tools.rd_check import V2, centre_crop, code_clip, model_from_checkpoint
from tools.training import load_model_state, make_optimizers, save_v2, set_learning_rate, update


def clip_levels(i: int, qualities: list[int], per_clip: int) -> list[int]:
    """The levels the i-th clip is coded at: `per_clip` of `qualities`, evenly spaced, starting at the
    i-th (with 0 2 4 6 and 2 a clip: 0 4, 2 6, 4 0, 6 2, ...)."""
    n = len(qualities)
    return [qualities[(i + k) % n] for k in range(0, n, max(1, n // per_clip))][:per_clip]


@torch.no_grad()
def inter_latents(model: LeanVideoModel, frames: list, levels: list[int], repeats: bool, name: str) -> list[dict]:
    """Every P-frame coding's latent and prior (warped reference latent, motion; with `repeats`, also
    the codings with the reference's hyper-latent, kept with its z_hat), the first GOP coded at each level."""
    codec = model.inter.latent_codec
    samples, compress = [], codec.compress

    def keep(y, prior=None, hyper=None, **kwargs):
        repeated = hyper is not None and not hyper[0]  # coded with the reference's z_hat, no hyper stream
        if repeats or not repeated:
            samples.append({"y": y.clone(), "y_ref": prior[0].half(), "mv": prior[1].clone()}
                           | ({"z_hat": hyper[1].clone()} if repeated else {}))
        return compress(y, prior, hyper=hyper, **kwargs)

    codec.compress = keep
    try:
        for q in levels:
            point = code_clip(model, frames, q, 32)
            print(f"{name} q{q}: {point['bpp']:.4f} bpp {point['psnr_yuv']:.2f} dB, {len(samples)} samples", flush=True)
    finally:
        codec.compress = compress
    return samples


@torch.no_grad()
def intra_latents(model: LeanVideoModel, frames: list, levels: list[int], per_frame: int) -> list[dict]:
    """g_a's latent of each frame at `per_frame` of the I-frame `levels` (the j-th frame from the j-th
    level on), as `LeanIntra.compress` hands it to the latent codec."""
    samples = []
    for j, f in enumerate(frames):
        x = frame_to_tensor(f)
        for q in clip_levels(j, levels, per_frame):
            samples.append({"y": model.intra.gain.scale(model.intra.g_a(x), torch.tensor([q])).half()})
    return samples


def latent_codec(model: LeanVideoModel, frame: str):
    return (model.intra if frame == "intra" else model.inter).latent_codec


def cache(args) -> None:
    """Save each clip's latents to out/cache/CLIP.pt: every P-frame coding's latent and prior at the
    clip's levels, or (--frame intra) g_a's latent of every --stride-th frame at the I-frame levels."""
    model = load_shipped(entry_by_name(V2))[0]
    schedule = quality_schedule(V2)
    intra_levels = sorted({schedule.level(0, 32, q, model.config.quality_levels) for q in args.qualities})
    (args.out / "cache").mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(args.clips):
        path = args.out / "cache" / f"{clip.stem}{'@' + args.tag if args.tag else ''}.pt"
        if path.exists():
            continue
        frames = [centre_crop(f, *args.crop) for f in read_frames(clip, args.frames)]
        if args.frame == "intra":
            samples = intra_latents(model, frames[:: args.stride], intra_levels, args.levels_per_clip)
            print(f"{clip.stem}: {len(samples)} I latents at levels {intra_levels}", flush=True)
        else:
            samples = inter_latents(model, frames, clip_levels(i, args.qualities, args.levels_per_clip),
                                    args.repeats, clip.stem)
        tmp = path.with_suffix(".tmp")
        torch.save(samples, tmp)
        tmp.replace(path)


def load_cache(folder: Path, names: set[str], include: bool) -> list[dict]:
    """The cached latents of the clips in `names` (include) or of the others; CLIP.pt and CLIP@TAG.pt."""
    out = []
    for path in sorted(folder.glob("*.pt")):
        if (path.stem.split("@")[0] in names) == include:
            out.extend(torch.load(path, weights_only=True))
    return out


def batch(samples: list[dict], size: int, crop: int, gen: torch.Generator) -> list[tuple]:
    """`size` random crops (crop x crop latent positions, aligned to the hyper-latent's 4x4) of random
    samples, as (y, prior, z_hat or None) groups: those with their own hyper-latent, those with a repeated one."""
    groups: dict[bool, list] = {False: [], True: []}
    for j in torch.randint(len(samples), (size,), generator=gen).tolist():
        s = samples[j]
        h, w = s["y"].shape[-2:]
        top = 4 * int(torch.randint((h - crop) // 4 + 1, (1,), generator=gen))
        left = 4 * int(torch.randint((w - crop) // 4 + 1, (1,), generator=gen))
        window = (..., slice(top, top + crop), slice(left, left + crop))
        z_window = (..., slice(top // 4, (top + crop) // 4), slice(left // 4, (left + crop) // 4))
        groups["z_hat" in s].append((s["y"][window].float(), prior_of(s, window),
                                     s["z_hat"][z_window] if "z_hat" in s else None))
    return [(torch.cat([g[0] for g in group]),
             None if group[0][1] is None else tuple(torch.cat([g[1][k] for g in group]) for k in range(2)),
             torch.cat([g[2] for g in group]) if repeated else None)
            for repeated, group in groups.items() if group]


def prior_of(sample: dict, window=(...,)) -> tuple | None:
    """A cached P latent's temporal prior (warped reference latent, motion) in `window`; None for an I latent."""
    return (sample["y_ref"][window].float(), sample["mv"][window]) if "y_ref" in sample else None


def rate(codec, groups: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    """(bits of y, bits of z) per latent position over `batch`'s groups, as training estimates them (uniform noise)."""
    y_bits = z_bits = 0.0
    positions = sum(y.size(0) * y.size(2) * y.size(3) for y, _, _ in groups)
    for y, prior, z_hat in groups:
        out = codec(y, prior, z_hat)
        y_bits = y_bits - torch.log2(out.y_likelihoods).sum()
        z_bits = z_bits - torch.log2(out.z_likelihoods).sum()
    return y_bits / positions, z_bits / positions


@torch.no_grad()
def coded_bytes(codec, samples: list[dict]) -> int:
    """Real bytes of the samples' latents coded by `codec` (nearest rounding, hyper included)."""
    codec.eval()
    codec.update()
    total = 0
    for s in samples:
        hyper = (b"", s["z_hat"]) if "z_hat" in s else None
        z, parts, _ = codec.compress(s["y"].float(), prior_of(s), hyper=hyper)
        total += len(z) + sum(len(p) for step in parts for p in step)
    return total


def model_with_steps(steps: int) -> LeanVideoModel:
    """The shipped weights in a model whose P latents decode in `steps` steps: its context steps all
    start as the shipped model's (one, for the checkerboard's second half)."""
    shipped = load_shipped(entry_by_name(V2))[0]
    if steps == shipped.config.inter_steps:
        return shipped
    model = LeanVideoModel(replace(shipped.config, inter_steps=steps))
    load_model_state(model, {k: v for k, v in shipped.state_dict().items() if "inter.latent_codec.context" not in k})
    for context in model.inter.latent_codec.context:
        context.load_state_dict(shipped.inter.latent_codec.context[-1].state_dict())
    return model


def train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    held = set(args.validate)
    samples = load_cache(args.out / "cache", held, include=False)
    check = load_cache(args.out / "cache", held, include=True)
    print(f"{len(samples)} training samples, {len(check)} held back ({', '.join(sorted(held)) or 'none'})")
    if not samples:
        raise SystemExit(f"no training latents in {args.out / 'cache'} (all of them kept out by --validate?)")
    if args.init:
        model = model_from_checkpoint(args.init).train()
        start_step = torch.load(args.init, map_location="cpu", weights_only=True)["step"]
    else:
        model, start_step = model_with_steps(args.inter_steps), 0
    codec = latent_codec(model, args.frame)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, p in codec.named_parameters():  # the hyper-latent's quantiles follow its density, frozen or not
        frozen = name.startswith(("h_a.", "h_s.", "z_codec.")) and not name.endswith("quantiles")
        p.requires_grad_(not (args.freeze_hyper and frozen))
    opt, aux_opt = make_optimizers(codec, args.lr)
    snap = args.out / "snap"
    snap.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()

    def save(step: int) -> None:
        torch.save({"model": model.state_dict(), "step": step, "config": config}, snap / f"step{step}.pt")

    def report(step: int) -> None:
        if check:
            sample = check[:: max(1, len(check) // args.check_samples)]
            print(f"step {step}: held-back bytes {coded_bytes(codec, sample)} ({len(sample)} latents)", flush=True)
        codec.train()

    save(start_step)
    report(start_step)
    gen = torch.Generator().manual_seed(args.seed + start_step)
    bar = tqdm(range(start_step + 1, args.steps + 1), disable=not sys.stderr.isatty(), desc="entropy")
    mean, start = None, time.time()
    for step in bar:
        set_learning_rate(opt, args.lr, step, args.steps, args.decay_from)
        y_bits, z_bits = rate(codec, batch(samples, args.batch, args.crop, gen))
        loss = y_bits + z_bits
        update(codec, opt, aux_opt, loss, codec.aux_loss)
        mean = loss.item() if mean is None else 0.99 * mean + 0.01 * loss.item()
        bar.set_postfix(bits=f"{mean:.3f}")
        if step % args.log_every == 0:
            print(f"step {step}: {mean:.4f} bits a latent position ({time.time() - start:.0f} s)", flush=True)
        if step % args.snapshot_every == 0 or step == args.steps:
            save(step)
            report(step)


def export(args) -> None:
    """Write a snapshot as the shipped fp16 weights file."""
    save_v2(args.to, model_from_checkpoint(args.snapshot))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cache", help="code training clips and keep the P-frames' latents and priors")
    c.add_argument("clips", nargs="+", type=Path)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--frame", choices=("inter", "intra"), default="inter", help="the P- or the I-frame latents")
    c.add_argument("--frames", type=int, default=32)
    c.add_argument("--crop", type=parse_size, default=(640, 352), metavar="WxH", help="the centre WxH of each clip")
    c.add_argument("--qualities", type=int, nargs="+", default=[0, 2, 4, 6],
                   help="levels to take from, each clip a different --levels-per-clip of them")
    c.add_argument("--levels-per-clip", type=int, default=2)
    c.add_argument("--repeats", action="store_true",
                   help="also keep the codings with a repeated hyper-latent (with the reference's z_hat)")
    c.add_argument("--tag", help="cache files named CLIP@TAG.pt (another cache of the same clips)")
    c.add_argument("--stride", type=int, default=8, help="--frame intra: every STRIDE-th frame")
    t = sub.add_parser("train", help="train the P (or I) latent codec on the cache (rate only)")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--frame", choices=("inter", "intra"), default="inter", help="the P- or the I-frame latents")
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--crop", type=int, default=20, help="latent positions per side of a training crop (multiple of 4)")
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--decay-from", type=float, default=0.8, help="lr / 10 after this share of the steps")
    t.add_argument("--inter-steps", type=int, default=2, choices=(2, 4), help="P decoding steps of a model started from the shipped weights")
    t.add_argument("--init", type=Path, help="start from this snapshot (its step and config) instead of the shipped weights")
    t.add_argument("--freeze-hyper", action="store_true",
                   help="train the temporal prior, base and context steps only (h_a, h_s and the hyper-latent's density as shipped)")
    t.add_argument("--validate", nargs="*", default=[], help="cached clips (stems) kept out of training")
    t.add_argument("--check-samples", type=int, default=40)
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--snapshot-every", type=int, default=1000)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("export", help="write a snapshot as the shipped weights")
    e.add_argument("snapshot", type=Path)
    e.add_argument("--to", type=Path, default=entry_by_name(V2).weights_path)
    args = ap.parse_args(argv)
    {"cache": cache, "train": train, "export": export}[args.command](args)


if __name__ == "__main__":
    main()
