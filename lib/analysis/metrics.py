"""Objective quality metrics for codec evaluation.

Every metric takes `estimate` (the decoded audio) and `reference` (the original) with the
same shape: `[T]`, `[B, T]` or `[B, 1, T]` (mono). A `[T]` input returns a Python float;
batched inputs return a float64 tensor `[B]` with one value per item, except `mel_distance`
(the training-objective one from `lib.training.losses`, re-exported) which returns the batch mean as a float.

| metric          | units                         | better |
|-----------------|-------------------------------|--------|
| `si_sdr`        | dB, clamped to [-100, +100]   | higher |
| `mel_distance`  | mean L1 of ln-mel (lib.training.losses)| lower  |
| `stft_distance` | mean L1 of ln-magnitude       | lower  |
| `pesq_wb`       | MOS-LQO, 1.04 .. 4.64         | higher |
| `stoi`          | intelligibility, 0 .. 1       | higher |
| `bitrate`       | bits per second               | lower (at equal quality) |
| `dnsmos_sig`, `dnsmos_bak`, `dnsmos_ovrl`, `dnsmos_p808` | MOS 1 .. 5 | higher |

`dnsmos` needs no reference: DNSMOS P.835 (speech, background, overall) and P.808 (`lib.analysis.dnsmos`) score
the estimate alone.

`band_energy_db` is a diagnostic, not a score: the estimate's energy over the reference's per frequency band, in
dB (0 = the band's level is right; -30 = the band is missing, as in a codec that low-passes). `spectral_swap`
builds hybrids for the same purpose: the reference with the estimate's magnitudes, phases or both in one band, so
that a score of the hybrid says how much of the estimate's loss sits in that band and in that component.

Every metric has a minimum clip length, `METRIC_MIN_SECONDS`. On a shorter clip a metric gives NaN (one
RuntimeWarning) rather than an exception or a number without meaning; `unavailable_reason(metric, seconds)` gives the
text to show in its place, e.g. "n/a (0.18 s < 0.25 s)".
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from lib.analysis.dnsmos import DNSMOS_KEYS, DNSMOS_MIN_SECONDS, dnsmos_scores, dnsmos_unavailable
from lib.analysis.inputs import as_batch, check_rate, ndim, pair, resample
from lib.training.losses import mel_distance  # re-exported: one mel distance for training and evaluation

__all__ = [
    "SI_SDR_CAP_DB",
    "METRIC_DIRECTION",
    "METRIC_UNITS",
    "METRIC_MIN_SECONDS",
    "unavailable_reason",
    "si_sdr",
    "mel_distance",
    "stft_distance",
    "pesq_wb",
    "stoi",
    "dnsmos",
    "DNSMOS_KEYS",
    "dnsmos_unavailable",
    "bitrate",
    "band_energy_db",
    "BAND_EDGES_HZ",
    "spectral_swap",
    "SWAP_PARTS",
    "envelope_swap",
    "evaluate_all",
]

# A perfectly scaled copy has zero residual and an SI-SDR of +inf. A finite cap keeps means,
# tables and plots usable; 100 dB is far above anything a lossy codec reaches (16-bit PCM
# quantisation noise alone sits near 98 dB for a full-scale sine).
SI_SDR_CAP_DB = 100.0

# Which way is better, for axis labels, tables and mapping metrics onto 0-100 scores.
METRIC_DIRECTION = {
    "si_sdr": "higher",
    "mel_distance": "lower",
    "stft_distance": "lower",
    "pesq_wb": "higher",
    "stoi": "higher",
    "bitrate": "lower",
    **dict.fromkeys(DNSMOS_KEYS, "higher"),
}
METRIC_UNITS = {
    "si_sdr": "dB",
    "mel_distance": "log-mel L1",
    "stft_distance": "ln-magnitude L1",
    "pesq_wb": "MOS-LQO",
    "stoi": "0..1",
    "bitrate": "bit/s",
    **dict.fromkeys(DNSMOS_KEYS, "MOS 1..5"),
}

PESQ_RATE = 16000  # wide-band PESQ (ITU-T P.862.2) is defined at 16 kHz

# The shortest clip, in seconds, on which each metric is defined; shorter clips give NaN. Sample-count limits are
# given for every rate from 8 kHz up.
METRIC_MIN_SECONDS = {
    "si_sdr": 0.0,  # any non-empty clip
    "mel_distance": 0.07,  # more than 512 samples (lib.training.losses.mel_distance): 0.064 s at 8 kHz
    "stft_distance": 0.01,  # 64 samples, its smallest FFT size
    "pesq_wb": 0.25,  # the pesq package refuses fewer than 4000 samples at 16 kHz (BufferTooShortError)
    # pystoi needs 30 STFT frames (256 samples, hop 128, at 10 kHz) after its silent-frame removal, which takes 31
    # frames of the same size: 4097 samples, 0.4097 s, here rounded up to 10 ms. Below it pystoi returns 1e-5.
    "stoi": 0.41,
    "bitrate": 0.0,  # a property of the code stream, not of a clip
    # DNSMOS tiles a short clip into its 9.01 s window: from 1 s on it still ranks conditions (lib.analysis.dnsmos)
    **dict.fromkeys(DNSMOS_KEYS, DNSMOS_MIN_SECONDS),
}


def _out(values: torch.Tensor, single: bool):
    return float(values[0]) if single else values


def unavailable_reason(metric: str, seconds: float) -> str | None:
    """Why `metric` is NaN on a clip of `seconds`: "n/a (0.18 s < 0.25 s)" when the clip is shorter than
    `METRIC_MIN_SECONDS[metric]`, else None. The length is shown rounded down to 10 ms, so it never reads as the
    minimum itself. Raises ValueError for a metric not in `METRIC_MIN_SECONDS`."""
    if metric not in METRIC_MIN_SECONDS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRIC_MIN_SECONDS)}")
    minimum = METRIC_MIN_SECONDS[metric]
    if seconds >= minimum:
        return None
    shown = math.floor(seconds * 100 + 1e-9) / 100  # the epsilon keeps 0.29 * 100 = 28.999... at 0.29
    return f"n/a ({shown:.2f} s < {minimum:g} s)"


def _too_short(metric: str, n_samples: int, sample_rate: int, label: str | None = None) -> bool:
    """True (after one RuntimeWarning naming `label` or the metric, and the length) when the clip is below the
    metric's minimum."""
    reason = unavailable_reason(metric, n_samples / sample_rate)
    if reason is not None:
        warnings.warn(f"{label or metric}: {reason}; returning NaN", RuntimeWarning, stacklevel=3)
    return reason is not None


