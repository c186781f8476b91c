"""Self-organising-map (SOM) grids for VQ codebooks, and map-quality metrics.

The K codes of a codebook are laid out on a 2-D grid. During training the hard
code assignment of each vector is blurred over the grid by a neighbourhood
kernel whose width anneals to zero (a batch Kohonen update, Irie et al. 2023,
arXiv 2302.07950). At width 0 the kernel is the identity and the update is
plain EMA vector quantisation.

Metrics: `topographic_error`, `neighbour_distance_ratio`, `u_matrix`, `topography` (both, against a shuffled
reference). Grid tooling shared by the codebook maps and the image-patch demo: `layout_grid`, `grid_label`,
`shuffled`, `short_fit_grid` and `fit_codebooks`, the one loop that fits a codebook to fixed vectors.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

NEIGHBOURHOODS = ("gaussian", "box")
SCHEDULES = ("exp", "linear")
# Rate of the "exp" schedule: sigma falls by e^-EXP_RATE over the annealing
# before the final offset brings it exactly to sigma_end.
EXP_RATE = 5.0


def near_square_shape(codebook_size: int) -> tuple[int, int]:
    """Most square grid (rows, cols) with rows * cols == codebook_size and rows >= cols.

    512 -> (32, 16), 1024 -> (32, 32), a prime p -> (p, 1).
    """
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    cols = int(math.isqrt(codebook_size))
    while codebook_size % cols != 0:
        cols -= 1
    return codebook_size // cols, cols


class SOMGrid:
    """A 2-D grid of `codebook_size` codes with an annealed neighbourhood kernel.

    Code k sits at grid position (row, col) = (k // cols, k % cols).

    Args:
        codebook_size: number of codes K.
        shape: (rows, cols) with rows * cols == K; default the most square shape.
        neighbourhood: "gaussian" (exp(-d^2 / (2 sigma^2)), Euclidean grid distance d)
            or "box" (1 where the Chebyshev grid distance is <= sigma).
        sigma_start: kernel width at step 0 (default max(rows, cols) / 4).
        sigma_end: width reached at `anneal_steps` and kept afterwards.
        anneal_steps: number of training updates over which sigma anneals.
        schedule: "exp" (fast early shrink, then slow) or "linear".
    """

    def __init__(
        self,
        codebook_size: int,
        shape: tuple[int, int] | None = None,
        neighbourhood: str = "gaussian",
        sigma_start: float | None = None,
        sigma_end: float = 0.0,
        anneal_steps: int = 1000,
        schedule: str = "exp",
    ) -> None:
        if shape is None:
            shape = near_square_shape(codebook_size)
        if len(shape) != 2 or int(shape[0]) < 1 or int(shape[1]) < 1:
            raise ValueError(f"shape must be two positive ints (rows, cols), got {shape}")
        rows, cols = int(shape[0]), int(shape[1])
        if rows * cols != codebook_size:
            raise ValueError(
                f"shape {shape} has {rows * cols} cells but codebook_size is {codebook_size}; "
                "rows * cols must equal codebook_size"
            )
        if neighbourhood not in NEIGHBOURHOODS:
            raise ValueError(f"neighbourhood must be one of {NEIGHBOURHOODS}, got {neighbourhood!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if sigma_start is None:
            sigma_start = max(rows, cols) / 4.0
        if sigma_start < 0 or sigma_end < 0:
            raise ValueError(f"sigma_start and sigma_end must be >= 0, got {sigma_start}, {sigma_end}")
        if anneal_steps < 1:
            raise ValueError(f"anneal_steps must be >= 1, got {anneal_steps}")
        self.codebook_size = codebook_size
        self.shape = (rows, cols)
        self.neighbourhood = neighbourhood
        self.sigma_start = float(sigma_start)
        self.sigma_end = float(sigma_end)
        self.anneal_steps = int(anneal_steps)
        self.schedule = schedule
        index = torch.arange(codebook_size)
        self.coords = torch.stack([index // cols, index % cols], dim=1).float()  # [K, 2]

    def __repr__(self) -> str:
        return (
            f"SOMGrid(codebook_size={self.codebook_size}, shape={self.shape}, "
            f"neighbourhood={self.neighbourhood!r}, sigma_start={self.sigma_start}, "
            f"sigma_end={self.sigma_end}, anneal_steps={self.anneal_steps}, schedule={self.schedule!r})"
        )

    def sigma_at(self, step: int) -> float:
        """Kernel width after `step` training updates; exactly `sigma_end` from `anneal_steps` on."""
        step = int(step)
        if step >= self.anneal_steps:
            return self.sigma_end
        t = max(step, 0) / self.anneal_steps
        if self.schedule == "linear":
            frac = 1.0 - t
        else:
            # exp decay shifted and rescaled so that it hits 0 exactly at t = 1
            # (a plain exponential never reaches sigma_end = 0).
            floor = math.exp(-EXP_RATE)
            frac = (math.exp(-EXP_RATE * t) - floor) / (1.0 - floor)
        return self.sigma_end + (self.sigma_start - self.sigma_end) * frac

    def grid_sq_distances(self, device: torch.device | str | None = None) -> Tensor:
        """Squared Euclidean grid distances between all codes, `[K, K]`."""
        coords = self.coords.to(device)
        return torch.cdist(coords, coords).pow(2).round()  # integer-valued: round off cdist noise

    def grid_chebyshev(self, device: torch.device | str | None = None) -> Tensor:
        """Chebyshev (king-move) grid distances between all codes, `[K, K]`."""
        coords = self.coords.to(device)
        return (coords[:, None, :] - coords[None, :, :]).abs().amax(dim=-1)

    def kernel(self, sigma: float, normalize: bool = True, device: torch.device | str | None = None) -> Tensor:
        """Neighbourhood kernel `[K, K]`; row j holds the weights a vector won by code j gives every code.

        With `normalize` each row sums to 1, so every vector still contributes unit mass to the
        EMA cluster counts (the dead-code threshold keeps its meaning). At sigma 0 this is the
        exact identity matrix (also for box widths < 1 and Gaussian widths too small to reach a
        neighbour in float32).
        """
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        k = self.codebook_size
        if sigma == 0:
            return torch.eye(k, device=device)
        if self.neighbourhood == "gaussian":
            weights = torch.exp(-self.grid_sq_distances(device) / (2.0 * sigma**2))
        else:
            weights = (self.grid_chebyshev(device) <= sigma).float()
        if normalize:
            weights = weights / weights.sum(dim=1, keepdim=True)
        return weights

    def _axis_kernel(self, n: int, sigma: float, device: torch.device | str | None) -> Tensor:
        """The row-normalised kernel `[n, n]` along one grid axis of length n."""
        d = torch.arange(n, device=device, dtype=torch.float32)
        d = (d[:, None] - d[None, :]).abs()
        weights = torch.exp(-d.square() / (2.0 * sigma**2)) if self.neighbourhood == "gaussian" else (d <= sigma).float()
        return weights / weights.sum(dim=1, keepdim=True)

    def spread(self, stats: Tensor, sigma: float) -> Tensor:
        """What each code receives of per-winner statistics `[K, D]`: `kernel(sigma).t() @ stats`, `[K, D]`.

        Computed along the grid's two axes in turn: both neighbourhoods factor into a row and a column kernel
        (exp(-(dr^2 + dc^2) / 2 sigma^2) and max(dr, dc) <= sigma), and so do their row sums, so the normalised
        `[K, K]` kernel is the Kronecker product of two small ones. At K = 1024 (32 x 32) that is 2 x 32 instead of
        1024 multiply-adds per code and column, and no `[K, K]` matrix is built (it cost a tenth of a cpu
        training step while the map anneals).
        """
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if stats.ndim != 2 or stats.shape[0] != self.codebook_size:
            raise ValueError(f"stats must be [codebook_size={self.codebook_size}, D], got {tuple(stats.shape)}")
        if sigma == 0:
            return stats
        rows, cols = self.shape
        a_rows = self._axis_kernel(rows, sigma, stats.device).to(stats.dtype)
        a_cols = self._axis_kernel(cols, sigma, stats.device).to(stats.dtype)
        grid = stats.reshape(rows, cols, -1)
        grid = torch.einsum("ia,ijd->ajd", a_rows, grid)  # along the rows
        return torch.einsum("jb,ajd->abd", a_cols, grid).reshape(self.codebook_size, -1)  # along the columns


def _check_codebook(codebook: Tensor, grid: SOMGrid) -> None:
    if codebook.dim() != 2 or codebook.shape[0] != grid.codebook_size:
        raise ValueError(
            f"codebook must be [K, D] with K = {grid.codebook_size} (the grid's size), got {tuple(codebook.shape)}"
        )


def topographic_error(codebook: Tensor, data: Tensor, grid: SOMGrid) -> float:
    """Fraction of samples whose best and second-best codes are not grid neighbours.

    Neighbours are the 8-neighbourhood (Chebyshev grid distance 1).

    Args:
        codebook: `[K, D]` codes laid out on `grid`.
        data: `[N, D]` samples.
    Returns: error in [0, 1]; 0 for a perfectly ordered map.
    """
    _check_codebook(codebook, grid)
    if data.dim() != 2 or data.shape[1] != codebook.shape[1] or data.shape[0] < 1:
        raise ValueError(f"data must be [N, {codebook.shape[1]}] with N >= 1, got {tuple(data.shape)}")
    if grid.codebook_size < 2:
        raise ValueError("topographic_error needs a codebook with at least 2 codes")
    codebook = codebook.detach().float()
    dist = torch.cdist(data.detach().float().to(codebook.device), codebook)  # [N, K]
    best_two = dist.topk(2, dim=1, largest=False).indices  # [N, 2]
    coords = grid.coords.to(codebook.device)
    gap = (coords[best_two[:, 0]] - coords[best_two[:, 1]]).abs().amax(dim=1)  # [N]
    return (gap > 1).float().mean().item()


def _grid_adjacent_pairs(grid: SOMGrid) -> tuple[Tensor, Tensor]:
    """Index pairs (a, b) of 4-neighbours on the grid, each unordered pair once."""
    rows, cols = grid.shape
    index = torch.arange(rows * cols).reshape(rows, cols)
    right = (index[:, :-1].reshape(-1), index[:, 1:].reshape(-1))
    down = (index[:-1, :].reshape(-1), index[1:, :].reshape(-1))
    return torch.cat([right[0], down[0]]), torch.cat([right[1], down[1]])


def neighbour_distance_ratio(codebook: Tensor, grid: SOMGrid) -> float:
    """Mean distance between 4-adjacent codes divided by the mean distance over all code pairs.

    Well below 1 for an ordered map (neighbours on the grid are close in space); about 1 when
    the codes are shuffled over the grid.

    Args:
        codebook: `[K, D]` codes laid out on `grid` (K >= 2).
    """
    _check_codebook(codebook, grid)
    a, b = _grid_adjacent_pairs(grid)
    if a.numel() == 0:
        raise ValueError(f"grid of shape {grid.shape} has no adjacent codes")
    codebook = codebook.detach().float()
    adjacent = (codebook[a] - codebook[b]).norm(dim=1).mean()
    all_pairs = torch.cdist(codebook, codebook)
    k = codebook.shape[0]
    mean_all = all_pairs.sum() / (k * (k - 1))  # diagonal is zero: mean over distinct pairs
    return (adjacent / mean_all).item()


def u_matrix(codebook: Tensor, grid: SOMGrid) -> Tensor:
    """Unified distance matrix: mean distance from each code to its 4-neighbours on the grid.

    Args:
        codebook: `[K, D]` codes laid out on `grid`.
    Returns: `[rows, cols]`; high values mark cluster borders. Codes without neighbours get 0.
    """
    _check_codebook(codebook, grid)
    rows, cols = grid.shape
    codes = codebook.detach().float().reshape(rows, cols, -1)
    total = torch.zeros(rows, cols, device=codes.device)
    count = torch.zeros(rows, cols, device=codes.device)
    vertical = (codes[1:] - codes[:-1]).norm(dim=-1)  # [rows-1, cols]
    horizontal = (codes[:, 1:] - codes[:, :-1]).norm(dim=-1)  # [rows, cols-1]
    total[1:] += vertical
    total[:-1] += vertical
    count[1:] += 1
    count[:-1] += 1
    total[:, 1:] += horizontal
    total[:, :-1] += horizontal
    count[:, 1:] += 1
    count[:, :-1] += 1
    return total / count.clamp(min=1)


# ----------------------------------------------------------------------------- grid tooling for codebook maps


def layout_grid(codebook) -> SOMGrid:
    """The grid a codebook is drawn on: its SOM grid (``codebook.som``), or for a plain codebook the near-square
    layout of its code indices. ``codebook``: a ``VectorQuantizer`` (anything with ``som``, ``codebook_size``)."""
    return codebook.som if codebook.som is not None else SOMGrid(codebook.codebook_size)


def grid_label(codebook) -> str:
    """``"SOM 32x32"`` or ``"plain EMA, index order 32x32"`` for titles."""
    rows, cols = layout_grid(codebook).shape
    return f"SOM {rows}x{cols}" if codebook.som is not None else f"plain EMA, index order {rows}x{cols}"


def shuffled(codebook: Tensor, seed: int = 0) -> Tensor:
    """The same codes ``[K, d]`` in a random order on the grid: the reference for 'no topography'."""
    order = torch.randperm(codebook.shape[0], generator=torch.Generator().manual_seed(seed))
    return codebook[order.to(codebook.device)]


def topography(codebook: Tensor, data: Tensor, grid: SOMGrid, seed: int = 0) -> dict[str, float]:
    """Map-quality numbers of ``codebook [K, d]`` laid out on ``grid``, on ``data [N, d]``, each also for the same
    codes shuffled over the grid (``*_shuffled``, the chance level): ``topographic_error`` (fraction of samples
    whose two nearest codes are not grid neighbours) and ``neighbour_distance_ratio`` (about 1 when shuffled)."""
    mixed = shuffled(codebook, seed)
    return {
        "topographic_error": topographic_error(codebook, data, grid),
        "topographic_error_shuffled": topographic_error(mixed, data, grid),
        "neighbour_distance_ratio": neighbour_distance_ratio(codebook, grid),
        "neighbour_distance_ratio_shuffled": neighbour_distance_ratio(mixed, grid),
    }


def short_fit_grid(codebook_size: int, steps: int, sigma_start: float | None = None,
                   schedule: str = "linear") -> SOMGrid:
    """Near-square grid for a short fit (:func:`fit_codebooks`): width ``sigma_start`` (default max(rows, cols) / 2)
    annealed to 0 over the first 80% of ``steps``. With a linear schedule this untangles the random order of a
    k-means initialisation within a few hundred steps (a narrower or faster-shrinking kernel leaves twists)."""
    grid = SOMGrid(codebook_size)
    sigma_start = max(grid.shape) / 2.0 if sigma_start is None else sigma_start
    return SOMGrid(codebook_size, sigma_start=sigma_start, anneal_steps=max(1, int(0.8 * steps)), schedule=schedule)


def fit_codebooks(build, vectors: Tensor, steps: int, batch_size: int, seed: int = 0):
    """Fit the quantizer ``build()`` returns to fixed ``vectors [N, d]`` with EMA (and SOM) updates only.

    Each step quantises ``batch_size`` vectors drawn with replacement (seeded by ``seed``), as one ``[1, d, batch]``
    sequence in training mode. ``torch.manual_seed(seed)`` is set before ``build()``: the codebook's k-means init
    and dead-code draws use the global generator. Used for the image-patch demo and the plain-EMA reference of the
    codebook maps. Returns the quantizer in eval mode.
    """
    if vectors.dim() != 2 or vectors.shape[0] < 1:
        raise ValueError(f"vectors must be [N, d] with N >= 1, got {tuple(vectors.shape)}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    quantizer = build()
    quantizer.train()
    for _ in range(steps):
        batch = vectors[torch.randint(vectors.shape[0], (batch_size,), generator=generator)]
        quantizer(batch.t().unsqueeze(0))  # [1, d, batch]: quantizers work on channel-first sequences
    return quantizer.eval()
