"""Train the variable-rate intra model and export shipped fp16 weights.

    python -m tools.train --steps 15000 --out runs/intra            # train (resumes if a checkpoint exists)
    python -m tools.train --out runs/intra --export-only             # write the shipped weights file

Every step draws one quality level per sample and minimises lambda_q * 255^2 * MSE_yuv + bpp, with
MSE_yuv = (6 MSE_Y + MSE_U + MSE_V) / 8, the distortion that evaluation reports. Uses CUDA when
available.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from models.config import HyperpriorConfig
from models.registry import DEFAULT_MODEL, entry_by_name
from nvc.model import IntraModel, save_weights
from tools.datasets import default_sampler


def yuv_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample (6 MSE_Y + MSE_U + MSE_V) / 8 on packed YUV420 tensors."""
    err = (x_hat - x).pow(2).mean(dim=(2, 3))
    return (6 * err[:, :4].mean(1) + err[:, 4] + err[:, 5]) / 8


def rd_loss(model: IntraModel, x: torch.Tensor, quality: torch.Tensor):
    out = model(x, quality)
    luma_pixels = x.size(2) * x.size(3) * 4
    bits = -(out.y_likelihoods.log2().sum(dim=(1, 2, 3)) + out.z_likelihoods.log2().sum(dim=(1, 2, 3)))
    bpp = bits / luma_pixels
    mse = yuv_mse(out.x_hat, x)
    lmbda = torch.tensor(model.config.lambdas, device=x.device)[quality]
    loss = (lmbda * 255**2 * mse + bpp).mean()
    return loss, bpp.mean(), mse.mean()


def make_optimizers(model: IntraModel, lr: float):
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    return torch.optim.Adam(main, lr=lr), torch.optim.Adam(aux, lr=1e-3)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/intra"), help="checkpoint folder")
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=128, help="luma crop size (multiple of 64)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--video", type=Path, action="append", default=[], help="extra training video")
    ap.add_argument("--export", type=Path, default=entry_by_name(DEFAULT_MODEL).weights_path,
                    help="where the shipped fp16 weights are written (default: the shipped model's file)")
    ap.add_argument("--export-only", action="store_true", help="export the last checkpoint and stop")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    ckpt_path = args.out / "checkpoint.pt"
    args.out.mkdir(parents=True, exist_ok=True)

    cfg = HyperpriorConfig()
    model = IntraModel(cfg).to(device)
    opt, aux_opt = make_optimizers(model, args.lr)
    step = 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        model = IntraModel(HyperpriorConfig.from_dict(ckpt["config"])).to(device)
        opt, aux_opt = make_optimizers(model, args.lr)
        model.load_state_dict(ckpt["model"], strict=False)
        opt.load_state_dict(ckpt["opt"])
        aux_opt.load_state_dict(ckpt["aux_opt"])
        step = ckpt["step"]
        print(f"resumed from {ckpt_path} at step {step}")

    def export() -> None:
        path = args.export
        clone = IntraModel(model.config)
        clone.load_state_dict(model.state_dict(), strict=False)
        save_weights(clone, path)
        print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")

    if args.export_only:
        export()
        return

    sampler = default_sampler(args.patch, args.video, seed=args.seed + step)
    decay_at = int(args.steps * 0.9)
    bar = tqdm(total=args.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    t0, ema = time.time(), None
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.1 if step >= decay_at else 1.0)
        model.train()
        x = sampler.batch(args.batch).to(device)
        quality = torch.randint(0, cfg.quality_levels, (x.size(0),), device=device)
        loss, bpp, mse = rd_loss(model, x, quality)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        aux_loss = model.latent_codec.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux_loss.backward()
        aux_opt.step()
        step += 1
        vals = (loss.item(), bpp.item(), 10 * math.log10(1 / max(mse.item(), 1e-10)))
        ema = vals if ema is None else tuple(0.98 * e + 0.02 * v for e, v in zip(ema, vals))
        bar.update(1)
        bar.set_postfix(loss=f"{ema[0]:.3f}", bpp=f"{ema[1]:.3f}", psnr=f"{ema[2]:.2f}")
        if step % args.checkpoint_every == 0 or step == args.steps:
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "opt": opt.state_dict(),
                        "aux_opt": aux_opt.state_dict(), "step": step}, tmp)
            tmp.replace(ckpt_path)
            with open(args.out / "log.tsv", "a") as f:
                f.write(f"{step}\t{time.time() - t0:.0f}\t{ema[0]:.4f}\t{ema[1]:.4f}\t{ema[2]:.2f}\n")
    bar.close()
    export()


if __name__ == "__main__":
    main()
