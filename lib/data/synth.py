"""Procedural audio, the default corpus's fallback when its Debian packages are missing: melodies and chords of
harmonic tones with ADSR envelopes, chirps, noise bursts and drum patterns, as float64 numpy arrays.

    x = SYNTH_KINDS["chords"](seconds, sample_rate, np.random.default_rng(seed))   # [T], peak about 1
    x = fade(x, sample_rate, 0.02)                                                   # no click at either end

`lib.data.corpus.synthesize_clip` levels them like every other corpus clip.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import butter, lfilter

def _adsr(n: int, sample_rate: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    """Attack-decay-sustain-release envelope of n samples (times in s, sustain as a level in [0, 1])."""
    total = (attack + decay + release) * sample_rate
    scale = min(1.0, n / total) if total > 0 else 1.0  # short notes: shrink the stages, never cut the release
    a, d, r = (max(1, int(t * scale * sample_rate)) for t in (attack, decay, release))
    s = max(0, n - a - d - r)
    env = np.concatenate([np.linspace(0, 1, a, endpoint=False), np.linspace(1, sustain, d, endpoint=False),
                          np.full(s, sustain), np.linspace(sustain, 0, r)])
    return env[:n] if env.size >= n else np.pad(env, (0, n - env.size))


def _harmonic_tone(f0: float, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A note with harmonics rolling off as k^-tilt, light vibrato and an ADSR envelope."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    vibrato = 1 + rng.uniform(0, 0.006) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / sample_rate
    tilt = rng.uniform(0.8, 2.0)
    n_harmonics = max(1, min(16, int(0.45 * sample_rate / f0)))
    tone = sum(k ** -tilt * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, n_harmonics + 1))
    env = _adsr(t.size, sample_rate, rng.uniform(0.005, 0.08), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.8),
                min(seconds / 3, rng.uniform(0.05, 0.4)))
    return tone * env


def fade(x: np.ndarray, sample_rate: int, seconds: float = 0.01) -> np.ndarray:
    """Linear fade-in and fade-out of `seconds`, so that cut sounds do not click."""
    n = min(int(seconds * sample_rate), x.size // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n)
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _place(out: np.ndarray, sound: np.ndarray, start: int) -> None:
    end = min(out.size, start + sound.size)
    if end > start:
        out[start:end] += sound[:end - start]


def _synth_melody(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(int(seconds * sr))
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    root, t = rng.integers(45, 72), 0.0
    while t < seconds:
        length = rng.choice([0.15, 0.25, 0.4, 0.6])
        _place(out, _harmonic_tone(_midi_hz(root + rng.choice(scale)), length * 1.3, sr, rng), int(t * sr))
        t += length
    return out


def _synth_chords(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    out, t = np.zeros(int(seconds * sr)), 0.0
    while t < seconds:
        root, length = rng.integers(40, 64), rng.uniform(0.8, 2.0)
        chord = [[0, 4, 7], [0, 3, 7], [0, 4, 7, 11], [0, 5, 9]][rng.integers(4)]  # major, minor, maj7, sus
        for interval in chord:
            _place(out, _harmonic_tone(_midi_hz(root + interval), length, sr, rng), int(t * sr))
        t += length
    return out


def _synth_chirps(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    out, t = np.zeros(int(seconds * sr)), 0.0
    while t < seconds:
        length = rng.uniform(0.3, 2.0)
        n = int(length * sr)
        f_start, f_end = np.exp(rng.uniform(np.log(60), np.log(0.4 * sr), size=2))
        sweep = f_start * (f_end / f_start) ** (np.arange(n) / n)  # exponential sweep
        phase = 2 * np.pi * np.cumsum(sweep) / sr
        overtone = rng.uniform(0, 0.5) if 2 * max(f_start, f_end) < 0.45 * sr else 0.0  # no aliasing
        chirp = np.sin(phase) + overtone * np.sin(2 * phase)
        _place(out, chirp * _adsr(n, sr, 0.02, 0.05, 0.8, 0.1), int(t * sr))
        t += length * rng.uniform(0.6, 1.2)
    return out


def _synth_noise(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    out, t = np.zeros(int(seconds * sr)), 0.0
    nyquist = sr / 2
    while t < seconds:
        n = int(rng.uniform(0.1, 1.0) * sr)
        low = rng.uniform(100, 0.3 * nyquist)
        b, a = butter(2, [low / nyquist, min(0.95, rng.uniform(1.5, 4) * low / nyquist)], btype="band")
        burst = lfilter(b, a, rng.standard_normal(n)) * np.exp(-np.arange(n) / (rng.uniform(0.05, 0.4) * sr))
        _place(out, burst / (np.abs(burst).max() + 1e-9), int(t * sr))
        t += rng.uniform(0.1, 0.8)
    return out


def _synth_drums(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A 16-step pattern of kick (falling sine), snare (band noise + tone) and hi-hat (high-passed noise)."""
    def decay(n: int, tau: float) -> np.ndarray:
        return np.exp(-np.arange(n) / (tau * sr))

    n = int(0.4 * sr)
    kick_freq = 45 + 110 * decay(n, 0.03)
    kick = np.sin(2 * np.pi * np.cumsum(kick_freq) / sr) * decay(n, 0.12)
    b, a = butter(2, [1500 / (sr / 2), min(0.95, 6000 / (sr / 2))], btype="band")
    snare = lfilter(b, a, rng.standard_normal(n)) * decay(n, 0.06) * 3
    snare += 0.5 * np.sin(2 * np.pi * 190 * np.arange(n) / sr) * decay(n, 0.03)
    b, a = butter(2, min(0.9, 7000 / (sr / 2)), btype="high")
    hat = lfilter(b, a, rng.standard_normal(n)) * decay(n, 0.015) * 2
    kick, snare, hat = (fade(x, sr, 0.05) for x in (kick, snare, hat))
    step = 60.0 / rng.uniform(80, 160) / 4
    kicks = {0, 8} | {s for s in range(16) if rng.random() < 0.15}
    snares = {4, 12} | {s for s in range(16) if rng.random() < 0.08}
    out = np.zeros(int(seconds * sr))
    for i in range(int(seconds / step)):
        s, at = i % 16, int(i * step * sr)
        if s in kicks:
            _place(out, kick, at)
        if s in snares:
            _place(out, snare, at)
        if s % 2 == 0 or rng.random() < 0.3:
            _place(out, hat * rng.uniform(0.4, 1.0), at)
    return out


SYNTH_KINDS = {"melody": _synth_melody, "chords": _synth_chords, "chirps": _synth_chirps,
               "noise": _synth_noise, "drums": _synth_drums}
