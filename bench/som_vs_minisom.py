"""Our SOM codebook (``VectorQuantizer`` + ``SOMGrid``, batch Kohonen rule) vs MiniSom (online Kohonen rule).

    .venv/bin/python bench/som_vs_minisom.py            # 5000 samples, 10 passes, 5 interleaved runs
    .venv/bin/python bench/som_vs_minisom.py --quick    # 1000 samples, 4 passes, 2 runs

Method
- Data (scikit-learn's two sample images, shipped with the package): ``colours`` = RGB pixels in [0, 1]
  (3-d); ``patches`` = 4x4 RGB patches in [0, 1] (48-d). Disjoint random train and test sets per run seed.
- Same grid (16 x 16 = 256 units), same number of passes over the same training set, same starting width
  sigma0 = 16 / 4 = 4 (our default), Gaussian neighbourhood, both started on random training samples
  (ours: k-means init with 0 iterations; MiniSom: ``random_weights_init``).
- Ours: ``VectorQuantizer(D, 256, decay=0.8, kmeans_init=True, kmeans_iters=0, dead_code_threshold=0,
  som=SOMGrid(256, sigma_start=4, sigma_end, anneal_steps=all steps, schedule="linear"))``, trained by
  calling it in training mode on batches ``[1, D, 256]`` (one batch-EMA Kohonen step per call). No dead-code
  replacement (a SOM keeps every unit in place; MiniSom has none either). Two variants: ``sigma_end=0`` (what
  the codec does: the map ends as plain EMA k-means) and ``sigma_end=sigma0/3`` (where MiniSom's asymptotic
  decay ends). Batch, decay and schedule were chosen on seed 1 (a small grid: schedule exp/linear, decay
  0.5/0.8/0.9, batch 256/1000); the table uses seeds 100.., so it is not scored on the data they were picked on.
- MiniSom: ``MiniSom(16, 16, D, sigma=4, learning_rate=0.5)`` (asymptotic decay of sigma and rate, its
  defaults), ``train(x, passes * N, random_order=True)`` (one online update per sample).
- Metrics on the held-out test set, one definition for both: quantisation error = mean Euclidean distance to the
  best-matching unit; topographic error = ``lib.model.som.topographic_error`` (best and second-best units not
  8-neighbours), applied to MiniSom's weights reshaped row-major to ``[256, D]`` (our grid's code order).
  MiniSom's own ``topographic_error`` is printed alongside as a cross-check of the shared definition.
- Time: wall time of training only (2 torch threads; MiniSom is NumPy), runs interleaved ours / MiniSom / ...,
  medians over the seeds.
- Target: our topographic error no worse than MiniSom's, in no more time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_note, markdown_table, median, set_threads, write_csv  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

GRID = (16, 16)
SIGMA0 = max(GRID) / 4.0


def sample_data(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test sets ``[n, D]`` float32 in [0, 1]: RGB pixels (D=3) or 4x4 RGB patches (D=48)."""
    from sklearn.datasets import load_sample_images

    images = [np.asarray(im, dtype=np.float32) / 255.0 for im in load_sample_images().images]  # [H, W, 3]
    rng = np.random.default_rng(seed)
    size = 1 if kind == "colours" else 4
    if kind not in ("colours", "patches"):
        raise ValueError(f"kind must be 'colours' or 'patches', got {kind!r}")
    out = []
    for _ in range(2 * n):
        im = images[rng.integers(len(images))]
        r, c = rng.integers(im.shape[0] - size + 1), rng.integers(im.shape[1] - size + 1)
        out.append(im[r:r + size, c:c + size].reshape(-1))
    data = np.stack(out)
    return data[:n], data[n:]


def quantisation_error(codebook: np.ndarray, data: np.ndarray) -> float:
    """Mean Euclidean distance from each sample ``[N, D]`` to its nearest code ``[K, D]``."""
    dist = torch.cdist(torch.from_numpy(data), torch.from_numpy(codebook).float())
    return float(dist.min(dim=1).values.mean())


def train_ours(train: np.ndarray, passes: int, batch: int, decay: float, sigma_end: float, schedule: str,
               seed: int) -> tuple[np.ndarray, float]:
    """Train our SOM codebook; returns (codebook ``[K, D]``, seconds)."""
    from lib.model.quantize import VectorQuantizer
    from lib.model.som import SOMGrid

    torch.manual_seed(seed)
    k = GRID[0] * GRID[1]
    steps_per_pass = int(np.ceil(len(train) / batch))
    grid = SOMGrid(k, shape=GRID, neighbourhood="gaussian", sigma_start=SIGMA0, sigma_end=sigma_end,
                   anneal_steps=passes * steps_per_pass, schedule=schedule)
    vq = VectorQuantizer(train.shape[1], k, decay=decay, kmeans_init=True, kmeans_iters=0,
                         dead_code_threshold=0.0, som=grid).train()
    x = torch.from_numpy(train)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(passes):
            order = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), batch):
                vq(x[order[i:i + batch]].t().unsqueeze(0))  # [1, D, batch]: one batch Kohonen/EMA step
    seconds = time.perf_counter() - t0
    return vq.embed.detach().numpy().copy(), seconds


