"""Codebook maps: the residual VQ's codebooks drawn on their SOM grids, heard and measured.

Each RVQ level's K codes sit on a grid: the level's `lib.model.som.SOMGrid` when it was trained as a
self-organising map, otherwise the near-square layout of the code indices (row = k // cols), which
for a plain EMA codebook is an arbitrary order and is labelled so in every title.

Views (one panel per level):
- usage heatmap: how often each code is chosen (codes of given audio, or the EMA cluster sizes);
- U-matrix: mean distance of each code to its 4 grid neighbours (low = smooth map, ridges = borders);
- mosaic: each code decoded alone to a short sound, drawn as a spectrogram thumbnail in its cell;
- path: the codes an utterance uses frame by frame, as a line over the grid coloured by time,
  also as an animation (GIF / inline HTML) to watch while listening;
- PCA scatter of the codes coloured by grid position (a 2-D colour map), SOM beside plain EMA;
- topographic metrics per level (topographic error, neighbour-distance ratio) against a shuffled copy.
`map_explorer` is an ipywidgets panel to listen to single codes, alone and in context.

Shapes: audio `[B, 1, T]`, latents `[B, D, F]`, codes `[B, n_q, F]`, a codebook `[K, d]`
(d = code-space dimension), grid images `[rows, cols]`.
"""
from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path
from typing import NamedTuple

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import Tensor

from lib.analysis.listening import wav_bytes
from lib.analysis.patches import som_grid
from lib.model.quantize import ResidualVQ, VectorQuantizer
from lib.model.som import SOMGrid, neighbour_distance_ratio, topographic_error, u_matrix

# Colours of the four grid corners for the 2-D position colour map: top-left, top-right,
# bottom-left, bottom-right (blue, yellow, magenta, green: distinct hues, all mid to high lightness).
CORNER_COLOURS = np.array([[0.12, 0.35, 0.95], [0.98, 0.82, 0.10], [0.90, 0.15, 0.55], [0.10, 0.75, 0.35]])


# ----------------------------------------------------------------------------- grids


def level_grid(level: VectorQuantizer) -> SOMGrid:
    """The level's SOM grid, or for a plain codebook the near-square layout of its code indices."""
    return level.som if level.som is not None else SOMGrid(level.codebook_size)


def grid_label(level: VectorQuantizer) -> str:
    """`"SOM 32x32"` or `"plain EMA, index order 32x32"` for titles."""
    rows, cols = level_grid(level).shape
    return f"SOM {rows}x{cols}" if level.som is not None else f"plain EMA, index order {rows}x{cols}"


def to_grid(values: Tensor | np.ndarray, grid: SOMGrid) -> np.ndarray:
    """Per-code values `[K]` -> `[rows, cols]` image, code k at (k // cols, k % cols)."""
    values = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    if values.shape != (grid.codebook_size,):
        raise ValueError(f"values must be [K={grid.codebook_size}], got shape {values.shape}")
    return values.reshape(grid.shape)


def level_u_matrix(level: VectorQuantizer) -> np.ndarray:
    """U-matrix `[rows, cols]` of a level's codebook on its grid (mean distance to 4-neighbours, code space)."""
    return u_matrix(level.embed, level_grid(level)).cpu().numpy()


def grid_colours(grid: SOMGrid) -> np.ndarray:
    """A colour per code `[K, 3]` from its grid position: bilinear blend of the four corner colours."""
    rows, cols = grid.shape
    u = grid.coords[:, 0].numpy() / max(rows - 1, 1)  # 0 at the top row, 1 at the bottom
    v = grid.coords[:, 1].numpy() / max(cols - 1, 1)  # 0 at the left column, 1 at the right
    tl, tr, bl, br = CORNER_COLOURS
    return ((1 - u) * (1 - v))[:, None] * tl + ((1 - u) * v)[:, None] * tr + (u * (1 - v))[:, None] * bl \
        + (u * v)[:, None] * br


def shuffled(codebook: Tensor, seed: int = 0) -> Tensor:
    """The same codes `[K, d]` in a random order on the grid: the reference for 'no topography'."""
    order = torch.randperm(codebook.shape[0], generator=torch.Generator().manual_seed(seed))
    return codebook[order.to(codebook.device)]


# ----------------------------------------------------------------------------- audio, latents, codes, counts

SPLIT_ORDER = {"valid": 0, "test": 1, "train": 2}  # held-out material first


