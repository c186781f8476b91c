"""Audio file I/O, resampling and level normalisation.

Files are read and written with `soundfile` (libsndfile): WAV, FLAC, OGG/Vorbis, AIFF, ... and MP3
where the installed libsndfile supports it. `torchaudio.load/save` are deliberately not used (they need
torchcodec, which is not available everywhere); torchaudio is only used for resampling.

Audio tensors are float32 `[C, T]` (channels first); batches elsewhere are `[B, C, T]`.

Bad files raise `AudioError`, a `ValueError` whose `.reason` is one of the short codes below and whose
message names the file. The same codes are written into the data manifest's `status` column.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from scipy.signal import lfilter

# Reasons a file cannot be used (manifest `status` values besides "ok").
MISSING = "missing"
UNSUPPORTED_FORMAT = "unsupported_format"
CORRUPT = "corrupt"
EMPTY = "empty"
ZERO_CHANNELS = "zero_channels"
NON_FINITE = "nan_or_inf"
SILENT = "silent"
UNREADABLE = "unreadable"
OUT_OF_RANGE = "out_of_range"

REASON_TEXT = {
    MISSING: "file does not exist",
    UNSUPPORTED_FORMAT: "unsupported audio format",
    CORRUPT: "corrupt or unreadable audio data",
    EMPTY: "file holds no audio samples",
    ZERO_CHANNELS: "file declares zero channels",
    NON_FINITE: "samples contain NaN or inf",
    SILENT: "audio is silent",
    UNREADABLE: "file cannot be read (permission denied or an I/O error)",
    OUT_OF_RANGE: "samples are absurdly large",
}

# Extensions libsndfile reads natively; a read failure on one of these means the data is corrupt.
SUPPORTED_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"}
    | ({".mp3"} if "MP3" in sf.available_formats() else set())
)
# Extensions that look like audio: scanned so that a file we cannot read is reported, not silently ignored.
# (.opus often reads through libsndfile's Ogg support; if not, it is reported as unsupported.)
AUDIO_EXTENSIONS = SUPPORTED_EXTENSIONS | frozenset(
    {".mp3", ".opus", ".m4a", ".aac", ".wma", ".mp4", ".webm", ".amr", ".ape", ".wv", ".mka", ".mpc", ".ac3"}
)

# Peak below this (about -80 dBFS) counts as silence: a few LSBs of 16-bit dither are not a usable clip.
DEFAULT_SILENCE_THRESHOLD = 1e-4
# Peak above this (60 dB over full scale) is no recording: a float file holding 1e30 would otherwise be scaled by
# 1e-30 on conversion and become a single click.
MAX_PEAK = 1000.0
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
_FORMAT_ALIASES = {".wave": "WAV", ".oga": "OGG", ".aif": "AIFF", ".aifc": "AIFF", ".snd": "AU"}


class AudioError(ValueError):
    """An audio file that cannot be used. `.path` names the file, `.reason` is a short code (see REASON_TEXT)."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        message = f"audio file '{self.path}': {REASON_TEXT.get(reason, reason)}"
        super().__init__(f"{message} ({detail})" if detail else message)

    def __reduce__(self):  # keep the custom constructor picklable (DataLoader workers, multiprocessing)
        return (AudioError, (self.path, self.reason, self.detail))


