"""Plotting functions shared by the notebooks. Each draws on an Axes it is given; figures are saved with
`save_figure` under stable names in figures/."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch


def _mono_numpy(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    """`[T]`, `[C, T]` or `[1, C, T]` -> float32 `[T]` (channels averaged)."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().to("cpu", torch.float32).numpy()
    wav = np.asarray(wav, dtype=np.float32)
    while wav.ndim > 2 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.ndim == 2:
        wav = wav.mean(axis=0)
    if wav.ndim != 1:
        raise ValueError(f"wav must be [T], [C, T] or [1, C, T], got shape {wav.shape}")
    return wav


def plot_spectrogram(ax: plt.Axes, wav: torch.Tensor | np.ndarray, sample_rate: int, title: str | None = None,
                     n_fft: int = 1024, hop_length: int | None = None, top_db: float = 80.0):
    """Draw a log-magnitude spectrogram of `wav` (`[T]` or `[C, T]`, channels averaged) on `ax`.

    Time in s, frequency in kHz, colour in dB relative to full scale (a full-scale sine peaks near 0 dB),
    showing the `top_db` dB below the loudest bin. Adds a colorbar. Returns the image.
    """
    x = torch.from_numpy(_mono_numpy(wav))
    hop_length = hop_length or n_fft // 4
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop_length, window=window, center=True, pad_mode="constant", return_complex=True)
    magnitude = spec.abs() * (2.0 / window.sum())  # so that a sine of amplitude 1 gives 0 dB
    db = 20.0 * torch.log10(magnitude.clamp_min(1e-10)).numpy()
    vmax = float(db.max())
    duration = x.numel() / sample_rate
    image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=vmax - top_db, vmax=vmax,
                      extent=(0.0, duration, 0.0, sample_rate / 2000.0), interpolation="nearest")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    if title:
        ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, label="level (dBFS)")
    return image


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save `fig` to `path` (PNG/PDF/SVG from the extension), creating the folder. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
