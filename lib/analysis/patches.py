"""Image-patch demo of SOM codebooks: vector quantisation of small RGB patches.

Each image is cut into non-overlapping `patch x patch` RGB patches, flattened to vectors of
`patch * patch * 3` values in [0, 1] (4x4x3 = 48-d). A `lib.model.quantize.VectorQuantizer` learns a
codebook of such patches, once with a self-organising-map grid (`som=SOMGrid(...)`) and once as a
plain EMA codebook. Drawn on its grid, each code shown as its RGB patch, the SOM codebook is a
smooth "map" of colours and edges; the plain codebook is the same kind of palette in random order.

Images: the two photographs that ship with scikit-learn (`china.jpg`, `flower.jpg`), or CIFAR-10
when a local folder of the python-version batches (`data_batch_1`, ...) is given. Nothing is
downloaded.

Layout: images are numpy float32 `[H, W, 3]` in [0, 1]; patch vectors are `[N, P]` with
P = patch * patch * 3 in (row, col, channel) order.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from lib.model.quantize import VectorQuantizer
from lib.model.codebook import codebook_stats
from lib.model.som import SOMGrid, fit_codebooks, layout_grid, short_fit_grid, topography

CIFAR_SIDE = 32  # CIFAR-10 images are 32x32 RGB


# ----------------------------------------------------------------------------- images


def sklearn_images() -> list[np.ndarray]:
    """The photographs shipped with scikit-learn (china, flower) as float32 `[427, 640, 3]` in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(image, dtype=np.float32) / 255.0 for image in load_sample_images().images]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays: a CIFAR batch is a dict of arrays, lists and bytes,
    so anything else in the file is refused instead of executed."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only numpy arrays")


