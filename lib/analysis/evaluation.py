"""Evaluation of a trained codec against real codecs: a bitrate ladder, a metrics table and its summaries.

    clips  = evaluation_clips(data_dir, sample_rate, n_clips=4, clip_seconds=4.0)   # {name: [1, T]}
    ladder = bitrate_ladder(codec, clips, n_qs=[1, 2, 4, 8])                         # {clip: {system: [1, T]}}
    rows   = metrics_table(ladder, sample_rate)                                      # one row per clip x system
    write_csv(rows, "metrics.csv")    # and lib.analysis.rate_distortion draws the rows

The ladder holds, per clip, the original (key "original") and every system: the codec at each number of
quantizers ("codec 1.5 kbps") and the baselines of `lib.analysis.baselines` ("low-pass 3.5 kHz" anchor, "mu-law 8-bit",
"opus 6 kbps" ..., "vorbis q-0.1"). Opus cannot go below about 6 kb/s and Vorbis not below about 25-30 kb/s
at 24 kHz, so at the codec's lowest rates the baselines sit to the right of it: that gap is the point of a
neural codec. Opus and Vorbis are variable-rate: their bitrate is measured per clip from the encoded size.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lib.analysis.baselines import (codec_roundtrip, lowpass_anchor, mulaw_8bit, mulaw_bitrate, opus_level_for_kbps,
                                    opus_tools_roundtrip, opus_tools_unavailable)
from lib.analysis.metrics import dnsmos_unavailable, evaluate_all, unavailable_reason
from lib.data.audio import AudioError, load_audio
from lib.data.datasets import ClipSet, active_window, held_out_clips, scan_folder
from lib.data.manifest import SPEECH_KINDS, kind_labeller

__all__ = [
    "REFERENCE",
    "METRICS",
    "summary_rows",
    "SUMMARY_HEADERS",
    "TABLE_COLUMNS",
    "Ladder",
    "default_n_qs",
    "evaluation_clips",
    "bitrate_ladder",
    "metrics_table",
    "write_csv",
    "summary_table",
    "GROUPS",
    "report_group",
]

REFERENCE = "original"  # ladder key of the unprocessed clip
METRICS = ("si_sdr", "mel_distance", "stft_distance", "pesq_wb", "stoi", "dnsmos_ovrl", "dnsmos_p808")
# defined on speech only: left out (NaN) on clips of other kinds. DNSMOS (P.835 overall and P.808) is the perceived
# quality of the estimate alone, from the models in the speechmos wheel.
SPEECH_METRICS = ("pesq_wb", "stoi", "dnsmos_ovrl", "dnsmos_p808")
TABLE_COLUMNS = ("clip", "kind", "seconds", "system", "family", "n_q", "bitrate", *METRICS)
# The groups results are reported in, in this order: a clip's kind (lib.data.manifest.CLIP_KINDS) -> its group.
GROUPS = ("speech", "synthetic speech", "other sounds", "unlabelled")


def report_group(kind: str) -> str:
    """The group a clip of `kind` is reported in: recorded speech, synthetic speech, other sounds (music and the
    rest) or unlabelled clips (a folder of your own without kinds)."""
    return kind if kind in SPEECH_KINDS else ("unlabelled" if not kind else "other sounds")

ANCHOR = "low-pass 3.5 kHz"  # the MUSHRA low anchor (ITU-R BS.1534)
VORBIS_LOWEST = 1.0  # libsndfile level 1.0 = Vorbis quality -0.1, the lowest it has


class Ladder(dict):
    """`{clip: {system: wav [1, T]}}` (the first system of each clip is "original"), plus per-system facts:

    - `sample_rate`: Hz of every wav.
    - `family[system]`: "codec", "opus", "vorbis", "mulaw" or "anchor".
    - `n_q[system]`: number of quantizers for codec systems, else None.
    - `bitrates[(clip, system)]`: bits/s (measured per clip for variable-rate codecs; None for the anchor).
    - `skipped[name]`: baselines that could not run here, with the reason.
    - `kinds[clip]`: the clip's kind (`lib.data.manifest.CLIP_KINDS`, "" when unlabelled).
    """

    def __init__(self, sample_rate: int):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.family: dict[str, str] = {}
        self.n_q: dict[str, int | None] = {}
        self.bitrates: dict[tuple[str, str], float | None] = {}
        self.skipped: dict[str, str] = {}
        self.kinds: dict[str, str] = {}

    @property
    def systems(self) -> list[str]:
        """System names in ladder order (codec by rising n_q, then baselines), without the original."""
        return list(self.family)

    def add(self, clip: str, system: str, wav: torch.Tensor, family: str, bitrate: float | None,
            n_q: int | None = None) -> None:
        self.setdefault(clip, {})[system] = wav
        self.family[system], self.n_q[system] = family, n_q
        self.bitrates[(clip, system)] = bitrate

    def drop(self, system: str) -> None:
        """Remove `system` from every clip (a system is in all clips or in none)."""
        for clip, systems in self.items():
            systems.pop(system, None)
            self.bitrates.pop((clip, system), None)
        self.family.pop(system, None)
        self.n_q.pop(system, None)


def default_n_qs(n_q: int) -> list[int]:
    """Quantizer counts of the default ladder: 1, 2, 4, ... up to `n_q` (and `n_q` itself)."""
    if isinstance(n_q, bool) or not isinstance(n_q, (int, np.integer)) or n_q < 1:
        raise ValueError(f"n_q must be a positive integer, got {n_q!r}")
    ladder = [2**k for k in range(int(math.log2(n_q)) + 1)]
    return ladder if ladder[-1] == n_q else ladder + [int(n_q)]


def evaluation_clips(data_dir: str | os.PathLike, sample_rate: int, n_clips: int = 6,
                     clip_seconds: float | None = 6.0, clips_folder: str | os.PathLike | None = None,
                     speech: int | None = None, min_seconds: float = 0.0,
                     kinds: str | dict[str, str] | None = None) -> ClipSet:
    """Clips to evaluate on, a `ClipSet` `{name: wav [1, T]}` at `sample_rate` with `kinds[name]`, each cut to its
    most active `clip_seconds` (`lib.data.datasets.active_window`; None: whole clips).

    clips_folder None: the held-out clips of `data_dir` (`lib.data.datasets.held_out_clips` with `speech` and
    `min_seconds`: `speech` of the `n_clips` are speech, taken first; clips shorter than `min_seconds` last).
    Otherwise the first `n_clips` readable audio files of `clips_folder`, labelled by `kinds` (as in
    `lib.data.manifest.kind_labeller`: one kind for all, glob patterns, or None for what the folder records);
    files that cannot be read are skipped with a warning.
    """
    if n_clips < 1:
        raise ValueError(f"n_clips must be >= 1, got {n_clips}")
    if clip_seconds is not None and clip_seconds <= 0:
        raise ValueError(f"clip_seconds must be positive or None, got {clip_seconds}")
    if clips_folder is None:
        return held_out_clips(data_dir, sample_rate, n_clips, clip_seconds, speech=speech, min_seconds=min_seconds)
    kind_of, clips = kind_labeller(clips_folder, kinds), ClipSet()
    for path in scan_folder(clips_folder):
        if len(clips) == n_clips:
            break
        try:
            wav = load_audio(path, sample_rate, mono=True)
        except AudioError as error:
            warnings.warn(f"clips_folder: skipping {path}: {error}", RuntimeWarning, stacklevel=2)
            continue
        rel = path.relative_to(clips_folder)
        name = rel.with_suffix("").as_posix()
        length = wav.shape[-1] if clip_seconds is None else int(round(clip_seconds * sample_rate))
        clips[name], clips.kinds[name] = active_window(wav, length, sample_rate), kind_of(rel.as_posix())
    if not clips:
        raise ValueError(f"clips_folder {os.fspath(clips_folder)!r} holds no readable audio file")
    return clips


def _as_clip(wav: torch.Tensor, name: str) -> torch.Tensor:
    """`[T]` or `[1, T]` -> float32 `[1, T]`."""
    wav = torch.as_tensor(wav, dtype=torch.float32)
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2 or wav.shape[0] != 1 or wav.shape[-1] == 0:
        raise ValueError(f"clips[{name!r}] must be one mono clip [1, T] or [T], got shape {tuple(wav.shape)}")
    return wav


def _real_codecs(opus_kbps: Sequence[float], vorbis: bool, sample_rate: int, notes: dict[str, str]) -> list[tuple]:
    """`(system, family, roundtrip)` of the real codecs of the ladder; `roundtrip(wav [1, T]) -> (wav, bits/s)`.
    Opus through opusenc where it is installed, else through libsndfile (the reason goes into `notes`)."""
    if (reason := opus_tools_unavailable()) is None:
        codecs = [(f"opus {k:g} kbps", "opus", lambda w, k=k: opus_tools_roundtrip(w, sample_rate, k))
                  for k in opus_kbps]
    else:
        if opus_kbps:
            notes["opusenc"] = f"{reason}; Opus runs through libsndfile instead"
        codecs = [(f"opus {k:g} kbps", "opus", lambda w, k=k: codec_roundtrip(w, sample_rate, "OGG", "OPUS",
                                                                              opus_level_for_kbps(k)))
                  for k in opus_kbps]
    if vorbis:
        codecs.append(("vorbis q-0.1", "vorbis", lambda w: codec_roundtrip(w, sample_rate, "OGG", "VORBIS",
                                                                           VORBIS_LOWEST)))
    return codecs


def bitrate_ladder(codec, clips: dict[str, torch.Tensor], n_qs: Sequence[int] | None = None,
                   opus_kbps: Sequence[float] = (6.0, 8.0, 12.0), vorbis: bool = True, mulaw: bool = True,
                   anchor: bool = True) -> Ladder:
    """Every clip through the codec at each number of quantizers, and through the baselines.

    Args:
        codec: a `lib.model.codec.Codec` (eval mode); its `sample_rate` is the clips' rate.
        clips: `{name: wav [1, T] or [T]}` at `codec.sample_rate`.
        n_qs: quantizer counts (None: `default_n_qs(codec.quantizer.n_q)`), each in 1..n_q.
        opus_kbps: Opus target rates in kb/s, run as users run it (`opusenc --bitrate`, VBR; its payload bitrate
            measured per clip) where opus-tools is installed, else through libsndfile (noted in `ladder.skipped`).
            Empty = no Opus.
        vorbis: Vorbis at its lowest quality; mulaw: 8-bit mu-law; anchor: the 3.5 kHz low-pass anchor.
    Returns:
        `Ladder` `{clip: {"original": wav, "codec 1.5 kbps": wav, ..., "opus 6 kbps": wav, ...}}`, all `[1, T]`
        at the input length. A real codec that fails here (libsndfile built without it) is left out with a
        RuntimeWarning and listed in `ladder.skipped`.
    """
    if not clips:
        raise ValueError("clips is empty: expected {name: wav [1, T]}")
    max_n_q = int(codec.quantizer.n_q)
    n_qs = default_n_qs(max_n_q) if n_qs is None else sorted({int(n) for n in n_qs})
    if not n_qs or n_qs[0] < 1 or n_qs[-1] > max_n_q:
        raise ValueError(f"n_qs must be quantizer counts in 1..{max_n_q}, got {n_qs}")
    sample_rate = int(codec.sample_rate)
    ladder = Ladder(sample_rate)
    real_codecs = _real_codecs(opus_kbps, vorbis, sample_rate, ladder.skipped)
    for name, wav in clips.items():
        wav = _as_clip(wav, name)
        ladder.setdefault(name, {})[REFERENCE] = wav
        ladder.kinds[name] = getattr(clips, "kinds", {}).get(name, "")
        with torch.inference_mode():
            for n_q in n_qs:
                recon = codec(wav[None], n_q=n_q).recon[0]  # [1, 1, T] -> [1, T]
                bits = float(codec.bitrate(n_q))
                ladder.add(name, f"codec {bits / 1000:g} kbps", recon.float(), "codec", bits, n_q)
        if anchor:
            ladder.add(name, ANCHOR, lowpass_anchor(wav, sample_rate), "anchor", None)
        if mulaw:
            ladder.add(name, "mu-law 8-bit", mulaw_8bit(wav), "mulaw", mulaw_bitrate(sample_rate))
        for system, family, roundtrip in real_codecs:
            if system in ladder.skipped:
                continue
            try:
                decoded, bits = roundtrip(wav)
            except Exception as error:  # libsndfile without this codec: report, keep the rest of the ladder
                ladder.skipped[system] = f"{type(error).__name__}: {error}"
                ladder.drop(system)  # in case it worked on an earlier clip
                warnings.warn(f"bitrate_ladder: {system} unavailable: {error}", RuntimeWarning, stacklevel=2)
                continue
            ladder.add(name, system, decoded, family, bits)
    return ladder


def metrics_table(ladder: Ladder, sample_rate: int, perceptual: bool = True, dnsmos: bool = True) -> list[dict]:
    """Objective metrics of every system on every clip, against that clip's original.

    Returns one row per clip x system in ladder order: `{"clip", "kind", "seconds", "system", "family", "n_q",
    "bitrate" (bits/s or None), "si_sdr", "mel_distance", "stft_distance", "pesq_wb", "stoi", "dnsmos_ovrl",
    "dnsmos_p808"}`, and, where DNSMOS is computed, a row of the original itself (family "reference": its DNSMOS is
    the ceiling, its other metrics NaN). The speech metrics (`SPEECH_METRICS`) are NaN on clips of a kind that is
    not speech (they are computed on unlabelled clips), with `perceptual=False` (DNSMOS also with `dnsmos=False`
    or where its packages are missing), on a clip shorter than a metric's minimum
    (`lib.analysis.metrics.METRIC_MIN_SECONDS`) and where PESQ finds no speech. Units and directions:
    `lib.analysis.metrics.METRIC_UNITS` / `METRIC_DIRECTION`.
    """
    dnsmos = dnsmos and perceptual and dnsmos_unavailable() is None
    if sample_rate != getattr(ladder, "sample_rate", sample_rate):
        raise ValueError(f"sample_rate {sample_rate} differs from the ladder's {ladder.sample_rate} Hz")
    rows = []
    for clip, systems in ladder.items():
        if REFERENCE not in systems:
            raise ValueError(f"ladder[{clip!r}] has no {REFERENCE!r} entry to compare against")
        reference, kind = systems[REFERENCE], getattr(ladder, "kinds", {}).get(clip, "")
        speech_like = report_group(kind) != "other sounds"
        for system, wav in systems.items():
            if system == REFERENCE and not (dnsmos and speech_like):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # "no utterance", "too short" -> NaN, expected
                values = evaluate_all(wav, reference, sample_rate, perceptual=perceptual and speech_like,
                                      dnsmos=dnsmos and speech_like)
            if system == REFERENCE:  # the original against itself: only its DNSMOS says something
                values = {k: v for k, v in values.items() if k.startswith("dnsmos")}
            rows.append({
                "clip": clip, "kind": kind, "seconds": reference.shape[-1] / sample_rate, "system": system,
                "family": "reference" if system == REFERENCE else getattr(ladder, "family", {}).get(system, system),
                "n_q": getattr(ladder, "n_q", {}).get(system),
                "bitrate": getattr(ladder, "bitrates", {}).get((clip, system)),
                **{metric: float(values.get(metric, math.nan)) for metric in METRICS},
            })
    return rows


def write_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write metrics rows to `path` (columns `TABLE_COLUMNS`; None as an empty cell). Returns the path."""
    if not rows:
        raise ValueError("rows is empty: nothing to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return path


def _mean(values) -> float:
    values = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def _by_system(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """Rows averaged over the clips of each report group, NaNs ignored: `{(group, system): {group, system, family,
    n_q, n_clips, shortest (s), bitrate, metrics}}`, groups in `GROUPS` order, systems in row order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((report_group(row.get("kind", "")), row["system"]), []).append(row)
    order = sorted(groups, key=lambda key: GROUPS.index(key[0]))  # stable: systems keep their order
    return {
        key: {"group": key[0], "system": key[1], "family": groups[key][0]["family"], "n_q": groups[key][0]["n_q"],
              "n_clips": len(groups[key]), "shortest": min(r.get("seconds", math.inf) for r in groups[key]),
              **{k: _mean(r[k] for r in groups[key]) for k in ("bitrate", *METRICS)}}
        for key in order
    }


def _shown(mean: dict, metric: str):
    """A mean for a table: the number, or why there is none ("n/a (not speech)", "n/a (0.18 s < 0.25 s)")."""
    if not math.isnan(mean[metric]):
        return mean[metric]
    if metric in SPEECH_METRICS and mean["group"] == "other sounds":
        return "n/a (not speech)"
    return unavailable_reason(metric, mean["shortest"]) or "-"


TABLE_HEADERS = {"si_sdr": "SI-SDR dB", "mel_distance": "mel dist", "stft_distance": "STFT dist",
                 "pesq_wb": "PESQ", "stoi": "STOI", "dnsmos_ovrl": "DNSMOS", "dnsmos_p808": "P.808"}


def summary_table(rows: list[dict]) -> str:
    """Plain-text table of the means over each group's clips (bitrate in kb/s), groups in `GROUPS` order."""
    means = _by_system(rows)
    width = max(len("clips"), *(len(f"{m['group']} ({m['n_clips']})") for m in means.values())) + 2
    name_width = max(len("system"), *(len(m["system"]) for m in means.values())) + 2
    lines = [f"{'clips':<{width}}{'system':<{name_width}}{'kb/s':>8}"
             + "".join(f"{TABLE_HEADERS[m]:>11}" for m in METRICS)]
    for mean in means.values():
        kbps = "-" if math.isnan(mean["bitrate"]) else f"{mean['bitrate'] / 1000:.2f}"
        cells = [_shown(mean, m) for m in METRICS]
        lines.append(f"{mean['group'] + ' (' + str(mean['n_clips']) + ')':<{width}}{mean['system']:<{name_width}}"
                     f"{kbps:>8}" + "".join(f"{c:>11.3f}" if isinstance(c, float) else f"{'n/a':>11}" for c in cells))
    lines.append("mel/STFT dist: mean L1 of log magnitudes, lower is better; SI-SDR, PESQ (MOS-LQO), STOI (0..1): "
                 "higher is better; n/a: not defined on these clips (not speech, or too short)")
    return "\n".join(lines)


def summary_rows(rows: list[dict]) -> list[dict]:
    """Means over each group's clips as table rows (bitrate in kb/s; a mean that cannot be computed says why),
    for `lib.analysis.html.table_html` with `headers=SUMMARY_HEADERS`."""
    return [{"clips": f"{mean['group']} ({mean['n_clips']})", "system": mean["system"], "kbps": mean["bitrate"] / 1000,
             **{m: _shown(mean, m) for m in METRICS}} for mean in _by_system(rows).values()]


SUMMARY_HEADERS = {"clips": "clips (how many)", "kbps": "kb/s", "si_sdr": "SI-SDR (dB) ↑",
                   "mel_distance": "mel distance ↓", "stft_distance": "STFT distance ↓", "pesq_wb": "PESQ (MOS-LQO) ↑",
                   "stoi": "STOI (0-1) ↑", "dnsmos_ovrl": "DNSMOS OVRL ↑", "dnsmos_p808": "DNSMOS P.808 ↑"}
