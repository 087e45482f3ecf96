"""The frozen model table: ids written into bitstreams, and the weights each id ships with.

An id is never renumbered or reused; a retrained model gets a new id, so that an old `.nvc` file
either decodes exactly or is refused with a clear message. The hash of the weights file goes into
every bitstream header (see `nvc.container`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelEntry:
    id: int
    name: str
    weights_file: str  # inside models/weights/
    quality_levels: int  # as in the weights' config (a test checks), known here without loading them

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / self.weights_file


MODEL_TABLE: dict[int, ModelEntry] = {
    1: ModelEntry(1, "hyperprior-yuv420-v1", "hyperprior-yuv420-v1.pt", 6),  # intra only
    2: ModelEntry(2, "tcm-yuv420-v1", "tcm-yuv420-v1.pt", 6),  # model 1's intra + a P-frame model
    3: ModelEntry(3, "lean-mc-yuv420-v2", "lean-mc-yuv420-v2.pt", 8),  # v2: lean int8-friendly decoder, motion
    4: ModelEntry(4, "pq-mim-v1", "pq-mim-v1.pt", 6),  # product-quantized tokens, masked-token model (I-frames)
}
DEFAULT_MODEL = "lean-mc-yuv420-v2"
INTRA_MODEL = "hyperprior-yuv420-v1"  # the intra model that P-frame training starts from


def entry_by_name(name: str) -> ModelEntry:
    for entry in MODEL_TABLE.values():
        if entry.name == name:
            return entry
    raise KeyError(f"unknown model {name!r}; known: {', '.join(e.name for e in MODEL_TABLE.values())}")


def weights_hash(path: Path) -> bytes:
    """First 16 bytes of the SHA-256 of a weights file: what a bitstream records."""
    return hashlib.sha256(path.read_bytes()).digest()[:16]
