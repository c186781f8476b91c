"""The quality race: held-out quality against training time, one line per system, at equal compute.

Every system is trained by the workbook's own ``Trainer`` on the same corpus with the same seed and batches; the
clock counts training steps only (evaluation pauses it). At each checkpoint time the codec is evaluated on a held-out
split at every rung of the bitrate ladder (n_q = 1, 2, 4, 8), speech and other sounds apart: PESQ-WB, STOI,
SI-SDR and mel distance.

    python bench/quality.py                          # 30 minutes per system on 2 threads, valid split
    python bench/quality.py --split test             # the reported numbers (never tune on them)
    python bench/quality.py --long                   # 2 hours per system
    python bench/quality.py --systems default --steps 600 --eval-steps 150 300 600   # step budget instead

Systems: ``default`` (the ``cpu`` preset), ``seanet`` (the SEANet codec of the ``cpu_seanet`` preset),
``encodec`` (EnCodec's 24 kHz SEANet + LSTM and its RVQ from the ``encodec`` package, random init, behind the
workbook's ``Codec`` interface, trained with the ``cpu`` preset's losses and schedule), and any preset name.
Writes ``bench/results/quality.csv`` (one row per system x time x n_q x kind) and ``figures/bench_quality.png``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, REPO, markdown_table, set_threads, write_csv  # noqa: E402

from lib.analysis.metrics import pesq_wb, si_sdr, stoi  # noqa: E402
from lib.config import load_config  # noqa: E402
from lib.data.datasets import held_out_clips  # noqa: E402
from lib.model.codec import Codec  # noqa: E402
from lib.model.quantize import RVQOutput  # noqa: E402
from lib.training.losses import mel_distance  # noqa: E402
from lib.training.trainer import Trainer  # noqa: E402

SPEECH_FOLDERS = ("speech", "alsa")  # the default corpus's speech sources; everything else counts as "other"
SYSTEMS = {"default": ("cpu", []), "seanet": ("cpu_seanet", []), "encodec": ("cpu", [])}


# ----------------------------------------------------------------------------- EnCodec behind our interface


class EncodecRVQ(nn.Module):
    """EnCodec's ``ResidualVectorQuantization`` with the workbook's quantizer interface (``RVQOutput``)."""

    def __init__(self, dim: int, n_q: int, codebook_size: int):
        super().__init__()
        from encodec.quantization.core_vq import ResidualVectorQuantization

        self.vq = ResidualVectorQuantization(dim=dim, codebook_size=codebook_size, num_quantizers=n_q,
                                             decay=0.99, kmeans_init=True, kmeans_iters=50,
                                             threshold_ema_dead_code=2)
        self.dim, self.n_q, self.codebook_size = dim, n_q, codebook_size

    def forward(self, x: torch.Tensor, n_q: int | None = None) -> RVQOutput:
        if n_q is None:  # EnCodec draws one bandwidth per batch in training
            n_q = int(torch.randint(1, self.n_q + 1, ())) if self.training else self.n_q
        quantized, codes, commit = self.vq(x, n_q=n_q)
        return RVQOutput(quantized, codes.transpose(0, 1), commit.mean(), n_q, [])

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        return self.vq.encode(x, n_q=n_q or self.n_q).transpose(0, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vq.decode(codes.transpose(0, 1))


class _Named(nn.Module):
    """Gives an EnCodec SEANet module the ``channels`` / ``dim`` / ``hop_length`` attributes ``Codec`` checks."""

    def __init__(self, module: nn.Module, channels: int, dim: int, hop_length: int):
        super().__init__()
        self.module, self.channels, self.dim, self.hop_length = module, channels, dim, hop_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def encodec_codec(sample_rate: int = 24000, n_q: int = 8):
    """EnCodec's 24 kHz architecture (causal SEANet, 32 filters, ratios 8 5 4 2, dim 128, 2-layer LSTM), random init."""
    from encodec.modules import SEANetDecoder, SEANetEncoder

    enc = SEANetEncoder(dimension=128, n_filters=32, ratios=[8, 5, 4, 2], causal=True, norm="weight_norm")
    dec = SEANetDecoder(dimension=128, n_filters=32, ratios=[8, 5, 4, 2], causal=True, norm="weight_norm")
    return Codec(_Named(enc, 1, 128, 320), EncodecRVQ(128, n_q, 1024), _Named(dec, 1, 128, 320), sample_rate)


# ----------------------------------------------------------------------------- evaluation


def held_out(data_dir: str | Path, split: str, sample_rate: int, seconds: float) -> list[tuple[str, str, torch.Tensor]]:
    """(name, kind, clip ``[1, 1, T]``) for every clip of ``split``, cut to ``seconds``; kind = speech | other."""
    out = []
    for name, wav in held_out_clips(data_dir, sample_rate, n=10**6, seconds=seconds, split=split).items():
        if wav.shape[-1] < sample_rate // 2 or float(wav.abs().max()) < 1e-4:
            continue  # too short or silent for PESQ/STOI
        kind = "speech" if name.split("/")[0] in SPEECH_FOLDERS else "other"
        out.append((name, kind, wav.unsqueeze(0)))
    return out


