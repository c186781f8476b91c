"""An ipywidgets panel to listen to single codes of a codec's codebook maps, alone and in context."""
from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from lib.analysis.maps.figures import decode_alone, plot_path
from lib.analysis.maps.statistics import _check_clips, utterance_codes
from lib.analysis.plots import figure_png
from lib.data.audio import wav_bytes
from lib.model.som import grid_label, layout_grid

def _peak_normalise(wav: Tensor, peak: float = 0.5) -> Tensor:
    top = float(wav.abs().max())
    return wav * (peak / top) if top > 0 else wav


class MapExplorer(widgets.VBox):
    """Listen to the codes of a codebook map (see `map_explorer`)."""

    def __init__(self, codec, wav: Tensor, sample_rate: int, alone_seconds: float = 0.5):
        if int(sample_rate) != int(codec.sample_rate):
            raise ValueError(f"sample_rate {sample_rate} differs from the codec's {codec.sample_rate}; resample wav")
        _check_clips([wav])
        self.codec, self.wav, self.sample_rate = codec, wav, int(sample_rate)
        self.codes = utterance_codes(codec, wav)  # [n_q, F]
        self.alone_frames = max(2, round(alone_seconds * codec.frame_rate))
        n_q = codec.quantizer.n_q
        self.level_picker = widgets.Dropdown(options=[(f"level {i}", i) for i in range(n_q)], value=0,
                                             description="level")
        self.row_slider = widgets.IntSlider(0, 0, 1, description="grid row", continuous_update=False)
        self.col_slider = widgets.IntSlider(0, 0, 1, description="grid col", continuous_update=False)
        self.info = widgets.HTML()
        self.alone_player = widgets.Audio(format="wav", autoplay=False, controls=True)
        self.context_player = widgets.Audio(format="wav", autoplay=False, controls=True)
        # fixed width: the picture at its natural size instead of stretched over the output area
        self.map_image = widgets.Image(format="png", layout=widgets.Layout(width="340px"))
        with torch.no_grad():
            reconstruction = codec.decode(self.codes[None], length=wav.shape[-1])
        players = widgets.VBox([
            widgets.HTML("<b>original</b>"), widgets.Audio(value=wav_bytes(wav, self.sample_rate), format="wav",
                                                           autoplay=False),
            widgets.HTML("<b>codec (all levels)</b>"),
            widgets.Audio(value=wav_bytes(reconstruction, self.sample_rate), format="wav", autoplay=False),
            widgets.HTML("<b>this code alone</b> (peak-normalised)"), self.alone_player,
            widgets.HTML("<b>in context</b>: every frame of this level set to this code"), self.context_player,
        ])
        controls = widgets.VBox([self.level_picker, self.row_slider, self.col_slider, self.info, self.map_image])
        super().__init__([widgets.HBox([controls, players])])
        self.add_class("map-explorer")  # a stable CSS hook for browser checks and styling
        self.level_picker.observe(self._on_level, names="value")
        self.row_slider.observe(self._on_code, names="value")
        self.col_slider.observe(self._on_code, names="value")
        self._on_level()

    @property
    def level(self) -> int:
        return int(self.level_picker.value)

    @property
    def code(self) -> int:
        cols = layout_grid(self.codec.quantizer.levels[self.level]).shape[1]
        return int(self.row_slider.value) * cols + int(self.col_slider.value)

    def _on_level(self, change=None) -> None:
        rows, cols = layout_grid(self.codec.quantizer.levels[self.level]).shape
        self.row_slider.max, self.col_slider.max = rows - 1, cols - 1
        self._on_code()

    @torch.no_grad()
    def _on_code(self, change=None) -> None:
        level, code = self.level, self.code
        alone = decode_alone(self.codec, level, torch.tensor([code]), self.alone_frames)
        context_codes = self.codes.clone()
        context_codes[level] = code
        context = self.codec.decode(context_codes[None], length=self.wav.shape[-1])
        self.alone_player.value = wav_bytes(_peak_normalise(alone), self.sample_rate)
        self.context_player.value = wav_bytes(context, self.sample_rate)
        used = int((self.codes[level] == code).sum())
        alone_db = 20 * np.log10(max(float(alone.abs().max()), 1e-8))
        self.info.value = (f"code <b>{code}</b> (row {self.row_slider.value}, col {self.col_slider.value})<br>"
                           f"used in {used}/{self.codes.shape[1]} frames of the clip<br>"
                           f"alone: peak {alone_db:.1f} dBFS before normalising")
        self.map_image.value = self._map_png(level, code)

    def _map_png(self, level: int, code: int) -> bytes:
        q_level = self.codec.quantizer.levels[level]
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
        plot_path(ax, self.codes[level], q_level, self.codec.frame_rate, colorbar=False,
                  title=f"level {level} ({grid_label(q_level)}): clip path, chosen code boxed")
        r, c = divmod(code, layout_grid(q_level).shape[1])
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
        return figure_png(fig, dpi=80, bbox_inches="tight")