def _nan(batch: int) -> torch.Tensor:
    return torch.full((batch,), math.nan, dtype=torch.float64)


def si_sdr(estimate, reference):
    """Scale-invariant signal-to-distortion ratio (Le Roux et al. 2019), in dB. Higher is better.

    Both signals are made zero-mean; the reference is scaled by the least-squares gain
    `a = <est, ref> / <ref, ref>`, and SI-SDR = 10 log10(|a ref|^2 / |est - a ref|^2).
    A perfectly scaled copy (zero residual) returns `SI_SDR_CAP_DB` (+100 dB) instead of +inf,
    and a silent estimate returns -100 dB instead of -inf: values are clamped to [-100, 100].

    Args:
        estimate, reference: `[T]`, `[B, T]` or `[B, 1, T]`, same shape.
    Returns:
        float for `[T]` input, else float64 tensor `[B]` (dB).
    Raises:
        ValueError on shape/length mismatch or a silent (constant) reference.
    """
    est, ref, single = pair(estimate, reference)
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    ref_energy = (ref * ref).sum(-1)
    if (ref_energy == 0).any():
        raise ValueError("reference is silent (zero energy after removing the mean); SI-SDR is undefined")
    gain = (est * ref).sum(-1) / ref_energy
    target = gain.unsqueeze(-1) * ref
    residual = est - target
    target_energy = (target * target).sum(-1)
    residual_energy = (residual * residual).sum(-1)
    values = 10.0 * torch.log10(target_energy / residual_energy)  # residual 0 -> +inf
    # A silent (constant) estimate gives 0/0; it carries none of the reference, so it is -inf.
    silent = (est * est).sum(-1) == 0
    values = torch.where(silent, torch.full_like(values, -math.inf), values)
    values = values.clamp(-SI_SDR_CAP_DB, SI_SDR_CAP_DB)
    return _out(values, single)


