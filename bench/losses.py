"""What the reconstruction losses cost: forward + backward of each term at the ``cpu`` preset's batch, 2 threads.

    python bench/losses.py              # 8 x 1 s at 24 kHz, 15 interleaved rounds
    python bench/losses.py --repeats 30 --batch 4
    python bench/losses.py --quick        # 3 rounds at batch 2: a smoke run of seconds

Each row times one loss module on a fresh estimate that requires a gradient (the reference does not, as in
training), interleaved round by round with the others; the ``share`` column is its median over the median of the
``complex_stft`` term at ``phase_derivative=0``. Writes ``bench/results/losses.csv``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine_note, markdown_table, median, set_threads, timed, write_csv  # noqa: E402

from lib.config import load_config  # noqa: E402
from lib.training.losses import ComplexSTFTLoss, MultiScaleMelLoss  # noqa: E402


def loss_modules(preset: str) -> dict[str, torch.nn.Module]:
    """The preset's mel loss and its complex-STFT loss with and without the phase-derivative part."""
    cfg = load_config(preset)
    lo, sr = cfg.loss, cfg.data.sample_rate

    def complex_stft(derivative: float) -> ComplexSTFTLoss:
        return ComplexSTFTLoss(sample_rate=sr, phase_max_hz=lo.phase_max_hz, phase_derivative=derivative)

    return {"mel": MultiScaleMelLoss(sr, windows=tuple(lo.mel_windows), log_distance=lo.mel_log_distance,
                                     log_weight=lo.mel_log_weight),
            "complex_stft, phase_derivative=0": complex_stft(0.0),
            "complex_stft, phase_derivative=1": complex_stft(1.0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="items per batch (default: the preset's)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="3 rounds at batch 2")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.batch = 3, 2
    set_threads(args.threads)
    cfg = load_config(args.preset)
    batch = args.batch or cfg.data.batch_size
    samples = int(cfg.data.segment_seconds * cfg.data.sample_rate)
    torch.manual_seed(0)
    reference = 0.1 * torch.randn(batch, 1, samples)

    def task(module: torch.nn.Module):
        def run() -> float:
            estimate = (reference + 0.03 * torch.randn_like(reference)).requires_grad_(True)
            seconds, _ = timed(lambda: module(estimate, reference).backward())
            return seconds
        return run

    modules = loss_modules(args.preset)
    times = interleaved({name: task(m) for name, m in modules.items()}, repeats=args.repeats, warmup=2)
    base = median(times["complex_stft, phase_derivative=0"])
    rows = [{"loss": name, "batch": f"{batch} x {samples}", "median_ms": round(1000 * median(t), 1),
             "share": round(median(t) / base, 2)} for name, t in times.items()]
    write_csv(rows, "losses")
    print(markdown_table(rows, ["loss", "batch", "median_ms", "share"]))
    print(machine_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
