"""Plotting functions shared by the notebooks. Each draws on an Axes it is given; figures are saved with
`save_figure` under stable names in figures/."""
from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from lib.data.audio import mono_numpy


def spectrogram_db(wav: torch.Tensor | np.ndarray, n_fft: int = 1024, hop_length: int | None = None) -> np.ndarray:
    """Log-magnitude spectrogram `[freq, frames]` in dBFS (a full-scale sine peaks near 0 dB)."""
    x = torch.from_numpy(mono_numpy(wav, mix=True))
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop_length or n_fft // 4, window=window, center=True, pad_mode="constant",
                      return_complex=True)
    magnitude = spec.abs() * (2.0 / window.sum())  # so that a sine of amplitude 1 gives 0 dB
    return 20.0 * torch.log10(magnitude.clamp_min(1e-10)).numpy()


def spectrogram_peak(wavs, n_fft: int = 1024) -> float:
    """The loudest bin (dBFS) over several clips: pass it as `vmax` to draw them on one shared colour scale."""
    return max(float(spectrogram_db(w, n_fft).max()) for w in wavs)


def plot_spectrogram(ax: plt.Axes, wav: torch.Tensor | np.ndarray, sample_rate: int, title: str | None = None,
                     n_fft: int = 1024, hop_length: int | None = None, top_db: float = 80.0,
                     vmax: float | None = None, colorbar: bool = True):
    """Draw a log-magnitude spectrogram of `wav` (`[T]` or `[C, T]`, channels averaged) on `ax`.

    Time in s, frequency in kHz, colour in dB relative to full scale (a full-scale sine peaks near 0 dB),
    showing the `top_db` dB below `vmax` (default: this clip's loudest bin; give the same `vmax`, e.g. from
    `spectrogram_peak`, to compare several clips by eye). Adds a colorbar unless `colorbar=False`. Returns the image.
    """
    db = spectrogram_db(wav, n_fft, hop_length)
    vmax = float(db.max()) if vmax is None else float(vmax)
    duration = mono_numpy(wav, mix=True).size / sample_rate
    image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=vmax - top_db, vmax=vmax,
                      extent=(0.0, duration, 0.0, sample_rate / 2000.0), interpolation="nearest")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="level (dBFS)")
    return image


def plot_spectrograms(wavs: dict, sample_rate: int, title: str | None = None, width: float = 4.2):
    """Several clips side by side on one shared colour scale (one colorbar). `wavs`: `{title: wav}`. Returns the figure."""
    # constrained layout keeps the suptitle, the panel titles and the shared colorbar apart
    fig, axes = plt.subplots(1, len(wavs), figsize=(width * len(wavs) + 1.0, 3.3), squeeze=False, sharey=True,
                             layout="constrained")
    vmax = spectrogram_peak(wavs.values())
    for ax, (name, wav) in zip(axes[0], wavs.items()):
        image = plot_spectrogram(ax, wav, sample_rate, name, vmax=vmax, colorbar=False)
        if ax is not axes[0, 0]:
            ax.set_ylabel("")
    fig.colorbar(image, ax=list(axes[0]), label="level (dBFS)", fraction=0.03, pad=0.01)
    if title:
        fig.suptitle(title)
    return fig