def stft_distance(
    estimate,
    reference,
    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64),
    eps: float = 1e-5,
):
    """Multi-resolution log-magnitude STFT distance. Lower is better (0 = identical).

    For each FFT size n: Hann window of n samples, hop n/4, magnitude |X|; the distance is
    the mean over time-frequency bins of |ln(max(|X_est|, eps)) - ln(max(|X_ref|, eps))|.
    The result is the mean over FFT sizes; units are natural-log magnitude (1.0 = a factor e
    on average). Sizes longer than the signal are skipped. Unlike `mel_distance` it weights
    all frequencies linearly, so it is sensitive to high-frequency losses.

    Args:
        estimate, reference: `[T]`, `[B, T]` or `[B, 1, T]`, same shape.
        fft_sizes: window lengths in samples.
        eps: magnitude floor, so silence does not dominate the log.
    Returns:
        float for `[T]` input, else float64 tensor `[B]`.
    """
    est, ref, single = pair(estimate, reference)
    sizes = [n for n in fft_sizes if n <= est.shape[-1]]
    if not sizes:
        raise ValueError(f"signal of {est.shape[-1]} samples is shorter than every FFT size in fft_sizes={fft_sizes}")
    per_size = []
    for n_fft in sizes:
        window = torch.hann_window(n_fft, dtype=torch.float64)
        mag_est, mag_ref = (
            torch.stft(x, n_fft, hop_length=n_fft // 4, window=window, center=True, return_complex=True).abs()
            for x in (est, ref)
        )
        diff = mag_est.clamp_min(eps).log() - mag_ref.clamp_min(eps).log()
        per_size.append(diff.abs().mean(dim=(-2, -1)))
    return _out(torch.stack(per_size).mean(0), single)


def pesq_wb(estimate, reference, sample_rate: int):
    """Wide-band PESQ (ITU-T P.862.2) through the `pesq` package. Higher is better.

    Units: MOS-LQO from 1.04 (bad) to 4.64 (identical signals). Both signals are resampled to
    16 kHz first (PESQ is only defined at 8/16 kHz). Speech-only metric: music or noise give
    numbers without meaning. A clip in which PESQ finds no speech ("no utterances detected")
    gives NaN and a RuntimeWarning instead of an exception, so a batch still evaluates; so does
    a clip shorter than 0.25 s (`METRIC_MIN_SECONDS`), with one warning for the batch.

    Args:
        estimate, reference: `[T]`, `[B, T]` or `[B, 1, T]`, same shape, at `sample_rate`.
        sample_rate: Hz of both signals.
    Returns:
        float for `[T]` input, else float64 tensor `[B]`.
    """
    from pesq import NoUtterancesError, pesq  # deferred: optional C extension

    sample_rate = check_rate(sample_rate)
    est, ref, single = pair(estimate, reference)
    if _too_short("pesq_wb", est.shape[-1], sample_rate):
        return _out(_nan(est.shape[0]), single)
    # 0.25 s at any rate resamples to at least the 4000 samples at 16 kHz that the pesq package needs
    est, ref = resample(est, sample_rate, PESQ_RATE), resample(ref, sample_rate, PESQ_RATE)
    values = torch.empty(est.shape[0], dtype=torch.float64)
    for i in range(est.shape[0]):
        try:
            if not (ref[i].abs().max() > 0 and est[i].abs().max() > 0):
                raise NoUtterancesError  # the pesq package would divide by a zero peak first
            values[i] = pesq(PESQ_RATE, ref[i].numpy(), est[i].numpy(), "wb")
        except NoUtterancesError:
            warnings.warn(f"pesq_wb: no utterance detected in item {i} (silent or non-speech?); returning NaN",
                          RuntimeWarning, stacklevel=2)
            values[i] = math.nan
    return _out(values, single)


def stoi(estimate, reference, sample_rate: int, extended: bool = False):
    """Short-time objective intelligibility through `pystoi`. Higher is better.

    Units: correlation-based score, 0..1 (1 = identical); `extended=True` gives ESTOI.
    pystoi resamples to 10 kHz internally and drops silent frames (40 dB below the reference's
    loudest); speech-only metric. Where fewer than 30 frames of 25.6 ms are left, pystoi would
    return 1e-5: that item is NaN instead, and so is a whole batch shorter than 0.41 s
    (`METRIC_MIN_SECONDS`), each with one RuntimeWarning.

    Args:
        estimate, reference: `[T]`, `[B, T]` or `[B, 1, T]`, same shape, at `sample_rate`.
        sample_rate: Hz of both signals.
    Returns:
        float for `[T]` input, else float64 tensor `[B]`.
    """
    from pystoi import stoi as _pystoi

    sample_rate = check_rate(sample_rate)
    est, ref, single = pair(estimate, reference)
    if _too_short("stoi", est.shape[-1], sample_rate):
        return _out(_nan(est.shape[0]), single)
    values = _nan(est.shape[0])
    for i in range(est.shape[0]):
        with warnings.catch_warnings():
            # pystoi's "Not enough STFT frames ... Returning 1e-5" becomes an exception here, and the item NaN
            warnings.filterwarnings("error", message="Not enough STFT frames", category=RuntimeWarning)
            try:
                values[i] = _pystoi(ref[i].numpy(), est[i].numpy(), sample_rate, extended=extended)
            except RuntimeWarning:
                pass
    if values.isnan().any():
        items = values.isnan().nonzero().flatten().tolist()
        warnings.warn(f"stoi: items {items} have under 30 frames of speech once silence is dropped; returning NaN",
                      RuntimeWarning, stacklevel=2)
    return _out(values, single)


def dnsmos(estimate, sample_rate: int) -> dict:
    """DNSMOS P.835 (speech, background, overall) and P.808 MOS of `estimate` alone, 1 .. 5, higher is better.

    No reference: `lib.analysis.dnsmos` scores the estimate resampled to 16 kHz, in 9.01 s windows (about 0.4 s
    per distinct window on one thread: 1.5 s for a 4 s clip). Deterministic. Speech-only, like PESQ and STOI.

    Args:
        estimate: `[T]`, `[B, T]` or `[B, 1, T]` at `sample_rate`, full scale +-1.
        sample_rate: Hz.
    Returns:
        `{"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}`: floats for `[T]` input, else float64 tensors
        `[B]`; NaN for a batch shorter than `METRIC_MIN_SECONDS` (one RuntimeWarning).
    Raises:
        RuntimeError naming the package to install when DNSMOS cannot run here (see `dnsmos_unavailable`).
    """
    single, est, sample_rate = ndim(estimate) == 1, as_batch(estimate, "estimate"), check_rate(sample_rate)
    if _too_short(DNSMOS_KEYS[0], est.shape[-1], sample_rate, label="dnsmos"):  # the four share one minimum
        scores = torch.full((est.shape[0], len(DNSMOS_KEYS)), math.nan, dtype=torch.float64)
    else:
        scores = dnsmos_scores(est, sample_rate)
    return {key: _out(scores[:, k], single) for k, key in enumerate(DNSMOS_KEYS)}


def bitrate(n_q: int, codebook_size: int, frame_rate: float) -> float:
    """Bitrate of a residual-VQ code stream, in bits per second (lower = more compression).

    bits/s = n_q * log2(codebook_size) * frame_rate. With a codebook size that is not a power
    of two this is the ideal (entropy-coded) rate; a fixed-length code needs ceil(log2 K) bits.
    Example: EnCodec 24 kHz, 8 codebooks of 1024 at 75 Hz -> 6000 bits/s.
    """
    if isinstance(n_q, bool) or not isinstance(n_q, (int, np.integer)) or n_q < 0:
        raise ValueError(f"n_q must be a non-negative integer, got {n_q!r}")
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, (int, np.integer)) or codebook_size < 2:
        raise ValueError(f"codebook_size must be an integer >= 2, got {codebook_size!r}")
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be positive (frames per second), got {frame_rate!r}")
    return float(n_q * math.log2(codebook_size) * frame_rate)


