"""Train the variable-rate intra model and export shipped fp16 weights.

    python -m tools.train --steps 15000 --out runs/intra            # train (resumes if a checkpoint exists)
    python -m tools.train --out runs/intra --export-only             # write the shipped weights file

Every step draws one quality level per sample and minimises lambda_q * 255^2 * MSE_yuv + bpp, with
MSE_yuv = (6 MSE_Y + MSE_U + MSE_V) / 8, the distortion that evaluation reports. Uses CUDA when
available.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from nvc.models.config import HyperpriorConfig
from nvc.models.registry import INTRA_MODEL, entry_by_name
from nvc.model import IntraModel, yuv_mse
from tools import training
from tools.datasets import default_sampler


def rate_bpp(out, x: torch.Tensor) -> torch.Tensor:
    """Per-sample bits per luma pixel of a model output, from its likelihoods."""
    bits = -(out.y_likelihoods.log2().sum(dim=(1, 2, 3)) + out.z_likelihoods.log2().sum(dim=(1, 2, 3)))
    return bits / (x.size(2) * x.size(3) * 4)


def rd_loss(model: IntraModel, x: torch.Tensor, quality: torch.Tensor):
    out = model(x, quality)
    bpp = rate_bpp(out, x)
    mse = yuv_mse(out.x_hat, x)
    lmbda = torch.tensor(model.config.lambdas, device=x.device)[quality]
    loss = (lmbda * 255**2 * mse + bpp).mean()
    return loss, bpp.mean(), mse.mean()


def main(argv=None) -> None:
    ap = training.arguments(__doc__, "runs/intra", steps=15000, batch=8, lr=2e-4, checkpoint_every=250,
                            export=entry_by_name(INTRA_MODEL).weights_path)
    args = ap.parse_args(argv)
    device = training.set_up(args)
    cfg = HyperpriorConfig()
    model = IntraModel(cfg).to(device)
    opt, aux_opt = training.make_optimizers(model, args.lr)
    checkpoints = training.Checkpoints(args.out)
    step = checkpoints.resume(model, opt, aux_opt, device)

    if args.export_only:
        training.export(args.export, model)
        return

    sampler = default_sampler(args.patch, args.video, seed=args.seed + step)
    bar = tqdm(total=args.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    ema = training.RunningMean()
    while step < args.steps:
        training.set_learning_rate(opt, args.lr, step, args.steps, decay_from=0.9)
        model.train()
        x = sampler.batch(args.batch).to(device)
        quality = torch.randint(0, cfg.quality_levels, (x.size(0),), device=device)
        loss, bpp, mse = rd_loss(model, x, quality)
        training.update(model, opt, aux_opt, loss, model.latent_codec.aux_loss)
        step += 1
        logged = ema.add((loss.item(), bpp.item(), 10 * math.log10(1 / max(mse.item(), 1e-10))))
        bar.update(1)
        bar.set_postfix(loss=f"{logged[0]:.3f}", bpp=f"{logged[1]:.3f}", psnr=f"{logged[2]:.2f}")
        if step % args.checkpoint_every == 0 or step == args.steps:
            checkpoints.save(step, model, opt, aux_opt, logged, config=cfg.to_dict())
    bar.close()
    training.export(args.export, model)


if __name__ == "__main__":
    main()
