"""Codebook health after a fixed training budget: our RVQ with SOM codebooks, with plain EMA codebooks, and
vector-quantize-pytorch's ResidualVQ (library defaults), each inside the same `cpu`-preset codec.

    .venv/bin/python bench/codebooks.py            # 300 steps each (see bench/README.md for the runtime)
    .venv/bin/python bench/codebooks.py --quick    # 20 steps each

Method
- Three trainers (``lib.training.trainer.Trainer``) built from ``load_config("cpu")`` with ``train.discriminators=[]``:
  reconstruction losses only (multi-scale mel + L1 + commitment, the preset's weights), no GAN. They differ
  only in the quantizer: ``som`` (our ResidualVQ, SOM codebooks), ``ema`` (``model.quantizer.som=false``)
  and ``vqtorch`` (``vector_quantize_pytorch.ResidualVQ(dim, num_quantizers=8, codebook_size=1024)``, nothing
  else set, behind :class:`VQTorchRVQ`, swapped in before the optimizer is made).
- They train in lockstep on the same batches (batch ``s`` is the trainer's deterministic ``batches[s]``), one
  step each in turn, so the step times are interleaved too.
- The preset's schedule is scaled to the budget: its quantizer warm-up (latents bypass the quantizer, so
  k-means initialises on informative latents) and its SOM annealing (counted in quantized steps) are
  multiplied by budget / preset steps (300 / 2000: 30 warm-up steps, 225 annealing steps);
  ``--quantizer-warmup`` and ``--som-anneal`` set them explicitly.
- Health on held-out clips (every clip of the valid and test splits, whole): the codes of each level from
  ``codec.encode`` (all 8 levels), then per level: usage = share of the 1024 codes used at least once,
  perplexity = exp(entropy of the code histogram), dead = codes never used. With N held-out frames even a
  perfectly uniform quantizer is expected to leave (1 - 1/K)^N of the codes unused: the "ceiling" column.
- All-zero (digitally silent) held-out frames give one latent, hence one code per level; the script prints
  their share and the perplexity ceiling it implies (one code holding that share, the rest uniform).
- Reconstruction on the trainer's validation clips: mel distance and SI-SDR (``Trainer.validate``).
- Target: usage > 95 % and perplexity > 0.8 x codebook size at every level.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, REPO, machine_note, markdown_table, median, set_threads, write_csv  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402


@dataclass
class AdapterOutput:
    """Same fields as ``lib.model.quantize.RVQOutput``."""

    quantized: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor
    n_q: int
    stats: list


def level_stats(codes: torch.Tensor, codebook_size: int) -> dict:
    """Usage, perplexity (``lib.model.codebook.codebook_stats``) and unused codes of one level's codes."""
    from lib.model.codebook import codebook_stats

    stats = codebook_stats(codes, codebook_size)
    return {**stats, "dead_codes": codebook_size - stats["codes_used"]}


class VQTorchRVQ(nn.Module):
    """``vector_quantize_pytorch.ResidualVQ`` with its defaults, behind ``lib.model.quantize.ResidualVQ``'s interface.

    forward(x ``[B, D, T]``, n_q=None) -> AdapterOutput(quantized ``[B, D, T]``, codes ``[B, n_q, T]``,
    commit_loss (mean over levels), n_q, stats); ``encode(x, n_q) -> [B, n_q, T]``; ``decode(codes) -> [B, D, T]``.
    The library has no per-call number of levels, so ``n_q < n_q_max`` in forward runs every level and keeps
    the first ``n_q`` (straight-through on their sum).
    """

    def __init__(self, dim: int, n_q: int, codebook_size: int):
        super().__init__()
        from vector_quantize_pytorch import ResidualVQ

        self.rvq = ResidualVQ(dim=dim, num_quantizers=n_q, codebook_size=codebook_size)
        self.dim, self.n_q, self.codebook_size = dim, n_q, codebook_size

    @property
    def codebooks(self) -> torch.Tensor:
        return self.rvq.codebooks  # [n_q, K, D]

    def _check(self, x: torch.Tensor, n_q: int | None) -> int:
        if x.dim() != 3 or x.shape[1] != self.dim:
            raise ValueError(f"x must be [B, {self.dim}, T], got {tuple(x.shape)}")
        n = self.n_q if n_q is None else int(n_q)
        if not 1 <= n <= self.n_q:
            raise ValueError(f"n_q must be in [1, {self.n_q}], got {n_q}")
        return n

    def forward(self, x: torch.Tensor, n_q: int | None = None) -> AdapterOutput:
        n = self._check(x, n_q)
        quantized, codes, losses = self.rvq(x.transpose(1, 2))  # [B, T, D], [B, T, n_q], [n_q]
        codes = codes.transpose(1, 2)  # [B, n_q, T]
        if n < self.n_q:
            quantized = self.decode(codes[:, :n]).transpose(1, 2)
            quantized = quantized + (x.transpose(1, 2) - x.transpose(1, 2).detach())
            codes = codes[:, :n]
        stats = [level_stats(codes[:, i], self.codebook_size) for i in range(n)]
        return AdapterOutput(quantized.transpose(1, 2), codes, losses.reshape(-1)[:n].mean(), n, stats)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        n = self._check(x, n_q)
        _, codes, _ = self.rvq(x.transpose(1, 2))
        return codes.transpose(1, 2)[:, :n]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_q:
            raise ValueError(f"codes must be [B, n, T] with 1 <= n <= {self.n_q}, got {tuple(codes.shape)}")
        layers = self.rvq.layers[: codes.shape[1]]
        out = sum(layer.get_output_from_indices(codes[:, i]) for i, layer in enumerate(layers))
        return out.transpose(1, 2)  # [B, T, D] -> [B, D, T]


