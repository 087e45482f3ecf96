"""The golden file: a committed `.nvc` (tests/data/golden-v2.nvc, `tools/make_golden.py`) whose decoded
frames and latents are pinned, so that a decoder on another machine, thread count or build is
checked against this one.

The stream uses integer entropy parameters and torch fp32 synthesis (its header says so): the
latents and motion (`LATENTS_SHA256`) are exact on any machine, through the torch and the numpy
implementation of the integer parameters; the pixels (`FRAMES_SHA256`) are exact on this machine
at any thread count, serial or pipelined (on another CPU type a float sum may round to another
8-bit step: the latents still match there). After the v2 weights change, `python -m
tools.make_golden` rewrites the file and the hashes below.
"""

import pytest
import torch

import nvc
from nvc.container import EntropyParameters, StreamHeader, SynthesisEngine
from nvc.models.registry import entry_by_name, weights_hash
from tools.make_golden import GOLDEN, MODEL, frames_sha256, latents_sha256

# >>> pinned by tools/make_golden.py
FRAMES_SHA256 = "a44e9babfd97b95f2c1953437dd221c2fcca1b73d5f8be0a197b3253d5c14f85"
LATENTS_SHA256 = "9edaedb0e173aca4a0e90445bd88f7f13ad194d97f67660d3d71c22173d1ebdd"
# <<< pinned by tools/make_golden.py


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN, "rb") as f:
        header = StreamHeader.read(f)
    if header.weights_hash != weights_hash(entry_by_name(MODEL).weights_path):
        pytest.fail(f"{GOLDEN.name} was made with other {MODEL} weights: run `python -m tools.make_golden` "
                    "and commit tests/data/golden-v2.nvc and tests/test_golden.py")
    return header


def test_header_names_the_deterministic_path(golden):
    assert golden.synthesis == SynthesisEngine.TORCH and golden.entropy_params == EntropyParameters.INTEGER
    assert (golden.width, golden.height, golden.frame_count) == (128, 128, 4)
    assert GOLDEN.stat().st_size < 8192


@pytest.mark.parametrize("implementation", ["torch", "numpy"])
def test_latents_are_pinned(golden, implementation):
    assert latents_sha256(GOLDEN, implementation) == LATENTS_SHA256


@pytest.mark.parametrize("threads, pipelined", [(1, False), (2, False), (2, True)])
def test_frames_are_pinned(golden, threads, pipelined):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with nvc.open(GOLDEN, pipelined=pipelined) as reader:
            frames = list(reader)
    finally:
        torch.set_num_threads(before)
    assert len(frames) == 4
    assert frames_sha256(frames) == FRAMES_SHA256
