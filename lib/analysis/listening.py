"""Listening tools for notebooks: side-by-side players with spectrograms.

- `comparison_panel(clips, sample_rate)`: for each clip, the original and every system with an
  inline player and a spectrogram, all spectrograms of a clip on one shared colour scale. Live it is an
  ipywidgets box; in a headless run (`lib.headless`) a static HTML table of `<audio>` players and images,
  which a saved notebook shows without a kernel. The blind MUSHRA test is in `lib.analysis.mushra`.

Players are `ipywidgets.Audio` holding 16-bit WAV bytes at the true level (`lib.data.audio.wav_bytes`): unlike
`IPython.display.Audio` (normalize=True by default) nothing is rescaled per stimulus, so
loudness differences between systems stay audible as they are.
"""
from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from lib.analysis.html import audio_html, image_html, show as show_either
from lib.analysis.metrics import si_sdr
from lib.analysis.plots import figure_png, plot_spectrogram, spectrogram_peak
from lib.data.audio import mono_numpy, wav_bytes

__all__ = ["wav_bytes", "audio_player", "comparison_panel"]


def audio_player(wav, sample_rate: int, autoplay: bool = False) -> widgets.Audio:
    """Inline player widget for a mono clip, at its true level."""
    return widgets.Audio(value=wav_bytes(wav, sample_rate), format="wav", autoplay=autoplay, loop=False, controls=True)


def _spectrogram_png(wav, sample_rate: int, title: str, vmax: float | None = None, size=(4.0, 2.2)) -> bytes:
    fig, ax = plt.subplots(figsize=size)
    plot_spectrogram(ax, torch.as_tensor(mono_numpy(wav)), sample_rate, title, vmax=vmax)
    fig.tight_layout()
    return figure_png(fig, dpi=80)


def _spectrogram_image(wav, sample_rate: int, title: str, size=(4.0, 2.2), vmax: float | None = None) -> widgets.Image:
    """Render a spectrogram to a PNG image widget (works inside widget containers, and headless)."""
    return widgets.Image(value=_spectrogram_png(wav, sample_rate, title, vmax, size), format="png")


def _panel_entries(clips: dict, reference_key: str, spectrograms: bool, sample_rate: int) -> list[tuple[str, list]]:
    """Per clip: `(clip_name, [(system, label, wav, png or None), ...])`, the reference first."""
    if not clips:
        raise ValueError("clips is empty: expected {clip_name: {system_name: wav}}")
    entries = []
    for clip_name, systems in clips.items():
        if not systems:
            raise ValueError(f"clips[{clip_name!r}] has no systems")
        names = ([reference_key] if reference_key in systems else []) + [n for n in systems if n != reference_key]
        wavs = {name: mono_numpy(systems[name], f"clips[{clip_name!r}][{name!r}]") for name in names}
        reference = wavs.get(reference_key)
        vmax = spectrogram_peak(wavs.values()) if spectrograms else None  # one colour scale per clip
        row = []
        for name, wav in wavs.items():
            label = name
            if reference is not None and name != reference_key and reference.size == wav.size:
                label += f"  (SI-SDR {si_sdr(torch.from_numpy(wav), torch.from_numpy(reference)):.1f} dB)"
            png = _spectrogram_png(wav, sample_rate, name, vmax) if spectrograms else None
            row.append((name, label, wav, png))
        entries.append((clip_name, row))
    return entries


def panel_html(entries: list[tuple[str, list]], sample_rate: int, columns: int = 3) -> str:
    """The comparison panel as static HTML: per clip a table of cells (label, `<audio>` player, spectrogram)."""
    import html

    parts = []
    for clip_name, row in entries:
        cells = [f'<td style="text-align:left;vertical-align:top"><b>{html.escape(label)}</b><br>'
                 f'{audio_html(wav, sample_rate)}' + (f"<br>{image_html(png, 320, name)}" if png else "") + "</td>"
                 for name, label, wav, png in row]
        lines = ["<tr>" + "".join(cells[i:i + columns]) + "</tr>" for i in range(0, len(cells), columns)]
        parts.append(f"<h4>{html.escape(clip_name)}</h4><table>{''.join(lines)}</table>")
    return "\n".join(parts)


def comparison_panel(
    clips: dict[str, dict[str, torch.Tensor]],
    sample_rate: int,
    reference_key: str = "original",
    spectrograms: bool = True,
    show: bool = True,
):
    """Side-by-side listening panel.

    Args:
        clips: `{clip_name: {system_name: wav}}`, each wav mono `[T]`, `[1, T]` or `[1, 1, T]`;
            the entry `reference_key` (if present) is shown first and used for the SI-SDR label.
        sample_rate: Hz of every clip.
        spectrograms: draw a spectrogram under each player (one colour scale per clip).
        show: display the panel (in a notebook); it is also returned.
    Returns:
        live: an `ipywidgets.VBox` with one row of `[label, player, spectrogram]` boxes per clip;
        headless (`lib.headless`): the static HTML string of the same panel.
    """
    entries = _panel_entries(clips, reference_key, spectrograms, sample_rate)

    def live() -> widgets.VBox:
        rows = []
        for clip_name, row in entries:
            boxes = []
            for name, label, wav, png in row:
                parts = [widgets.HTML(f"<b>{label}</b>"), audio_player(wav, sample_rate)]
                if png is not None:
                    parts.append(widgets.Image(value=png, format="png"))
                boxes.append(widgets.VBox(parts))
            rows.append(widgets.VBox([widgets.HTML(f"<h4>{clip_name}</h4>"),
                                      widgets.HBox(boxes, layout=widgets.Layout(flex_flow="row wrap"))]))
        return widgets.VBox(rows)

    from lib.headless import headless

    if not show:
        return panel_html(entries, sample_rate) if headless() else live()
    return show_either(live, lambda: panel_html(entries, sample_rate))