def scaled_schedule(steps: int) -> tuple[int, int]:
    """The cpu preset's quantizer warm-up and SOM annealing steps, scaled from its step count to ``steps``."""
    from lib.config import load_config

    cfg = load_config("cpu")
    scale = steps / cfg.train.steps
    return (round(cfg.train.quantizer_warmup_steps * scale),
            max(1, round(cfg.model.quantizer.som_anneal_steps * scale)))


def make_trainer(kind: str, steps: int, som_anneal: int, quantizer_warmup: int, data_dir: Path, run_dir: Path):
    """A cpu-preset Trainer (no discriminators) with the quantizer ``kind`` (som | ema | vqtorch)."""
    from lib.config import load_config
    from lib.training.trainer import Trainer

    overrides = ["train.discriminators=[]", f"train.steps={steps}", f"model.quantizer.som={kind == 'som'}".lower(),
                 f"model.quantizer.som_anneal_steps={som_anneal}",
                 f"train.quantizer_warmup_steps={quantizer_warmup}"]
    cfg = load_config("cpu", overrides)
    trainer = Trainer(cfg, data_dir, run_dir / kind, resume=False, progress=False)
    if kind == "vqtorch":
        q = cfg.model.quantizer
        trainer.codec.quantizer = VQTorchRVQ(cfg.model.dim, q.n_q, q.codebook_size)
        trainer.codec_ddp = trainer.codec
        t = cfg.train  # the optimizer must see the new module's parameters (it has none: EMA codebooks)
        trainer.opt_g = torch.optim.AdamW(trainer.codec.parameters(), lr=t.lr, betas=tuple(t.betas))
    return trainer


def held_out_clips(data_dir: Path, sample_rate: int) -> list[torch.Tensor]:
    """Every held-out clip (``lib.data.datasets.held_out_clips``: the trainer's validation split), whole, as
    ``[1, 1, T]``."""
    from lib.data.datasets import held_out_clips as clips_of

    return [wav[:1].unsqueeze(0) for wav in clips_of(data_dir, sample_rate, n=10**9, seconds=None).values()]


@torch.no_grad()
def held_out_codes(codec, clips: list[torch.Tensor]) -> torch.Tensor:
    """Codes of all held-out clips, concatenated over time: ``[n_q, frames]``."""
    codec.eval()
    return torch.cat([codec.encode(wav)[0] for wav in clips], dim=-1)