BAND_EDGES_HZ = (0, 500, 1000, 2000, 4000, 8000)  # the last band runs to Nyquist


def band_energy_db(estimate, reference, sample_rate: int, edges=None):
    """Energy of ``estimate`` over that of ``reference`` per frequency band, in dB.

    Bands are ``[edges[i], edges[i + 1])`` Hz, the last one up to Nyquist, measured on the whole-signal power
    spectrum; ``edges=None`` takes those of :data:`BAND_EDGES_HZ` below Nyquist. Args: ``[T]``, ``[B, T]`` or
    ``[B, 1, T]``, same shape. Returns float64 ``[n_bands]`` for ``[T]`` input, else ``[B, n_bands]``. A band the
    reference leaves silent gives NaN.
    """
    sample_rate = check_rate(sample_rate)
    est, ref, single = pair(estimate, reference)
    edges = [float(e) for e in (edges if edges is not None else [e for e in BAND_EDGES_HZ if e < sample_rate / 2])]
    if any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0 or edges[-1] >= sample_rate / 2:
        raise ValueError(f"edges must increase from >= 0 to below Nyquist ({sample_rate / 2:g} Hz), got {edges}")
    freqs = torch.fft.rfftfreq(est.shape[-1], 1.0 / sample_rate, dtype=torch.float64)
    power_est = torch.fft.rfft(est.double(), dim=-1).abs().square()
    power_ref = torch.fft.rfft(ref.double(), dim=-1).abs().square()
    out = []
    for lo, hi in zip(edges, edges[1:] + [math.inf]):
        band = (freqs >= lo) & (freqs < hi)
        e, r = power_est[..., band].sum(-1), power_ref[..., band].sum(-1)
        out.append(torch.where(r > 0, 10.0 * torch.log10(e.clamp_min(1e-30) / r.clamp_min(1e-30)),
                               torch.full_like(r, math.nan)))
    values = torch.stack(out, dim=-1)
    return values[0] if single else values


