"""What the intra and the P-frame training scripts share: arguments, optimisers, the update step,
checkpoints with a log, and the learning-rate schedule."""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from torch import nn

from nvc.model import VideoModel, save_weights
from nvc.runtime import keep_freed_memory


def arguments(doc: str, out: str, steps: int, batch: int, lr: float, checkpoint_every: int,
              export: Path) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(out), help=f"checkpoint folder (default: {out})")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--patch", type=int, default=128, help="luma crop size (multiple of 64)")
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--checkpoint-every", type=int, default=checkpoint_every)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--video", type=Path, action="append", default=[], help="extra training video")
    ap.add_argument("--export", type=Path, default=export, help=f"where the fp16 weights are written (default: {export})")
    ap.add_argument("--export-only", action="store_true", help="export the last checkpoint and stop")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def export(path: Path, intra: nn.Module, inter: nn.Module | None = None) -> None:
    """Write the shipped fp16 weights file of an intra model, and of its P-frame model if given."""
    model = VideoModel(intra.config, inter=False)
    model.intra = copy.deepcopy(intra)
    model.inter = copy.deepcopy(inter)
    save_weights(model, path)
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")


def save_v2(path: Path, model: nn.Module) -> None:
    """Write the shipped fp16 weights file of a v2 model."""
    save_weights(copy.deepcopy(model), path)
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")


def set_up(args) -> str:
    """Threads, seed, output folder; returns the device (CUDA when available)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_optimizers(model: nn.Module, lr: float):
    """Adam on the network, and a separate Adam on the entropy bottleneck's quantiles (aux loss)."""
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles") and p.requires_grad]
    return torch.optim.Adam(main, lr=lr), torch.optim.Adam(aux, lr=1e-3)


def set_learning_rate(opt, lr: float, step: int, steps: int, decay_from: float) -> None:
    """lr, then lr / 10 for the last (1 - decay_from) of the steps."""
    for g in opt.param_groups:
        g["lr"] = lr * (0.1 if step >= int(steps * decay_from) else 1.0)


def update(model: nn.Module, opt, aux_opt, loss: torch.Tensor, aux_loss, sync=None) -> None:
    """One optimiser step; `sync(model)`, when given, combines gradients across processes."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if sync is not None:
        sync(model)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    aux = aux_loss()
    aux_opt.zero_grad(set_to_none=True)
    aux.backward()
    if sync is not None:
        sync(model)
    aux_opt.step()


# CompressAI's integer CDF tables: rebuilt from the weights by `update()`, and sized only once built
# (a checkpoint of a model that started from shipped weights holds them, a fresh model's are empty).
CDF_BUFFERS = ("._quantized_cdf", "._offset", "._cdf_length", ".scale_table")


def load_model_state(model: nn.Module, state: dict) -> None:
    """Load a training checkpoint's weights into a fresh model (its CDF tables are left to `update()`)."""
    model.load_state_dict({k: v for k, v in state.items() if not k.endswith(CDF_BUFFERS)}, strict=False)


class Checkpoints:
    """`out/checkpoint.pt` (model, optimisers, step; written atomically) and `out/log.tsv`."""

    def __init__(self, out: Path):
        self.path, self.log = out / "checkpoint.pt", out / "log.tsv"
        self.start = time.time()

    def resume(self, model: nn.Module, opt, aux_opt, device: str, skip_optimizer: bool = False) -> int:
        """Load the last checkpoint if there is one; returns its step (0 without). `skip_optimizer`:
        the model only (a new phase that trains other parameters)."""
        if not self.path.exists():
            return 0
        ckpt = torch.load(self.path, map_location=device, weights_only=True)
        load_model_state(model, ckpt["model"])
        if not skip_optimizer:
            opt.load_state_dict(ckpt["opt"])
            aux_opt.load_state_dict(ckpt["aux_opt"])
        print(f"resumed from {self.path} at step {ckpt['step']}")
        return ckpt["step"]

    def save(self, step: int, model: nn.Module, opt, aux_opt, logged: tuple[float, ...], **extra) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                    "step": step, **extra}, tmp)
        tmp.replace(self.path)
        with open(self.log, "a") as f:
            f.write(f"{step}\t{time.time() - self.start:.0f}\t" + "\t".join(f"{v:.4f}" for v in logged) + "\n")


class RunningMean:
    """Exponential moving average of the logged values, for the progress bar."""

    def __init__(self, decay: float = 0.98):
        self.decay, self.values = decay, None

    def add(self, values: tuple[float, ...]) -> tuple[float, ...]:
        d = self.decay
        self.values = values if self.values is None else tuple(d * a + (1 - d) * b for a, b in zip(self.values, values))
        return self.values
