"""Finite scalar quantization: exact codes <-> values, straight-through gradients, bitrate, dropout, the codec."""
import math

import pytest
import torch

from lib.build import build_codec
from lib.config import load_config
from lib.model.fsq import FSQ, ResidualFSQ


def test_codes_and_grid_values_convert_exactly():
    fsq = FSQ(6, [8, 5, 5, 5])
    codes = torch.arange(fsq.codebook_size)
    grid = fsq.grid_of_codes(codes)  # [1000, 4] in [-1, 1]
    assert grid.shape == (1000, 4) and len({tuple(g.tolist()) for g in grid}) == 1000
    digits_back = fsq._codes((grid * fsq._width).T[None])[0]  # grid values -> codes
    assert torch.equal(digits_back, codes)
    assert grid.min() == -1 and grid.max() <= 1


def test_quantize_matches_forward_and_decode():
    torch.manual_seed(0)
    rfsq = ResidualFSQ(8, n_q=3, levels=[5, 3], quantizer_dropout=0.0).eval()
    x = torch.randn(2, 8, 11)
    out = rfsq(x)
    codes = rfsq.encode(x)
    assert torch.equal(codes, out.codes)
    assert torch.allclose(rfsq.decode(codes), out.quantized, atol=1e-6)
    assert int(codes.min()) >= 0 and int(codes.max()) < 15
    # the first n levels decode the ladder's lower rungs
    assert torch.allclose(rfsq.decode(codes[:, :1]), rfsq.levels[0].dequantize(codes[:, 0]))


def test_straight_through_gradient_reaches_the_input():
    fsq = FSQ(4, [5, 5])
    x = torch.randn(1, 4, 9, requires_grad=True)
    q, _, loss, _ = fsq.quantize_level(x)
    assert float(loss) == 0.0  # no commitment loss
    q.sum().backward()
    # d round / dx is taken as 1, so the gradient is that of out_proj(tanh-bound(in_proj(x))): nonzero everywhere
    assert x.grad is not None and bool((x.grad.abs() > 0).all())


def test_bitrate_arithmetic():
    cfg = load_config("tiny", ["model.quantizer.kind=fsq", "model.quantizer.som=false", "model.quantizer.n_q=8",
                               "model.quantizer.fsq_levels=[8, 5, 5, 5]"])
    codec = build_codec(cfg)
    assert cfg.model.quantizer.codebook_size == 1000
    assert codec.bitrate() == pytest.approx(8 * math.log2(1000) * 75)  # 5979.5 bit/s
    assert codec.bitrate(2) == pytest.approx(2 * math.log2(1000) * 75)
    assert cfg.bitrate() == pytest.approx(codec.bitrate())


def test_dropout_applies_to_the_given_fraction_of_items():
    torch.manual_seed(0)
    rfsq = ResidualFSQ(4, n_q=4, levels=[3, 3], quantizer_dropout=0.5).train()
    out = rfsq(torch.randn(4000, 4, 2))
    full = float((out.n_q == 4).float().mean())
    assert full == pytest.approx(0.5 + 0.5 / 4, abs=0.03)  # half keep all levels, the rest draw 1..4
    assert bool((out.codes[out.n_q == 1][:, 1:] == -1).all())


def test_first_batch_centres_and_scales_the_projection():
    """A latent with a large offset (a random encoder's) must not start saturated on one grid point."""
    fsq = FSQ(8, [8, 5]).train()
    x = 30 + 0.1 * torch.randn(4, 8, 50)
    fsq.quantize_level(x)
    _, codes = fsq.eval().quantize(x)
    assert len(codes.unique()) > 10


def test_bad_codes_and_levels_are_refused():
    with pytest.raises(ValueError, match="every level >= 2"):
        FSQ(4, [8, 1])
    with pytest.raises(ValueError, match="codes must be in"):
        FSQ(4, [3, 3]).dequantize(torch.tensor([[9]]))
