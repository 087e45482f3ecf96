import torch

from nvc.entropy.hyperprior import HyperpriorLatentCodec
from nvc.models.config import HyperpriorConfig
from nvc.models.transforms import hyper_analysis, hyper_synthesis


def codec() -> HyperpriorLatentCodec:
    cfg = HyperpriorConfig()
    c = HyperpriorLatentCodec(hyper_analysis(cfg), hyper_synthesis(cfg), cfg.channels, cfg.substreams)
    c.update()
    return c.eval()


def test_scale_indexes_match_compressai():
    c = codec()
    table = c.y_codec.scale_table
    scales = torch.cat([torch.rand(20000) * 300, table, table * (1 + 1e-6), table * (1 - 1e-6), torch.zeros(3)])
    assert torch.equal(c.scale_indexes(scales), c.y_codec.build_indexes(scales))


def test_substreams_are_independent_and_exact():
    torch.manual_seed(0)
    c = codec()
    y = torch.randn(1, 128, 8, 12) * 4
    streams, y_hat = c.compress(y)
    assert len(streams.y) == 4 and all(len(s) > 0 for s in streams.y)
    assert torch.equal(c.decompress(streams, (2, 3)), y_hat)
    assert (y - y_hat).abs().max() <= 0.5 + 1e-6  # rounding around the predicted means