@dataclass(frozen=True)
class AudioInfo:
    """What `check_audio` learned about a readable, non-silent, finite audio file."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    peak: float

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def _check_path(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, MISSING)
    if not path.is_file():
        raise AudioError(path, MISSING, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(path, EMPTY, "0 bytes")
    if not os.access(path, os.R_OK):
        raise AudioError(path, UNREADABLE, "permission denied")


def _check_peak(path: Path, peak: float) -> None:
    if peak > MAX_PEAK:
        raise AudioError(path, OUT_OF_RANGE, f"peak {peak:.3g} > {MAX_PEAK:g}")


def _translate(path: Path, err: Exception) -> AudioError:
    """Turn a libsndfile error into an AudioError with the most specific reason we can tell."""
    text = getattr(err, "error_string", "") or str(err)
    code = getattr(err, "code", None)
    if "permission denied" in text.lower() or not os.access(path, os.R_OK):
        return AudioError(path, UNREADABLE, text)
    if "channel count is zero" in text.lower():
        return AudioError(path, ZERO_CHANNELS, text)
    if code == 4 or "unsupported" in text.lower() or "not supported" in text.lower():
        return AudioError(path, UNSUPPORTED_FORMAT, text)
    if code == 1 and path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        # libsndfile did not recognise it and the extension is not one it reads: a format it lacks.
        kind = path.suffix or "files without extension"
        return AudioError(path, UNSUPPORTED_FORMAT,
                          f"libsndfile has no decoder for '{kind}'; convert it to WAV or FLAC, e.g. with ffmpeg")
    return AudioError(path, CORRUPT, text)


def check_audio(path: str | os.PathLike, silence_threshold: float = DEFAULT_SILENCE_THRESHOLD,
                block_frames: int = 1 << 16) -> AudioInfo:
    """Read a whole file in blocks and return its AudioInfo, or raise AudioError saying why it is unusable.

    Reasons: missing, unreadable, unsupported_format, corrupt, empty, zero_channels, nan_or_inf, out_of_range
    (peak |x| > MAX_PEAK), silent (peak |x| < silence_threshold). Reading in blocks keeps memory flat for long files.
    """
    path = Path(path)
    _check_path(path)
    try:
        with sf.SoundFile(str(path)) as f:
            if f.channels == 0:
                raise AudioError(path, ZERO_CHANNELS)
            sample_rate, channels, fmt, subtype = f.samplerate, f.channels, f.format, f.subtype
            frames, peak = 0, 0.0
            for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                finite = np.isfinite(block).all(axis=1)
                if not finite.all():
                    raise AudioError(path, NON_FINITE, f"first at frame {frames + int(np.argmin(finite))}")
                frames += block.shape[0]
                if block.size:
                    peak = max(peak, float(np.abs(block).max()))
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError) as err:
        raise _translate(path, err) from None
    if frames == 0:
        raise AudioError(path, EMPTY, "0 frames")
    _check_peak(path, peak)
    if peak < silence_threshold:
        raise AudioError(path, SILENT, f"peak {peak:.2e} < {silence_threshold:g}")
    return AudioInfo(str(path), int(sample_rate), int(channels), frames, fmt, subtype, peak)


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = True,
               return_sample_rate: bool = False) -> torch.Tensor | tuple[torch.Tensor, int]:
    """Load a file as float32 `[C, T]` in [-1, 1].

    mono=True averages the channels to `[1, T]`; mono=False keeps them. With `sample_rate` set, the audio is
    resampled to it. Raises AudioError (missing, unreadable, unsupported_format, corrupt, empty, zero_channels,
    nan_or_inf, out_of_range).
    Silence is loaded without complaint: only the dataset manifest rejects silent files.
    With return_sample_rate=True, returns `(wav, rate)` where rate is the rate of the returned tensor.
    """
    path = Path(path)
    if sample_rate is not None and (int(sample_rate) != sample_rate or sample_rate <= 0):
        raise ValueError(f"sample_rate must be a positive integer or None, got {sample_rate!r}")
    _check_path(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except (sf.LibsndfileError, RuntimeError) as err:
        raise _translate(path, err) from None
    if data.shape[1] == 0:
        raise AudioError(path, ZERO_CHANNELS)
    if data.shape[0] == 0:
        raise AudioError(path, EMPTY, "0 frames")
    if not np.isfinite(data).all():
        raise AudioError(path, NON_FINITE)
    _check_peak(path, float(np.abs(data).max()))
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # [C, T]
    if mono and wav.shape[0] > 1:
        wav = wav.mean(dim=0, keepdim=True)
    rate = int(file_rate)
    if sample_rate is not None and sample_rate != rate:
        wav = resample(wav, rate, sample_rate)
        rate = int(sample_rate)
    return (wav, rate) if return_sample_rate else wav


def _as_channels_first(wav: torch.Tensor | np.ndarray, name: str = "wav") -> np.ndarray:
    """[T] or [C, T] tensor/array -> float32 numpy [C, T]."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().to("cpu", torch.float32).numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise ValueError(f"{name} must be [T] or [C, T], got shape {tuple(wav.shape)}")
    return wav