@torch.no_grad()
def evaluate(codec, clips, sample_rate: int, n_qs: list[int], pesq: bool = True) -> list[dict]:
    """Mean metrics per (n_q, kind) over ``clips``."""
    codec.eval()
    rows = []
    for n_q in n_qs:
        per_kind: dict[str, list[dict]] = {}
        for _, kind, wav in clips:
            recon = codec(wav, n_q=n_q).recon
            est, ref = recon[0, 0].numpy(), wav[0, 0].numpy()
            m = {"mel_distance": float(mel_distance(recon, wav, sample_rate)), "si_sdr": float(si_sdr(recon, wav)),
                 "stoi": float(stoi(est, ref, sample_rate)),
                 "pesq_wb": float(pesq_wb(est, ref, sample_rate)) if pesq else float("nan")}
            per_kind.setdefault(kind, []).append(m)
        for kind, ms in per_kind.items():
            rows.append({"n_q": n_q, "kind": kind, "kbps": round(codec.bitrate(n_q) / 1000, 2), "clips": len(ms),
                         **{k: float(np.mean([m[k] for m in ms])) for k in ms[0]}})
    codec.train()
    return rows


# ----------------------------------------------------------------------------- the race


def run_system(name: str, args, clips) -> list[dict]:
    preset, overrides = SYSTEMS.get(name, (name, []))
    cfg = load_config(preset, overrides + list(args.set) + ([f"train.steps={args.steps}"] if args.steps else []))
    if not args.steps:  # the LR schedule needs a length: the number of steps the budget is expected to allow
        cfg.train.steps = 10**6
    cfg.train.device = args.device
    run_dir = Path(tempfile.mkdtemp(prefix=f"race-{name}-"))
    codec = encodec_codec(cfg.data.sample_rate, cfg.model.quantizer.n_q) if name == "encodec" else None
    trainer = Trainer(cfg, args.data, run_dir, resume=False, progress=False, codec=codec)
    marks = sorted(args.eval_steps) if args.steps else sorted(m * 60 for m in args.eval_minutes)
    n_qs = [n for n in (1, 2, 4, 8, 16, 32) if n <= cfg.model.quantizer.n_q]
    rows, clock, t_eval = [], 0.0, 0.0
    print(f"== {name}: {trainer.codec.num_parameters() / 1e6:.2f} M parameters", flush=True)
    while marks:
        t0 = time.perf_counter()
        trainer.train_step(trainer.batches[trainer.step])
        clock += time.perf_counter() - t0
        now = trainer.step if args.steps else clock
        if now >= marks[0]:
            marks.pop(0)
            t1 = time.perf_counter()
            codec_eval = trainer.ema if trainer.ema is not None else trainer.codec
            for r in evaluate(codec_eval.cpu() if args.device != "cpu" else codec_eval, clips,
                              cfg.data.sample_rate, n_qs, pesq=not args.no_pesq):
                rows.append({"system": name, "minutes": round(clock / 60, 2), "step": trainer.step, **r})
            if args.device != "cpu":
                codec_eval.to(trainer.device)
            t_eval += time.perf_counter() - t1
            if len(args.systems) == 1:
                write_csv(rows, args.out)  # keep what is measured if the run is cut short
            best = [r for r in rows if r["step"] == trainer.step and r["n_q"] == n_qs[-1] and r["kind"] == "speech"]
            if best:
                b = best[0]
                print(f"  {name} step {trainer.step} ({clock / 60:.1f} min): speech@{b['kbps']}kbps PESQ "
                      f"{b['pesq_wb']:.2f} STOI {b['stoi']:.3f} SI-SDR {b['si_sdr']:.1f} mel {b['mel_distance']:.3f}",
                      flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="+", default=["default", "seanet", "encodec"])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--eval-minutes", type=float, nargs="+", default=None)
    ap.add_argument("--long", action="store_true", help="2 hours per system, evaluated every 15 minutes")
    ap.add_argument("--steps", type=int, default=None, help="a step budget instead of a time budget")
    ap.add_argument("--eval-steps", type=int, nargs="+", default=None)
    ap.add_argument("--clip-seconds", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every system")
    ap.add_argument("--out", default="quality")
    ap.add_argument("--no-pesq", action="store_true", help="skip PESQ (where the pesq package is missing)")
    args = ap.parse_args(argv)
    if args.long:
        args.minutes = 120.0
    if args.eval_minutes is None:
        step = 15 if args.long else 5
        args.eval_minutes = [m for m in range(step, int(args.minutes) + 1, step)] or [args.minutes]
    if args.steps and not args.eval_steps:
        args.eval_steps = [args.steps]
    set_threads(args.threads)
    clips = held_out(args.data, args.split, 24000, args.clip_seconds)
    print(f"{len(clips)} {args.split} clips ({sum(k == 'speech' for _, k, _ in clips)} speech)", flush=True)
    rows = []
    for name in args.systems:
        rows += run_system(name, args, clips)
        write_csv(rows, args.out)
    final = [r for r in rows if r["kind"] == "speech"]
    print(markdown_table(final, ["system", "minutes", "step", "n_q", "kbps", "pesq_wb", "stoi", "si_sdr",
                                 "mel_distance"]))
    race_figure(rows).savefig(REPO / "figures" / f"bench_{args.out}.png", dpi=110, bbox_inches="tight")
    return 0


def race_figure(rows: list[dict]):
    """Speech quality at the full bitrate against training minutes: one panel per metric, one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("pesq_wb", "PESQ-WB"), ("stoi", "STOI"), ("si_sdr", "SI-SDR (dB)"), ("mel_distance", "mel distance")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    top = max(r["n_q"] for r in rows)
    for name in dict.fromkeys(r["system"] for r in rows):
        pts = [r for r in rows if r["system"] == name and r["kind"] == "speech" and r["n_q"] == top]
        for ax, (key, label) in zip(axes, metrics):
            ax.plot([r["minutes"] for r in pts], [r[key] for r in pts], marker="o", label=name)
            ax.set_xlabel("training minutes (2 CPU threads)")
            ax.set_title(label)
            ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"Quality race: held-out speech at n_q = {top}")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    sys.exit(main())
