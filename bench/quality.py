"""The quality race: held-out quality against training time, one line per system, at equal compute.

Every system is trained by the workbook's own ``Trainer`` on the same corpus with the same seed and batches, the
systems interleaved step by step (so that other load on the machine slows them alike); each system's clock counts
its own training steps only (evaluation pauses it). The presets' schedules (``train.steps``) are sized for 30
minutes; a longer budget (``--long``: 2 hours) stretches each system's schedule by the same factor, so that its
learning rate decays within the budget (``--set train.steps=N`` chooses it instead). A system whose schedule ends
before the time budget stops there; one whose preset has a time budget (``train.minutes``) decays on its own clock
and stops when that is spent (a step budget, ``--steps``, turns it off). At each checkpoint time the codec is
evaluated on a held-out split at every rung of the bitrate ladder (n_q = 1, 2, 4, 8), speech and other sounds
apart: PESQ-WB, STOI, SI-SDR and mel distance.

    python bench/quality.py                          # 30 minutes per system on 2 threads, valid split
    python bench/quality.py --split test             # the reported numbers (never tune on them)
    python bench/quality.py --split test --also-split valid   # choose on valid, report test, from one run
    python bench/quality.py --long                   # 2 hours per system
    python bench/quality.py --systems default --steps 600 --eval-steps 150 300 600   # step budget instead
    python bench/quality.py --score runs/a/checkpoint.pt runs/b/checkpoint.pt --ceiling   # trained runs, no race
    python bench/paired.py bench/results/scores_clips.csv   # is b's difference from a more than the clips' noise?
    python bench/quality.py --keep runs/race         # keep runs/race/<system>/step<N>.pt at every mark

Systems: ``default`` (the ``cpu`` preset), ``seanet`` (the SEANet codec of the ``cpu_seanet`` preset),
``encodec`` (EnCodec's 24 kHz SEANet + LSTM and its RVQ from the ``encodec`` package, random init, behind the
workbook's ``Codec`` interface, trained with the ``cpu`` preset's losses and schedule), and any preset name;
``LABEL:SYSTEM`` races a copy of a system under another name, e.g. trained on another corpus (``--train-data
LABEL=DIR``; the held-out clips stay those of ``--data``, so that two mixes are scored on the same clips).
Writes ``bench/results/quality.csv`` (one row per system x time x n_q x kind) and ``figures/bench_quality.png``.
After each system's last evaluation: its code use per level (``quality_levels.csv``), its output/input energy per
band (``quality_bands.csv``) and, on speech, the scores of the input with the codec's magnitudes, phases or both
in one band, and of the codec's output under the input's fast band levels (``quality_swaps.csv``): where the
codec's PESQ and STOI are lost.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
# `common` before torch: it sets OMP_WAIT_POLICY, which libgomp reads only when torch loads it.
from common import DATA, REPO, markdown_table, mean_rows, set_threads, write_csv  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from lib.analysis.baselines import opus_tools_roundtrip, opus_tools_unavailable  # noqa: E402
from lib.analysis.evaluation import report_group  # noqa: E402
from lib.analysis.metrics import (BAND_EDGES_HZ, DNSMOS_KEYS, SWAP_PARTS, band_energy_db,  # noqa: E402
                                  envelope_swap, evaluate_all, pesq_wb, spectral_swap, stoi)
from lib.config import load_config  # noqa: E402
from lib.data.datasets import held_out_clips  # noqa: E402
from lib.model.codebook import codebook_stats  # noqa: E402
from lib.model.codec import Codec  # noqa: E402
from lib.model.quantize import RVQOutput  # noqa: E402
from lib.training.trainer import Trainer  # noqa: E402

SPEECH_GROUPS = ("speech", "synthetic speech")  # the groups scored with the speech metrics and diagnosed band by band
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

    def bits_per_frame(self, n_q: int | None = None) -> float:
        return (n_q or self.n_q) * math.log2(self.codebook_size)


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
    """(name, kind, clip ``[1, 1, T]``) for every clip of ``split``, cut to its most active ``seconds``; kind is the
    group it is reported in (``lib.analysis.evaluation.report_group``): speech (recorded), synthetic speech, other
    sounds, or unlabelled."""
    out = []
    clips = held_out_clips(data_dir, sample_rate, n=10**6, seconds=seconds, split=split)
    for name, wav in clips.items():
        if wav.shape[-1] < sample_rate // 2 or float(wav.abs().max()) < 1e-4:
            continue  # too short or silent for PESQ/STOI
        out.append((name, report_group(clips.kinds[name]), wav.unsqueeze(0)))
    return out


NAN_METRICS = ("si_sdr", "mel_distance", "stft_distance", "pesq_wb", "stoi", *DNSMOS_KEYS)


def _metrics(recon: torch.Tensor, wav: torch.Tensor, sample_rate: int, pesq: bool, name: str,
             dnsmos: bool = False) -> dict[str, float]:
    """``evaluate_all`` of one clip (DNSMOS NaN unless ``dnsmos``); NaN metrics (and a warning) where a diverged codec
    output NaN or inf, so that one system's divergence is a gap in its curve instead of the end of everyone's race."""
    if not torch.isfinite(recon).all():
        print(f"  warning: {name}: the reconstruction has NaN/inf samples; its metrics are NaN", flush=True)
        return dict.fromkeys(NAN_METRICS, math.nan)
    return {**dict.fromkeys(DNSMOS_KEYS, math.nan), **evaluate_all(recon, wav, sample_rate, pesq=pesq, dnsmos=dnsmos)}


@torch.no_grad()
def evaluate(codec, clips, sample_rate: int, n_qs: list[int], pesq: bool = True, dnsmos: bool = False,
             per_clip: list[dict] | None = None) -> list[dict]:
    """Mean metrics per (n_q, kind) over ``clips``; ``n_q = 0`` is the unquantized latent (the quantizer bypassed:
    what the encoder and decoder could do with an unlimited bitrate). ``dnsmos``: DNSMOS of the speech clips too, at
    the full bitrate and at half of it (about 1.5 s a clip, so the race computes it at its last mark only).
    ``per_clip``: a list that receives each clip's own scores, ``{n_q, clip, kind, metric: value}``."""
    codec.eval()
    rows = []
    top = max(n_qs)
    for n_q in n_qs:
        per_kind: dict[str, list[dict]] = {}
        scored = dnsmos and n_q in (top, top // 2)  # the full bitrate and half of it: 1.5 s a clip adds up
        for name, kind, wav in clips:
            recon = codec(wav, bypass_quantizer=True).recon if n_q == 0 else codec(wav, n_q=n_q).recon
            scores = _metrics(recon[:, 0], wav[:, 0], sample_rate, pesq, name, scored and kind in SPEECH_GROUPS)
            per_kind.setdefault(kind, []).append(scores)
            if per_clip is not None:
                per_clip.append({"n_q": n_q, "clip": name, "kind": kind, **scores})
        rows += mean_rows(per_kind, n_q=n_q, kbps=round(codec.bitrate(n_q) / 1000, 2) if n_q else float("inf"))
    codec.train()
    return rows


OPUS_KBPS = (6, 8)  # Opus as users run it (opusenc --bitrate, VBR), scored on the race's clips in the same run


def baselines(clips, sample_rate: int, pesq: bool = True, dnsmos: bool = True) -> list[dict]:
    """The references every race is read against, on the same clips: each speech group's originals (their DNSMOS:
    the ceiling a codec can reach) and Opus at ``OPUS_KBPS`` through opusenc/opusdec, with its payload bitrate
    measured per clip (``kbps``: the mean). Empty, with a note, where opus-tools is not installed."""
    speech = [c for c in clips if c[1] in SPEECH_GROUPS]
    per_kind: dict[str, list[dict]] = {}
    for name, kind, wav in speech:
        per_kind.setdefault(kind, []).append(_metrics(wav[:, 0], wav[:, 0], sample_rate, pesq, name, dnsmos))
    rows = mean_rows(per_kind, system="original", n_q=-1, kbps=float("nan"))
    if (reason := opus_tools_unavailable()) is not None:
        print(f"note: no Opus baseline: {reason}", flush=True)
        return rows
    for kbps in OPUS_KBPS:
        per_kind, payload = {}, []
        for name, kind, wav in speech:
            decoded, bits = opus_tools_roundtrip(wav[0], sample_rate, kbps)
            payload.append(bits / 1000)
            per_kind.setdefault(kind, []).append(_metrics(decoded, wav[:, 0], sample_rate, pesq, name, dnsmos))
        rows += mean_rows(per_kind, system=f"opus {kbps} kbps", n_q=-1, kbps=round(float(np.mean(payload)), 2))
    return rows


SWAP_BANDS_HZ = ((0, 500), (500, 2000), (2000, None))  # None: up to Nyquist
ENVELOPE_SWAP_BAND = "all, levels per 5 ms and 1/4 octave from the input"  # the envelope_swap row


@torch.no_grad()
def band_diagnostics(codec, clips, sample_rate: int, pesq: bool = True) -> tuple[list[dict], list[dict]]:
    """Where the full-bitrate reconstruction goes wrong, from one decode of each clip.

    Returns ``(levels, swaps)``. ``levels``: per kind, the output's energy over the input's per frequency band
    (dB, averaged over the clips; 0 where a band's level is right, far below 0 where the codec leaves it out).
    ``swaps``: speech only, PESQ-WB and STOI of the input with the codec's magnitudes, phases or both in one band
    (``spectral_swap``): a hybrid that scores as low as the codec holds its error, one that scores near 4.6 / 1.0
    does not; and the codec's output with the input's level in every 5 ms frame and quarter-octave band
    (``envelope_swap``): how far the right fast envelope alone would take the codec's fine structure.
    """
    codec.eval()
    per_kind: dict[str, list[torch.Tensor]] = {}
    per_swap: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name, kind, wav in clips:
        recon = codec(wav).recon[:, 0]
        if not torch.isfinite(recon).all():
            continue
        per_kind.setdefault(kind, []).append(band_energy_db(recon, wav[:, 0], sample_rate)[0])
        if kind not in SPEECH_GROUPS:
            continue
        ref = wav[0, 0]
        for lo, hi in SWAP_BANDS_HZ:
            band = f"{lo}-{hi} Hz" if hi else f">{lo} Hz"
            for part in SWAP_PARTS:
                hybrid = spectral_swap(recon[0], ref, sample_rate, lo, hi or sample_rate, part)
                per_swap.setdefault((band, part), []).append(
                    (pesq_wb(hybrid, ref, sample_rate) if pesq else math.nan, stoi(hybrid, ref, sample_rate)))
        hybrid = envelope_swap(recon[0], ref, sample_rate)  # the codec's detail under the input's band levels
        per_swap.setdefault((ENVELOPE_SWAP_BAND, "fine structure"), []).append(
            (pesq_wb(hybrid, ref, sample_rate) if pesq else math.nan, stoi(hybrid, ref, sample_rate)))
    codec.train()
    names = [f"{lo}-{hi} Hz" for lo, hi in zip(BAND_EDGES_HZ, BAND_EDGES_HZ[1:])] + [f">{BAND_EDGES_HZ[-1]} Hz"]
    levels = [{"kind": kind, "clips": len(v), **dict(zip(names, torch.stack(v).nanmean(0).tolist()))}
              for kind, v in per_kind.items()]
    swaps = [{"band": band, "codec gives": part, "clips": len(v), "pesq_wb": float(np.mean([p for p, _ in v])),
              "stoi": float(np.mean([s for _, s in v]))} for (band, part), v in per_swap.items()]
    return levels, swaps


@torch.no_grad()
def level_usage(codec, clips) -> list[dict]:
    """Per quantizer level, over every held-out frame of ``clips`` at the full bitrate: ``codebook_stats`` (usage,
    perplexity) and, for FSQ groups, ``scalar_usage``: the mean over the group's dimensions of the fraction of that
    dimension's levels used (the "FSQ uses its levels" figure)."""
    codec.eval()
    codes = torch.cat([codec.encode(wav)[0] for _, _, wav in clips], dim=-1)  # [n_q, frames]
    codec.train()
    fsq = getattr(codec.quantizer, "radices", None) is not None
    rows = []
    for level, level_codes in enumerate(codes):
        row = {"level": level, "frames": int(level_codes.numel()), "codebook_size": int(codec.quantizer.codebook_size),
               **codebook_stats(level_codes, int(codec.quantizer.codebook_size))}
        if fsq:  # grid points [frames, d]: the levels in use per dimension, over the levels it has
            group = codec.quantizer.levels[level]
            grid = group.grid_of_codes(level_codes)
            row["scalar_usage"] = float(np.mean([torch.unique(grid[:, j]).numel() / n
                                                 for j, n in enumerate(group.levels)]))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the race


PRESET_MINUTES = 30.0  # the time budget the presets' schedules are sized for (2 CPU threads)


def ladder(n_q: int, ceiling: bool) -> list[int]:
    """The rungs scored for a codec of ``n_q`` levels: 1, 2, 4, ... up to ``n_q``, with ``n_q`` and ``n_q // 2``
    always among them (the full bitrate and half of it, where DNSMOS is scored: 6 and 3 kbps for 6 levels of 100 Hz
    frames as for 8 of 75 Hz), and 0 (unquantized) with ``ceiling``."""
    rungs = {n for n in (1, 2, 4, 8, 16, 32) if n <= n_q} | {n_q, max(1, n_q // 2)}
    return sorted(rungs) + ([0] if ceiling else [])


def schedule_overrides(args, train) -> list[str]:
    """The schedule overrides for one system whose preset's train config is ``train``: a step budget (``--steps``)
    without the preset's time budget (``train.minutes``); for a time budget longer than ``PRESET_MINUTES``, the
    preset's schedule stretched by the same factor (and its time budget, if it has one, set to the race's); none
    where ``--set`` names the schedule or the race's budget is the presets' own or shorter (then the checkpoints
    are points along the preset's run, cut by the race's clock)."""
    if args.steps:
        return [f"train.steps={args.steps}", "train.minutes=null"]
    if any(s.split("=", 1)[0].strip() == "train.steps" for s in args.set) or args.minutes <= PRESET_MINUTES:
        return []
    stretched = [f"train.steps={math.ceil(train.steps * args.minutes / PRESET_MINUTES)}"]
    return stretched + ([f"train.minutes={args.minutes}"] if train.minutes is not None else [])


def system_label(name: str) -> str:
    """How a system is named in the tables and the figure: a preset file by its file name (``hop3.yml``), not its
    path, which says where it lay on one machine; anything else as given."""
    return Path(name).name if Path(name).suffix in (".yml", ".yaml") else name


class Runner:
    """One system in the race: its trainer, its own training clock (evaluation excluded) and its checkpoint marks."""

    def __init__(self, name: str, args, clips, extra_clips=()):
        name, _, system = name.partition(":") if ":" in name else (name, "", name)  # "label:system" names a copy
        preset, overrides = SYSTEMS.get(system, (system, []))
        overrides = overrides + list(args.set)
        cfg = load_config(preset, overrides + schedule_overrides(args, load_config(preset, overrides).train))
        cfg.train.device = args.device
        codec = encodec_codec(cfg.data.sample_rate, cfg.model.quantizer.n_q) if system == "encodec" else None
        # the trainer's logs, removed by close() unless --keep names a folder for them (then a checkpoint is saved
        # at every mark, to be scored again with --score); a system named by a YAML path gets its file's stem
        self.keep = getattr(args, "keep", None)
        if self.keep:
            self.run_dir = Path(self.keep) / Path(name).stem
            self.run_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"race-{Path(name).stem}-"))
        data = dict(d.split("=", 1) for d in getattr(args, "train_data", None) or []).get(name, args.data)
        self.trainer = Trainer(cfg, data, self.run_dir, resume=False, progress=False, codec=codec)
        self.name, self.args, self.clips, self.cfg = system_label(name), args, clips, cfg
        self.extra_clips = list(extra_clips)  # another split scored at every mark (``--also-split``)
        self.marks = sorted(args.eval_steps) if args.steps else sorted(m * 60 for m in args.eval_minutes)
        self.n_qs = ladder(cfg.model.quantizer.n_q, args.ceiling)
        self.rows: list[dict] = []
        self.levels: list[dict] = []  # per-level code statistics after the last evaluation
        self.bands: list[dict] = []  # per-band output/input energy after the last evaluation
        self.swaps: list[dict] = []  # per-band magnitude/phase hybrids' scores after the last evaluation
        print(f"== {name}: {self.trainer.codec.num_parameters() / 1e6:.2f} M parameters", flush=True)

    def close(self) -> None:
        self.trainer.close()
        if not self.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @property
    def done(self) -> bool:
        return not self.marks

    @property
    def clock(self) -> float:
        """Seconds of this system's training steps so far (the trainer's own clock, evaluation excluded)."""
        return self.trainer.train_seconds

    def step(self) -> None:
        """One training step on the system's own clock; an evaluation when the clock passes the next mark."""
        tr = self.trainer
        tr.train_step(tr.batches[tr.step + tr.skipped])  # a skipped step moves on to the next batch
        ended = tr.step >= tr.cfg.train.steps or tr.out_of_time  # the system's schedule ended before the race's
        if (tr.step if self.args.steps else self.clock) >= self.marks[0] or ended:
            self.marks.pop(0)
            if ended:
                self.marks = []
            self.evaluate()

    def evaluate(self) -> None:
        tr, args = self.trainer, self.args
        if self.keep:  # before the scores: a checkpoint never waits on a metric
            tr.save(self.run_dir / f"step{tr.step}.pt")
        codec = tr.ema if tr.ema is not None else tr.codec
        codec = codec.cpu() if args.device != "cpu" else codec
        last = not self.marks  # DNSMOS (slow) at the last mark only
        for split, clips in ((args.split, self.clips), (getattr(args, "also_split", None), self.extra_clips)):
            for r in (evaluate(codec, clips, self.cfg.data.sample_rate, self.n_qs, pesq=not args.no_pesq,
                               dnsmos=last and not args.no_dnsmos) if clips else []):
                self.rows.append({"system": self.name, "minutes": round(self.clock / 60, 2), "step": tr.step,
                                  "split": split, **r})
        if not self.marks:  # the last evaluation: how the codes use each level
            self.levels = [{"system": self.name, "step": tr.step, **r} for r in level_usage(codec, self.clips)]
            bands, swaps = band_diagnostics(codec, self.clips, self.cfg.data.sample_rate, pesq=not args.no_pesq)
            self.bands = [{"system": self.name, "step": tr.step, **r} for r in bands]
            self.swaps = [{"system": self.name, "step": tr.step, **r} for r in swaps]
        codec.to(tr.device)
        top = max(self.n_qs)
        for split, kind in dict.fromkeys((r["split"], r["kind"]) for r in self.rows if r["step"] == tr.step):
            mine = [r for r in self.rows if (r["split"], r["kind"], r["step"]) == (split, kind, tr.step)]
            if kind not in SPEECH_GROUPS:
                continue
            b = next(r for r in mine if r["n_q"] == top)
            print(f"  {self.name} step {tr.step} ({self.clock / 60:.1f} min), {split}, {kind} at {b['kbps']} kbps: "
                  f"PESQ {b['pesq_wb']:.2f} STOI {b['stoi']:.3f} SI-SDR {b['si_sdr']:.1f} mel {b['mel_distance']:.3f}"
                  + (f" DNSMOS OVRL {b['dnsmos_ovrl']:.2f} P.808 {b['dnsmos_p808']:.2f}"
                     if math.isfinite(b["dnsmos_ovrl"]) else ""), flush=True)
            if 0 in self.n_qs:
                u = next(r for r in mine if r["n_q"] == 0)
                print(f"  {self.name} unquantized: PESQ {u['pesq_wb']:.2f} STOI {u['stoi']:.3f} "
                      f"SI-SDR {u['si_sdr']:.1f} mel {u['mel_distance']:.3f}", flush=True)


def race(args, clips, extra_clips=()) -> list[dict]:
    """Interleaved: every system takes one step in turn, so that whatever else the machine does slows all alike.
    ``clips`` are the ``--split``'s, on which the per-level and per-band diagnostics are read too; ``extra_clips``
    (``--also-split``) are scored at every mark as well, their rows marked with their split."""
    stems = [Path(name.partition(":")[0]).stem for name in args.systems]
    if getattr(args, "keep", None) and len(set(stems)) < len(stems):
        raise ValueError(f"--keep: systems {args.systems} would share a run folder (same file stem) under {args.keep}")
    runners: list[Runner] = []
    try:
        runners.extend(Runner(name, args, clips, extra_clips) for name in args.systems)
        while not all(r.done for r in runners):
            for r in runners:
                if not r.done:
                    r.step()
                    if r.rows and r.rows[-1]["step"] == r.trainer.step:
                        write_csv([row for q in runners for row in q.rows], args.out)  # nothing lost if cut short
    finally:
        for r in runners:
            r.close()
    levels = [row for r in runners for row in r.levels]
    if levels:
        write_csv(levels, f"{args.out}_levels")
        print(markdown_table(levels, ["system", "step", "level", "frames", "codes_used", "usage", "perplexity"]
                             + (["scalar_usage"] if any("scalar_usage" in r for r in levels) else [])))
    bands = [row for r in runners for row in r.bands]
    if bands:
        write_csv(bands, f"{args.out}_bands")
        print("Output over input energy per band (dB), full bitrate:")
        print(markdown_table(bands, list(bands[0])))
    swaps = [row for r in runners for row in r.swaps]
    if swaps:
        write_csv(swaps, f"{args.out}_swaps")
        print("Speech, the input with the codec's magnitudes, phases or both in one band (full bitrate):")
        print(markdown_table(swaps, list(swaps[0])))
    return [row for r in runners for row in r.rows]


def score(args) -> tuple[list[dict], list[dict], list[dict]]:
    """Trained checkpoints (``--score``) scored on ``--split`` without training: the race's rows at every rung of
    each one's ladder (``system`` is the checkpoint's path), its code use per level, and every clip's own scores
    (for paired comparisons, ``bench/paired.py``). The generator weight EMA is scored where the run kept one, as in
    the race."""
    from lib.training.checkpoint import load_codec

    rows, levels, per_clip, clips_at = [], [], [], {}  # clips loaded once per sample rate
    for path in args.score:
        codec, cfg = load_codec(path, beam_width=args.beam_width)
        sr = cfg.data.sample_rate
        if sr not in clips_at:
            clips_at[sr] = held_out(args.data, args.split, sr, args.clip_seconds)
            rows += [{**r, "split": args.split} for r in baselines(clips_at[sr], sr, not args.no_pesq,
                                                                   not args.no_dnsmos)]
        clip_rows: list[dict] = []
        for r in evaluate(codec, clips_at[sr], sr, ladder(cfg.model.quantizer.n_q, args.ceiling),
                          pesq=not args.no_pesq, dnsmos=not args.no_dnsmos, per_clip=clip_rows):
            rows.append({"system": str(path), "split": args.split, **r})
        per_clip += [{"system": str(path), "split": args.split, **r} for r in clip_rows]
        levels += [{"system": str(path), **r} for r in level_usage(codec, clips_at[sr])]
    return rows, levels, per_clip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="+", default=["default", "seanet", "encodec"])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--also-split", default=None, choices=["valid", "test"],
                    help="score this split too at every mark (e.g. choose on valid, report test from one run)")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--eval-minutes", type=float, nargs="+", default=None)
    ap.add_argument("--long", action="store_true", help="2 hours per system, evaluated every 15 minutes")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 minutes per system, 3 s clips")
    ap.add_argument("--steps", type=int, default=None, help="a step budget instead of a time budget")
    ap.add_argument("--eval-steps", type=int, nargs="+", default=None)
    ap.add_argument("--clip-seconds", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every system")
    ap.add_argument("--train-data", nargs="*", default=[], metavar="SYSTEM=DIR",
                    help="train a system on another corpus (held-out clips still from --data): races of two mixes")
    ap.add_argument("--out", default=None,
                    help="name of the CSVs and figure, bench/results/NAME.csv (default: quality; quick with --quick)")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep each system's run folder under DIR, with a checkpoint step{N}.pt at every mark")
    ap.add_argument("--ceiling", action="store_true", help="also evaluate the unquantized latents (n_q = 0)")
    ap.add_argument("--no-pesq", action="store_true", help="skip PESQ (where the pesq package is missing)")
    ap.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS at the last mark (and on the baselines)")
    ap.add_argument("--score", nargs="+", metavar="CHECKPOINT",
                    help="score trained checkpoints on --split instead of racing (writes {out}.csv, default scores)")
    ap.add_argument("--beam-width", type=int, default=None,
                    help="with --score: encode with this residual beam search (default: each run's own setting)")
    args = ap.parse_args(argv)
    if args.out and (Path(args.out).name != args.out or args.out.endswith(".csv")):
        ap.error(f"--out is a name, not a path: the CSVs go to bench/results/NAME.csv (got {args.out!r})")
    if args.score:
        missing = [c for c in args.score if not Path(c).is_file()]
        if missing:
            ap.error(f"--score: no such checkpoint: {', '.join(missing)}")
        set_threads(args.threads)
        rows, levels, per_clip = score(args)
        out = args.out or "scores"
        write_csv(rows, out)
        write_csv(levels, f"{out}_levels")
        write_csv(per_clip, f"{out}_clips")
        print(markdown_table(rows, ["system", "split", "kind", "n_q", "kbps", "pesq_wb", "stoi", "si_sdr",
                                    "mel_distance", "dnsmos_ovrl", "dnsmos_p808"]))
        print(markdown_table(levels, ["system", "level", "frames", "codes_used", "usage", "perplexity"]))
        return 0
    if args.long:
        args.minutes = 120.0
    if args.quick:  # its own files: a smoke run must not overwrite the race's
        args.minutes, args.eval_minutes, args.clip_seconds = 2.0, [1.0, 2.0], 3.0
    args.out = args.out or ("quick" if args.quick else "quality")
    if args.eval_minutes is None:
        step = 15 if args.long else 5
        args.eval_minutes = [m for m in range(step, int(args.minutes) + 1, step)] or [args.minutes]
    if args.steps and not args.eval_steps:
        args.eval_steps = [args.steps]
    set_threads(args.threads)
    clips = held_out(args.data, args.split, 24000, args.clip_seconds)
    print(f"{len(clips)} {args.split} clips ({sum(k == 'speech' for _, k, _ in clips)} speech)", flush=True)
    extra = held_out(args.data, args.also_split, 24000, args.clip_seconds) if args.also_split else []
    reference = [{**r, "split": split} for split, c in ((args.split, clips), (args.also_split, extra)) if c
                 for r in baselines(c, 24000, not args.no_pesq, not args.no_dnsmos)]  # the same clips, the same run
    rows = race(args, clips, extra)
    write_csv(rows + reference, args.out)
    columns = ["system", "kind", "minutes", "step", "n_q", "kbps", "pesq_wb", "stoi", "si_sdr", "mel_distance",
               "dnsmos_ovrl", "dnsmos_p808"]
    final = [r for r in rows + reference if r["kind"] in SPEECH_GROUPS and r["split"] == args.split]
    print(markdown_table(final, columns))
    figure = race_figure([r for r in rows if r["split"] == args.split])
    figure.savefig(REPO / "figures" / f"bench_{args.out}.png", dpi=110, bbox_inches="tight")
    return 0


def race_figure(rows: list[dict]):
    """Speech quality at each system's full bitrate (its largest ``n_q``: 8 levels of 75 Hz frames and 6 of 100 Hz
    are both 6 kbps) against training minutes: one panel per metric, one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("pesq_wb", "PESQ-WB"), ("stoi", "STOI"), ("si_sdr", "SI-SDR (dB)"), ("mel_distance", "mel distance")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    # recorded speech solid with dots, synthetic speech dashed with open squares (a race of one mark has no line)
    styles = dict(zip(SPEECH_GROUPS, (("-", "o", None), ("--", "s", "none"))))
    kbps = set()
    for i, name in enumerate(dict.fromkeys(r["system"] for r in rows)):
        top = max(r["n_q"] for r in rows if r["system"] == name)
        for kind, (ls, marker, face) in styles.items():
            pts = [r for r in rows if r["system"] == name and r["kind"] == kind and r["n_q"] == top]
            kbps.update(r["kbps"] for r in pts)
            for ax, (key, label) in zip(axes, metrics if pts else []):
                ax.plot([r["minutes"] for r in pts], [r[key] for r in pts], marker=marker, mfc=face, ls=ls,
                        color=f"C{i}", label=f"{name}, {kind}")
                ax.set_xlabel("training minutes (2 CPU threads)")
                ax.ticklabel_format(axis="x", useOffset=False)  # marks 15.00 and 15.01 min: no "+1.5e1" offset
                ax.set_title(label)
                ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    rate = " / ".join(f"{k:g}" for k in sorted(kbps))
    fig.suptitle(f"Quality race: held-out speech at each system's full bitrate, {rate} kbps (recorded: solid, dots; "
                 "synthetic: dashed, squares)")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    sys.exit(main())