def silence_bound(clips: list[torch.Tensor], hop: int, codebook_size: int) -> tuple[float, float]:
    """Share of held-out frames that are digital silence, and the perplexity / K ceiling that share implies.

    All-zero frames give identical latents, so they share one code per level; with a share ``s`` on one code and
    the rest spread uniformly over the other K - 1, perplexity is at most exp(-s ln s - (1-s) ln((1-s)/(K-1))).
    """
    frames = torch.cat([torch.nn.functional.pad(c, (0, -c.shape[-1] % hop)).reshape(-1, hop) for c in clips])
    s = float((frames.abs().amax(dim=1) == 0).float().mean())
    if s == 0.0:
        return 0.0, 1.0
    entropy = -s * math.log(s) - (1 - s) * math.log((1 - s) / (codebook_size - 1)) if s < 1 else 0.0
    return s, math.exp(entropy) / codebook_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 steps each")
    ap.add_argument("--steps", type=int, default=None, help="training steps per quantizer (default 300)")
    ap.add_argument("--som-anneal", type=int, default=None,
                    help="SOM annealing steps (default: the preset's, scaled to the budget)")
    ap.add_argument("--quantizer-warmup", type=int, default=None,
                    help="steps that bypass the quantizer (default: the preset's, scaled to the budget)")
    ap.add_argument("--data", default=str(DATA), help="corpus folder (default data/default)")
    ap.add_argument("--kinds", nargs="*", default=["som", "ema", "vqtorch"])
    args = ap.parse_args(argv)
    steps = args.steps or (20 if args.quick else 300)
    warmup_default, anneal_default = scaled_schedule(steps)
    som_anneal = args.som_anneal or anneal_default
    quantizer_warmup = warmup_default if args.quantizer_warmup is None else args.quantizer_warmup
    set_threads()
    data_dir = Path(args.data)

    with tempfile.TemporaryDirectory(prefix="bench_codebooks_") as tmp:
        trainers = {k: make_trainer(k, steps, som_anneal, quantizer_warmup, data_dir, Path(tmp))
                    for k in args.kinds}
        batches = next(iter(trainers.values())).batches  # identical for all: same seed, batch size, segment
        step_times: dict[str, list[float]] = {k: [] for k in trainers}
        skipped = {k: 0 for k in trainers}
        last_mel: dict[str, list[float]] = {k: [] for k in trainers}
        t_start = time.time()
        for s in range(steps):
            wav = batches[s]
            for k, tr in trainers.items():
                t0 = time.perf_counter()
                res = tr.train_step(wav)
                step_times[k].append(time.perf_counter() - t0)
                skipped[k] += int(res.skipped)
                last_mel[k].append(res.losses["mel"])
            if (s + 1) % max(1, steps // 10) == 0:
                print(f"  step {s + 1}/{steps} ({time.time() - t_start:.0f} s): " + "; ".join(
                    f"{k} mel {median(last_mel[k][-10:]):.3f}, {median(step_times[k][-10:]):.2f} s/step"
                    for k in trainers), flush=True)

        cfg = next(iter(trainers.values())).cfg
        k_size, n_q = cfg.model.quantizer.codebook_size, cfg.model.quantizer.n_q
        clips = held_out_clips(data_dir, cfg.data.sample_rate)
        level_rows, summary_rows = [], []
        for k, tr in trainers.items():
            codes = held_out_codes(tr.codec, clips)  # [n_q, frames]
            frames = codes.shape[1]
            ceiling = 1.0 - (1.0 - 1.0 / k_size) ** frames
            per_level = []
            for level in range(n_q):
                st = level_stats(codes[level], k_size)
                ok = st["usage"] > 0.95 and st["perplexity"] > 0.8 * k_size
                per_level.append(st)
                level_rows.append({"quantizer": k, "level": level, "usage (%)": 100 * st["usage"],
                                   "perplexity": st["perplexity"], "perplexity / K": st["perplexity"] / k_size,
                                   "dead codes": st["dead_codes"], "usage ceiling (%)": 100 * ceiling,
                                   "target met": ok})
            val = tr.validate()
            summary_rows.append({
                "quantizer": k, "steps": steps, "held-out frames": frames,
                "min usage (%)": 100 * min(s["usage"] for s in per_level),
                "mean usage (%)": 100 * sum(s["usage"] for s in per_level) / n_q,
                "min perplexity / K": min(s["perplexity"] for s in per_level) / k_size,
                "mean perplexity / K": sum(s["perplexity"] for s in per_level) / n_q / k_size,
                "total dead": sum(s["dead_codes"] for s in per_level),
                "levels meeting target": sum(s["usage"] > 0.95 and s["perplexity"] > 0.8 * k_size
                                             for s in per_level),
                "val mel distance": val["mel_distance"], "val SI-SDR (dB)": val["si_sdr"],
                "s/step": median(step_times[k]), "skipped steps": skipped[k],
            })

    print(f"\n### Codebook health per level on {frames} held-out frames ({len(clips)} clips) after {steps} steps "
          f"(cpu preset, mel + L1 only, {n_q} x {k_size} codes)\n")
    print(markdown_table(level_rows))
    print("\n### Summary\n")
    print(markdown_table(summary_rows))
    print(f"\nusage ceiling: expected usage of a perfectly uniform quantizer with {frames} frames, "
          f"1 - (1 - 1/{k_size})^{frames} = {100 * ceiling:.1f} %")
    share, bound = silence_bound(clips, cfg.hop_length, k_size)
    print(f"digital silence: {100 * share:.1f} % of the held-out frames are all-zero and share one code per level, "
          f"which caps perplexity at {bound:.2f} x K on this set")
    print(f"schedule: quantizer bypassed for the first {quantizer_warmup} steps, SOM anneals over {som_anneal} "
          f"quantized steps (the cpu preset's schedule scaled to {steps} steps)")
    print(f"target: every level usage > 95 % and perplexity > 0.8 x K; {machine_note()}")
    name = "codebooks_quick" if args.quick else "codebooks"
    print(f"wrote {write_csv(level_rows, name).relative_to(REPO)}, "
          f"{write_csv(summary_rows, name + '_summary').relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