def map_explorer(codec, wav: Tensor, sample_rate: int, alone_seconds: float = 0.5) -> MapExplorer:
    """Interactive panel (ipywidgets) to hear a codebook map.

    Pick a level and a grid position (walk along a row with the column slider); hear the code decoded
    alone (held for `alone_seconds`, peak-normalised) and in context (the clip `wav [1, 1, T]` with
    every frame of that level replaced by the code, true level), beside the original and the codec output.
    Builds without a frontend, so it runs headless (papermill) too.
    """
    return MapExplorer(codec, wav, sample_rate, alone_seconds)


@torch.no_grad()
def explorer_html(codec, wav: Tensor, sample_rate: int, level: int = 0, n_codes: int = 4,
                  alone_seconds: float = 0.5) -> str:
    """The static stand-in for `map_explorer` in a saved notebook: the original and the codec output, then the
    `n_codes` codes of `level` the clip uses most, each with its grid cell and players (alone, in context)."""
    from lib.analysis.html import audio_html, table_html

    _check_clips([wav])
    codes = utterance_codes(codec, wav)
    grid = layout_grid(codec.quantizer.levels[level])
    reconstruction = codec.decode(codes[None], length=wav.shape[-1])
    counts = torch.bincount(codes[level].long(), minlength=codec.quantizer.levels[level].codebook_size)
    rows = []
    for code in torch.argsort(counts, descending=True)[:n_codes].tolist():
        alone = decode_alone(codec, level, torch.tensor([code]), max(2, round(alone_seconds * codec.frame_rate)))
        context_codes = codes.clone()
        context_codes[level] = code
        context = codec.decode(context_codes[None], length=wav.shape[-1])
        r, c = divmod(code, grid.shape[1])
        rows.append({"code": code, "grid cell (row, col)": f"({r}, {c})",
                     "frames of the clip": f"{int(counts[code])} / {codes.shape[1]}",
                     "alone (peak-normalised)": "@@ALONE%d@@" % code, "in context": "@@CONTEXT%d@@" % code,
                     "_alone": audio_html(_peak_normalise(alone), sample_rate),
                     "_context": audio_html(context, sample_rate)})
    table = table_html(rows, columns=[k for k in rows[0] if not k.startswith("_")],
                       caption=f"level {level} ({grid_label(codec.quantizer.levels[level])}): the codes this clip uses most")
    for row in rows:  # players are HTML, which table_html would escape
        table = table.replace("@@ALONE%d@@" % row["code"], row["_alone"]).replace("@@CONTEXT%d@@" % row["code"], row["_context"])
    head = (f"<p><b>original</b> {audio_html(wav, sample_rate)} &emsp; <b>codec (all levels)</b> "
            f"{audio_html(reconstruction, sample_rate)}</p>")
    return head + table + "<p><i>Run this notebook in JupyterLab for the interactive explorer (any level, any cell).</i></p>"
