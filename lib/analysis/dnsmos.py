"""DNSMOS (Reddy et al., ICASSP 2021/2022): a no-reference estimate of the MOS listeners would give a speech clip.

Two ONNX networks that ship inside the `speechmos` wheel (`speechmos/dnsmos_models/`, read from disk, never
downloaded) score 16 kHz mono speech in windows of 9.01 s:

| key           | model               | what it predicts (ITU-T)                        |
|---------------|---------------------|-------------------------------------------------|
| `dnsmos_sig`  | `sig_bak_ovr.onnx`  | P.835 speech signal quality (distortion)        |
| `dnsmos_bak`  | `sig_bak_ovr.onnx`  | P.835 background (noise) quality                |
| `dnsmos_ovrl` | `sig_bak_ovr.onnx`  | P.835 overall quality                           |
| `dnsmos_p808` | `model_v8.onnx`     | P.808 absolute category rating of the whole     |

All four are MOS on 1 (bad) .. 5 (excellent), higher is better. The windowing follows the reference script of the
DNS Challenge (`dnsmos_local.py`), so numbers compare with published ones: a clip shorter than a window is doubled
(tiled) until it fills one; windows start every second; the clip's score is the mean over windows. This module is
the engine (`dnsmos_scores`); `lib.analysis.metrics.dnsmos` is the metric (input shapes, minimum length).

Short clips: tiling has no hard limit, so `DNSMOS_MIN_SECONDS` was measured. On 11 s of a human voice (alsa-utils'
recordings) cut into crops every 0.5 s, OVRL ranked the clean crop above the same crop in white noise at 20 dB SNR
on every crop from 1 s on, with 82 % of the full-length gap (0.60 of 0.73 MOS); at 0.5 s on 91 % of crops, with 62 %.
Tiling still lowers the scores of short clips (OVRL of clean crops against the full clip: -0.9 at 0.5 s, -0.6 at
1 s, -0.4 at 2 s, -0.2 at 3 to 4 s, -0.1 at 6 s; espeak-ng speech alike), so compare DNSMOS between systems on the
same clips, never between clips of different lengths.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

from lib.analysis.inputs import resample

__all__ = ["DNSMOS_KEYS", "DNSMOS_MIN_SECONDS", "DNSMOS_RATE", "DNSMOS_WINDOW_SECONDS", "dnsmos_unavailable",
           "dnsmos_scores", "score_16k"]

DNSMOS_KEYS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
DNSMOS_RATE = 16000  # both networks were trained on 16 kHz audio
DNSMOS_WINDOW_SECONDS = 9.01  # input of the P.835 network: 144160 samples
_WINDOW = int(DNSMOS_WINDOW_SECONDS * DNSMOS_RATE)
_HOP = DNSMOS_RATE  # one window per second of audio
DNSMOS_MIN_SECONDS = 1.0  # the shortest clip on which the scores still rank conditions (module docstring)

# The P.835 network's raw outputs are mapped onto listener MOS by quadratic fits (highest power first), those of
# the DNS Challenge's reference script for the non-personalised model.
_POLY_SIG = (-0.08397278, 1.22083953, 0.0052439)
_POLY_BAK = (-0.13166888, 1.60915514, -0.39604546)
_POLY_OVRL = (-0.06766283, 1.11546468, 0.04602535)

# P.808 network input: 120 mel bands of a 321-sample (20 ms) window, hop 160 (10 ms), in dB relative to the
# window's loudest bin, mapped by (dB + 40) / 40 so that a 40 dB range covers 0..1.
_N_MELS, _N_FFT, _MEL_HOP = 120, 321, 160


def dnsmos_unavailable() -> str | None:
    """Why DNSMOS cannot run here (a missing package, named with its pip install), or None when it can."""
    for package in ("speechmos", "onnxruntime", "librosa"):
        if importlib.util.find_spec(package) is None:
            return f"DNSMOS needs the {package} package: pip install -r requirements.txt"
    if not (_models_dir() / "sig_bak_ovr.onnx").is_file():
        return f"the DNSMOS models are missing from {_models_dir()}"
    return None


def _models_dir() -> Path:
    return Path(importlib.util.find_spec("speechmos").origin).parent / "dnsmos_models"


@functools.lru_cache(maxsize=8)
def _session(model: str, threads: int):
    """One ONNX Runtime session per (model file, thread count), created on first use. `threads` intra-op threads
    and one inter-op thread, so DNSMOS uses the cores torch was told to use and no more."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the models' graph warnings are not actionable here
    return ort.InferenceSession(str(_models_dir() / model), options, providers=["CPUExecutionProvider"])


