"""Codebook-map statistics: which clips, which latents, which codes, how map-like each codebook is.

The held-out clips and the followed utterance come from `lib.data.datasets.held_out_clips` (the trainer's
validation set); `fit_rvq` fits the plain-EMA reference codebooks; `topography_table` measures every level with
`lib.model.som.topography` and `lib.model.codebook.codebook_stats`. Shapes: audio `[B, 1, T]`, latents
`[B, D, F]`, codes `[B, n_q, F]`, a codebook `[K, d]`, grid images `[rows, cols]`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lib.data.audio import load_audio
from lib.data.datasets import AudioFolder, held_out_clips
from lib.model.codebook import codebook_stats
from lib.model.quantize import ResidualVQ, VectorQuantizer
from lib.model.som import SOMGrid, fit_codebooks, grid_label, layout_grid, short_fit_grid, topography, u_matrix


def to_grid(values: Tensor | np.ndarray, grid: SOMGrid) -> np.ndarray:
    """Per-code values `[K]` -> `[rows, cols]` image, code k at (k // cols, k % cols)."""
    values = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    if values.shape != (grid.codebook_size,):
        raise ValueError(f"values must be [K={grid.codebook_size}], got shape {values.shape}")
    return values.reshape(grid.shape)


def level_u_matrix(level: VectorQuantizer) -> np.ndarray:
    """U-matrix `[rows, cols]` of a level's codebook on its grid (mean distance to 4-neighbours, code space)."""
    return u_matrix(level.embed, layout_grid(level)).cpu().numpy()

def pick_clip(data_dir: str | os.PathLike, sample_rate: int, seconds: float = 3.0,
              path: str | os.PathLike | None = None) -> tuple[Tensor, str]:
    """One clip to follow through the maps -> (`[1, 1, T]` with T <= seconds * sample_rate, its name).

    `path` (absolute, or relative to `data_dir`) if given, cut to its first `seconds`; otherwise the first held-out
    speech clip (`lib.data.datasets.held_out_clips` with `speech=1`: recorded speech before synthetic, a clip of
    at least `seconds` before shorter ones; any clip when none is speech), cut to its most active `seconds`.
    """
    if path is None:
        clips = held_out_clips(data_dir, sample_rate, n=1, seconds=seconds, speech=1, min_seconds=seconds)
        name, wav = next(iter(clips.items()))
    else:
        path = Path(path) if Path(path).is_absolute() else Path(data_dir) / path
        name, wav = path.name, load_audio(path, sample_rate)[..., : int(seconds * sample_rate)]
    return wav.unsqueeze(0), name


def training_clips(data_dir: str | os.PathLike, sample_rate: int, n_clips: int = 16,
                   seconds: float = 10.0) -> list[Tensor]:
    """Up to `n_clips` clips `[1, 1, T]` of the train split (each cut to `seconds`), spread over the split."""
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
    return torch.cat([codec.latents(wav) for wav in clips], dim=-1)


@torch.no_grad()
def level_inputs(quantizer: ResidualVQ, latents: Tensor, n_levels: int | None = None) -> list[Tensor]:
    """What each level searches its codebook with: the residual left by the codes the encoder chose at the
    levels before it (greedy or beam search, as ``quantizer.encode`` does), in that level's code space (after any
    in-projection / normalisation).

    Args: latents `[B, D, F]`. Returns: one `[B * F, d]` tensor per level (the first `n_levels`).
    """
    n_levels = quantizer.n_q if n_levels is None else n_levels
    codes = quantizer.encode(latents, n_levels)  # [B, n_levels, F]
    previous = torch.zeros_like(latents)
    inputs = []
    for i, level in enumerate(quantizer.levels[:n_levels]):
        z = level.to_code_space(latents - previous).float()  # [B, d, F]
        inputs.append(z.transpose(1, 2).reshape(-1, z.shape[1]))
        previous = previous + level.dequantize(codes[:, i]).to(latents.dtype)
    return inputs


def code_counts(codes: Tensor, level: int, codebook_size: int) -> Tensor:
    """How often each code of `level` occurs in `codes` `[B, n_q, F]` (entries -1 ignored) -> `[K]` float."""
    if codes.dim() != 3 or not 0 <= level < codes.shape[1]:
        raise ValueError(f"codes must be [B, n_q, F] with level {level} < n_q, got {tuple(codes.shape)}")
    used = codes[:, level].reshape(-1)
    return torch.bincount(used[used >= 0], minlength=codebook_size).float()

def _check_levels(quantizer: ResidualVQ, levels: list[int]) -> None:
    if not levels or any(not 0 <= int(i) < quantizer.n_q for i in levels):
        raise ValueError(f"levels must be a non-empty list of indices in [0, {quantizer.n_q - 1}], got {levels}")


# ----------------------------------------------------------------------------- codes heard alone


@torch.no_grad()
def utterance_codes(codec, wav: Tensor) -> Tensor:
    """All levels' codes of one clip `[1, 1, T]` -> `[n_q, F]`."""
    _check_clips([wav])
    return codec.encode(wav)[0]

def fit_rvq(latents: Tensor, n_q: int, codebook_size: int, steps: int = 200, batch_frames: int = 1024,
            som: bool = False, decay: float = 0.9, dead_code_threshold: float = 0.05, seed: int = 0,
            sigma_start: float | None = None, schedule: str = "linear") -> ResidualVQ:
    """Fit a residual VQ to fixed latents `[B, D, F]` (frames drawn at random, EMA updates only).

    Used to compare a codec's SOM codebooks with plain EMA codebooks of the same size on the same latents.
    With `som` every level gets a near-square SOM grid, width `sigma_start` (default max(rows, cols) / 2)
    annealed to 0 over the first 80% of the steps (`lib.model.som.short_fit_grid`), by the loop of `lib.model.som.fit_codebooks`.
    Returns the `ResidualVQ` in eval mode.
    """
    if latents.dim() != 3:
        raise ValueError(f"latents must be [B, D, F], got {tuple(latents.shape)}")
    frames = latents.detach().float().transpose(1, 2).reshape(-1, latents.shape[1])  # [N, D]
    grid = short_fit_grid(codebook_size, steps, sigma_start, schedule) if som else None
    return fit_codebooks(lambda: ResidualVQ(latents.shape[1], n_q, codebook_size, quantizer_dropout=False,
                                            decay=decay, dead_code_threshold=dead_code_threshold, som=grid),
                         frames, steps, batch_frames, seed)


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
            stats = codebook_stats(codes[:, i], level.codebook_size)
            rows.append({"codebook": name, "level": i, "grid": grid_label(level),
                         **topography(level.embed, inputs[i], layout_grid(level), seed),
                         "codes_used": stats["codes_used"], "perplexity": stats["perplexity"]})
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
