"""What the reconstruction losses cost: forward + backward of each term at the ``cpu`` preset's batch, 2 threads.

    python bench/losses.py              # 8 x 1 s at 24 kHz, 15 interleaved rounds
    python bench/losses.py --repeats 30 --batch 4
    python bench/losses.py --quick        # 3 rounds at batch 2: a smoke run of seconds
    python bench/losses.py --train-steps  # also whole Trainer.train_step calls, each setting in turn (~3 min)
    python bench/losses.py --compare loss.phase_derivative=0 loss.stft_hop_fraction=0.5   # other settings
    python bench/losses.py --train-steps --compare "train.discriminators=[stft];train.disc_crop_seconds=0.25"

Each row times the preset's ``mel`` or ``complex_stft`` term, or the same term under one ``--compare`` override
(default: ``loss.stft_hop_fraction=0.25`` and ``0.5``, the spectral losses' hop), on a fresh estimate that requires
a gradient (the reference does not, as in training), interleaved round by round with the others; the ``share``
column is its median over the median of the preset's ``complex_stft``. Writes ``bench/results/losses.csv``. With
``--train-steps``, one trainer of the preset and one per override on the default corpus (the quantizer on after 2
warm-up steps) take 8 steps each in turn for ``--repeats`` // 5 rounds after 20 unmeasured ones: the cost in a
whole step (``bench/results/losses_steps.csv``, ``ratio`` of the mean step against the preset's: with
``train.disc_every`` the steps alternate between two costs, and the mean is what a run pays).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# `common` before torch: it sets OMP_WAIT_POLICY, which libgomp reads only when torch loads it.
from common import DATA, interleaved, machine_note, markdown_table, median, set_threads, timed, write_csv  # noqa: E402

import torch  # noqa: E402

from lib.config import load_config  # noqa: E402
from lib.training.objectives import LOSS_TERMS  # noqa: E402
from lib.training.trainer import Trainer  # noqa: E402


COMPARE = ("loss.stft_hop_fraction=0.25", "loss.stft_hop_fraction=0.5")


def settings(compare: tuple[str, ...]) -> dict[str, list[str]]:
    """``{label: overrides}``: the preset as it is (``preset``), then one entry per ``KEY=VALUE`` of ``compare``."""
    return {"preset": [], **{item: item.split(";") for item in compare}}


def loss_modules(preset: str, compare: tuple[str, ...] = COMPARE) -> dict[str, torch.nn.Module]:
    """The ``mel`` and ``complex_stft`` terms of the preset and of each override, built by the trainer's own
    loss-term registry; keys ``"<term>, <setting>"``."""
    out = {}
    for name in ("mel", "complex_stft"):
        for label, overrides in settings(compare).items():
            out[f"{name}, {label}"] = LOSS_TERMS.get(name)(load_config(preset, overrides)).loss
    return out


def step_times(preset: str, rounds: int, compare: tuple[str, ...] = COMPARE, data: Path = DATA,
               warmup_steps: int = 20) -> list[dict]:
    """Median `Trainer.train_step` seconds of the preset and of each override, alternated 8 steps at a time."""
    if not Path(data).is_dir():
        raise SystemExit(f"--train-steps needs the default corpus in {data} (notebook 01 or `make workbook` builds it)")

    def task(tr):
        return lambda: [timed(lambda: tr.train_step(tr.batches[tr.step + tr.skipped]))[0] for _ in range(8)]

    with tempfile.TemporaryDirectory(prefix="bench-losses-") as tmp:
        trainers = {}
        for i, (label, overrides) in enumerate(settings(compare).items()):
            cfg = load_config(preset, overrides + ["train.quantizer_warmup_steps=2"])
            tr = Trainer(cfg, data, Path(tmp) / f"setting{i}", resume=False, progress=False)
            for _ in range(warmup_steps):  # past the warm-up and the k-means pooling
                tr.train_step(tr.batches[tr.step + tr.skipped])
            trainers[f"train_step, {label}"] = tr
        times = interleaved({name: task(tr) for name, tr in trainers.items()}, repeats=rounds, warmup=0)
        for tr in trainers.values():
            tr.close()
    every = {name: [t for r in runs for t in r] for name, runs in times.items()}
    base = statistics.mean(every["train_step, preset"])
    # the mean is what a run pays: with train.disc_every = k the steps alternate between two costs
    return [{"step": name, "median_s": round(median(t), 3), "mean_s": round(statistics.mean(t), 3),
             "ratio": round(statistics.mean(t) / base, 2)} for name, t in every.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="items per batch (default: the preset's)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="3 rounds at batch 2")
    ap.add_argument("--train-steps", action="store_true", help="also time whole training steps (needs the corpus)")
    ap.add_argument("--compare", nargs="*", default=list(COMPARE), metavar="KEY=VALUE",
                    help="settings to time beside the preset's: one override each, or several joined by ';'")
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

    modules = loss_modules(args.preset, tuple(args.compare))
    times = interleaved({name: task(m) for name, m in modules.items()}, repeats=args.repeats, warmup=2)
    base = median(times["complex_stft, preset"])
    rows = [{"loss": name, "batch": f"{batch} x {samples}", "median_ms": round(1000 * median(t), 1),
             "share": round(median(t) / base, 2)} for name, t in times.items()]
    write_csv(rows, "losses")
    print(markdown_table(rows, ["loss", "batch", "median_ms", "share"]))
    if args.train_steps:
        steps = step_times(args.preset, max(1, args.repeats // 5), tuple(args.compare))
        write_csv(steps, "losses_steps")
        print(markdown_table(steps, ["step", "median_s", "mean_s", "ratio"]))
    print(machine_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
