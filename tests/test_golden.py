"""The golden files: committed `.nvc` files whose decoded frames and latents are pinned, so that a
decoder on another machine, thread count or build is checked against this one: tests/data/golden-v2.nvc
in the container version the encoder writes (`tools/make_golden.py`). Files of older container
versions can be frozen here beside it, with their own hashes in GOLDEN_FILES, until the v2 weights
change: no encoder writes them again (golden-v2-format3.nvc and -format5.nvc went with 23bf4feb;
the older rANS substream forms stay covered by tests/test_native_rans.py and tests/test_motion.py).

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
from nvc.container import VERSION, EntropyParameters, StreamHeader, SynthesisEngine
from nvc.models.registry import entry_by_name, weights_hash
from tools.make_golden import GOLDEN, MODEL, frames_sha256, latents_sha256

# >>> pinned by tools/make_golden.py
FRAMES_SHA256 = "d2fd0282fcd8a232971ee7ba972a0f2d016a880f198c06fe707288b57d07f38f"
LATENTS_SHA256 = "e3c376850d5a33a7304a05c1e49297c91ed7effeb7d6c6ee0322d30127bdf009"
# <<< pinned by tools/make_golden.py

# file -> (container version, FRAMES_SHA256, LATENTS_SHA256)
GOLDEN_FILES = {
    GOLDEN: (VERSION, FRAMES_SHA256, LATENTS_SHA256),
}


@pytest.fixture(scope="module", params=list(GOLDEN_FILES), ids=lambda p: p.name)
def golden(request):
    path = request.param
    with open(path, "rb") as f:
        header = StreamHeader.read(f)
    if header.weights_hash != weights_hash(entry_by_name(MODEL).weights_path):
        fix = ("run `python -m tools.make_golden` and commit tests/data/golden-v2.nvc and tests/test_golden.py"
               if path == GOLDEN else "delete it and its entry in GOLDEN_FILES (no encoder writes its version)")
        pytest.fail(f"{path.name} was made with other {MODEL} weights: {fix}")
    return path, header


def test_header_names_the_deterministic_path(golden):
    path, header = golden
    assert header.version == GOLDEN_FILES[path][0]
    assert header.synthesis == SynthesisEngine.TORCH and header.entropy_params == EntropyParameters.INTEGER
    assert (header.width, header.height, header.frame_count) == (128, 128, 4)
    assert path.stat().st_size < 8192


@pytest.mark.parametrize("implementation", ["torch", "numpy"])
def test_latents_are_pinned(golden, implementation):
    path, _ = golden
    assert latents_sha256(path, implementation) == GOLDEN_FILES[path][2]


@pytest.mark.parametrize("threads, pipelined", [(1, False), (2, False), (2, True)])
def test_frames_are_pinned(golden, threads, pipelined):
    path, _ = golden
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with nvc.open(path, pipelined=pipelined) as reader:
            frames = list(reader)
    finally:
        torch.set_num_threads(before)
    assert len(frames) == 4
    assert frames_sha256(frames) == GOLDEN_FILES[path][1]