def figure_png(fig: plt.Figure, dpi: int = 80, bbox_inches: str | None = None) -> bytes:
    """Render ``fig`` to PNG bytes (for image widgets) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches=bbox_inches)
    plt.close(fig)
    return buffer.getvalue()


def figure_footer(preset: str, step: int | None = None) -> str:
    """What a saved figure was made from: "preset cpu · step 4500 · commit 1a2b3c4" (a "+" after the commit when
    tracked files other than the figures themselves had changes; "commit unknown" outside a git checkout)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "--short=7", "HEAD").stdout.strip() or "unknown"
        if commit != "unknown" and git("diff", "--quiet", "HEAD", "--", ":/", ":(exclude,top)figures").returncode:
            commit += "+"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return " · ".join([f"preset {preset}", *([f"step {step}"] if step is not None else []), f"commit {commit}"])


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 120, footer: str | None = None) -> Path:
    """Save `fig` to `path` (PNG/PDF/SVG from the extension), creating the folder. Returns the path.

    `footer` (e.g. `figure_footer(preset, step)`) is written small under the figure's bottom right corner, so that
    a figure found on its own still says what made it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if footer:
        fig.text(0.995, 0.0, footer, ha="right", va="top", fontsize=7, color="0.4")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ----------------------------------------------------------------------------- training curves


def plot_training(records: list[dict], axes=None, train_keys=("mel", "l1", "commitment", "adversarial", "feature")):
    """Loss curves from trainer log records (``kind`` = ``train`` / ``val``): train losses (log scale) on the left,
    validation mel distance and SI-SDR on the right. Returns the figure."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    ax_train, ax_val = axes
    fig = ax_train.figure
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    for key in train_keys:
        pts = [(r["step"], r[key]) for r in train if key in r]
        if pts:
            ax_train.plot(*zip(*pts), label=key)
    ax_train.set(title="Generator losses", xlabel="step", ylabel="loss (log scale)", yscale="log")
    if ax_train.lines:  # legends below the axes, off the curves
        ax_train.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=5, frameon=False)
    if val:
        steps = [r["step"] for r in val]
        ax_val.plot(steps, [r["mel_distance"] for r in val], "o-", color="C0", label="mel distance")
        ax_val.set(title="Validation", xlabel="step", ylabel="mel distance (log-mel L1, lower is better)")
        twin = ax_val.twinx()
        twin.plot(steps, [r["si_sdr"] for r in val], "s--", color="C3", label="SI-SDR")
        twin.set_ylabel("SI-SDR (dB, higher is better)", color="C3")
        handles = ax_val.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax_val.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper center",
                      bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    else:
        ax_val.set(title="Validation (no records yet)")
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """A trainer callback that redraws :func:`plot_training` in place in a notebook every ``every`` records;
    ``finish`` draws the final, titled figure into the same output, so the notebook shows one figure.
    Headless (``lib.headless``) nothing is drawn until ``finish``."""

    def __init__(self, every: int = 5):
        from IPython.display import display

        from lib.headless import headless

        self.records: list[dict] = []
        self.every = every
        self.live = not headless()
        self.fig, self.axes = plt.subplots(1, 2, figsize=(11, 3.6))
        plt.close(self.fig)  # shown through the display handle only
        self.handle = display(self.fig, display_id=True) if self.live else None

    def __call__(self, record: dict) -> None:
        self.records.append(record)
        if self.live and (len(self.records) % self.every == 0 or record["kind"] == "val"):
            self.redraw()

    def redraw(self, records: list[dict] | None = None) -> None:
        for ax in self.fig.axes[2:]:  # twin axes from the previous draw
            ax.remove()
        for ax in self.axes:
            ax.clear()
        plot_training(self.records if records is None else records, self.axes)
        if self.handle is not None:
            self.handle.update(self.fig)

    def finish(self, records: list[dict] | None = None, title: str | None = None) -> plt.Figure:
        """Draw `records` (default: those seen) with `title` in place of the live plot; returns the figure."""
        from IPython.display import display

        if title:
            self.fig.suptitle(title, y=1.03)
        self.redraw(records)
        if self.handle is None:
            display(self.fig)
        return self.fig


def plot_codebook_usage(val_record: dict, codebook_size: int, ax=None):
    """Per-level codebook usage (%) and perplexity as a fraction of the codebook size, from a validation record."""
    levels = sorted(int(k.split("_")[1]) for k in val_record if k.startswith("usage_"))
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(levels))
    ax.bar(x - 0.2, [100 * val_record[f"usage_{i}"] for i in levels], 0.4, label="codes used (%)")
    ax.bar(x + 0.2, [100 * val_record[f"perplexity_{i}"] / codebook_size for i in levels], 0.4,
           label="perplexity (% of codebook size)")
    ax.set(title=f"Codebook health on held-out clips ({codebook_size} codes per level)", xlabel="RVQ level",
           ylabel="%", xticks=x, ylim=(0, 105))
    ax.legend(fontsize=8)
    return ax.figure
