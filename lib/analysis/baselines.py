"""Reference systems to hear and measure beside a neural codec.

- `lowpass_anchor`: the MUSHRA low anchor (ITU-R BS.1534: the reference low-passed at 3.5 kHz).
- `mulaw_8bit`: 8-bit mu-law companding (G.711-style, 8 bits per sample: 64 kb/s at 8 kHz).
- `codec_roundtrip`: a real codec through soundfile/libsndfile (Opus or Vorbis in OGG, MP3),
  encoded and decoded in memory, with the bitrate measured from the encoded size.
- `opus_tools_roundtrip`: Opus as users run it, the `opusenc` / `opusdec` programs of Debian's opus-tools
  (`opusenc --bitrate 6`: VBR, libopus' default "audio" application), with the payload bitrate read from the
  Ogg pages; `opus_tools_unavailable()` says why it cannot run here (None when it can).
- `available_baselines(sample_rate)`: the list that works on this machine, ready to run.

Audio in and out: `[T]`, `[C, T]` or `[B, C, T]` float tensors in [-1, 1]; outputs keep the
input's shape, dtype and length.
"""
from __future__ import annotations

import functools
import io
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch
import torchaudio
from scipy import signal

__all__ = [
    "Baseline",
    "lowpass_anchor",
    "mulaw_8bit",
    "mulaw_bitrate",
    "codec_roundtrip",
    "opus_level_for_kbps",
    "opus_tools_roundtrip",
    "opus_tools_unavailable",
    "ogg_packet_sizes",
    "available_baselines",
    "OPUS_SAMPLE_RATES",
]

OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)  # the only input rates libopus accepts
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass
class Baseline:
    """A baseline system: `fn(wav) -> decoded wav` (same shape), `bitrate` in bits/s (None = not a bitrate
    system, e.g. the anchor). Codec bitrates are measured on a probe clip; VBR codecs vary with content,
    so use `codec_roundtrip` to get the rate on your own clip. `available=False` ones say why in `note`."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    bitrate: float | None
    available: bool = True
    note: str = ""


def _to_numpy_items(wav: torch.Tensor, name: str = "wav") -> tuple[np.ndarray, tuple[int, ...]]:
    """`[T]`, `[C, T]` or `[B, C, T]` -> float64 array `[N, T]` of mono rows, plus the original shape."""
    if not isinstance(wav, torch.Tensor):
        wav = torch.as_tensor(np.asarray(wav))
    if wav.dim() not in (1, 2, 3) or wav.shape[-1] == 0:
        raise ValueError(f"{name} must have shape [T], [C, T] or [B, C, T] with T > 0, got {tuple(wav.shape)}")
    if not torch.is_floating_point(wav):
        raise ValueError(f"{name} must be floating-point audio, got dtype {wav.dtype}")
    return wav.detach().cpu().to(torch.float64).reshape(-1, wav.shape[-1]).numpy(), tuple(wav.shape)


def _from_numpy_items(items: np.ndarray, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(items)).reshape(shape).to(like.dtype)


def _check_rate(sample_rate) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return int(sample_rate)


def lowpass_anchor(wav: torch.Tensor, sample_rate: int, cutoff: float = 3500.0) -> torch.Tensor:
    """Low-pass filtered copy of `wav`: the MUSHRA low anchor (3.5 kHz; BS.1534 also uses 7 kHz).

    Zero-phase linear-phase FIR (Kaiser window, beta 8: about 80 dB stop-band, transition band a
    few hundred Hz at 48 kHz), applied centred so the anchor is time-aligned with the reference.
    Shape, dtype and length are kept: `[T]`, `[C, T]` or `[B, C, T]` in and out.
    """
    sample_rate = _check_rate(sample_rate)
    if not 0 < cutoff < sample_rate / 2:
        raise ValueError(f"cutoff must be in (0, {sample_rate / 2}) Hz for sample_rate={sample_rate}, got {cutoff}")
    items, shape = _to_numpy_items(wav)
    # Odd length -> integer group delay, so 'same' convolution is exactly zero-phase.
    # ~0.02 s of taps keeps the transition band narrow at any rate.
    n_taps = 2 * int(0.01 * sample_rate) + 1
    taps = signal.firwin(n_taps, cutoff, window=("kaiser", 8.0), fs=sample_rate)
    filtered = signal.fftconvolve(items, taps[None, :], mode="same", axes=-1)
    return _from_numpy_items(filtered, shape, wav)


MU = 255.0


def mulaw_8bit(wav: torch.Tensor) -> torch.Tensor:
    """Encode to 8-bit mu-law (mu = 255) and decode again. Shape, dtype and length kept.

    Continuous mu-law companding y = sign(x) ln(1 + mu|x|) / ln(1 + mu), then a mid-rise uniform
    quantiser with 256 levels on y in [-1, 1] (step 2/256; no exact zero, as in G.711).
    Samples outside [-1, 1] are clipped. Bitrate: 8 bits per sample, see `mulaw_bitrate`.
    """
    items, shape = _to_numpy_items(wav)
    x = np.clip(items, -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    codes = np.clip(np.floor((y + 1.0) * 128.0), 0, 255)  # 8-bit code 0..255
    y_hat = (codes + 0.5) / 128.0 - 1.0
    x_hat = np.sign(y_hat) * np.expm1(np.abs(y_hat) * np.log1p(MU)) / MU
    return _from_numpy_items(x_hat, shape, wav)


def mulaw_bitrate(sample_rate: int) -> float:
    """Bitrate of 8-bit mu-law in bits per second: 8 * sample_rate (64 kb/s at 8 kHz)."""
    return 8.0 * _check_rate(sample_rate)


def _encode(data: np.ndarray, sample_rate: int, fmt: str, subtype: str, compression_level: float | None) -> bytes:
    """`data` `[T, C]` float -> encoded file bytes, written in memory."""
    buffer = io.BytesIO()
    sf.write(buffer, data, sample_rate, format=fmt, subtype=subtype, compression_level=compression_level)
    return buffer.getvalue()


@functools.lru_cache(maxsize=64)
def _header_bytes(sample_rate: int, channels: int, fmt: str, subtype: str, compression_level: float | None) -> int:
    """Size of a file with no audio: the container and codec headers (Vorbis ~3.7 kB of codebooks,
    Opus ~0.9 kB), which would otherwise dominate the measured rate of a short clip."""
    return len(_encode(np.zeros((0, channels), np.float32), sample_rate, fmt, subtype, compression_level))


def _supported_rate(fmt: str, subtype: str, sample_rate: int) -> int:
    """The rate to encode at: `sample_rate` itself if the codec takes it, else the next higher one it takes."""
    if subtype == "OPUS":
        allowed = OPUS_SAMPLE_RATES
    elif fmt == "MP3":
        allowed = MP3_SAMPLE_RATES
    else:
        return sample_rate
    if sample_rate in allowed:
        return sample_rate
    higher = [r for r in allowed if r >= sample_rate]
    return higher[0] if higher else allowed[-1]


def codec_roundtrip(
    wav: torch.Tensor,
    sample_rate: int,
    fmt: str = "OGG",
    subtype: str = "OPUS",
    compression_level: float | None = 0.976,
    include_header: bool = False,
) -> tuple[torch.Tensor, float]:
    """Encode with a real codec through libsndfile and decode again, all in memory.

    Args:
        wav: `[T]`, `[C, T]` or `[B, C, T]` float in [-1, 1] (clipped outside); each `[C, T]` item is one file.
        sample_rate: Hz. Opus accepts only 8/12/16/24/48 kHz and MP3 the MPEG rates: other rates are
            resampled to the next supported rate for the codec and back.
        fmt, subtype: e.g. ("OGG", "OPUS"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III").
        compression_level: libsndfile's 0..1 knob (0 = best quality/largest, 1 = smallest).
            Opus: target bitrate ~ 256 - 250 * level kb/s (see `opus_level_for_kbps`);
            Vorbis: quality 1.0 -> -0.1; MP3: VBR quality (1.0 itself is rejected, use 0.99).
            None = libsndfile's default.
        include_header: count container/codec headers in the rate (default: payload only).
    Returns:
        (decoded, bits_per_second): decoded has the input's shape/dtype/length (libsndfile already
        removes the codec delay; the tail is trimmed or zero-padded); bits_per_second is the
        encoded size * 8 / duration, averaged over items.
    Raises:
        ValueError if libsndfile on this machine cannot write `fmt`/`subtype`.
    """
    sample_rate = _check_rate(sample_rate)
    fmt, subtype = fmt.upper(), subtype.upper()
    if not sf.check_format(fmt, subtype):
        raise ValueError(
            f"fmt/subtype {fmt}/{subtype} is not supported by libsndfile {sf.__libsndfile_version__} here; "
            f"available subtypes for {fmt}: {sorted(sf.available_subtypes(fmt)) if fmt in sf.available_formats() else 'none'}"
        )
    if compression_level is not None and not 0.0 <= compression_level <= 1.0:
        raise ValueError(f"compression_level must be in [0, 1] or None, got {compression_level}")
    if not isinstance(wav, torch.Tensor):
        wav = torch.as_tensor(np.asarray(wav))
    _to_numpy_items(wav)  # validates shape and dtype
    batch = wav.detach().cpu().to(torch.float32).reshape(-1, *wav.shape[-2:]) if wav.dim() > 1 else wav.detach().cpu().float()[None, None]
    length = wav.shape[-1]
    codec_rate = _supported_rate(fmt, subtype, sample_rate)
    decoded_items, rates = [], []
    for item in batch:  # [C, T]
        audio = item if codec_rate == sample_rate else torchaudio.functional.resample(item, sample_rate, codec_rate)
        data = audio.clamp(-1.0, 1.0).T.numpy()  # [T, C] as soundfile wants
        encoded = _encode(data, codec_rate, fmt, subtype, compression_level)
        n_bytes = len(encoded)
        if not include_header:
            n_bytes -= _header_bytes(codec_rate, data.shape[1], fmt, subtype, compression_level)
        rates.append(8.0 * max(n_bytes, 0) / (length / sample_rate))
        out, _ = sf.read(io.BytesIO(encoded), dtype="float32", always_2d=True)
        out = torch.from_numpy(out.T.copy())  # [C, T']
        if codec_rate != sample_rate:
            out = torchaudio.functional.resample(out, codec_rate, sample_rate)
        # MP3 in CBR mode pads to whole frames; the start is aligned (libsndfile skips encoder delay).
        out = torch.nn.functional.pad(out[:, :length], (0, max(0, length - out.shape[-1])))
        decoded_items.append(out)
    decoded = torch.stack(decoded_items).reshape(wav.shape).to(wav.dtype)
    return decoded, float(np.mean(rates))


def opus_level_for_kbps(kbps: float) -> float:
    """libsndfile compression level that asks Opus for about `kbps` kb/s (6 .. 256).

    libsndfile maps its 0..1 level linearly onto Opus bitrates 256 .. 6 kb/s (measured here:
    level 1.0 -> 6.5, 0.976 -> 12.1, 0.928 -> 24 kb/s on speech). The measured rate is returned
    by `codec_roundtrip`, which is the number to report.
    """
    if not 6.0 <= kbps <= 256.0:
        raise ValueError(f"kbps must be within Opus' range 6..256, got {kbps}")
    return (256.0 - kbps) / 250.0


OPUS_TOOLS = ("opusenc", "opusdec")  # Debian package opus-tools


def opus_tools_unavailable() -> str | None:
    """Why `opus_tools_roundtrip` cannot run here (the programs missing from PATH and the Debian package that has
    them), or None when it can."""
    missing = [program for program in OPUS_TOOLS if shutil.which(program) is None]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not found on PATH: install the Debian package opus-tools "
            "(apt-get install -y opus-tools, or make data-packages)")


def ogg_packet_sizes(data: bytes) -> list[int]:
    """Sizes in bytes of the packets of a single-stream Ogg file, in order, joined across pages.

    Each page: "OggS", 22 header bytes, a segment count n, n lacing values, then the body; a packet is a run of
    lacing values that ends with one below 255 (RFC 3533). In an Ogg Opus file packets 0 and 1 are the OpusHead
    and OpusTags headers (RFC 7845), the rest one audio packet each.
    """
    sizes, current, position = [], 0, 0
    while position < len(data):
        if data[position: position + 4] != b"OggS" or position + 27 > len(data):
            raise ValueError(f"not an Ogg page at byte {position} (found {data[position: position + 4]!r})")
        n_segments = data[position + 26]
        lacing = data[position + 27: position + 27 + n_segments]
        for value in lacing:
            current += value
            if value < 255:
                sizes.append(current)
                current = 0
        position += 27 + n_segments + sum(lacing)
    return sizes


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit status {result.returncode}: "
                           f"{result.stderr.strip()[-500:]}")


def opus_tools_roundtrip(wav: torch.Tensor, sample_rate: int, kbps: float,
                         extra_args: tuple[str, ...] = ()) -> tuple[torch.Tensor, float]:
    """Encode with `opusenc --bitrate kbps` and decode with `opusdec`, through temporary files, as users run Opus.

    opusenc's defaults hold: VBR, complexity 10, 20 ms frames, libopus' "audio" application (it picks SILK,
    hybrid or CELT itself); `extra_args` go to opusenc as they are (e.g. `("--hard-cbr",)` or `("--speech",)`).
    Any input rate works: opusenc resamples where libopus needs it, opusdec decodes to `sample_rate`, drops the
    pre-skip and stops at the input's length (the granule position), so the output is sample-aligned with the
    input: the cross-correlation peak sits at lag 0 at 64 kb/s, within 1 sample at 6-12 kb/s at 16 and 24 kHz on a
    human voice (2 on espeak-ng speech: the SILK filters' own phase, not an offset); a length that still differs
    is trimmed or zero-padded.

    Args:
        wav: `[T]`, `[C, T]` or `[B, C, T]` float in [-1, 1] (clipped outside), at `sample_rate`; each `[C, T]`
            item is one file.
        sample_rate: Hz.
        kbps: target bitrate in kbit/s for the whole file (opusenc accepts 6 .. 256 per channel).
    Returns:
        (decoded, payload_bits_per_second): decoded has the input's shape, dtype and length; the rate counts the
        audio packets' bytes (Ogg pages and the OpusHead/OpusTags headers excluded) over the input's duration,
        averaged over items. opusinfo's "w/o overhead" figure is the same number, rounded to 0.1 kbit/s.
    Raises:
        FileNotFoundError naming the missing program and the Debian package; RuntimeError when a program fails.
    """
    sample_rate = _check_rate(sample_rate)
    if (reason := opus_tools_unavailable()) is not None:
        raise FileNotFoundError(reason)
    wav = wav if isinstance(wav, torch.Tensor) else torch.as_tensor(np.asarray(wav))
    items, shape = _to_numpy_items(wav)
    channels, length = (shape[-2] if len(shape) > 1 else 1), shape[-1]
    if not 6.0 <= kbps <= 256.0 * channels:
        raise ValueError(f"kbps must be within opusenc's 6 .. {256 * channels} for {channels} channel(s), got {kbps}")
    decoded, rates = [], []
    with tempfile.TemporaryDirectory(prefix="opus-tools-") as folder:
        source, encoded, output = (Path(folder) / name for name in ("in.wav", "coded.opus", "out.wav"))
        for item in np.clip(items, -1.0, 1.0).reshape(-1, channels, length):
            sf.write(source, item.T.astype(np.float32), sample_rate, subtype="FLOAT")  # float: no 16-bit rounding
            _run(["opusenc", "--quiet", "--bitrate", f"{kbps:g}", *extra_args, str(source), str(encoded)])
            _run(["opusdec", "--quiet", "--float", "--rate", str(sample_rate), str(encoded), str(output)])
            payload = sum(ogg_packet_sizes(encoded.read_bytes())[2:])
            rates.append(8.0 * payload / (length / sample_rate))
            out, _ = sf.read(output, dtype="float64", always_2d=True)  # [T', C]
            out = out.T[:, :length]
            decoded.append(np.pad(out, ((0, 0), (0, length - out.shape[1]))))
    return _from_numpy_items(np.stack(decoded), shape, wav), float(np.mean(rates))


def _probe_clip(sample_rate: int, seconds: float = 2.0) -> torch.Tensor:
    """Speech-like test signal `[1, T]`: 150 Hz harmonic bursts with a formant-ish roll-off, plus noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 150.0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, int(sample_rate / 2 / 200)))
    envelope = (np.sin(2 * np.pi * 4 * t) > -0.3).astype(float)
    x = 0.1 * harmonics * envelope + 0.003 * rng.standard_normal(t.shape)
    return torch.from_numpy(x).float()[None]


