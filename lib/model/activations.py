"""Activations by name (``model.activation``): ``ACTIVATIONS.get(name)(channels) -> nn.Module``."""
from __future__ import annotations

import torch
from torch import nn

from lib.model.registries import ACTIVATIONS

__all__ = ["ACTIVATIONS", "Snake", "make_activation"]


@ACTIVATIONS.register("elu")
def _elu(channels: int) -> nn.Module:
    return nn.ELU(alpha=1.0)


@ACTIVATIONS.register("leaky_relu")
def _leaky_relu(channels: int) -> nn.Module:
    return nn.LeakyReLU(0.1)


@ACTIVATIONS.register("gelu")
def _gelu(channels: int) -> nn.Module:
    return nn.GELU()


@ACTIVATIONS.register("snake")
class Snake(nn.Module):
    """Snake activation ``x + sin^2(alpha * x) / alpha`` with one learnable ``alpha`` per channel (``[B, C, T]``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The small epsilon keeps 1/alpha finite should an alpha be driven to zero.
        return x + torch.sin(self.alpha * x).pow(2) / (self.alpha + 1e-9)


def make_activation(name: str, channels: int) -> nn.Module:
    """The activation registered as ``name`` for ``channels`` channels (``ValueError`` naming the valid ones)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS.names()}, got {name!r}")
    return ACTIVATIONS.get(name)(channels)
