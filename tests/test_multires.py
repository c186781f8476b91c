"""Tests for lib.model.multires: the wavelet tree against a naive loop, hand values, causality, streaming, depth rule."""
import math

import pytest
import torch

from lib.model.multires import (MAX_DYNAMIC_DEPTH, MultiresConv, MultiresResidualBlock, WaveletUpsampler,
                          multires_depth)


# ---------------------------------------------------------------------------------------------------------------
# Independent references, written with explicit loops over levels, time and taps.

def naive_multires(x, h0, h1, w_detail, w_approx, w_skip, depth):
    """Wavelet tree by loops. ``x [B, C, T]``; ``h0, h1 [C, k]`` with tap ``j`` reading ``(k-1-j) * 2**level`` back."""
    _, _, n = x.shape
    k = h0.shape[1]
    y = w_skip[:, None] * x
    approx = x.clone()
    for level in range(depth):
        dilation = 2 ** level
        low = torch.zeros_like(x)
        high = torch.zeros_like(x)
        for t in range(n):
            for j in range(k):
                src = t - (k - 1 - j) * dilation
                if src >= 0:  # causal zero padding: samples before the start are 0
                    low[:, :, t] += h0[:, j] * approx[:, :, src]
                    high[:, :, t] += h1[:, j] * approx[:, :, src]
        y = y + w_detail[:, level, None] * high
        approx = low
    return y + w_approx[:, None] * approx


def naive_upsample(x, kernel, bias, stride):
    """Overlap-add by loops: frame ``f`` of input channel ``i`` adds ``kernel[i, o, s] * x`` at ``f * stride + s``."""
    b, c_in, n = x.shape
    _, c_out, k = kernel.shape
    y = torch.zeros(b, c_out, n * stride, dtype=x.dtype)
    for f in range(n):
        for s in range(k):
            j = f * stride + s
            if j < n * stride:
                y[:, :, j] += torch.einsum("bi,io->bo", x[:, :, f], kernel[:, :, s])
    return y + bias[:, None]


def stream_in_chunks(module, x, sizes):
    """Feed ``x`` through ``module.stream`` in chunks of the given sizes (repeated until ``x`` is used up)."""
    module.reset_stream()
    outs, start, i = [], 0, 0
    while start < x.shape[-1]:
        size = sizes[i % len(sizes)]
        outs.append(module.stream(x[..., start:start + size]))
        start += size
        i += 1
    module.reset_stream()
    return torch.cat(outs, dim=-1)


CHUNKINGS = [[1], [5], [3, 0, 7, 1, 2, 11, 0, 4]]  # 0 = empty chunk


# ---------------------------------------------------------------------------------------------------------------
# MultiresConv

@pytest.mark.parametrize("kernel_size,depth", [(2, 4), (3, 3)])
def test_multires_matches_naive_tree(kernel_size, depth):
    m = MultiresConv(3, kernel_size=kernel_size, depth=depth).double()
    with torch.no_grad():  # random filters and weights, not just the init
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 3, 29, dtype=torch.float64)
    expected = naive_multires(x, m.h0, m.h1, m.w_detail, m.w_approx, m.w_skip, depth)
    torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-10)


def test_multires_dynamic_depth_matches_naive_tree():
    m = MultiresConv(2, kernel_size=2).double()
    x = torch.randn(1, 2, 21, dtype=torch.float64)
    depth = multires_depth(21, 2)  # 5: receptive field 32 >= 21 > 16
    assert depth == 5 and m.depth_for(21) == 5
    expected = naive_multires(x, m.h0, m.h1, m.w_detail, m.w_approx, m.w_skip, depth)
    torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-10)


def test_multires_haar_hand_values():
    m = MultiresConv(1, kernel_size=2, depth=3).double()
    with torch.no_grad():
        m.h0.copy_(torch.tensor([[1.0, 1.0]]) / math.sqrt(2))
        m.h1.copy_(torch.tensor([[-1.0, 1.0]]) / math.sqrt(2))
        m.w_detail.zero_()
        m.w_skip.zero_()
        m.w_approx.fill_(1.0)
    # Constant input: after the receptive field (8 samples) a_3 = 2**(3/2) * c.
    y = m(torch.full((1, 1, 12), 2.0, dtype=torch.float64))
    torch.testing.assert_close(y[0, 0, 7:], torch.full((5,), 2.0 * 2 ** 1.5, dtype=torch.float64))
    # First-level detail only: d_1[t] = (x[t] - x[t-1]) / sqrt(2), x[-1] = 0.
    with torch.no_grad():
        m.w_approx.zero_()
        m.w_detail[0, 0] = 1.0
    x = torch.tensor([[[1.0, 4.0, 2.0, 2.0, -3.0]]], dtype=torch.float64)
    expected = torch.tensor([1.0, 3.0, -2.0, 0.0, -5.0], dtype=torch.float64) / math.sqrt(2)
    torch.testing.assert_close(m(x)[0, 0], expected)


