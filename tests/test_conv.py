"""Causal / streaming convolutions: hand-computed outputs, impulse causality, streaming == offline."""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lib.model.conv import CausalConv1d, CausalConvTranspose1d, StreamingSequential, reset_streams


def chunk_sizes(total: int, kind) -> list[int]:
    """Chunk lengths summing to ``total``: a fixed size, or random sizes in [0, 20] (zeros included)."""
    if kind == "random":
        sizes, left = [], total
        g = torch.Generator().manual_seed(total)
        while left > 0:
            n = min(int(torch.randint(0, 21, (1,), generator=g)), left)
            sizes.append(n)
            left -= n
        return [0] + sizes + [0]
    return [min(kind, total - i) for i in range(0, total, kind)]


def run_stream(module, x: torch.Tensor, kind) -> torch.Tensor:
    """Feed ``x`` to ``module.stream`` chunk by chunk and join the outputs."""
    module.reset_stream()
    pieces = torch.split(x, chunk_sizes(x.shape[-1], kind), dim=-1)
    return torch.cat([module.stream(p) for p in pieces], dim=-1)


# --------------------------------------------------------------------------------------- references by hand

def reference_conv(conv: CausalConv1d, x: torch.Tensor) -> torch.Tensor:
    """y[o, f] = b[o] + sum_{i, j} w[o, i, j] x[i, f*s + j*d - (k-1)*d], zero outside the signal."""
    w, b = conv.conv.weight.detach(), conv.conv.bias.detach()
    k, s, d = conv.kernel_size, conv.stride, conv.dilation
    T = x.shape[-1]
    n_out = math.ceil(T / s)
    y = b[None, :, None].repeat(x.shape[0], 1, n_out)
    for f in range(n_out):
        for j in range(k):
            t = f * s + j * d - (k - 1) * d
            if 0 <= t < T:
                y[:, :, f] += x[:, :, t] @ w[:, :, j].T
    return y


