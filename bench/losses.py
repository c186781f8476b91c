"""What the reconstruction losses cost: forward + backward of each term at the ``cpu`` preset's batch, 2 threads.

    python bench/losses.py              # 8 x 1 s at 24 kHz, 15 interleaved rounds
    python bench/losses.py --repeats 30 --batch 4
    python bench/losses.py --quick        # 3 rounds at batch 2: a smoke run of seconds
    python bench/losses.py --train-steps  # also whole Trainer.train_step calls, phase_derivative 0 vs 1 (~3 min)

Each row times one loss module on a fresh estimate that requires a gradient (the reference does not, as in
training), interleaved round by round with the others; the ``share`` column is its median over the median of the
``complex_stft`` term at ``phase_derivative=0``. Writes ``bench/results/losses.csv``. With ``--train-steps``, two
trainers of the preset on the default corpus (``phase_derivative`` 0 and 1, the quantizer on after 2 warm-up steps)
take 8 steps each in turn for ``--repeats`` // 5 rounds after 20 unmeasured ones: the cost in a whole step
(``bench/results/losses_steps.csv``).
"""
from __future__ import annotations

import argparse
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


def loss_modules(preset: str) -> dict[str, torch.nn.Module]:
    """The preset's mel loss and its complex-STFT loss with and without the phase-derivative part, built by the
    trainer's own loss-term registry."""
    def term(name: str, derivative: float) -> torch.nn.Module:
        return LOSS_TERMS.get(name)(load_config(preset, [f"loss.phase_derivative={derivative}"])).loss

    return {"mel": term("mel", 0.0), "complex_stft, phase_derivative=0": term("complex_stft", 0.0),
            "complex_stft, phase_derivative=1": term("complex_stft", 1.0)}


def step_times(preset: str, rounds: int, data: Path = DATA) -> list[dict]:
    """Median `Trainer.train_step` seconds with `phase_derivative` 0 and 1, alternated 8 steps at a time."""
    if not Path(data).is_dir():
        raise SystemExit(f"--train-steps needs the default corpus in {data} (notebook 01 or `make workbook` builds it)")

    def task(tr):
        return lambda: [timed(lambda: tr.train_step(tr.batches[tr.step + tr.skipped]))[0] for _ in range(8)]

    with tempfile.TemporaryDirectory(prefix="bench-losses-") as tmp:
        trainers = {}
        for derivative in (0.0, 1.0):
            cfg = load_config(preset, [f"loss.phase_derivative={derivative}", "train.quantizer_warmup_steps=2"])
            tr = Trainer(cfg, data, Path(tmp) / f"pd{derivative:g}", resume=False, progress=False)
            for _ in range(20):  # past the warm-up and the k-means pooling
                tr.train_step(tr.batches[tr.step + tr.skipped])
            trainers[f"train_step, phase_derivative={derivative:g}"] = tr
        times = interleaved({name: task(tr) for name, tr in trainers.items()}, repeats=rounds, warmup=0)
        for tr in trainers.values():
            tr.close()
    meds = {name: median([t for r in runs for t in r]) for name, runs in times.items()}
    base = meds["train_step, phase_derivative=0"]
    return [{"step": name, "median_s": round(m, 3), "ratio": round(m / base, 2)} for name, m in meds.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="items per batch (default: the preset's)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="3 rounds at batch 2")
    ap.add_argument("--train-steps", action="store_true", help="also time whole training steps (needs the corpus)")
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
    if args.train_steps:
        steps = step_times(args.preset, max(1, args.repeats // 5))
        write_csv(steps, "losses_steps")
        print(markdown_table(steps, ["step", "median_s", "ratio"]))
    print(machine_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