def save_audio(path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int,
               subtype: str | None = None) -> Path:
    """Write `wav` ([C, T] or [T]) to `path`; the format follows the extension (.wav, .flac, .ogg, .mp3, ...).

    subtype=None uses libsndfile's default (PCM_16 for WAV/FLAC, VORBIS for OGG); "FLOAT" keeps float32 WAV.
    Integer and lossy formats cannot hold values outside [-1, 1]: those are clipped, with a warning.
    Creates missing parent folders. Returns the path.
    """
    path = Path(path)
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    ext = path.suffix.lower()
    fmt = _FORMAT_ALIASES.get(ext, ext[1:].upper())
    if fmt not in sf.available_formats():
        raise ValueError(f"cannot write '{path}': unsupported output format '{ext or '(no extension)'}' "
                         f"(use .wav, .flac, .ogg{', .mp3' if 'MP3' in sf.available_formats() else ''})")
    data = _as_channels_first(wav)
    if not np.isfinite(data).all():
        raise ValueError(f"cannot write '{path}': wav contains NaN or inf")
    subtype = subtype or sf.default_subtype(fmt)
    if subtype not in _FLOAT_SUBTYPES and data.size and np.abs(data).max() > 1.0:
        warnings.warn(f"save_audio: clipping {path.name} to [-1, 1] (peak {np.abs(data).max():.3f})", stacklevel=2)
        data = np.clip(data, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.T, int(sample_rate), subtype=subtype, format=fmt)
    return path


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (`[..., T] -> [..., ceil(T * new_sr / orig_sr)]`)."""
    for name, rate in (("orig_sr", orig_sr), ("new_sr", new_sr)):
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"{name} must be a positive integer, got {rate!r}")
    if orig_sr == new_sr:
        return wav
    return AF.resample(wav, int(orig_sr), int(new_sr))


def peak_normalize(wav: torch.Tensor, peak: float = 0.95, eps: float = 1e-8) -> torch.Tensor:
    """Scale so that max |x| == peak. `[T]`/`[C, T]` are scaled as one signal, `[B, C, T]` per item.

    Silent input (max |x| < eps) is returned unchanged rather than blown up.
    """
    if peak <= 0:
        raise ValueError(f"peak must be positive, got {peak}")
    if wav.dim() == 3:
        current = wav.abs().amax(dim=(1, 2), keepdim=True)
    else:
        current = wav.abs().max()
    gain = torch.where(current > eps, peak / current.clamp_min(eps), torch.ones_like(current))
    return wav * gain


def k_weighting_coefficients(sample_rate: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The two biquads of the ITU-R BS.1770 K-weighting filter, designed for any sample rate.

    Returns ((b_shelf, a_shelf), (b_highpass, a_highpass)). At 48 kHz they equal the coefficients printed in
    the recommendation. The analogue prototypes (a +4 dB high shelf near 1.68 kHz, a 38 Hz high-pass) are
    mapped with the bilinear transform, which is what makes other rates possible.
    """
    # Stage 1: high shelf (models the acoustic effect of the head).
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    b_shelf = np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    a_shelf = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / q + k * k]) / a0
    # Stage 2: RLB high-pass (revised low-frequency B curve).
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    b_hp = np.array([1.0, -2.0, 1.0])
    a_hp = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / q + k * k]) / a0
    return (b_shelf, a_shelf), (b_hp, a_hp)


