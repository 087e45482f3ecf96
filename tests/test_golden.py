"""The golden files: committed `.nvc` files whose decoded frames and latents are pinned, so that a
decoder on another machine, thread count or build is checked against this one: tests/data/golden-v2.nvc
in the container version the encoder writes (`tools/make_golden.py`), and golden-v2-format3.nvc and
golden-v2-format5.nvc, the same frames as versions 3 and 5 wrote them (version 3: rANS substreams in
their older form, no repeated hyper-latents; version 5: compact substreams, frame indexes in the
packets), frozen: no encoder writes those versions any more, so their hashes are constants; when the
v2 weights change they cannot be made again and are deleted with their entries in GOLDEN_FILES.

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
FRAMES_SHA256 = "1ad7e03f20c5f91d4f0ea103123496cd1db4f79f7d71f0ac65a3edcd1753c050"
LATENTS_SHA256 = "dfd6ed65e9c440e84862ef4a2a95f8f4a1fdcb80052c08a2efb089ce924c8f3d"
# <<< pinned by tools/make_golden.py

# file -> (container version, FRAMES_SHA256, LATENTS_SHA256)
GOLDEN_FILES = {
    GOLDEN: (VERSION, FRAMES_SHA256, LATENTS_SHA256),
    GOLDEN.with_name("golden-v2-format5.nvc"): (5, "1ad7e03f20c5f91d4f0ea103123496cd1db4f79f7d71f0ac65a3edcd1753c050",
                                                "dfd6ed65e9c440e84862ef4a2a95f8f4a1fdcb80052c08a2efb089ce924c8f3d"),
    GOLDEN.with_name("golden-v2-format3.nvc"): (3, "a44e9babfd97b95f2c1953437dd221c2fcca1b73d5f8be0a197b3253d5c14f85",
                                                "9edaedb0e173aca4a0e90445bd88f7f13ad194d97f67660d3d71c22173d1ebdd"),
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