def available_baselines(
    sample_rate: int,
    opus_kbps: tuple[float, ...] = (6.0, 12.0, 24.0),
    include_unavailable: bool = False,
) -> list[Baseline]:
    """The baselines that run on this machine, each tried once on a short probe clip.

    Always: "lowpass_3.5k" (MUSHRA anchor, bitrate None), "lowpass_7k" when 7 kHz < Nyquist,
    "mulaw_8bit" (8 * sample_rate bits/s). Through libsndfile when it can write them:
    "opus_{k}kbps" for each of `opus_kbps`, "vorbis_min" (lowest Vorbis quality) and
    "mp3_min" (lowest MP3 VBR quality). Bitrates of codecs are measured on the probe (payload,
    no headers). Failures are reported with a warning, and listed with `available=False` when
    `include_unavailable=True`.
    """
    sample_rate = _check_rate(sample_rate)
    baselines = [Baseline("lowpass_3.5k", functools.partial(lowpass_anchor, sample_rate=sample_rate, cutoff=3500.0), None)]
    if 7000.0 < sample_rate / 2:
        baselines.append(Baseline("lowpass_7k", functools.partial(lowpass_anchor, sample_rate=sample_rate, cutoff=7000.0), None))
    baselines.append(Baseline("mulaw_8bit", mulaw_8bit, mulaw_bitrate(sample_rate)))

    codecs = [(f"opus_{k:g}kbps", "OGG", "OPUS", opus_level_for_kbps(k)) for k in opus_kbps]
    codecs += [("vorbis_min", "OGG", "VORBIS", 1.0), ("mp3_min", "MP3", "MPEG_LAYER_III", 0.99)]
    probe = _probe_clip(sample_rate)
    for name, fmt, subtype, level in codecs:

        def run(wav, fmt=fmt, subtype=subtype, level=level):
            return codec_roundtrip(wav, sample_rate, fmt, subtype, level)[0]

        try:
            _, bits_per_second = codec_roundtrip(probe, sample_rate, fmt, subtype, level)
            baselines.append(Baseline(name, run, bits_per_second, note=f"{fmt}/{subtype} level {level:.3f}"))
        except Exception as error:  # any libsndfile failure means "not here", reported rather than raised
            note = f"{fmt}/{subtype} unavailable: {type(error).__name__}: {error}"
            warnings.warn(f"baseline {name}: {note}", RuntimeWarning, stacklevel=2)
            if include_unavailable:
                baselines.append(Baseline(name, run, None, available=False, note=note))
    return baselines