def loudness(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness in LUFS of `[C, T]` (or `[T]`) audio, after ITU-R BS.1770-4.

    K-weighting, 400 ms blocks with 75 % overlap, absolute gate at -70 LUFS and relative gate at -10 LU,
    all channels weighted 1 (mono/stereo). Clips shorter than one block are measured as a single ungated
    block. Silence gives -inf. A full-scale 997 Hz sine in one channel measures -3.01 LUFS.
    """
    x = _as_channels_first(wav).astype(np.float64)
    (b1, a1), (b2, a2) = k_weighting_coefficients(sample_rate)
    y = lfilter(b2, a2, lfilter(b1, a1, x, axis=-1), axis=-1)  # [C, T]
    block = int(round(0.4 * sample_rate))
    step = int(round(0.1 * sample_rate))
    if y.shape[-1] < block:
        power = float((y ** 2).mean(axis=-1).sum())
        return -0.691 + 10.0 * math.log10(power) if power > 0 else -math.inf
    starts = np.arange(0, y.shape[-1] - block + 1, step)
    cumsum = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(y ** 2, axis=-1)], axis=-1)
    block_power = ((cumsum[:, starts + block] - cumsum[:, starts]) / block).sum(axis=0)  # [n_blocks]
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(block_power)
    gated = block_lufs > -70.0
    if not gated.any():
        return -math.inf
    relative_gate = -0.691 + 10.0 * math.log10(block_power[gated].mean()) - 10.0
    gated &= block_lufs > relative_gate
    return -0.691 + 10.0 * math.log10(block_power[gated].mean())


def loudness_normalize(wav: torch.Tensor, sample_rate: int, target_lufs: float = -23.0,
                       max_peak: float | None = None) -> torch.Tensor:
    """Apply one gain so that `loudness(wav) == target_lufs` (K-weighted BS.1770, see `loudness`).

    `[T]`/`[C, T]` in, same shape out. Silence is returned unchanged. No limiter is applied, so loud targets
    can push samples past 1; with max_peak set, the gain is reduced (and the target missed) to keep
    max |x| <= max_peak.
    """
    current = loudness(wav, sample_rate)
    if not math.isfinite(current):
        return wav
    gain = 10.0 ** ((target_lufs - current) / 20.0)
    if max_peak is not None:
        peak = float(wav.abs().max())
        gain = min(gain, max_peak / peak)
    return wav * gain


def mono_numpy(wav: torch.Tensor | np.ndarray, name: str = "wav", mix: bool = False) -> np.ndarray:
    """One clip as float32 numpy ``[T]``.

    ``mix=False`` accepts only one channel (``[T]``, ``[1, T]``, ``[1, 1, T]``) and rejects an empty clip;
    ``mix=True`` also averages the channels of ``[C, T]`` / ``[1, C, T]``.
    """
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().to("cpu", torch.float32).numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if mix:
        while wav.ndim > 2 and wav.shape[0] == 1:
            wav = wav[0]
        if wav.ndim == 2:
            wav = wav.mean(axis=0)
        if wav.ndim != 1:
            raise ValueError(f"{name} must be [T], [C, T] or [1, C, T], got shape {wav.shape}")
        return wav
    if wav.ndim > 1:
        if int(np.prod(wav.shape[:-1])) != 1:
            raise ValueError(f"{name} must be one mono clip ([T], [1, T] or [1, 1, T]), got shape {wav.shape}")
        wav = wav.reshape(-1)
    if wav.size == 0:
        raise ValueError(f"{name} is empty")
    return wav


def wav_bytes(wav: torch.Tensor | np.ndarray, sample_rate: int) -> bytes:
    """Mono clip -> 16-bit PCM WAV file bytes, unnormalised (values beyond [-1, 1] clip): for inline players."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(mono_numpy(wav), -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
