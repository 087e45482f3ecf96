"""The native P-frame warp of the int8 decoder (deploy/warp.cpp) against the torch reference."""

import numpy as np
import pytest
import torch

from nvc.deploy import _warp
from nvc.deploy.int8 import FastMotionCompensation
from nvc.models.motion import predict_packed


@pytest.mark.parametrize("h2, w2, spread", [(64, 96, 0), (64, 96, 6), (72, 88, 40), (32, 48, 400)])
def test_native_warp_is_predict_packed(h2, w2, spread):
    """Zero, smooth, large and border-crossing fields (block vectors in quarter pixels): the same
    prediction as `models.motion.predict_packed` to float rounding."""
    gen = torch.Generator().manual_seed(h2 + spread)
    ref = torch.rand(1, 6, h2, w2, generator=gen)
    mv = (torch.randn(1, 2, h2 // 8, w2 // 8, generator=gen) * spread).round().int()
    mv[..., :2, :] = mv[..., :1, :1]  # a run of equal vectors: the fixed-weight path
    got = FastMotionCompensation()(ref, mv)
    assert got.shape == ref.shape
    assert float((got - predict_packed(ref, mv)).abs().max()) < 2e-4
    if spread == 0:
        assert torch.equal(got, ref)  # zero motion is an exact copy


def test_native_warp_rejects_bad_shapes():
    ref, out = np.zeros((6, 64, 96), np.float32), np.zeros((6, 64, 96), np.float32)
    with pytest.raises(ValueError):
        _warp.warp(ref, np.zeros((2, 7, 12), np.int32), out)  # field of the wrong size
    with pytest.raises(ValueError):
        _warp.warp(ref, np.zeros((2, 8, 12), np.int32), ref)  # in place
    with pytest.raises(TypeError):
        _warp.warp(ref, np.zeros((2, 8, 12), np.float32), out)  # float vectors
    with pytest.raises((TypeError, ValueError, BufferError)):  # numpy's own error for a non-contiguous view
        _warp.warp(ref[:, ::2], np.zeros((2, 8, 12), np.int32), out)