def pick_clip(data_dir: str | os.PathLike, sample_rate: int, seconds: float = 3.0, prefer: str = "speech",
              path: str | os.PathLike | None = None) -> tuple[Tensor, str]:
    """One clip to follow through the maps -> (`[1, 1, T]` with T <= seconds * sample_rate, its name).

    `path` (absolute, or relative to `data_dir`) if given; otherwise, from the manifest of `data_dir`, the
    clips whose path contains `prefer` (any clip when none does), held-out splits first, and among those
    the first at least `seconds` long (else the longest).
    """
    from lib.data.audio import load_audio
    from lib.data.datasets import build_manifest

    if path is None:
        entries = [e for e in build_manifest(data_dir, progress=False) if e.ok]
        if not entries:
            raise ValueError(f"data_dir {str(data_dir)!r} has no usable audio files")
        preferred = [e for e in entries if prefer in e.path] or entries
        preferred.sort(key=lambda e: (SPLIT_ORDER.get(e.split, 3), e.duration < seconds, -e.duration, e.path))
        path, name = Path(data_dir) / preferred[0].path, preferred[0].path
    else:
        path = Path(path) if Path(path).is_absolute() else Path(data_dir) / path
        name = path.name
    wav = load_audio(path, sample_rate)[..., : int(seconds * sample_rate)]
    return wav.unsqueeze(0), name


def training_clips(data_dir: str | os.PathLike, sample_rate: int, n_clips: int = 16,
                   seconds: float = 10.0) -> list[Tensor]:
    """Up to `n_clips` clips `[1, 1, T]` of the train split (each cut to `seconds`), spread over the split."""
    from lib.data.datasets import AudioFolder

    folder = AudioFolder(data_dir, "train", sample_rate=sample_rate, cache=False)
    picks = np.unique(np.linspace(0, len(folder) - 1, min(n_clips, len(folder))).round().astype(int))
    return [folder.load(int(i))[..., : int(seconds * sample_rate)].unsqueeze(0) for i in picks]


def _check_clips(clips: list[Tensor]) -> None:
    if not clips:
        raise ValueError("clips is empty: give at least one [1, 1, T] clip")
    for i, wav in enumerate(clips):
        if not isinstance(wav, Tensor) or wav.dim() != 3 or wav.shape[0] != 1:
            shape = tuple(wav.shape) if isinstance(wav, Tensor) else type(wav).__name__
            raise ValueError(f"clips[{i}] must be a [1, C, T] tensor, got {shape}")


@torch.no_grad()
def encoder_latents(codec, clips: list[Tensor]) -> Tensor:
    """Pre-quantizer latents of every clip `[1, C, T_i]`, joined along time -> `[1, D, sum F_i]`."""
    _check_clips(clips)
    was_training = codec.training
    codec.eval()  # eval: no EMA updates, no quantizer dropout
    try:
        # the training forward is the codec's public way to the latents (it also decodes, which we discard)
        latents = [codec(wav).latents for wav in clips]
    finally:
        codec.train(was_training)
    return torch.cat(latents, dim=-1)


@torch.no_grad()
def level_inputs(quantizer: ResidualVQ, latents: Tensor, n_levels: int | None = None) -> list[Tensor]:
    """What each level searches its codebook with: the residual left by the levels before it, in that
    level's code space (after any in-projection / normalisation).

    Args: latents `[B, D, F]`. Returns: one `[B * F, d]` tensor per level (the first `n_levels`).
    """
    n_levels = quantizer.n_q if n_levels is None else n_levels
    previous = torch.zeros_like(latents)
    inputs = []
    for level in quantizer.levels[:n_levels]:
        residual = latents - previous
        z = level.to_code_space(residual).float()  # [B, d, F]
        inputs.append(z.transpose(1, 2).reshape(-1, z.shape[1]))
        q, _ = level.quantize(residual)
        previous = previous + q
    return inputs


def code_counts(codes: Tensor, level: int, codebook_size: int) -> Tensor:
    """How often each code of `level` occurs in `codes` `[B, n_q, F]` (entries -1 ignored) -> `[K]` float."""
    if codes.dim() != 3 or not 0 <= level < codes.shape[1]:
        raise ValueError(f"codes must be [B, n_q, F] with level {level} < n_q, got {tuple(codes.shape)}")
    used = codes[:, level].reshape(-1)
    return torch.bincount(used[used >= 0], minlength=codebook_size).float()


# ----------------------------------------------------------------------------- usage and U-matrix


def _grid_axes(ax: plt.Axes, grid: SOMGrid) -> None:
    rows, cols = grid.shape
    ax.set_xlabel(f"grid column (0-{cols - 1})")
    ax.set_ylabel(f"grid row (0-{rows - 1})")