def _p808_features(window: np.ndarray) -> np.ndarray:
    """`[144160]` float32 window -> `[1, 900, 120]` scaled log-mel frames (the last 10 ms are dropped, as the model
    was trained, to give exactly 900 frames)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=window[:-_MEL_HOP], sr=DNSMOS_RATE, n_fft=_N_FFT, hop_length=_MEL_HOP,
                                         n_mels=_N_MELS)
    scaled = (librosa.power_to_db(mel, ref=np.max) + 40.0) / 40.0
    return scaled.T[None].astype(np.float32)


def _window_starts(length: int) -> tuple[int, list[int]]:
    """Where the 9.01 s windows of a `length`-sample clip start, as the reference script cuts them: a short clip is
    doubled until it fills a window, then one window starts every whole second that fits (its count formula kept as
    it is, so a 10.5 s clip gives one window, not two). Returns `(tiled length, starts)`."""
    tiled = length
    while tiled < _WINDOW:
        tiled *= 2
    count = int(np.floor(tiled / DNSMOS_RATE) - DNSMOS_WINDOW_SECONDS) + 1
    return tiled, [i * _HOP for i in range(count)]


def _score_window(window: np.ndarray, threads: int) -> tuple[float, float, float, float]:
    """One `[144160]` float32 window -> (SIG, BAK, OVRL, P.808) MOS."""
    raw = _session("sig_bak_ovr.onnx", threads).run(None, {"input_1": window[None]})[0][0].astype(np.float64)
    p808 = _session("model_v8.onnx", threads).run(None, {"input_1": _p808_features(window)})[0][0][0]
    return (float(np.polyval(_POLY_SIG, raw[0])), float(np.polyval(_POLY_BAK, raw[1])),
            float(np.polyval(_POLY_OVRL, raw[2])), float(p808))


def score_16k(batch: np.ndarray) -> np.ndarray:
    """DNSMOS of each row of `batch` `[B, T]` (float, 16 kHz mono, full scale +-1, T > 0) -> float64 `[B, 4]`, the
    columns in `DNSMOS_KEYS` order (SIG, BAK, OVRL, P.808), MOS 1..5.

    Each window goes through the networks alone (batch of one), so an item's score never depends on the others.
    A tiled clip repeats with its own length as period, so windows whose starts differ by a multiple of it hold
    the same samples: each is scored once (a 4 s clip: 4 network runs instead of 7, same mean).
    """
    if batch.ndim != 2 or batch.shape[1] == 0:
        raise ValueError(f"batch must be [B, T] with T > 0, got shape {batch.shape}")
    threads = max(1, torch.get_num_threads())
    length = batch.shape[1]
    tiled, starts = _window_starts(length)
    out = np.empty((batch.shape[0], len(DNSMOS_KEYS)), dtype=np.float64)
    for i, clip in enumerate(batch.astype(np.float32)):
        clip = np.tile(clip, tiled // length)
        scores: dict[int, tuple[float, ...]] = {}
        for start in starts:
            if start % length not in scores:
                scores[start % length] = _score_window(clip[start: start + _WINDOW], threads)
        out[i] = np.mean([scores[start % length] for start in starts], axis=0)
    return out


def dnsmos_scores(batch: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """DNSMOS of each row of `batch` float `[B, T]` at `sample_rate` (resampled to 16 kHz here) -> float64 `[B, 4]`,
    columns in `DNSMOS_KEYS` order. RuntimeError naming the missing package where DNSMOS cannot run."""
    if (reason := dnsmos_unavailable()) is not None:
        raise RuntimeError(reason)
    if not torch.isfinite(batch).all():
        raise ValueError("estimate contains NaN or inf samples")
    audio = resample(batch.detach().cpu().double(), sample_rate, DNSMOS_RATE)
    return torch.from_numpy(score_16k(audio.numpy()))
