"""Adversarial losses: the discriminator's and the generator's (hinge, least squares), feature matching, repulsion.

Logits come as the per-sub-discriminator lists that `lib.model.discriminators` returns (one tensor is one
sub-discriminator); each loss is the mean over elements, then over sub-discriminators.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]
Features = Union[Sequence[torch.Tensor], Sequence[Sequence[torch.Tensor]]]


def _as_list(logits: Logits, name: str) -> list[torch.Tensor]:
    """Accept one logit tensor or a list of them (one per sub-discriminator)."""
    out = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    if len(out) == 0:
        raise ValueError(f"{name} must hold at least one logit tensor")
    return out


def _paired(real: Logits, fake: Logits) -> list[tuple[torch.Tensor, torch.Tensor]]:
    real, fake = _as_list(real, "real_logits"), _as_list(fake, "fake_logits")
    if len(real) != len(fake):
        raise ValueError(f"real_logits and fake_logits must have the same number of sub-discriminators, "
                         f"got {len(real)} and {len(fake)}")
    return list(zip(real, fake))


def hinge_d_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Discriminator hinge loss: mean over sub-discs of `mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`."""
    pairs = _paired(real_logits, fake_logits)
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in pairs) / len(pairs)


def hinge_g_loss(fake_logits: Logits) -> torch.Tensor:
    """Generator hinge loss (SoundStream form): mean over sub-discs of `mean(relu(1 - D(fake)))`."""
    fake = _as_list(fake_logits, "fake_logits")
    return sum(F.relu(1 - f).mean() for f in fake) / len(fake)


def lsgan_d_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Least-squares discriminator loss: mean over sub-discs of `mean((D(real) - 1)^2) + mean(D(fake)^2)`."""
    pairs = _paired(real_logits, fake_logits)
    return sum((r - 1).pow(2).mean() + f.pow(2).mean() for r, f in pairs) / len(pairs)


def lsgan_g_loss(fake_logits: Logits) -> torch.Tensor:
    """Least-squares generator loss: mean over sub-discs of `mean((D(fake) - 1)^2)`."""
    fake = _as_list(fake_logits, "fake_logits")
    return sum((f - 1).pow(2).mean() for f in fake) / len(fake)


def _flatten_features(feats: Features, name: str) -> list[torch.Tensor]:
    flat = []
    for item in feats:
        if isinstance(item, torch.Tensor):
            flat.append(item)
        else:
            flat.extend(item)
    if len(flat) == 0:
        raise ValueError(f"{name} holds no feature maps")
    return flat


def feature_matching_loss(real_feats: Features, fake_feats: Features, eps: float = 1e-8) -> torch.Tensor:
    """Relative feature-matching loss (EnCodec style).

    `real_feats`, `fake_feats`: per sub-discriminator a list of layer activations (`list[list[Tensor]]`, as the
    discriminators return) or a flat list of layers. Each layer contributes
    `mean|real.detach() - fake| / (mean|real.detach()| + eps)`; the loss is the mean over all layers of all
    sub-discriminators. Real features are detached: this loss trains the generator only.
    """
    real, fake = _flatten_features(real_feats, "real_feats"), _flatten_features(fake_feats, "fake_feats")
    if len(real) != len(fake):
        raise ValueError(f"real_feats and fake_feats must hold the same number of layers, "
                         f"got {len(real)} and {len(fake)}")
    total = 0.0
    for i, (r, f) in enumerate(zip(real, fake)):
        if r.shape != f.shape:
            raise ValueError(f"feature layer {i}: shapes differ, real {tuple(r.shape)} vs fake {tuple(f.shape)}")
        r = r.detach()
        total = total + (r - f).abs().mean() / (r.abs().mean() + eps)
    return total / len(real)


def repulsion_loss(real_logits: Logits, fake_logits: Logits, scale: float = 1e-3, eps: float = 1e-8) -> torch.Tensor:
    """An anti-collapse term for the discriminator: `scale / (mean|D(real) - D(fake)| + eps)`.

    Grows as the discriminator stops telling real from fake (its scores on a clip and on the clip's
    reconstruction coincide), pushing them apart. Computed per sub-discriminator (real and fake logits of the
    same shape: the real batch and its reconstruction), then averaged over sub-discriminators.
    Add it to the discriminator loss only.
    """
    pairs = _paired(real_logits, fake_logits)
    total = 0.0
    for i, (r, f) in enumerate(pairs):
        if r.shape != f.shape:
            raise ValueError(f"repulsion_loss: sub-discriminator {i} logits differ in shape, "
                             f"{tuple(r.shape)} vs {tuple(f.shape)}")
        total = total + scale / ((r - f).abs().mean() + eps)
    return total / len(pairs)
