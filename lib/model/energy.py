"""Energy Transformer bottleneck after Hoover et al. 2023, "Energy Transformer" (arXiv 2302.07253).

Tokens (latent frames) descend one scalar energy instead of passing through feed-forward layers::

    g      = EnergyLayerNorm(x)                                   per token, over D
    E_att  = -(1/beta) sum_heads sum_A logsumexp_{B in keys(A)} (beta * q_A . k_B)     q = W_Q g, k = W_K g
    E_hop  = -1/2 sum_A sum_mu relu(xi_mu . g_A)^2                  ("relu" Hopfield)
           | -(1/beta_h) sum_A logsumexp_mu (beta_h * xi_mu . g_A)   ("softmax" Hopfield)
    x     <- x - step_size * dE/dg                                  n_steps times

The layer-norm has a scalar gain ``gamma`` and a vector bias ``delta``: it is then the gradient of a convex
Lagrangian (for ``gamma >= 0``), its Jacobian ``dg/dx`` is symmetric positive semi-definite, and so each small step
``x <- x - a dE/dg`` lowers ``E`` (``dE = -a (dE/dg)^T (dg/dx) (dE/dg) <= 0``). The energy is bounded below because
``g`` is normalised.

Keys: non-causal, token ``A`` attends to every token, itself included (the paper leaves out ``B = A``; we keep it
so that, with the causal mask below, the first token still has a key). Causal: ``A`` attends to ``B <= A``.

Causal dynamics, and why it is not plain gradient descent: the full gradient ``dE/dg_t`` also contains the terms in
which ``g_t`` is a key for later queries ``A > t``, so exact descent on a causally-masked energy still lets the
future move the past. In causal mode each token therefore moves along the gradient of its *own* terms only
(``-(1/beta) lse_{B <= t}`` and its Hopfield term) with respect to its own ``g_t`` (as query and as its own key),
the earlier tokens acting as fixed memories during that step; the earlier tokens stay in the autograd graph, so the
layer is still differentiable end to end. A causal, interacting update cannot be the gradient of any single energy
(its Jacobian would have to be both triangular and symmetric), so only in non-causal mode is ``E`` guaranteed to
fall at every small step; in causal mode only the first token's own term is (it depends on nothing else), though
the total fell at every step in the default configurations we tried.

Not streamable: the descent is run on all tokens at once, and in non-causal mode every token's trajectory depends
on every other token (in causal mode a per-step key cache would make streaming possible; it is not implemented).
Any sequence length works: there are no positional parameters.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lib.model.registries import BOTTLENECKS

__all__ = ["EnergyLayerNorm", "EnergyTransformer"]


class EnergyLayerNorm(nn.Module):
    """``g = gamma * (x - mean) / sqrt(var + eps) + delta`` over the last dim: ``[..., D] -> [..., D]``.

    ``gamma`` is a scalar (a per-feature gain would make ``dg/dx`` non-symmetric and break the energy descent).
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(()))
        self.delta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)
        return self.gamma * centred / torch.sqrt(centred.pow(2).mean(dim=-1, keepdim=True) + self.eps) + self.delta