def plot_usage(ax: plt.Axes, counts: Tensor, grid: SOMGrid, title: str, unit: str = "frames",
               summary: str | None = None) -> None:
    """Usage heatmap: `counts [K]` on the grid, log colour scale; unused codes (count 0) in light grey.
    `summary` replaces the second title line (default: how many codes were used)."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    image = to_grid(counts, grid)
    masked = np.ma.masked_less_equal(image, 0)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    top = float(image.max()) if image.max() > 0 else 1.0
    bottom = float(masked.min()) if masked.count() else top / 10
    norm = LogNorm(vmin=min(bottom, top / 10), vmax=top)
    shown = ax.imshow(masked, cmap=cmap, norm=norm, interpolation="nearest")
    summary = summary or f"{int((image > 0).sum())}/{grid.codebook_size} codes used (grey: unused)"
    ax.set_title(f"{title}\n{summary}", fontsize=10)
    _grid_axes(ax, grid)
    bar = ax.figure.colorbar(shown, ax=ax, label=f"count ({unit}, log scale)", shrink=0.85)
    bar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, ... as plain numbers
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    bar.ax.yaxis.set_minor_formatter(NullFormatter())


def plot_usage_maps(quantizer: ResidualVQ, levels: list[int], codes: Tensor | None = None,
                    frame_rate: float | None = None, source: str = "held-out audio") -> plt.Figure:
    """One usage heatmap per level: from `codes [B, n_q, F]` of some audio (described by `source` in the
    title), or (None) the EMA cluster sizes."""
    _check_levels(quantizer, levels)
    fig, axes = plt.subplots(1, len(levels), figsize=(4.6 * len(levels), 4.3), squeeze=False)
    for ax, i in zip(axes[0], levels):
        level = quantizer.levels[i]
        summary = None
        if codes is None:
            counts, unit = level.cluster_size.detach().cpu(), "EMA count per batch"
            dead = int((counts < level.dead_code_threshold).sum())
            summary = f"{dead}/{level.codebook_size} codes below the dead-code threshold {level.dead_code_threshold:g}"
        else:
            counts, unit = code_counts(codes, i, level.codebook_size), "frames"
        plot_usage(ax, counts, level_grid(level), f"level {i} ({grid_label(level)})", unit, summary)
    if codes is None:
        source = "EMA cluster sizes at the end of training"
    else:
        seconds = f" = {codes.shape[0] * codes.shape[-1] / frame_rate:.1f} s" if frame_rate else ""
        source = f"codes of {codes.shape[0] * codes.shape[-1]} frames{seconds} of {source}"
    fig.suptitle(f"Code usage on the grid ({source})")
    fig.tight_layout()
    return fig


def plot_u_matrices(quantizer: ResidualVQ, levels: list[int]) -> plt.Figure:
    """One U-matrix per level (mean Euclidean distance of each code to its 4 grid neighbours, code space)."""
    _check_levels(quantizer, levels)
    fig, axes = plt.subplots(1, len(levels), figsize=(4.6 * len(levels), 4.3), squeeze=False)
    for ax, i in zip(axes[0], levels):
        level = quantizer.levels[i]
        grid = level_grid(level)
        shown = ax.imshow(level_u_matrix(level), cmap="bone_r", interpolation="nearest")
        ratio = neighbour_distance_ratio(level.embed, grid)
        ax.set_title(f"level {i} ({grid_label(level)})\nneighbour/all distance ratio {ratio:.2f}", fontsize=10)
        _grid_axes(ax, grid)
        fig.colorbar(shown, ax=ax, label="mean distance to grid neighbours", shrink=0.85)
    fig.suptitle("U-matrix: dark = far from its neighbours (a border); light = smooth map")
    fig.tight_layout()
    return fig


def _check_levels(quantizer: ResidualVQ, levels: list[int]) -> None:
    if not levels or any(not 0 <= int(i) < quantizer.n_q for i in levels):
        raise ValueError(f"levels must be a non-empty list of indices in [0, {quantizer.n_q - 1}], got {levels}")


# ----------------------------------------------------------------------------- codes heard alone


@torch.no_grad()
def decode_alone(codec, level: int, codes: Tensor, n_frames: int = 8, chunk: int = 64) -> Tensor:
    """Each code of `level` decoded on its own: repeated for `n_frames` frames, every other level off.

    Args: codes `[M]` code indices. Returns: audio `[M, 1, n_frames * hop]`.
    Levels below `level` are given code -1, which `ResidualVQ.decode` turns into a zero contribution;
    levels above are simply not passed.
    """
    n_q = codec.quantizer.n_q
    if not 0 <= level < n_q:
        raise ValueError(f"level must be in [0, {n_q - 1}], got {level}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    codes = torch.as_tensor(codes, dtype=torch.long).reshape(-1)
    out = []
    for start in range(0, codes.numel(), chunk):
        part = codes[start: start + chunk]
        grid = torch.full((part.numel(), level + 1, n_frames), -1, dtype=torch.long)
        grid[:, level] = part[:, None]
        out.append(codec.decode(grid))
    return torch.cat(out)


def band_edges(n_bins: int, n_bands: int) -> np.ndarray:
    """Edges (bin indices) of `n_bands` log-spaced bands over STFT bins 1..n_bins-1 (DC left out), each band
    at least one bin wide -> `[n_bands + 1]` int, increasing."""
    if not 1 <= n_bands <= n_bins - 1:
        raise ValueError(f"n_bands must be in [1, {n_bins - 1}] for {n_bins} bins, got {n_bands}")
    edges = np.geomspace(1, n_bins, n_bands + 1).round().astype(int)
    for j in range(1, n_bands + 1):  # the low bands are narrower than a bin: give each at least one
        edges[j] = max(edges[j], edges[j - 1] + 1)
    overflow = edges[-1] - n_bins
    if overflow > 0:  # pushed past the top: pull the upper edges back down (still >= 1 bin each)
        edges = np.minimum(edges, n_bins - (n_bands - np.arange(n_bands + 1)))
    return edges


def spectrogram_thumbnails(wavs: Tensor, sample_rate: int, n_fft: int = 512,
                           n_bands: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Tiny log-frequency spectrograms of short sounds `[M, 1, T]`.

    The mean of each sound is removed first (a decoder's DC offset would otherwise own the colour scale).
    STFT with hop n_fft // 2 and no centre padding; power averaged into `n_bands` log-spaced bands
    (`band_edges`), in dB re a full-scale sine.
    Returns: power `[M, n_bands, n_times]` (band 0 = lowest), band edge frequencies `[n_bands + 1]` in Hz.
    """
    if wavs.dim() != 3 or wavs.shape[-1] < n_fft:
        raise ValueError(f"wavs must be [M, 1, T] with T >= n_fft={n_fft}, got {tuple(wavs.shape)}")
    x = wavs[:, 0].float()
    x = x - x.mean(dim=-1, keepdim=True)
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, n_fft // 2, window=window, center=False, return_complex=True)
    power = (spec.abs() * (2.0 / window.sum())).pow(2)  # [M, n_fft/2+1, frames]
    edges = band_edges(power.shape[1], n_bands)
    bands = torch.stack([power[:, a:b].mean(dim=1) for a, b in zip(edges[:-1], edges[1:])], dim=1)
    hz = edges * sample_rate / n_fft
    return (10.0 * torch.log10(bands.clamp_min(1e-12))).numpy(), hz


