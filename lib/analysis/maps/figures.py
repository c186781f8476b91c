"""Codebook-map figures: usage and U-matrix heatmaps, decoded-code mosaics, an utterance's path (still, GIF and
inline animation), PCA of the codes coloured by grid position, the topography bars.

Each RVQ level's K codes sit on a grid (`lib.model.som.layout_grid`): the level's SOM grid when it was trained as
a self-organising map, otherwise the near-square layout of the code indices (row = k // cols), which for a plain
EMA codebook is an arbitrary order and is labelled so in every title.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import Tensor

from lib.analysis.maps.statistics import (_check_levels, code_counts, level_inputs, level_u_matrix, to_grid,
                                          utterance_codes)
from lib.model.quantize import ResidualVQ, VectorQuantizer
from lib.model.som import SOMGrid, grid_label, layout_grid, neighbour_distance_ratio

# Colours of the four grid corners for the 2-D position colour map: top-left, top-right,
# bottom-left, bottom-right (blue, yellow, magenta, green: distinct hues, all mid to high lightness).
CORNER_COLOURS = np.array([[0.12, 0.35, 0.95], [0.98, 0.82, 0.10], [0.90, 0.15, 0.55], [0.10, 0.75, 0.35]])


# ----------------------------------------------------------------------------- grids


def grid_colours(grid: SOMGrid) -> np.ndarray:
    """A colour per code `[K, 3]` from its grid position: bilinear blend of the four corner colours."""
    rows, cols = grid.shape
    u = grid.coords[:, 0].numpy() / max(rows - 1, 1)  # 0 at the top row, 1 at the bottom
    v = grid.coords[:, 1].numpy() / max(cols - 1, 1)  # 0 at the left column, 1 at the right
    tl, tr, bl, br = CORNER_COLOURS
    return ((1 - u) * (1 - v))[:, None] * tl + ((1 - u) * v)[:, None] * tr + (u * (1 - v))[:, None] * bl \
        + (u * v)[:, None] * br


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
        plot_usage(ax, counts, layout_grid(level), f"level {i} ({grid_label(level)})", unit, summary)
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
        grid = layout_grid(level)
        shown = ax.imshow(level_u_matrix(level), cmap="bone_r", interpolation="nearest")
        ratio = neighbour_distance_ratio(level.embed, grid)
        ax.set_title(f"level {i} ({grid_label(level)})\nneighbour/all distance ratio {ratio:.2f}", fontsize=10)
        _grid_axes(ax, grid)
        fig.colorbar(shown, ax=ax, label="mean distance to grid neighbours", shrink=0.85)
    fig.suptitle("U-matrix: dark = far from its neighbours (a border); light = smooth map")
    fig.tight_layout()
    return fig


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
    rows, cols = layout_grid(quantizer_level).shape
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
    grid = layout_grid(level)
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
    grid = layout_grid(level)
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
        ratio = neighbour_distance_ratio(q_level.embed, layout_grid(q_level))
        plot_pca(ax, q_level, f"{name}: level {level} ({grid_label(q_level)})\n"
                              f"neighbour/all distance ratio {ratio:.2f}", data=data)
    fig.suptitle("Codes in PCA space, coloured by their position on the grid (lines join grid neighbours)")
    fig.tight_layout()
    return fig


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