@BOTTLENECKS.register("energy")
class EnergyTransformer(nn.Module):
    """Energy Transformer block: ``[B, D, T] -> [B, D, T]`` by ``n_steps`` of descent on an energy (see module doc).

    Args:
        dim: token size ``D``.
        n_heads, head_dim: attention heads and their query/key size.
        hopfield_hidden: number of Hopfield memories (default ``4 * dim``).
        n_steps, step_size: descent steps ``x <- x - step_size * dE/dg``.
        causal: token ``A`` attends only to ``B <= A`` and moves only by its own energy terms (module doc).
        hopfield: ``"relu"`` or ``"softmax"`` Hopfield energy.
        beta: attention inverse temperature (default ``1 / sqrt(head_dim)``).
        hopfield_beta: inverse temperature of the softmax Hopfield energy.

    Gradients: under grad mode the descent keeps its graph (``create_graph=True``), so the output is
    differentiable with respect to the input and every parameter; under ``torch.no_grad()`` the steps are computed
    with a local ``enable_grad`` and no graph (also under ``torch.inference_mode()``). Not streamable (module doc).
    """

    def __init__(self, dim: int, n_heads: int = 4, head_dim: int = 32, hopfield_hidden: int | None = None,
                 n_steps: int = 4, step_size: float = 0.1, causal: bool = True, hopfield: str = "relu",
                 beta: float | None = None, hopfield_beta: float = 1.0):
        super().__init__()
        for name, value in (("dim", dim), ("n_heads", n_heads), ("head_dim", head_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        hopfield_hidden = 4 * dim if hopfield_hidden is None else hopfield_hidden
        if not isinstance(hopfield_hidden, int) or hopfield_hidden < 1:
            raise ValueError(f"hopfield_hidden must be a positive integer or None, got {hopfield_hidden!r}")
        if not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        if hopfield not in ("relu", "softmax"):
            raise ValueError(f"hopfield must be 'relu' or 'softmax', got {hopfield!r}")
        beta = 1.0 / math.sqrt(head_dim) if beta is None else beta
        if not beta > 0 or not hopfield_beta > 0:
            raise ValueError(f"beta and hopfield_beta must be positive, got {beta!r} and {hopfield_beta!r}")
        self.dim, self.n_heads, self.head_dim = dim, n_heads, head_dim
        self.n_steps, self.step_size = n_steps, step_size
        self.causal, self.hopfield = causal, hopfield
        self.beta, self.hopfield_beta = float(beta), float(hopfield_beta)
        self.norm = EnergyLayerNorm(dim)
        # std 1/sqrt(D): with g of unit-scale components, q, k and xi . g start with unit-scale entries.
        self.w_q = nn.Parameter(torch.randn(n_heads, head_dim, dim) / math.sqrt(dim))
        self.w_k = nn.Parameter(torch.randn(n_heads, head_dim, dim) / math.sqrt(dim))
        self.xi = nn.Parameter(torch.randn(hopfield_hidden, dim) / math.sqrt(dim))

    @classmethod
    def from_config(cls, cfg) -> "EnergyTransformer":
        """``model.bottleneck: energy``, sized by ``cfg.model.dim`` and ``cfg.model.energy``."""
        e = cfg.model.energy
        return cls(cfg.model.dim, n_heads=e.n_heads, head_dim=e.head_dim, hopfield_hidden=e.hopfield_hidden,
                   n_steps=e.n_steps, step_size=e.step_size, causal=e.causal, hopfield=e.hopfield)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, n_heads={self.n_heads}, head_dim={self.head_dim}, n_steps={self.n_steps}, "
                f"step_size={self.step_size}, causal={self.causal}, hopfield={self.hopfield!r}")

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.dim:
            raise ValueError(f"EnergyTransformer: expected input [B, {self.dim}, T], got shape {tuple(x.shape)}")

    def _attention_energy(self, g_query: torch.Tensor, g_key: torch.Tensor, g_self: torch.Tensor) -> torch.Tensor:
        """``E_att`` per batch item ``[B]`` from tokens ``[B, T, D]`` in three roles.

        ``g_query`` makes the queries, ``g_key`` the keys of other tokens, ``g_self`` each token's key to itself
        (the diagonal). All three hold the same values; they are separate graph nodes so that the causal update can
        differentiate some roles and not others.
        """
        q = torch.einsum("btd,hyd->bhty", g_query, self.w_q)
        k = torch.einsum("btd,hyd->bhty", g_key, self.w_k)
        scores = self.beta * q @ k.transpose(-1, -2)  # [B, H, T(query), T(key)]
        n_tokens = scores.shape[-1]
        if g_self is not g_key:
            k_self = torch.einsum("btd,hyd->bhty", g_self, self.w_k)
            diagonal = self.beta * (q * k_self).sum(-1)  # [B, H, T]
            eye = torch.eye(n_tokens, dtype=torch.bool, device=scores.device)
            scores = torch.where(eye, diagonal[..., None], scores)
        if self.causal:
            future = torch.ones(n_tokens, n_tokens, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))  # the diagonal stays: every row has a key
        return -torch.logsumexp(scores, dim=-1).sum(dim=(1, 2)) / self.beta

    def _hopfield_energy(self, g: torch.Tensor) -> torch.Tensor:
        """``E_hop`` per batch item ``[B]`` from tokens ``[B, T, D]``."""
        h = g @ self.xi.t()  # [B, T, M]
        if self.hopfield == "relu":
            return -0.5 * torch.relu(h).pow(2).sum(dim=(1, 2))
        return -torch.logsumexp(self.hopfield_beta * h, dim=-1).sum(dim=1) / self.hopfield_beta

    def energy_of_g(self, g: torch.Tensor) -> torch.Tensor:
        """Energy ``[B]`` of normalised tokens ``g [B, T, D]`` (token-major, the layer-norm already applied)."""
        return self._attention_energy(g, g, g) + self._hopfield_energy(g)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Energy ``[B]`` of tokens ``x [B, D, T]`` (applies the layer-norm first)."""
        self._check(x)
        return self.energy_of_g(self.norm(x.transpose(1, 2)))

    def _energy_gradient(self, g: torch.Tensor, create_graph: bool) -> torch.Tensor:
        """The descent direction ``[B, T, D]``: ``dE/dg`` (non-causal) or each token's own-term gradient (causal)."""
        if not self.causal:
            return torch.autograd.grad(self.energy_of_g(g).sum(), g, create_graph=create_graph)[0]
        # Queries, own keys and Hopfield terms are differentiated; keys seen by other (later) tokens are not.
        g_query, g_self = g.clone(), g.clone()
        energy = self._attention_energy(g_query, g, g_self) + self._hopfield_energy(g_query)
        grad_query, grad_self = torch.autograd.grad(energy.sum(), (g_query, g_self), create_graph=create_graph)
        return grad_query + grad_self

    def forward(self, x: torch.Tensor, return_energies: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[B, D, T] -> [B, D, T]`` after ``n_steps`` descent steps.

        With ``return_energies=True`` also returns the (detached) energy before each step and after the last,
        ``[n_steps + 1, B]``.
        """
        self._check(x)
        inference = torch.is_inference_mode_enabled()
        keep_graph = torch.is_grad_enabled() and not inference
        tokens = x.transpose(1, 2)  # [B, T, D]
        energies = []
        # The steps need autograd even in eval: under no_grad / inference_mode they run without a kept graph.
        with torch.inference_mode(False), torch.enable_grad():
            if inference:  # inference tensors cannot enter autograd; a clone made here is a normal tensor
                tokens = tokens.clone()
            if not keep_graph:
                tokens = tokens.detach()
            for _ in range(self.n_steps):
                g = self.norm(tokens)
                if not g.requires_grad:  # frozen parameters and an input without grad: still need dE/dg
                    g.requires_grad_(True)
                step = self._energy_gradient(g, create_graph=keep_graph)
                if return_energies:
                    energies.append(self.energy_of_g(g).detach())
                tokens = tokens - self.step_size * step
                if not keep_graph:
                    tokens = tokens.detach()
            if return_energies:
                energies.append(self.energy_of_g(self.norm(tokens)).detach())
        out = tokens.transpose(1, 2)
        if return_energies:
            return out, torch.stack(energies)
        return out