def load_cifar_batch(path: str | os.PathLike) -> np.ndarray:
    """One CIFAR-10 python-version batch file (e.g. `data_batch_1`) -> uint8 `[N, 32, 32, 3]`.

    The file is a pickled dict whose `data` entry is `[N, 3072]` uint8: the red, green and blue
    32x32 planes of each image one after the other.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CIFAR batch {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({error})") from error
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if data is None:
        raise ValueError(f"{path}: no 'data' entry; expected a CIFAR-10 python-version batch")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * CIFAR_SIDE * CIFAR_SIDE:
        raise ValueError(f"{path}: 'data' must be [N, 3072], got {data.shape}")
    return data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1).astype(np.uint8)


def cifar_images(folder: str | os.PathLike, max_images: int | None = 2000) -> list[np.ndarray]:
    """Images from the `data_batch_*` files of a CIFAR-10 python folder, float32 `[32, 32, 3]` in [0, 1]."""
    folder = Path(folder)
    files = sorted(folder.glob("data_batch_*"))
    if not folder.is_dir() or not files:
        raise ValueError(
            f"image_source {str(folder)!r} is not a CIFAR-10 python folder (no data_batch_* files); "
            "use 'sklearn' or the folder holding data_batch_1 ... data_batch_5"
        )
    images: list[np.ndarray] = []
    for file in files:
        batch = load_cifar_batch(file)
        images.extend(image.astype(np.float32) / 255.0 for image in batch)
        if max_images is not None and len(images) >= max_images:
            return images[:max_images]
    return images


def load_images(source: str | os.PathLike = "sklearn", max_images: int | None = 2000) -> list[np.ndarray]:
    """`"sklearn"` (the two bundled photographs) or a CIFAR-10 python folder -> list of `[H, W, 3]` in [0, 1]."""
    if str(source) == "sklearn":
        return sklearn_images()
    return cifar_images(source, max_images)


# ----------------------------------------------------------------------------- patches


def _check_image(image: np.ndarray, patch: int) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3] RGB, got shape {image.shape}")
    if patch < 1 or image.shape[0] < patch or image.shape[1] < patch:
        raise ValueError(f"patch must be in [1, min(H, W)], got {patch} for an image of shape {image.shape}")


def extract_patches(image: np.ndarray, patch: int = 4) -> np.ndarray:
    """Non-overlapping patches of one image `[H, W, 3]` -> `[(H // patch) * (W // patch), patch * patch * 3]`.

    The image is cropped to a multiple of `patch`; patches are in raster order (row of patches first).
    """
    _check_image(image, patch)
    rows, cols = image.shape[0] // patch, image.shape[1] // patch
    cropped = np.asarray(image[: rows * patch, : cols * patch], dtype=np.float32)
    blocks = cropped.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 1, 3, 4)  # [rows, cols, p, p, 3]
    return blocks.reshape(rows * cols, patch * patch * 3)


def patches_to_image(patches: np.ndarray, grid: tuple[int, int], patch: int = 4) -> np.ndarray:
    """Inverse of `extract_patches`: `[rows * cols, patch * patch * 3]` -> image `[rows * patch, cols * patch, 3]`."""
    rows, cols = grid
    if patches.shape != (rows * cols, patch * patch * 3):
        raise ValueError(f"patches must be [{rows * cols}, {patch * patch * 3}] for grid {grid}, got {patches.shape}")
    blocks = np.asarray(patches).reshape(rows, cols, patch, patch, 3).transpose(0, 2, 1, 3, 4)
    return blocks.reshape(rows * patch, cols * patch, 3)


def patch_dataset(images: list[np.ndarray], patch: int = 4) -> torch.Tensor:
    """All patches of all images, float32 `[N, patch * patch * 3]`."""
    if not images:
        raise ValueError("images is empty")
    return torch.from_numpy(np.concatenate([extract_patches(image, patch) for image in images]))


# ----------------------------------------------------------------------------- codebooks


def train_patch_vq(
    patches: torch.Tensor,
    codebook_size: int = 256,
    som: bool = True,
    steps: int = 300,
    batch_size: int = 2048,
    decay: float = 0.9,
    sigma_start: float | None = None,
    schedule: str = "linear",
    dead_code_threshold: float = 0.05,
    seed: int = 0,
) -> VectorQuantizer:
    """Learn a codebook of patches with EMA updates, on a SOM grid (`som=True`) or plain.

    Args:
        patches: `[N, P]` patch vectors.
        codebook_size: K; the SOM grid is the most square `rows x cols = K`.
        som: Kohonen-style neighbourhood, Gaussian width annealed (`schedule`) from `sigma_start` to 0
            over the first 80% of the steps; the rest is plain EMA fine-tuning. The default start,
            max(rows, cols) / 2, with a linear schedule untangles the random order of the k-means
            initialisation within a few hundred steps (a narrower or faster-shrinking kernel leaves twists).
        steps, batch_size: EMA updates and patches per update (drawn with replacement).
        decay: EMA decay; lower than the codec's 0.99 so that a few hundred steps suffice.
        dead_code_threshold: EMA count under which a code is moved onto a random patch.
    Returns: the `VectorQuantizer` (dim P) in eval mode; its codebook is `.embed [K, P]`.
    """
    if patches.dim() != 2 or patches.shape[0] < 1:
        raise ValueError(f"patches must be [N, P] with N >= 1, got {tuple(patches.shape)}")
    grid = short_fit_grid(codebook_size, steps, sigma_start, schedule) if som else None
    return fit_codebooks(lambda: VectorQuantizer(patches.shape[1], codebook_size, decay=decay,
                                                 dead_code_threshold=dead_code_threshold, som=grid),
                         patches, steps, batch_size, seed)


@torch.no_grad()
def quantize_patches(vq: VectorQuantizer, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[N, P]` -> (reconstructed patches `[N, P]`, codes `[N]`)."""
    q, codes = vq.quantize(patches.t().unsqueeze(0))
    return q[0].t(), codes[0]


def mean_colour_baseline(patches: torch.Tensor) -> torch.Tensor:
    """The trivial one-code quantiser: every patch replaced by the mean patch of the data, `[N, P]`."""
    return patches.mean(dim=0, keepdim=True).expand_as(patches)