SWAP_PARTS = ("magnitude", "phase", "both")


def _stft_pair(est: torch.Tensor, ref: torch.Tensor, sample_rate: int, n_fft: int | None, seconds: float):
    """STFTs of two ``[B, T]`` float64 signals for the swap hybrids: periodic Hann window of ``n_fft`` samples
    (None: the power of two nearest ``seconds``), hop ``n_fft // 4`` (perfect reconstruction). Returns
    ``(spec_est, spec_ref, freqs, inverse)``, specs ``[B, bins, frames]``, ``inverse(spec) -> [B, T]``."""
    n_fft = 2 ** round(math.log2(seconds * sample_rate)) if n_fft is None else int(n_fft)
    if n_fft < 16 or n_fft > ref.shape[-1]:
        raise ValueError(f"n_fft must be in [16, {ref.shape[-1]}] (the clip length), got {n_fft}")
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec_est, spec_ref = (torch.stft(v, n_fft, n_fft // 4, window=window, return_complex=True) for v in (est, ref))
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate, dtype=torch.float64)

    def inverse(spec: torch.Tensor) -> torch.Tensor:
        return torch.istft(spec, n_fft, n_fft // 4, window=window, length=ref.shape[-1])

    return spec_est, spec_ref, freqs, inverse


def spectral_swap(estimate, reference, sample_rate: int, lo_hz: float, hi_hz: float, part: str = "both",
                  n_fft: int | None = None):
    """The reference with the estimate's STFT ``part`` ("magnitude", "phase" or "both") in ``[lo_hz, hi_hz)``.

    Outside the band the result is the reference; inside it, "magnitude" keeps the reference's phases under the
    estimate's magnitudes, "phase" the reference's magnitudes under the estimate's phases. Scoring the hybrid
    against the reference (PESQ, STOI) tells how much of a codec's loss one band and one component cause: a
    hybrid that scores near the codec itself holds the codec's error, one that scores near clean does not.
    STFT: periodic Hann window of ``n_fft`` samples (None: the power of two nearest 40 ms), hop ``n_fft // 4``
    (perfect reconstruction). Args ``[T]``, ``[B, T]`` or ``[B, 1, T]``, same shape; returns float64 ``[T]`` or
    ``[B, T]``.
    """
    sample_rate = check_rate(sample_rate)
    est, ref, single = pair(estimate, reference)
    if part not in SWAP_PARTS:
        raise ValueError(f"part must be one of {SWAP_PARTS}, got {part!r}")
    if not 0 <= lo_hz < hi_hz:
        raise ValueError(f"need 0 <= lo_hz < hi_hz, got lo_hz={lo_hz}, hi_hz={hi_hz}")
    spec_est, spec_ref, freqs, inverse = _stft_pair(est, ref, sample_rate, n_fft, 0.04)
    band = (freqs >= lo_hz) & (freqs < hi_hz)
    magnitude = (spec_est if part in ("magnitude", "both") else spec_ref)[:, band].abs()
    phase = (spec_est if part in ("phase", "both") else spec_ref)[:, band].angle()
    mixed = spec_ref.clone()
    mixed[:, band] = torch.polar(magnitude, phase)
    out = inverse(mixed)
    return out[0] if single else out


def envelope_swap(estimate, reference, sample_rate: int, n_bands: int = 24, n_fft: int | None = None):
    """The estimate with the reference's energy in every (STFT frame, frequency band) cell.

    Each cell's STFT bins of the estimate are scaled by ``sqrt(E_ref / E_est)`` (at most x30), so the result keeps
    the estimate's fine structure (which harmonics, which phases) under the reference's fast spectral envelope.
    Scored against the reference, it tells how much of a codec's loss the envelope holds: a hybrid that scores
    near clean says the codec has the right detail at the wrong levels, one that scores near the codec says the
    detail itself is wrong. Bands: ``n_bands`` log-spaced from 100 Hz to Nyquist plus one below 100 Hz (about a
    quarter of an octave each at 24 kHz). STFT: periodic Hann window of ``n_fft`` samples (None: the power of two
    nearest 20 ms, 512 at 24 kHz), hop ``n_fft // 4``. Args ``[T]``, ``[B, T]`` or ``[B, 1, T]``, same shape;
    returns float64 ``[T]`` or ``[B, T]``.
    """
    sample_rate = check_rate(sample_rate)
    est, ref, single = pair(estimate, reference)
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}")
    spec_est, spec_ref, freqs, inverse = _stft_pair(est, ref, sample_rate, n_fft, 0.02)
    edges = torch.cat([torch.zeros(1, dtype=torch.float64),
                       torch.logspace(2.0, math.log10(sample_rate / 2 + 1), n_bands + 1, dtype=torch.float64)[:-1]])
    band_of_bin = torch.bucketize(freqs, edges, right=True) - 1  # [bins] in 0 .. n_bands
    onehot = torch.nn.functional.one_hot(band_of_bin, n_bands + 1).to(torch.float64)  # [bins, bands]
    energy_ref, energy_est = (torch.einsum("bft,fk->bkt", spec.abs().square(), onehot) for spec in (spec_ref, spec_est))
    gain = (energy_ref / energy_est.clamp_min(1e-20)).sqrt().clamp(max=30.0)
    out = inverse(spec_est * torch.einsum("bkt,fk->bft", gain, onehot))
    return out[0] if single else out


def evaluate_all(estimate, reference, sample_rate: int, perceptual: bool = True,
                 pesq: bool = True, dnsmos: bool = False) -> dict[str, float]:
    """All quality metrics for one clip or a batch, as plain floats (batch mean; NaNs ignored).

    Returns `{"si_sdr", "mel_distance", "stft_distance", "pesq_wb", "stoi"}`; see
    `METRIC_DIRECTION` / `METRIC_UNITS` for the direction and units of each. `perceptual=False`
    skips PESQ and STOI (the slow, speech-only ones); `pesq=False` skips PESQ alone (NaN), for
    where the `pesq` package is missing. `dnsmos=True` adds the four `DNSMOS_KEYS`, the estimate's
    DNSMOS (about 1.5 s per 4 s clip on one thread). A metric the clip is too short for (`METRIC_MIN_SECONDS`)
    is NaN, with one RuntimeWarning that names them all; `unavailable_reason` gives the text to show.
    """
    sample_rate = check_rate(sample_rate)
    est, ref, _ = pair(estimate, reference)  # validates once, with the user's argument names

    def mean(v) -> float:
        v = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
        return float(torch.nanmean(v)) if not torch.isnan(v).all() else math.nan

    compute = {
        "si_sdr": lambda: si_sdr(est, ref),
        "mel_distance": lambda: mel_distance(est.float().unsqueeze(1), ref.float().unsqueeze(1), sample_rate),
        "stft_distance": lambda: stft_distance(est, ref),
    }
    if perceptual:
        compute["pesq_wb"] = (lambda: pesq_wb(est, ref, sample_rate)) if pesq else (lambda: math.nan)
        compute["stoi"] = lambda: stoi(est, ref, sample_rate)
    if dnsmos:
        scores = functools.cache(lambda: dnsmos_scores(est, sample_rate))  # one run for the four keys
        compute.update({key: (lambda k=k: scores()[:, k]) for k, key in enumerate(DNSMOS_KEYS)})
    seconds = est.shape[-1] / sample_rate
    short = {name: reason for name in compute if (reason := unavailable_reason(name, seconds))}
    if short:  # the clip's length, not the codec: said once here rather than by each metric
        said = ", ".join(f"{name} {reason}" for name, reason in short.items())
        warnings.warn(f"evaluate_all: a {seconds:.2f} s clip is too short for {said}; those are NaN",
                      RuntimeWarning, stacklevel=2)
    return {name: math.nan if name in short else mean(fn()) for name, fn in compute.items()}