def test_multires_init_is_haar_like():
    m = MultiresConv(8, kernel_size=2, depth=6)
    haar_low = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    haar_high = torch.tensor([-1.0, 1.0]) / math.sqrt(2)
    assert (m.h0 - haar_low).abs().max() < 0.06
    assert (m.h1 - haar_high).abs().max() < 0.06
    # Resolution fading: coarser levels start with smaller weights (bound 2**(-i/2) / sqrt(L + 2)).
    bound = 2.0 ** (-0.5 * torch.arange(1, 7)) / math.sqrt(8)
    assert (m.w_detail.abs() <= bound).all()
    assert m.w_approx.abs().max() <= 2.0 ** -3 / math.sqrt(8)


@pytest.mark.parametrize("depth", [4, None])
def test_multires_causal_by_impulse(depth):
    m = MultiresConv(3, kernel_size=2, depth=depth)
    x = torch.randn(2, 3, 40)
    for t0 in (0, 17, 39):
        bumped = x.clone()
        bumped[..., t0] += 1.0
        y, y_bumped = m(x), m(bumped)
        torch.testing.assert_close(y_bumped[..., :t0], y[..., :t0], rtol=0, atol=0)
        assert (y_bumped[..., t0] - y[..., t0]).abs().max() > 1e-4  # the impulse is seen at once (skip path)


@pytest.mark.parametrize("sizes", CHUNKINGS)
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_multires_stream_equals_offline(sizes, kernel_size):
    m = MultiresConv(4, kernel_size=kernel_size, depth=4).eval()
    x = torch.randn(2, 4, 57)
    with torch.no_grad():
        torch.testing.assert_close(stream_in_chunks(m, x, sizes), m(x), rtol=1e-5, atol=1e-6)


def test_multires_stream_needs_fixed_depth():
    with pytest.raises(ValueError, match="depth"):
        MultiresConv(2).stream(torch.randn(1, 2, 4))
    m = MultiresConv(2, max_len=100)  # fixed from max_len: streams
    assert m.depth == 7
    assert m.stream(torch.randn(1, 2, 4)).shape == (1, 2, 4)


def test_depth_rule():
    assert multires_depth(1024, 2) == 10 and multires_depth(1025, 2) == 11
    assert multires_depth(1, 2) == 1 and multires_depth(2, 2) == 1 and multires_depth(3, 2) == 2
    assert multires_depth(7, 3) == 2 and multires_depth(8, 3) == 3
    for k in (2, 3, 4):
        for n in range(2, 300):
            j = multires_depth(n, k)
            assert (k - 1) * (2 ** j - 1) + 1 >= n  # covers the sequence
            assert j == 1 or (k - 1) * (2 ** (j - 1) - 1) + 1 < n  # and is the smallest that does
    assert MultiresConv(2).depth_for(10 ** 9) == MAX_DYNAMIC_DEPTH
    with pytest.raises(ValueError, match="kernel_size"):
        multires_depth(10, 1)


def test_depth_rule_reaches_first_sample():
    # With the rule's depth the first sample reaches the last output through the tree; one level less it doesn't.
    n = 37
    j = multires_depth(n, 2)
    for depth, reaches in ((j, True), (j - 1, False)):
        m = MultiresConv(2, kernel_size=2, depth=depth)
        x = torch.randn(1, 2, n)
        bumped = x.clone()
        bumped[..., 0] += 1.0
        change = (m(bumped)[..., -1] - m(x)[..., -1]).abs().max().item()
        assert (change > 1e-6) == reaches


def test_multires_bad_input():
    with pytest.raises(ValueError, match="channels"):
        MultiresConv(0)
    with pytest.raises(ValueError, match=r"\[B, 3, T\]"):
        MultiresConv(3, depth=2)(torch.randn(1, 4, 10))