def patch_metrics(vq: VectorQuantizer, patches: torch.Tensor, name: str) -> dict:
    """Reconstruction and map-quality numbers of a patch codebook on `patches` `[N, P]`.

    Keys: codebook, grid, mse (per value, [0, 1] colour scale), baseline_mse (mean-colour),
    codes_used, perplexity, topographic_error, neighbour_distance_ratio, each of the last two also
    for the same codes shuffled over the grid (`*_shuffled`, the no-map reference); measured on the
    grid the codebook is drawn on (index order for a plain codebook).
    """
    recon, codes = quantize_patches(vq, patches)
    stats = codebook_stats(codes, vq.codebook_size)
    grid = layout_grid(vq)
    return {
        "codebook": name,
        "grid": f"{grid.shape[0]}x{grid.shape[1]}" + ("" if vq.som is not None else " (index order)"),
        "mse": (recon - patches).pow(2).mean().item(),
        "baseline_mse": (mean_colour_baseline(patches) - patches).pow(2).mean().item(),
        "codes_used": stats["codes_used"],
        "perplexity": stats["perplexity"],
        **topography(vq.embed, patches, grid),
    }


# ----------------------------------------------------------------------------- pictures


def codebook_mosaic(codebook: torch.Tensor, grid: SOMGrid, patch: int = 4, gap: int = 1, scale: int = 3) -> np.ndarray:
    """Codes `[K, patch * patch * 3]` drawn as RGB patches on their grid cells.

    Each patch pixel becomes `scale x scale` pixels, and tiles are separated by white lines `gap` pixels
    wide -> image `[rows * (s + gap) - gap, cols * (s + gap) - gap, 3]` with s = patch * scale.
    """
    rows, cols = grid.shape
    if codebook.shape != (rows * cols, patch * patch * 3):
        raise ValueError(f"codebook must be [{rows * cols}, {patch * patch * 3}], got {tuple(codebook.shape)}")
    tiles = codebook.detach().float().clamp(0, 1).reshape(rows, cols, patch, patch, 3).numpy()
    tiles = tiles.repeat(scale, axis=2).repeat(scale, axis=3)  # nearest-neighbour upsampling
    side = patch * scale
    cell = side + gap
    mosaic = np.ones((rows * cell - gap, cols * cell - gap, 3), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            mosaic[r * cell: r * cell + side, c * cell: c * cell + side] = tiles[r, c]
    return mosaic


def plot_codebook_mosaic(ax: plt.Axes, vq: VectorQuantizer, patch: int = 4, title: str | None = None) -> None:
    """Draw the codebook of `vq` on its grid, each code as its RGB patch."""
    grid = layout_grid(vq)
    ax.imshow(codebook_mosaic(vq.embed, grid, patch), interpolation="nearest")
    shape = f"{grid.shape[0]}x{grid.shape[1]}"
    kind = f"on a {shape} SOM grid" if vq.som is not None else f"plain EMA codebook: index order on a {shape} grid"
    ax.set_title(title or f"{vq.codebook_size} codes of {patch}x{patch} RGB patches\n{kind}")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_reconstructions(image: np.ndarray, codebooks: dict[str, VectorQuantizer], patch: int = 4,
                         crop: tuple[slice, slice] | None = None) -> plt.Figure:
    """One row: the image, its mean-colour baseline and its reconstruction by each codebook.

    `crop` (row slice, col slice) zooms in on a region so that the patch structure is visible.
    Each panel is titled with its MSE on the whole image.
    """
    patches = torch.from_numpy(extract_patches(image, patch))
    grid = (image.shape[0] // patch, image.shape[1] // patch)
    original = patches_to_image(patches.numpy(), grid, patch)
    panels = {"original": (original, None)}
    baseline = mean_colour_baseline(patches)
    panels["mean colour (1 code)"] = (patches_to_image(baseline.numpy(), grid, patch),
                                      (baseline - patches).pow(2).mean().item())
    for name, vq in codebooks.items():
        recon, _ = quantize_patches(vq, patches)
        picture = np.clip(patches_to_image(recon.numpy(), grid, patch), 0, 1)
        panels[name] = (picture, (recon - patches).pow(2).mean().item())
    crop = crop or (slice(None), slice(None))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.0))
    for ax, (name, (picture, mse)) in zip(np.atleast_1d(axes), panels.items()):
        ax.imshow(picture[crop], interpolation="nearest")
        ax.set_title(name if mse is None else f"{name}\nMSE {mse:.4f}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    zoom = "" if crop == (slice(None), slice(None)) else "; panels zoomed in"
    fig.suptitle(f"Each {patch}x{patch} patch replaced by its nearest code (MSE per colour value in [0, 1], "
                 f"whole image{zoom})")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig
