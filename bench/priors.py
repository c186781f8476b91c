"""The codebook-prior experiment: does a SOM codebook make attention over its codes more robust?

The seed's hope was that self-organising-map codebooks "make attention mechanisms on the codebook more robust
(since the codebook has a natural notion of neighborhood and proximity among entries)". Two codecs of the same
recipe, one with SOM codebooks and one with plain EMA codebooks, each get a prior over their codes (a small causal
transformer, ``lib.model.prior``; code embeddings learned, from the grid, or from the codebook vectors), and on the
held-out codes of ``--split`` this measures (``lib.analysis.priors``):

- bits per code, the share below the packed payload, top-1 / top-5 accuracy;
- where the wrong top-1 guesses land: grid distance and code-space distance, beside random guesses; and what the
  decoder plays when it trusts the guesses of level 0 (mel distance to the clean decode, DNSMOS);
- the decoded damage when a share of the codes is replaced by a grid neighbour, the nearest other code or a random
  code, and under bit errors in the packed payload;
- the prior's own bits when its context is damaged that way (robustness of its attention);
- continuations of 2 s prompts, scored by DNSMOS and written as WAV files to listen to.

    python bench/priors.py --codec som=runs/race_mix/share40/step4019.pt --codec ema=runs/ema/checkpoint.pt \\
        --data data/default --split test

Writes ``bench/results/priors*.csv``, ``figures/bench_priors.png`` and ``runs/priors/<codec>/*.wav``; priors are
fitted (or resumed) beside each codec checkpoint as ``prior-<embedding>.pt``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
# `common` before torch: it sets OMP_WAIT_POLICY, which libgomp reads only when torch loads it.
from common import DATA, REPO, markdown_table, set_threads, write_csv  # noqa: E402

import torch  # noqa: E402

from lib.analysis.metrics import dnsmos_unavailable  # noqa: E402
from lib.analysis.priors import (REPLACEMENTS, context_robustness, continuations, damage_table,  # noqa: E402
                                 held_out_codes, mistakes, plot_bit_errors, plot_context, plot_damage, prior_report,
                                 trusted_damage)
from lib.bitstream.prior_fit import PriorTraining, fit_prior  # noqa: E402
from lib.data.audio import save_audio  # noqa: E402
from lib.training.checkpoint import load_codec  # noqa: E402

SHARES = (0.02, 0.05, 0.1, 0.2)
BIT_ERROR_RATES = (1e-4, 1e-3, 1e-2, 3e-2)
PRIOR = {"d_model": 128, "n_layers": 2, "n_heads": 4, "context": 128}  # small: six of them fit in minutes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", action="append", required=True, metavar="NAME=CHECKPOINT",
                    help="a codec to study (give the SOM one and its plain-EMA twin)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--group", default="speech", help="the clips studied: speech (recorded), synthetic speech, ...")
    ap.add_argument("--embeddings", nargs="+", default=["learned", "som_grid", "codebook"])
    ap.add_argument("--steps", type=int, default=1500, help="training steps of each prior")
    ap.add_argument("--damage-clips", type=int, default=8, help="clips decoded per damage setting")
    ap.add_argument("--damage-seconds", type=float, default=6.0, help="of each of those clips, at most")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="priors")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    dnsmos = dnsmos_unavailable() is None
    reports, missed, damage, robust, made = [], [], [], [], []
    for spec in args.codec:
        name, _, checkpoint = spec.partition("=")
        codec, cfg = load_codec(checkpoint)
        sr, q = cfg.data.sample_rate, codec.quantizer
        group, clips = held_out_codes(codec, args.data, args.split, args.group)
        codes = [c for _, c in clips]
        print(f"== {name}: {checkpoint}, {len(codes)} {group} clips of the {args.split} split "
              f"({sum(c.shape[1] for c in codes)} frames)", flush=True)
        # the damage is decoded and scored by DNSMOS setting by setting: up to --damage-seconds of each clip
        judged = [c[:, :round(args.damage_seconds * cfg.frame_rate)] for c in codes[:args.damage_clips]]
        damage += [{"codec": name, **r} for r in damage_table(codec, judged, SHARES,
                                                              BIT_ERROR_RATES, args.seed, dnsmos)]
        print(f"  damage: {len(judged)} clips of up to {args.damage_seconds:g} s decoded per setting", flush=True)
        for embedding in args.embeddings:
            out = Path(checkpoint).parent / f"prior-{embedding}.pt"
            prior, _, _ = fit_prior(checkpoint, args.data, out, embedding=embedding, settings=PRIOR,
                                    training=PriorTraining(steps=args.steps, seed=args.seed), progress=True)
            report = prior_report(prior, codes)
            reports.append({"codec": name, "embedding": embedding, "bits_per_code": report["bits_per_code"],
                            "saving": report["saving"], **{f"top1_{r['level']}": r["top1"] for r in report["levels"]},
                            "top5_0": report["levels"][0]["top5"]})
            trusted = trusted_damage(codec, prior, judged, dnsmos)
            missed.append({"codec": name, "embedding": embedding, **mistakes(prior, q, codes),
                           **{f"trusted_{k}": v for k, v in trusted.items()}})
            robust += [{"codec": name, "embedding": embedding, **r}
                       for r in context_robustness(prior, q, codes, seed=args.seed)]
            if embedding == args.embeddings[0]:  # continuations, written out to listen to
                out_dir = REPO / "runs" / "priors" / name
                out_dir.mkdir(parents=True, exist_ok=True)
                for c in continuations(codec, prior, clips, n=3):
                    save_audio(out_dir / f"{Path(c.pop('name')).name}.wav", c.pop("audio"), sr)
                    made.append({"codec": name, "embedding": embedding, **c})
            print(f"  {embedding}: {report['bits_per_code']:.3f} bits/code ({100 * report['saving']:.1f} % below "
                  f"packed), top-1 {report['levels'][0]['top1']:.3f}", flush=True)
    for rows, suffix, columns in (
            (reports, "", None), (missed, "_mistakes", None), (damage, "_damage", None),
            (robust, "_context", None), (made, "_continuations", None)):
        write_csv(rows, args.out + suffix)
        print(markdown_table(rows, columns or list(rows[0])))
    figure(reports, missed, damage, robust).savefig(REPO / "figures" / f"bench_{args.out}.png", dpi=110,
                                                    bbox_inches="tight")
    return 0


def figure(reports, missed, damage, robust):
    """Five panels: bits per code per codec and embedding; where wrong guesses land; decoded damage against the
    share of codes replaced and against bit errors; the prior's bits against the share of its context damaged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(25, 4.4))
    codecs = list(dict.fromkeys(r["codec"] for r in reports))
    embeddings = list(dict.fromkeys(r["embedding"] for r in reports))
    width = 0.8 / len(codecs)
    for i, codec in enumerate(codecs):
        xs = np.arange(len(embeddings)) + i * width
        for ax, rows, key in ((axes[0], reports, "bits_per_code"), (axes[1], missed, "code_distance")):
            ax.bar(xs, [next(r[key] for r in rows if r["codec"] == codec and r["embedding"] == e)
                        for e in embeddings], width, label=codec)
    for ax, title, label in ((axes[0], "Held-out bits per code (packed: log2 K)", "bits per code"),
                             (axes[1], "Wrong top-1 guesses, level 0", "code distance / mean pair (random: 1)")):
        ax.set_xticks(np.arange(len(embeddings)) + 0.4 - width / 2, embeddings)
        ax.set(title=title, ylabel=label)
        ax.legend()
    axes[1].axhline(1.0, color="0.4", ls="--", lw=1)
    plot_damage(axes[2], damage)
    plot_bit_errors(axes[3], damage)
    plot_context(axes[4], [r for r in robust if r["embedding"] == embeddings[0]])
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    sys.exit(main())
