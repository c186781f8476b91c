"""Ablation of the workbook's research ideas (MultiresConv, wavelet upsampler, energy transformer, SOM codebooks)
at an equal step budget on the default corpus.

    python bench/ablations.py                 # 400 steps per variant, reconstruction losses only (~40 min on 2 cores)
    python bench/ablations.py --steps 60 --quick

Variants: the baseline conv codec (SOM codebooks, as the `cpu` preset), MultiresConv blocks, the wavelet
upsampler, an energy transformer before the RVQ, plain EMA codebooks, and the energy transformer as a continuous
bottleneck (NOT a codec: no bitrate, for comparison only). Every variant trains through the same `Trainer` with
the same seed, data order and number of steps; the GAN is off so that the comparison is about the generator.
Prints a markdown table, writes bench/results/ablations.csv and figures/bench_ablations.png.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lib.config import load_config  # noqa: E402
from lib.training.trainer import Trainer  # noqa: E402

VARIANTS = {
    "baseline (conv, SOM)": [],
    "MultiresConv blocks": ["model.block=multires"],
    "wavelet upsampler": ["model.upsampler=wavelet"],
    "ET + RVQ": ["model.bottleneck=energy"],
    "plain EMA codebooks": ["model.quantizer.som=false"],
    "ET continuous (not a codec)": ["model.bottleneck=energy", "model.continuous=true", "model.quantizer.som=false"],
}


def run_variant(name: str, overrides: list[str], args) -> dict:
    common = [f"train.steps={args.steps}", "train.discriminators=[]", f"train.val_every={args.steps}",
              f"train.ckpt_every={args.steps}", f"train.log_every={max(1, args.steps // 10)}",
              f"model.quantizer.som_anneal_steps={max(1, args.steps // 2)}",
              f"train.quantizer_warmup_steps={args.steps // 4}"]
    cfg = load_config(args.preset, common + overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, args.data, run_dir, resume=False, progress=False)
        step_times = []
        for s in range(args.steps):
            t0 = time.perf_counter()
            trainer.train_step(trainer.batches[s])
            step_times.append(time.perf_counter() - t0)
        val = trainer.validate()
    n_q = cfg.model.quantizer.n_q
    usage = [val[f"usage_{i}"] for i in range(n_q)] if f"usage_0" in val else []
    return {
        "variant": name,
        "params_M": sum(p.numel() for p in trainer.codec.parameters()) / 1e6,
        "step_s": statistics.median(step_times),
        "audio_s_per_s": cfg.data.batch_size * cfg.data.segment_seconds / statistics.median(step_times),
        "mel_distance": val["mel_distance"],
        "si_sdr": val["si_sdr"],
        "min_usage_pct": 100 * min(usage) if usage else float("nan"),
        "mean_usage_pct": 100 * sum(usage) / len(usage) if usage else float("nan"),
        "kbps": cfg.bitrate() / 1000 if not cfg.model.continuous else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", default=str(ROOT / "data" / "default"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny preset, few steps: a smoke run")
    ap.add_argument("--only", nargs="*", help="variant names to run")
    args = ap.parse_args()
    if args.quick:
        args.preset, args.steps = "tiny", min(args.steps, 20)
    torch.set_num_threads(args.threads)
    rows = []
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        rows.append(run_variant(name, overrides, args))
        r = rows[-1]
        print(f"  {name}: mel {r['mel_distance']:.3f}, SI-SDR {r['si_sdr']:.2f} dB, {r['step_s']:.2f} s/step", flush=True)

    cols = ["variant", "params_M", "kbps", "step_s", "audio_s_per_s", "mel_distance", "si_sdr", "min_usage_pct",
            "mean_usage_pct"]
    print(f"\npreset {args.preset}, {args.steps} steps per variant, reconstruction losses only, "
          f"{args.threads} threads\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ablations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    names = [r["variant"] for r in rows]
    for ax, key, label in zip(axes, ("mel_distance", "si_sdr", "step_s"),
                              ("validation mel distance (lower is better)", "validation SI-SDR (dB, higher is better)",
                               "median step time (s, lower is better)")):
        ax.barh(names, [r[key] for r in rows], color=["C0" if "not a codec" not in n else "C7" for n in names])
        ax.set(xlabel=label)
        ax.invert_yaxis()
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.suptitle(f"Ablations: {args.steps} steps of preset '{args.preset}' each, same seed and data", y=1.02)
    fig.tight_layout()
    (ROOT / "figures").mkdir(exist_ok=True)
    fig.savefig(ROOT / "figures" / "bench_ablations.png", dpi=120, bbox_inches="tight")
    return 0


if __name__ == "__main__":
    sys.exit(main())
