"""Listening tools for notebooks: side-by-side players with spectrograms.

- `comparison_panel(clips, sample_rate)`: for each clip, the original and every system with an
  inline player and a spectrogram. The blind MUSHRA test is in `lib.analysis.mushra`.

Players are `ipywidgets.Audio` holding 16-bit WAV bytes at the true level (`lib.data.audio.wav_bytes`): unlike
`IPython.display.Audio` (normalize=True by default) nothing is rescaled per stimulus, so
loudness differences between systems stay audible as they are.
"""
from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from lib.analysis.metrics import si_sdr
from lib.analysis.plots import figure_png, plot_spectrogram
from lib.data.audio import mono_numpy, wav_bytes

__all__ = ["wav_bytes", "audio_player", "comparison_panel"]


def audio_player(wav, sample_rate: int) -> widgets.Audio:
    """Inline player widget for a mono clip, at its true level."""
    return widgets.Audio(value=wav_bytes(wav, sample_rate), format="wav", autoplay=False, loop=False, controls=True)


def _spectrogram_image(wav, sample_rate: int, title: str, size=(4.0, 2.2)) -> widgets.Image:
    """Render a spectrogram to a PNG image widget (works inside widget containers, and headless)."""
    fig, ax = plt.subplots(figsize=size)
    plot_spectrogram(ax, torch.as_tensor(mono_numpy(wav)), sample_rate, title)
    fig.tight_layout()
    return widgets.Image(value=figure_png(fig, dpi=80), format="png")


def comparison_panel(
    clips: dict[str, dict[str, torch.Tensor]],
    sample_rate: int,
    reference_key: str = "original",
    spectrograms: bool = True,
    show: bool = True,
) -> widgets.VBox:
    """Side-by-side listening panel.

    Args:
        clips: `{clip_name: {system_name: wav}}`, each wav mono `[T]`, `[1, T]` or `[1, 1, T]`;
            the entry `reference_key` (if present) is shown first and used for the SI-SDR label.
        sample_rate: Hz of every clip.
        spectrograms: draw a spectrogram under each player.
        show: display the panel (in a notebook); it is also returned.
    Returns:
        `ipywidgets.VBox` with one row of `[label, player, spectrogram]` boxes per clip.
    """
    if not clips:
        raise ValueError("clips is empty: expected {clip_name: {system_name: wav}}")
    rows = []
    for clip_name, systems in clips.items():
        if not systems:
            raise ValueError(f"clips[{clip_name!r}] has no systems")
        names = ([reference_key] if reference_key in systems else []) + [n for n in systems if n != reference_key]
        reference = systems.get(reference_key)
        boxes = []
        for name in names:
            wav = mono_numpy(systems[name], f"clips[{clip_name!r}][{name!r}]")
            label = name
            if reference is not None and name != reference_key:
                ref = mono_numpy(reference)
                if ref.size == wav.size:
                    label += f"  (SI-SDR {si_sdr(torch.from_numpy(wav), torch.from_numpy(ref)):.1f} dB)"
            parts = [widgets.HTML(f"<b>{label}</b>"), audio_player(wav, sample_rate)]
            if spectrograms:
                parts.append(_spectrogram_image(wav, sample_rate, name))
            boxes.append(widgets.VBox(parts))
        rows.append(widgets.VBox([widgets.HTML(f"<h4>{clip_name}</h4>"), widgets.HBox(boxes, layout=widgets.Layout(flex_flow="row wrap"))]))
    panel = widgets.VBox(rows)
    if show:
        display(panel)
    return panel