def train_minisom(train: np.ndarray, passes: int, seed: int):
    """Train MiniSom; returns (the MiniSom, codebook ``[K, D]`` in row-major grid order, seconds)."""
    from minisom import MiniSom

    som = MiniSom(GRID[0], GRID[1], train.shape[1], sigma=SIGMA0, learning_rate=0.5,
                  neighborhood_function="gaussian", random_seed=seed)
    som.random_weights_init(train)
    t0 = time.perf_counter()
    som.train(train, passes * len(train), random_order=True)
    seconds = time.perf_counter() - t0
    return som, som.get_weights().reshape(-1, train.shape[1]).astype(np.float32), seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1000 samples, 4 passes, 2 runs")
    ap.add_argument("--n", type=int, default=None, help="training (and test) samples (default 5000)")
    ap.add_argument("--passes", type=int, default=None, help="passes over the training set (default 10)")
    ap.add_argument("--runs", type=int, default=None, help="seeds per method (default 5)")
    ap.add_argument("--batch", type=int, default=256, help="our batch size (>= 256 units for the init)")
    ap.add_argument("--decay", type=float, default=0.8, help="our EMA decay per batch")
    ap.add_argument("--schedule", default="linear", help="our sigma schedule (linear | exp)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed0", type=int, default=100, help="first seed (settings were chosen on seed 1)")
    args = ap.parse_args(argv)
    n = args.n or (1000 if args.quick else 5000)
    passes = args.passes or (4 if args.quick else 10)
    runs = args.runs or (2 if args.quick else 5)
    set_threads(args.threads)
    from lib.model.som import SOMGrid, topographic_error

    grid = SOMGrid(GRID[0] * GRID[1], shape=GRID)
    methods = {"ours (sigma_end 0)": 0.0, f"ours (sigma_end {SIGMA0 / 3:.2f})": SIGMA0 / 3, "minisom": None}
    rows = []
    for kind in ("colours", "patches"):
        results: dict[str, list[dict]] = {m: [] for m in methods}
        for seed in range(args.seed0, args.seed0 + runs):
            train, test = sample_data(kind, n, seed)
            for method, sigma_end in methods.items():  # interleaved: ours, ours, minisom, ours, ...
                own_te = float("nan")
                if sigma_end is None:
                    som, codebook, seconds = train_minisom(train, passes, seed)
                    own_te = float(som.topographic_error(test))
                else:
                    codebook, seconds = train_ours(train, passes, args.batch, args.decay, sigma_end,
                                                   args.schedule, seed)
                res = {"qe": quantisation_error(codebook, test),
                       "te": topographic_error(torch.from_numpy(codebook), torch.from_numpy(test), grid),
                       "own_te": own_te, "seconds": seconds}
                results[method].append(res)
                print(f"  {kind} seed {seed} {method}: QE {res['qe']:.4f} TE {res['te']:.4f} "
                      f"({seconds:.2f} s)", flush=True)
        ref = results["minisom"]
        for method, res in results.items():
            rows.append({
                "data": f"{kind} (D={train.shape[1]})", "method": method,
                "quantisation error": median([r["qe"] for r in res]),
                "topographic error": median([r["te"] for r in res]),
                "minisom's own TE": median([r["own_te"] for r in res]) if method == "minisom" else None,
                "train time (s)": median([r["seconds"] for r in res]),
                "time / minisom": median([r["seconds"] / m["seconds"] for r, m in zip(res, ref)]),
                "TE <= minisom's": median([r["te"] for r in res]) <= median([m["te"] for m in ref]),
            })
    print(f"\n### SOM on a {GRID[0]}x{GRID[1]} grid, {n} training / {n} test samples, {passes} passes "
          f"(medians of {runs} seeds from {args.seed0}, interleaved, {args.threads} threads)\n")
    print(markdown_table(rows))
    print(f"\nours: batch {args.batch}, EMA decay {args.decay}, {args.schedule} schedule from sigma {SIGMA0:g}; "
          f"minisom: online, sigma {SIGMA0:g}, learning rate 0.5, asymptotic decay. {machine_note()}")
    print(f"wrote {write_csv(rows, 'som_vs_minisom_quick' if args.quick else 'som_vs_minisom').relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
