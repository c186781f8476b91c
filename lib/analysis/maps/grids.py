"""What a path does on the grid, and FSQ grids shown as maps beside SOM codebooks.

- `jump_distances(codes, level)`: grid distance (in cells) of every frame-to-frame code change.
- `plot_jumps(codec, wav, levels)`: those distances over time, per level, against what codes drawn at random
  from the same usage would give; `jump_summary` says it in one sentence.
- `fit_fsq(latents, levels, steps)`: one FSQ group (`lib.model.fsq`) fitted on a codec's latents.
- `fsq_usage_image(counts, radices)` and `plot_fsq_usage`: FSQ's implicit grid of codes is a map by
  construction; a 4-D grid (d0, d1, d2, d3) is drawn as small multiples, a d0 x d1 tile for each (d2, d3).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from lib.analysis.maps.statistics import _check_levels, utterance_codes
from lib.model.fsq import ResidualFSQ
from lib.model.som import grid_label, layout_grid


def jump_distances(codes: Tensor, level) -> np.ndarray:
    """Euclidean grid distance (cells) between the codes of consecutive frames `codes [F]`; 0 when unchanged."""
    coords = layout_grid(level).coords[codes.long().cpu()].float().numpy()
    return np.linalg.norm(np.diff(coords, axis=0), axis=1)


def random_jump_distance(codes: Tensor, level, draws: int = 4000, seed: int = 0) -> float:
    """Mean grid distance between two codes drawn independently from this clip's own code usage: what the
    jumps would be if the order of the frames carried no information about the grid."""
    coords = layout_grid(level).coords[codes.long().cpu()].float().numpy()
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(coords), draws), rng.integers(0, len(coords), draws)
    return float(np.linalg.norm(coords[a] - coords[b], axis=1).mean())


def jump_summary(distances: np.ndarray, random: float) -> str:
    """One sentence on a level's path: how often the code changes and how far it moves against random order."""
    moves = distances[distances > 0]
    if not moves.size:
        return "the code never changes"
    ratio = float(np.median(moves)) / random if random > 0 else math.nan
    verdict = ("steps are short: the map follows the sound" if ratio < 0.5 else
               "steps are somewhat shorter than random" if ratio < 0.85 else
               "steps are as long as random jumps: neighbouring frames land anywhere on the grid")
    return (f"{moves.size} changes in {distances.size + 1} frames, median step {np.median(moves):.1f} cells "
            f"vs {random:.1f} for random order: {verdict}")


def plot_jumps(codec, wav: Tensor, levels: list[int], name: str = "utterance") -> tuple[plt.Figure, list[str]]:
    """Per level, the grid distance of each frame-to-frame step of the clip over time, with the random-order
    reference as a dashed line. Returns the figure and one `jump_summary` sentence per level."""
    _check_levels(codec.quantizer, levels)
    codes = utterance_codes(codec, wav)
    fig, axes = plt.subplots(len(levels), 1, figsize=(10, 1.9 * len(levels) + 0.6), squeeze=False, sharex=True)
    sentences = []
    for ax, i in zip(axes[:, 0], levels):
        level = codec.quantizer.levels[i]
        distances = jump_distances(codes[i], level)
        random = random_jump_distance(codes[i], level)
        times = np.arange(1, len(distances) + 1) / codec.frame_rate
        ax.vlines(times, 0, distances, color="tab:blue", lw=1.0)
        ax.axhline(random, color="tab:red", ls="--", lw=1, label=f"random order ({random:.1f} cells)")
        ax.set_ylabel("step (cells)")
        ax.set_title(f"level {i} ({grid_label(level)})", fontsize=9, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        sentences.append(f"level {i}: {jump_summary(distances, random)}")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(f"How far the code of '{name}' moves on the grid from one frame to the next")
    fig.tight_layout()
    return fig, sentences


def fit_fsq(latents: Tensor, radices=(8, 5, 5, 5), steps: int = 300, batch_frames: int = 1024, lr: float = 3e-3,
            seed: int = 0) -> ResidualFSQ:
    """One FSQ group fitted on `latents [1, D, F]` (its projections, by Adam on the squared error)."""
    torch.manual_seed(seed)
    x = latents.detach().float()
    fsq = ResidualFSQ(x.shape[1], 1, radices, quantizer_dropout=0.0)
    optimizer = torch.optim.Adam(fsq.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    fsq.train()
    for _ in range(steps):
        index = torch.randint(0, x.shape[-1], (min(batch_frames, x.shape[-1]),), generator=generator)
        batch = x[0, :, index][None]
        loss = torch.mean((fsq(batch).quantized - batch) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return fsq.eval()


def fsq_usage_image(counts: np.ndarray, radices) -> np.ndarray:
    """Code counts `[prod(radices)]` (mixed radix, digit 0 fastest) -> a 2-D image: for 4 digits, a grid of
    d0 x d1 tiles, one per (d2, d3), separated by a NaN gap; 2 digits: d1 rows x d0 columns."""
    r = list(radices) + [1] * (4 - len(radices))
    if len(radices) > 4:
        raise ValueError(f"at most 4 FSQ dimensions can be drawn, got {len(radices)}")
    cube = np.asarray(counts, dtype=float).reshape(r[3], r[2], r[1], r[0])  # [d3, d2, d1, d0]
    tile_h, tile_w = r[1] + 1, r[0] + 1
    image = np.full((r[3] * tile_h - 1, r[2] * tile_w - 1), np.nan)
    for d3 in range(r[3]):
        for d2 in range(r[2]):
            image[d3 * tile_h:d3 * tile_h + r[1], d2 * tile_w:d2 * tile_w + r[0]] = cube[d3, d2]
    return image


def plot_fsq_usage(ax: plt.Axes, codes: Tensor, radices, title: str = "") -> float:
    """Usage of an FSQ grid as a map (log colour, white = never chosen). Returns the fraction of codes used."""
    size = math.prod(radices)
    flat = codes.reshape(-1).long()
    counts = np.bincount(flat[flat >= 0].numpy(), minlength=size).astype(float)  # -1: a level switched off
    image = fsq_usage_image(np.where(counts > 0, counts, np.nan), radices)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("white")
    shown = ax.imshow(np.log10(image), cmap=cmap, interpolation="nearest")
    ax.figure.colorbar(shown, ax=ax, label="log10 frames", shrink=0.8)
    dims = " x ".join(str(v) for v in radices)
    ax.set_title(title or f"FSQ grid {dims}", fontsize=10)
    ax.set_xlabel("d0 within a tile; tiles along d2")
    ax.set_ylabel("d1 within a tile; tiles along d3")
    ax.set_xticks([])
    ax.set_yticks([])
    return float((counts > 0).mean())
