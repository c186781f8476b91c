"""Tests for lib.model.energy: the energy against a loop reference, descent, causal updates, gradients, lengths."""
import math

import pytest
import torch

from lib.model.energy import EnergyTransformer


def small(**kwargs):
    args = dict(dim=8, n_heads=2, head_dim=4, hopfield_hidden=12, n_steps=3, step_size=0.1)
    args.update(kwargs)
    return EnergyTransformer(**args)


def reference_energy(et, x):
    """Energy ``[B]`` by loops over batch, heads and query tokens, straight from the formulas."""
    b, d, n = x.shape
    g_all = et.norm(x.transpose(1, 2))
    # Hand layer-norm check on the way: scalar gamma, vector delta, biased variance.
    centred = x.transpose(1, 2) - x.transpose(1, 2).mean(-1, keepdim=True)
    hand = et.norm.gamma * centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5) + et.norm.delta
    torch.testing.assert_close(g_all, hand)
    energies = []
    for i in range(b):
        g = g_all[i]
        total = 0.0
        for h in range(et.n_heads):
            q = g @ et.w_q[h].t()
            k = g @ et.w_k[h].t()
            for a in range(n):
                keys = range(a + 1) if et.causal else range(n)
                scores = torch.stack([et.beta * (q[a] * k[c]).sum() for c in keys])
                total = total - torch.logsumexp(scores, 0) / et.beta
        for a in range(n):
            h_mu = et.xi @ g[a]
            if et.hopfield == "relu":
                total = total - 0.5 * torch.relu(h_mu).pow(2).sum()
            else:
                total = total - torch.logsumexp(et.hopfield_beta * h_mu, 0) / et.hopfield_beta
        energies.append(total)
    return torch.stack(energies)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
def test_energy_matches_loop_reference(causal, hopfield):
    et = small(causal=causal, hopfield=hopfield).double()
    with torch.no_grad():
        et.norm.gamma.fill_(1.3)
        et.norm.delta.normal_()
    x = torch.randn(2, 8, 6, dtype=torch.float64)
    torch.testing.assert_close(et.energy(x), reference_energy(et, x))
    assert et.energy(x).shape == (2,)


@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
def test_energy_decreases_monotonically(hopfield):
    # Non-causal mode is exact gradient descent through a PSD layer-norm Jacobian: E must fall at every step.
    et = small(causal=False, hopfield=hopfield, n_steps=12, step_size=0.02)
    _, energies = et(torch.randn(3, 8, 10), return_energies=True)
    assert energies.shape == (13, 3)
    assert (energies[1:] < energies[:-1]).all()


def test_energy_decreases_causal_single_token():
    # One token: the causal own-term update is the full gradient, so the guarantee holds there too.
    et = small(causal=True, n_steps=10, step_size=0.02)
    _, energies = et(torch.randn(2, 8, 1), return_energies=True)
    assert (energies[1:] < energies[:-1]).all()


def test_non_causal_step_is_energy_gradient():
    et = small(causal=False, n_steps=1, step_size=0.1).double()
    x = torch.randn(2, 8, 5, dtype=torch.float64)
    g = et.norm(x.transpose(1, 2)).detach().requires_grad_(True)
    grad = torch.autograd.grad(et.energy_of_g(g).sum(), g)[0]
    torch.testing.assert_close(et(x), x - 0.1 * grad.transpose(1, 2))


def test_causal_step_is_own_term_gradient():
    # Token t moves by the gradient of its own terms w.r.t. its own g_t, with earlier tokens as fixed keys.
    et = small(causal=True, n_steps=1, step_size=0.1).double()
    x = torch.randn(1, 8, 5, dtype=torch.float64)
    g = et.norm(x.transpose(1, 2))[0].detach()
    expected = []
    for t in range(5):
        v = g[t].clone().requires_grad_(True)
        energy = 0.0
        for h in range(et.n_heads):
            q = et.w_q[h] @ v
            keys = torch.cat([g[:t] @ et.w_k[h].t(), (et.w_k[h] @ v)[None]])
            energy = energy - torch.logsumexp(et.beta * keys @ q, 0) / et.beta
        energy = energy - 0.5 * torch.relu(et.xi @ v).pow(2).sum()
        expected.append(x[0, :, t] - 0.1 * torch.autograd.grad(energy, v)[0])
    torch.testing.assert_close(et(x)[0], torch.stack(expected, dim=1))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hopfield", ["relu", "softmax"])
def test_gradients_reach_every_parameter(causal, hopfield):
    et = small(causal=causal, hopfield=hopfield)
    x = torch.randn(2, 8, 7, requires_grad=True)
    loss = (et(x) * torch.randn(2, 8, 7)).sum()
    loss.backward()
    for name, p in et.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("length", [1, 7, 50])
@pytest.mark.parametrize("causal", [False, True])
def test_any_sequence_length(length, causal):
    et = small(causal=causal)
    x = torch.randn(2, 8, length)
    y = et(x)
    assert y.shape == (2, 8, length) and torch.isfinite(y).all()
    assert not torch.allclose(y, x)  # the descent moved the tokens


def test_causal_mask():
    x = torch.randn(2, 8, 12)
    changed = x.clone()
    changed[..., 6:] = torch.randn(2, 8, 6)
    causal = small(causal=True)
    torch.testing.assert_close(causal(changed)[..., :6], causal(x)[..., :6], rtol=0, atol=1e-6)
    assert (causal(changed)[..., 6:] - causal(x)[..., 6:]).abs().max() > 1e-3
    # Without the mask the past does move (so the check above can fail).
    full = small(causal=False)
    assert (full(changed)[..., :6] - full(x)[..., :6]).abs().max() > 1e-4


def test_no_grad_eval_matches_and_keeps_no_graph():
    et = small(causal=True).eval()
    x = torch.randn(1, 8, 9)
    y_grad = et(x)
    with torch.no_grad():
        y = et(x)
    assert y.grad_fn is None and not y.requires_grad
    assert all(p.grad is None for p in et.parameters())
    torch.testing.assert_close(y, y_grad.detach())


def test_inference_mode_matches():
    et = small(causal=True).eval()
    x = torch.randn(1, 8, 9)
    expected = et(x).detach()
    with torch.inference_mode():
        y = et(x)
    torch.testing.assert_close(y, expected)


def test_frozen_parameters_still_descend():
    et = small(causal=False).requires_grad_(False)
    x = torch.randn(1, 8, 4)
    assert not torch.allclose(et(x), x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="hopfield"):
        small(hopfield="tanh")
    with pytest.raises(ValueError, match=r"\[B, 8, T\]"):
        small()(torch.randn(1, 9, 4))
    with pytest.raises(ValueError, match="step_size"):
        small(step_size=0.0)
    assert math.isclose(small().beta, 0.5)  # default 1 / sqrt(head_dim)
