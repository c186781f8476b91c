"""Checks of the audio that a metric is given, shared by `lib.analysis.metrics` and the metrics beside it.

Metrics take `[T]`, `[B, T]` or `[B, 1, T]` (mono) float audio, tensors or arrays; these turn it into float64
`[B, T]` on the CPU and reject what no metric can score (integer samples, several channels, an empty clip, NaN).
"""
from __future__ import annotations

import numpy as np
import torch
import torchaudio

__all__ = ["as_batch", "ndim", "pair", "check_rate", "resample"]


def as_batch(x, name: str) -> torch.Tensor:
    """Any of `[T]`, `[B, T]`, `[B, 1, T]` (tensor or array) -> float64 `[B, T]`."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be floating-point audio, got dtype {x.dtype}")
    if x.dim() == 1:
        x = x.unsqueeze(0)
    elif x.dim() == 3:
        if x.shape[1] != 1:
            raise ValueError(f"{name} must be mono [B, 1, T], got {x.shape[1]} channels (shape {tuple(x.shape)})")
        x = x[:, 0]
    elif x.dim() != 2:
        raise ValueError(f"{name} must have shape [T], [B, T] or [B, 1, T], got {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    return x.detach().to(torch.float64).cpu()


def ndim(x) -> int:
    """Number of dimensions of a tensor or array-like."""
    return x.dim() if isinstance(x, torch.Tensor) else np.ndim(x)


def pair(estimate, reference) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Check shapes agree; return both as `[B, T]` and whether the input was a single `[T]` clip."""
    single = ndim(estimate) == 1 and ndim(reference) == 1
    est, ref = as_batch(estimate, "estimate"), as_batch(reference, "reference")
    if est.shape[-1] != ref.shape[-1]:
        raise ValueError(
            f"length mismatch: estimate has {est.shape[-1]} samples, reference has {ref.shape[-1]}; "
            "trim or pad the estimate to the reference length first"
        )
    if est.shape[0] != ref.shape[0]:
        raise ValueError(f"batch mismatch: estimate has {est.shape[0]} items, reference has {ref.shape[0]}")
    if not torch.isfinite(est).all():
        raise ValueError("estimate contains NaN or inf samples")
    if not torch.isfinite(ref).all():
        raise ValueError("reference contains NaN or inf samples")
    return est, ref, single


def check_rate(sample_rate) -> int:
    """`sample_rate` as an int; ValueError unless it is a positive integer (Hz)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return int(sample_rate)


def resample(x: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """`[..., T]` from `orig_sr` to `new_sr` Hz (torchaudio's windowed sinc); the same tensor when they are equal."""
    if orig_sr == new_sr:
        return x
    return torchaudio.functional.resample(x, orig_sr, new_sr)