def tile_mosaic(tiles: np.ndarray, shape: tuple[int, int], gap: int = 1, flip: bool = True) -> np.ndarray:
    """Small images `[rows * cols, h, w]` (raster order) -> one image `[rows*(h+gap)-gap, cols*(w+gap)-gap]`,
    NaN in the gaps. With `flip` each tile is turned upside down, so that a spectrogram (row 0 = low
    frequency) reads low-at-bottom in an image drawn with origin "upper"."""
    rows, cols = shape
    if tiles.ndim != 3 or tiles.shape[0] != rows * cols:
        raise ValueError(f"tiles must be [{rows * cols}, h, w] for shape {shape}, got {tiles.shape}")
    h, w = tiles.shape[1:]
    mosaic = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        tile = tiles[k, ::-1] if flip else tiles[k]
        mosaic[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return mosaic


def code_thumbnails(codec, level: int, block: tuple[int, int, int, int] | None = None, n_frames: int = 8) -> dict:
    """Spectrogram thumbnails of a level's codes, each decoded alone (`decode_alone`), for `plot_code_mosaic`.

    Args:
        block: (row0, col0, n_rows, n_cols), a sub-block of the grid (default the whole grid).
        n_frames: frames each code is held for (n_frames / frame_rate seconds of sound).
    Returns: dict with `thumbs` `[n_rows * n_cols, n_bands, n_times]` dB, `hz` band edges, `block`, `level`,
    `label` (grid label), `ms` (sound length).
    """
    quantizer_level = codec.quantizer.levels[level]
    rows, cols = level_grid(quantizer_level).shape
    r0, c0, nr, nc = block if block is not None else (0, 0, rows, cols)
    if not (0 <= r0 and 0 <= c0 and nr >= 1 and nc >= 1 and r0 + nr <= rows and c0 + nc <= cols):
        raise ValueError(f"block (row0, col0, n_rows, n_cols)={block} does not fit the {rows}x{cols} grid")
    index = torch.arange(rows * cols).reshape(rows, cols)[r0: r0 + nr, c0: c0 + nc].reshape(-1)
    thumbs, hz = spectrogram_thumbnails(decode_alone(codec, level, index, n_frames), codec.sample_rate)
    label = grid_label(quantizer_level)
    if block is not None:
        label += f", rows {r0}-{r0 + nr - 1} cols {c0}-{c0 + nc - 1}"
    return {"thumbs": thumbs, "hz": hz, "block": (r0, c0, nr, nc), "level": level, "label": label,
            "ms": 1000.0 * n_frames / codec.frame_rate}


def plot_code_mosaic(ax: plt.Axes, codec, level: int, block: tuple[int, int, int, int] | None = None,
                     n_frames: int = 8, top_db: float = 60.0, relative: bool = False,
                     thumbnails: dict | None = None) -> np.ndarray:
    """Spectrogram thumbnails of a level's codes, each decoded alone, drawn in their grid cells.

    Colour: band power in dB relative to the loudest code (`top_db` range); with `relative`, each code's
    difference in dB from the mean over the codes shown (what sets a code apart, on a diverging scale).
    `thumbnails` (from `code_thumbnails`) skips the decoding; `codec`/`level`/`block`/`n_frames` then only
    serve to compute them when None. Returns the mosaic image (dB, NaN in gaps).
    """
    info = thumbnails if thumbnails is not None else code_thumbnails(codec, level, block, n_frames)
    thumbs, hz, (r0, c0, nr, nc) = info["thumbs"], info["hz"], info["block"]
    if relative:
        thumbs = thumbs - thumbs.mean(axis=0, keepdims=True)
        span = float(np.percentile(np.abs(thumbs), 99)) or 1.0
        cmap, vmin, vmax = plt.get_cmap("RdBu_r").with_extremes(bad="white"), -span, span
        what, unit = "difference from the mean code", "dB re mean of the codes shown"
    else:
        vmax = float(thumbs.max())
        cmap, vmin = plt.get_cmap("magma").with_extremes(bad="white"), vmax - top_db
        what, unit = "power", "band power (dB re full-scale sine)"
    mosaic = tile_mosaic(thumbs, (nr, nc))
    h, w = thumbs.shape[1:]
    # extent puts tile centres near integer grid coordinates, so the ticks are grid rows/columns
    extent = (c0 - 0.5, c0 + nc - 0.5 - 1.0 / (w + 1), r0 + nr - 0.5 - 1.0 / (h + 1), r0 - 0.5)
    shown = ax.imshow(mosaic, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", extent=extent)
    ax.set_title(f"level {info['level']} ({info['label']}): each code alone, {info['ms']:.0f} ms\n"
                 f"{what}, log frequency {hz[0]:.0f} Hz-{hz[-1] / 1000:.0f} kHz (up) x time (right)", fontsize=10)
    ax.set_xlabel("grid column")
    ax.set_ylabel("grid row")
    ax.figure.colorbar(shown, ax=ax, label=unit, shrink=0.8)
    return mosaic


# ----------------------------------------------------------------------------- paths through the map


@torch.no_grad()
def utterance_codes(codec, wav: Tensor) -> Tensor:
    """All levels' codes of one clip `[1, 1, T]` -> `[n_q, F]`."""
    _check_clips([wav])
    return codec.encode(wav)[0]


def _path_points(codes: Tensor, grid: SOMGrid, jitter: float, seed: int = 0) -> np.ndarray:
    """Grid positions `[F, 2]` as (x = col, y = row) of each frame's code, with a small fixed jitter so that
    repeated codes and retraced steps stay visible."""
    xy = grid.coords[codes.long().cpu()].numpy()[:, ::-1].copy()
    rng = np.random.default_rng(seed)
    return xy + rng.uniform(-jitter, jitter, size=xy.shape)


class PathArtists(NamedTuple):
    """What `plot_path` drew, for animations to update."""

    lines: LineCollection  # the path segments, coloured by time
    marker: Line2D  # the star at the last frame drawn
    points: np.ndarray  # [F, 2] (x = col, y = row) grid positions of all frames, jittered
    times: np.ndarray  # [F] seconds


def plot_path(ax: plt.Axes, codes: Tensor, level: VectorQuantizer, frame_rate: float, title: str = "",
              jitter: float = 0.15, until: int | None = None, colorbar: bool = True) -> PathArtists:
    """The path of an utterance over a level's grid: `codes [F]` joined frame to frame, coloured by time.

    The U-matrix of the level is the grey background (dark = border between regions of the map).
    `until` draws only frames [0, until) and labels the last one "now" (for animations).
    """
    grid = level_grid(level)
    rows, cols = grid.shape
    ax.imshow(level_u_matrix(level), cmap="Greys", alpha=0.35, interpolation="nearest",
              extent=(-0.5, cols - 0.5, rows - 0.5, -0.5))
    points = _path_points(codes, grid, jitter)
    times = np.arange(len(points)) / frame_rate
    complete = until is None
    until = len(points) if complete else max(1, min(until, len(points)))
    lines = LineCollection(path_segments(points, until), cmap="viridis", alpha=0.85,
                           linewidths=1.2 if len(points) < 200 else 0.9)
    lines.set_array(times[1:until])
    lines.set_clim(0, times[-1] if len(times) > 1 else 1.0)
    ax.add_collection(lines)
    ax.plot(*points[0], "o", color="white", markeredgecolor="black", markersize=7, label="start")
    (marker,) = ax.plot(*points[until - 1], "*", color="red", markeredgecolor="black", markersize=13,
                        label="end" if complete else "now")
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("equal")
    _grid_axes(ax, grid)
    ax.set_title(title or f"{grid_label(level)}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    if colorbar:
        ax.figure.colorbar(lines, ax=ax, label="time (s)", shrink=0.8)
    return PathArtists(lines, marker, points, times)


def path_segments(points: np.ndarray, until: int) -> np.ndarray:
    """Line segments `[until - 1, 2, 2]` joining consecutive points `[F, 2]` of frames [0, until)."""
    return np.stack([points[: until - 1], points[1:until]], axis=1)


def plot_paths(codec, wav: Tensor, levels: list[int], name: str = "utterance") -> plt.Figure:
    """One path panel per level for the clip `wav [1, 1, T]`."""
    _check_levels(codec.quantizer, levels)
    codes = utterance_codes(codec, wav)
    fig, axes = plt.subplots(1, len(levels), figsize=(4.8 * len(levels), 4.4), squeeze=False)
    for ax, i in zip(axes[0], levels):
        level = codec.quantizer.levels[i]
        moves = int((codes[i, 1:] != codes[i, :-1]).sum())
        plot_path(ax, codes[i], level, codec.frame_rate,
                  title=f"level {i} ({grid_label(level)})\n{moves} code changes in {codes.shape[1]} frames")
    seconds = wav.shape[-1] / codec.sample_rate
    fig.suptitle(f"Path of '{name}' ({seconds:.1f} s, {codec.frame_rate:g} frames/s) through the codebook grid")
    fig.tight_layout()
    return fig


def path_animation(codec, wav: Tensor, level: int, max_frames: int = 60, dpi: int = 80,
                   name: str = "utterance") -> animation.FuncAnimation:
    """Animated path of `wav [1, 1, T]` over one level's grid, beside its spectrogram with a playhead.

    At most `max_frames` animation frames, spread evenly over the codec frames; the frame interval is set
    so that the animation lasts as long as the audio (play it beside with `IPython.display.Audio`).
    Save with `save_gif`; show inline with `HTML(animation_html(anim))`.
    """
    from lib.analysis.plots import plot_spectrogram

    _check_levels(codec.quantizer, [level])
    if max_frames < 2:
        raise ValueError(f"max_frames must be >= 2, got {max_frames}")
    codes = utterance_codes(codec, wav)[level]
    quantizer_level = codec.quantizer.levels[level]
    n_codes = codes.numel()
    shown_until = np.unique(np.linspace(1, n_codes, min(max_frames, n_codes)).round().astype(int))
    seconds = wav.shape[-1] / codec.sample_rate

    fig, (ax_map, ax_spec) = plt.subplots(1, 2, figsize=(8.4, 3.8), dpi=dpi,
                                          gridspec_kw={"width_ratios": [1.0, 1.35]})
    plot_spectrogram(ax_spec, wav[0], codec.sample_rate, title=f"{name}", n_fft=512)
    ax_spec.title.set_fontsize(9)
    head = ax_spec.axvline(0.0, color="cyan", linewidth=2)
    fig.subplots_adjust(left=0.08, right=0.93, bottom=0.14, top=0.88, wspace=0.3)

    # draw the map once, then only move the path's end and the playhead: much faster than redrawing
    title = f"level {level} ({grid_label(quantizer_level)})"
    path = plot_path(ax_map, codes, quantizer_level, codec.frame_rate, colorbar=False, until=1, title=title)

    def draw(i: int):
        until = int(shown_until[i])
        path.lines.set_segments(path_segments(path.points, until))
        path.lines.set_array(path.times[1:until])
        path.marker.set_data([path.points[until - 1, 0]], [path.points[until - 1, 1]])
        ax_map.set_title(f"{title}  t = {until / codec.frame_rate:.2f} s", fontsize=10)
        head.set_xdata([until / codec.frame_rate] * 2)
        return []

    interval = 1000.0 * seconds / len(shown_until)
    anim = animation.FuncAnimation(fig, draw, frames=len(shown_until), interval=interval, blit=False)
    anim.fps = 1000.0 / interval  # real-time rate, read by save_gif and animation_html
    plt.close(fig)  # shown through the animation, not as a static figure
    return anim


class SharedPaletteGifWriter(animation.PillowWriter):
    """matplotlib's pillow GIF writer, with every frame mapped onto one shared 256-colour palette
    without dithering. Unchanged parts of the figure then stay pixel-identical from frame to frame, so the
    GIF stores only the changed region of each frame: several times smaller than the default writer
    (which gives each frame its own dithered palette)."""

    def finish(self) -> None:
        from PIL import Image

        # palette from the first and last frames side by side: together they hold every colour drawn
        first, last = self._frames[0].convert("RGB"), self._frames[-1].convert("RGB")
        both = Image.new("RGB", (first.width * 2, first.height))
        both.paste(first, (0, 0))
        both.paste(last, (first.width, 0))
        palette = both.quantize(256, dither=Image.Dither.NONE)
        frames = [frame.convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE) for frame in self._frames]
        frames[0].save(self.outfile, save_all=True, append_images=frames[1:], duration=int(1000 / self.fps), loop=0)


def save_gif(anim: animation.FuncAnimation, path: str | os.PathLike, fps: float | None = None) -> Path:
    """Write the animation as a GIF with pillow (no ffmpeg); `fps` defaults to the real-time rate
    `path_animation` chose (10 for other animations)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=SharedPaletteGifWriter(fps=fps or getattr(anim, "fps", 10.0)))
    return path


def animation_html(anim: animation.FuncAnimation, frame_format: str = "jpeg") -> str:
    """HTML/JS player of the animation for inline display (`IPython.display.HTML`). JPEG frames keep the
    notebook a few times smaller than matplotlib's default PNG frames."""
    with plt.rc_context({"animation.frame_format": frame_format}):
        return anim.to_jshtml(fps=getattr(anim, "fps", None))


# ----------------------------------------------------------------------------- PCA of the codes


def plot_pca(ax: plt.Axes, level: VectorQuantizer, title: str = "", data: Tensor | None = None,
             max_points: int = 3000) -> None:
    """Codes of a level in their first two principal components, coloured by grid position; thin lines
    join 4-neighbours on the grid (a well-ordered map looks like a smooth net, a plain codebook like a tangle).

    `data` `[N, d]` (what the level quantises, e.g. from `level_inputs`) is drawn as light grey dots in the
    same projection (at most `max_points`, evenly subsampled).
    """
    grid = level_grid(level)
    rows, cols = grid.shape
    codebook = level.embed.detach().double().cpu()
    mean = codebook.mean(dim=0, keepdim=True)
    _, _, v = torch.linalg.svd(codebook - mean, full_matrices=False)
    basis = v[:2].t()  # [d, 2]
    xy = ((codebook - mean) @ basis).numpy()
    if data is not None:
        step = max(1, data.shape[0] // max_points)
        points = ((data[::step].detach().double().cpu() - mean) @ basis).numpy()
        ax.scatter(points[:, 0], points[:, 1], s=2, color="0.8", zorder=0, label="quantised vectors")
        ax.legend(loc="lower left", fontsize=7, markerscale=3)
    net = xy.reshape(rows, cols, 2)
    segments = np.concatenate([np.stack([net[:, :-1], net[:, 1:]], axis=2).reshape(-1, 2, 2),
                               np.stack([net[:-1], net[1:]], axis=2).reshape(-1, 2, 2)])
    ax.add_collection(LineCollection(segments, colors="0.45", linewidths=0.4, alpha=0.6, zorder=1))
    ax.scatter(xy[:, 0], xy[:, 1], c=grid_colours(grid), s=max(6.0, 900.0 / grid.codebook_size ** 0.75),
               edgecolors="black", linewidths=0.2, zorder=2)
    ax.set_xlabel("principal component 1 of the codes (latent units)")
    ax.set_ylabel("principal component 2 (latent units)")
    ax.set_title(title or grid_label(level), fontsize=10)
    ax.margins(0.08)
    key = ax.inset_axes([0.80, 0.80, 0.18, 0.18])
    key.imshow(grid_colours(grid).reshape(rows, cols, 3), interpolation="nearest")
    key.set_xticks([])
    key.set_yticks([])
    key.set_title("grid colours", fontsize=7)


def plot_pca_comparison(quantizers: dict[str, ResidualVQ], level: int,
                        latents: dict[str, Tensor] | Tensor | None = None) -> plt.Figure:
    """PCA scatter of one level's codes for each named quantizer, side by side.

    `latents` `[B, D, F]` (one tensor for all, or one per name) adds the vectors each level quantises.
    """
    fig, axes = plt.subplots(1, len(quantizers), figsize=(5.4 * len(quantizers), 5.0), squeeze=False)
    for ax, (name, quantizer) in zip(axes[0], quantizers.items()):
        _check_levels(quantizer, [level])
        q_level = quantizer.levels[level]
        z = latents.get(name) if isinstance(latents, dict) else latents
        data = level_inputs(quantizer, z, level + 1)[level] if z is not None else None
        ratio = neighbour_distance_ratio(q_level.embed, level_grid(q_level))
        plot_pca(ax, q_level, f"{name}: level {level} ({grid_label(q_level)})\n"
                              f"neighbour/all distance ratio {ratio:.2f}", data=data)
    fig.suptitle("Codes in PCA space, coloured by their position on the grid (lines join grid neighbours)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- plain RVQ for comparison


def fit_rvq(latents: Tensor, n_q: int, codebook_size: int, steps: int = 200, batch_frames: int = 1024,
            som: bool = False, decay: float = 0.9, dead_code_threshold: float = 0.05, seed: int = 0,
            sigma_start: float | None = None, schedule: str = "linear") -> ResidualVQ:
    """Fit a residual VQ to fixed latents `[B, D, F]` (frames drawn at random, EMA updates only).

    Used to compare a codec's SOM codebooks with plain EMA codebooks of the same size on the same latents.
    With `som` every level gets a near-square SOM grid, width `sigma_start` (default max(rows, cols) / 2)
    annealed to 0 over the first 80% of the steps (`lib.analysis.patches.som_grid`).
    Returns the `ResidualVQ` in eval mode.
    """
    if latents.dim() != 3:
        raise ValueError(f"latents must be [B, D, F], got {tuple(latents.shape)}")
    if steps < 1 or batch_frames < 1:
        raise ValueError(f"steps and batch_frames must be >= 1, got {steps}, {batch_frames}")
    frames = latents.detach().float().transpose(1, 2).reshape(-1, latents.shape[1])  # [N, D]
    grid = som_grid(codebook_size, steps, sigma_start, schedule) if som else None
    torch.manual_seed(seed)  # k-means init and dead-code draws use the global generator
    generator = torch.Generator().manual_seed(seed)
    rvq = ResidualVQ(latents.shape[1], n_q, codebook_size, quantizer_dropout=False, decay=decay,
                     dead_code_threshold=dead_code_threshold, som=grid)
    rvq.train()
    for _ in range(steps):
        batch = frames[torch.randint(frames.shape[0], (batch_frames,), generator=generator)]
        rvq(batch.t().unsqueeze(0))
    return rvq.eval()


# ----------------------------------------------------------------------------- topography


@torch.no_grad()
def topography_table(quantizers: dict[str, ResidualVQ], latents: Tensor, levels: list[int],
                     seed: int = 0) -> list[dict]:
    """Map-quality numbers per quantizer and level on the latents `[B, D, F]` of some audio.

    Row keys: codebook, level, grid, topographic_error (fraction of frames whose two nearest codes are
    not grid neighbours), topographic_error_shuffled (same codes shuffled over the grid: chance level),
    neighbour_distance_ratio (mean 4-neighbour distance / mean distance; about 1 when shuffled),
    neighbour_distance_ratio_shuffled, codes_used, perplexity (of the code distribution on these frames).
    """
    rows = []
    for name, quantizer in quantizers.items():
        _check_levels(quantizer, levels)
        inputs = level_inputs(quantizer, latents, max(levels) + 1)
        codes = quantizer.encode(latents, max(levels) + 1)
        for i in levels:
            level = quantizer.levels[i]
            grid = level_grid(level)
            mixed = shuffled(level.embed, seed)
            counts = code_counts(codes, i, level.codebook_size)
            probs = counts / counts.sum()
            rows.append({
                "codebook": name,
                "level": i,
                "grid": grid_label(level),
                "topographic_error": topographic_error(level.embed, inputs[i], grid),
                "topographic_error_shuffled": topographic_error(mixed, inputs[i], grid),
                "neighbour_distance_ratio": neighbour_distance_ratio(level.embed, grid),
                "neighbour_distance_ratio_shuffled": neighbour_distance_ratio(mixed, grid),
                "codes_used": int((counts > 0).sum()),
                "perplexity": float(torch.exp(-(probs * probs.clamp(min=1e-12).log()).sum())),
            })
    return rows


def format_table(rows: list[dict], digits: int = 3) -> str:
    """Plain-text table of a list of dicts with the same keys (floats rounded to `digits`)."""
    if not rows:
        return "(empty)"
    keys = list(rows[0])
    cells = [[f"{row[k]:.{digits}f}" if isinstance(row[k], float) else str(row[k]) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[j]) for c in cells)) for j, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    return "\n".join(lines)


def plot_topography(table: list[dict]) -> plt.Figure:
    """Bars of topographic error and neighbour-distance ratio per (codebook, level), with the shuffled
    reference as hatched grey bars. Lower is more map-like for both."""
    if not table:
        raise ValueError("table is empty")
    labels = [textwrap.fill(row["codebook"], 14) + (f"\nlevel {row['level']}" if "level" in row else "")
              for row in table]
    x = np.arange(len(table))
    names = list(dict.fromkeys(row["codebook"] for row in table))
    colours = {name: plt.get_cmap("tab10")(j) for j, name in enumerate(names)}
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.8 * len(table) + 3.0), 4.0))
    for ax, key, label in ((axes[0], "topographic_error", "topographic error (fraction of inputs)"),
                           (axes[1], "neighbour_distance_ratio", "neighbour / all-pairs distance")):
        ax.bar(x - 0.2, [row[key] for row in table], 0.4, color=[colours[row["codebook"]] for row in table])
        ax.bar(x + 0.2, [row[f"{key}_shuffled"] for row in table], 0.4, color="0.85", hatch="//", edgecolor="0.5")
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, max(1.05, 1.1 * max(max(row[key], row[f"{key}_shuffled"]) for row in table)))
    axes[0].set_title("Topographic error (lower = ordered map)", fontsize=10)
    axes[1].set_title("Neighbour-distance ratio (lower = smooth map)", fontsize=10)
    handles = [Patch(color=colours[name], label=f"{name}, as trained") for name in names]
    handles.append(Patch(facecolor="0.85", hatch="//", edgecolor="0.5", label="same codes shuffled over the grid"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


# ----------------------------------------------------------------------------- interactive listening


def _png(fig: plt.Figure, dpi: int = 80) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


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
        cols = level_grid(self.codec.quantizer.levels[self.level]).shape[1]
        return int(self.row_slider.value) * cols + int(self.col_slider.value)

    def _on_level(self, change=None) -> None:
        rows, cols = level_grid(self.codec.quantizer.levels[self.level]).shape
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
        r, c = divmod(code, level_grid(q_level).shape[1])
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
        return _png(fig)


def map_explorer(codec, wav: Tensor, sample_rate: int, alone_seconds: float = 0.5) -> MapExplorer:
    """Interactive panel (ipywidgets) to hear a codebook map.

    Pick a level and a grid position (walk along a row with the column slider); hear the code decoded
    alone (held for `alone_seconds`, peak-normalised) and in context (the clip `wav [1, 1, T]` with
    every frame of that level replaced by the code, true level), beside the original and the codec output.
    Builds without a frontend, so it runs headless (papermill) too.
    """
    return MapExplorer(codec, wav, sample_rate, alone_seconds)