def reference_convtr(conv: CausalConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """y[o, t*s + j] += w[i, o, j] x[i, t], kept for the first T*s samples, plus the bias."""
    w, b = conv.convtr.weight.detach(), conv.convtr.bias.detach()
    k, s = conv.kernel_size, conv.stride
    T = x.shape[-1]
    y = torch.zeros(x.shape[0], w.shape[1], T * s + k)
    for t in range(T):
        for j in range(k):
            y[:, :, t * s + j] += x[:, :, t] @ w[:, :, j]
    return y[..., : T * s] + b[None, :, None]


@pytest.mark.parametrize("k,s,d", [(7, 1, 1), (3, 1, 3), (4, 2, 1), (5, 3, 2), (1, 1, 1)])
@pytest.mark.parametrize("T", [1, 10, 23])
def test_conv_matches_hand_computation(k, s, d, T):
    conv = CausalConv1d(3, 2, k, stride=s, dilation=d)
    x = torch.randn(2, 3, T)
    y = conv(x)
    assert y.shape == (2, 2, math.ceil(T / s))
    torch.testing.assert_close(y, reference_conv(conv, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k,s", [(4, 2), (6, 3), (3, 3), (7, 1)])
@pytest.mark.parametrize("T", [1, 9])
def test_convtr_matches_hand_computation(k, s, T):
    conv = CausalConvTranspose1d(3, 2, k, s)
    x = torch.randn(2, 3, T)
    y = conv(x)
    assert y.shape == (2, 2, T * s)
    torch.testing.assert_close(y, reference_convtr(conv, x), atol=1e-5, rtol=1e-5)


def test_weight_norm_is_applied():
    for module, inner in ((CausalConv1d(2, 3, 5), "conv"), (CausalConvTranspose1d(2, 3, 4, 2), "convtr")):
        sub = getattr(module, inner)
        assert parametrize.is_parametrized(sub, "weight")
        names = {n for n, _ in module.named_parameters()}
        assert f"{inner}.parametrizations.weight.original0" in names  # magnitude g
        assert f"{inner}.parametrizations.weight.original1" in names  # direction v
    plain = CausalConv1d(2, 3, 5, weight_norm=False)
    assert not parametrize.is_parametrized(plain.conv, "weight")


# --------------------------------------------------------------------------------------- causality by impulse

@pytest.mark.parametrize("k,s,d", [(7, 1, 1), (3, 1, 9), (4, 2, 1), (6, 3, 2)])
def test_conv_impulse_causality(k, s, d):
    conv = CausalConv1d(2, 3, k, stride=s, dilation=d).eval()
    T, t = 60, 31
    a = torch.randn(1, 2, T)
    b = a.clone()
    b[..., t:] += torch.randn(1, 2, T - t)  # same before t, different from t on
    ya, yb = conv(a), conv(b)
    first_changed = math.ceil(t / s)  # first frame f with f * s >= t
    assert torch.equal(ya[..., :first_changed], yb[..., :first_changed])
    # ...and the frame that reaches sample t does see it (no extra delay).
    assert (ya[..., first_changed] - yb[..., first_changed]).abs().max() > 1e-4


@pytest.mark.parametrize("k,s", [(4, 2), (6, 3), (7, 1)])
def test_convtr_impulse_causality(k, s):
    conv = CausalConvTranspose1d(2, 3, k, s).eval()
    T, t = 20, 9
    a = torch.randn(1, 2, T)
    b = a.clone()
    b[..., t] += 1.0  # an impulse at frame t
    ya, yb = conv(a), conv(b)
    assert torch.equal(ya[..., : t * s], yb[..., : t * s])
    assert (ya[..., t * s] - yb[..., t * s]).abs().max() > 1e-4


# --------------------------------------------------------------------------------------- streaming == offline

KINDS = [1, 7, 64, "random"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k,s,d", [(7, 1, 1), (3, 1, 3), (4, 2, 1), (5, 3, 2), (1, 1, 1)])
def test_conv_stream_equals_offline(kind, k, s, d):
    conv = CausalConv1d(2, 3, k, stride=s, dilation=d)
    x = torch.randn(2, 2, 101)
    with torch.no_grad():
        offline = conv(x)
        streamed = run_stream(conv, x, kind)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k,s", [(4, 2), (6, 3), (3, 3), (7, 1), (10, 4)])
def test_convtr_stream_equals_offline(kind, k, s):
    conv = CausalConvTranspose1d(2, 3, k, s)
    x = torch.randn(2, 2, 37)
    with torch.no_grad():
        offline = conv(x)
        streamed = run_stream(conv, x, kind)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5


def test_convtr_stream_adds_bias_once():
    conv = CausalConvTranspose1d(1, 1, 4, 2)
    with torch.no_grad():
        conv.convtr.bias.fill_(0.5)
        out = run_stream(conv, torch.zeros(1, 1, 5), 1)  # zero input: every sample is exactly the bias
    torch.testing.assert_close(out, torch.full((1, 1, 10), 0.5))


@pytest.mark.parametrize("kind", KINDS)
def test_sequential_stream_equals_offline(kind):
    model = StreamingSequential(CausalConv1d(1, 4, 7), nn.ELU(), CausalConv1d(4, 4, 4, stride=2),
                                nn.ELU(), CausalConvTranspose1d(4, 2, 4, 2), CausalConv1d(2, 1, 3, dilation=3))
    x = torch.randn(1, 1, 90)
    with torch.no_grad():
        offline = model(x)
        streamed = run_stream(model, x, kind)
    assert offline.shape == (1, 1, 90)
    assert (streamed - offline).abs().max() < 1e-5


def test_reset_streams_forgets_the_past():
    model = StreamingSequential(CausalConv1d(1, 2, 5, stride=2), nn.ELU(), CausalConvTranspose1d(2, 1, 4, 2))
    with torch.no_grad():
        model.stream(torch.randn(1, 1, 13))
        assert model[0]._buffer is not None and model[2]._tail is not None
        reset_streams(model)
        assert model[0]._buffer is None and model[2]._tail is None
        x = torch.randn(1, 1, 20)
        torch.testing.assert_close(model.stream(x), model(x))


def test_empty_input_and_empty_chunks():
    conv, convtr = CausalConv1d(2, 3, 5, stride=2), CausalConvTranspose1d(2, 3, 4, 2)
    empty = torch.zeros(4, 2, 0)
    assert conv(empty).shape == (4, 3, 0) and convtr(empty).shape == (4, 3, 0)
    assert conv.stream(empty).shape == (4, 3, 0) and convtr.stream(empty).shape == (4, 3, 0)


# --------------------------------------------------------------------------------------- errors

def test_convtr_requires_kernel_at_least_stride():
    with pytest.raises(ValueError, match="kernel_size >= stride"):
        CausalConvTranspose1d(2, 2, kernel_size=2, stride=3)


@pytest.mark.parametrize("kwargs,name", [(dict(kernel_size=0), "kernel_size"), (dict(stride=0), "stride"),
                                         (dict(dilation=-1), "dilation"), (dict(groups=3), "groups")])
def test_conv_rejects_bad_arguments(kwargs, name):
    args = dict(in_ch=2, out_ch=4, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=name):
        CausalConv1d(**args)


def test_bad_input_shapes_are_rejected():
    conv, convtr = CausalConv1d(2, 3, 5), CausalConvTranspose1d(2, 3, 4, 2)
    for module in (conv, convtr):
        with pytest.raises(ValueError, match=r"\[B, 2, T\]"):
            module(torch.randn(1, 3, 10))
        with pytest.raises(ValueError, match=r"\[B, 2, T\]"):
            module(torch.randn(2, 10))


def test_stream_rejects_a_changed_batch_size():
    conv = CausalConv1d(1, 1, 3)
    conv.stream(torch.randn(2, 1, 5))
    with pytest.raises(ValueError, match="reset_stream"):
        conv.stream(torch.randn(3, 1, 5))