# ---------------------------------------------------------------------------------------------------------------
# MultiresResidualBlock

@pytest.mark.parametrize("activation", ["elu", "snake"])
def test_block_shape_and_causal_by_impulse(activation):
    block = MultiresResidualBlock(6, kernel_size=2, depth=4, activation=activation)
    x = torch.randn(2, 6, 33)
    assert block(x).shape == x.shape
    for t0 in (0, 20):
        bumped = x.clone()
        bumped[..., t0] += 1.0
        y, y_bumped = block(x), block(bumped)
        torch.testing.assert_close(y_bumped[..., :t0], y[..., :t0], rtol=0, atol=0)
        assert (y_bumped[..., t0:] - y[..., t0:]).abs().max() > 1e-4


@pytest.mark.parametrize("sizes", CHUNKINGS)
def test_block_stream_equals_offline(sizes):
    block = MultiresResidualBlock(6, kernel_size=2, depth=5, compress=2).eval()
    x = torch.randn(1, 6, 50)
    with torch.no_grad():
        torch.testing.assert_close(stream_in_chunks(block, x, sizes), block(x), rtol=1e-5, atol=1e-6)


def test_block_bad_activation():
    with pytest.raises(ValueError, match="activation"):
        MultiresResidualBlock(4, activation="tanh")


# ---------------------------------------------------------------------------------------------------------------
# WaveletUpsampler

@pytest.mark.parametrize("stride,kernel_per_stride", [(1, 2), (3, 1), (4, 2), (5, 3)])
def test_upsampler_shape_and_matches_naive_overlap_add(stride, kernel_per_stride):
    up = WaveletUpsampler(3, 2, stride, kernel_per_stride=kernel_per_stride).double()
    with torch.no_grad():
        up.bias.normal_()
    x = torch.randn(2, 3, 9, dtype=torch.float64)
    y = up(x)
    assert y.shape == (2, 2, 9 * stride)
    torch.testing.assert_close(y, naive_upsample(x, up.kernel(), up.bias, stride))


def test_upsampler_kernel_is_mixed_wavelet_atoms():
    up = WaveletUpsampler(2, 3, stride=4).double()
    k = up.kernel_size
    s = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    expected = torch.zeros(2, 3, k, dtype=torch.float64)
    for i in range(2):
        for o in range(3):
            for m in range(3):
                atom = (torch.cos(up.freq[m, i] * s + up.phase[m, i])
                        * torch.exp(-s ** 2 / torch.exp(up.log_sigma[m, i])))
                expected[i, o] += up.mix[o, m] * atom
    torch.testing.assert_close(up.kernel(), expected)


def test_upsampler_causal_by_impulse():
    stride = 4
    up = WaveletUpsampler(3, 2, stride, kernel_per_stride=3)
    x = torch.randn(1, 3, 12)
    for f0 in (0, 5, 11):
        bumped = x.clone()
        bumped[..., f0] += 1.0
        y, y_bumped = up(x), up(bumped)
        # Output sample j may depend only on frames f with f * stride <= j.
        torch.testing.assert_close(y_bumped[..., : f0 * stride], y[..., : f0 * stride], rtol=0, atol=0)
        assert (y_bumped[..., f0 * stride:] - y[..., f0 * stride:]).abs().max() > 1e-4


@pytest.mark.parametrize("sizes", CHUNKINGS)
def test_upsampler_stream_equals_offline(sizes):
    up = WaveletUpsampler(3, 2, stride=5, kernel_per_stride=3)
    x = torch.randn(2, 3, 23)
    with torch.no_grad():
        torch.testing.assert_close(stream_in_chunks(up, x, sizes), up(x), rtol=1e-5, atol=1e-6)


def test_upsampler_is_learnable():
    up = WaveletUpsampler(3, 4, stride=2)
    up(torch.randn(2, 3, 10)).pow(2).mean().backward()
    for name in ("freq", "phase", "log_sigma", "mix", "bias"):
        grad = getattr(up, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_upsampler_bad_input():
    with pytest.raises(ValueError, match="stride"):
        WaveletUpsampler(2, 2, stride=0)
    with pytest.raises(ValueError, match=r"\[B, 2, T\]"):
        WaveletUpsampler(2, 2, stride=2)(torch.randn(1, 3, 5))
