"""Tests of lib.data.audio: file round trips, resampling, normalisation, loudness and clear errors."""
import math
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from lib.data.audio import (AudioError, check_audio, k_weighting_coefficients, load_audio, loudness, loudness_normalize,
                       peak_normalize, resample, save_audio)


def sine(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> torch.Tensor:
    """`[T]` sine."""
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()


def stereo_test_signal(sample_rate: int = 16000, seconds: float = 0.5) -> torch.Tensor:
    """`[2, T]`: a chord on the left, noise on the right (so channel order errors show)."""
    left = sine(440, seconds, sample_rate, 0.3) + sine(660, seconds, sample_rate, 0.2)
    right = 0.2 * torch.randn(left.shape[0])
    return torch.stack([left, right])


@pytest.mark.parametrize("ext, subtype, tolerance", [
    (".wav", None, 1.0 / 2 ** 15),  # PCM_16: error within one LSB
    (".wav", "FLOAT", 0.0),
    (".flac", None, 1.0 / 2 ** 15),
    (".flac", "PCM_24", 1.0 / 2 ** 23),
])
def test_lossless_round_trip_keeps_samples_and_channels(tmp_path, ext, subtype, tolerance):
    wav = stereo_test_signal()
    path = save_audio(tmp_path / f"x{ext}", wav, 16000, subtype=subtype)
    back, rate = load_audio(path, mono=False, return_sample_rate=True)
    assert rate == 16000
    assert back.dtype == torch.float32 and back.shape == wav.shape
    assert (back - wav).abs().max().item() <= tolerance + 1e-7


def test_ogg_round_trip_is_close(tmp_path):
    wav = stereo_test_signal(seconds=1.0)
    path = save_audio(tmp_path / "x.ogg", wav, 16000)
    assert sf.info(str(path)).format == "OGG"
    back = load_audio(path, mono=False)
    assert back.shape[0] == 2 and abs(back.shape[1] - wav.shape[1]) <= 64
    n = min(back.shape[1], wav.shape[1])
    for channel in range(2):  # lossy: compare by correlation, not by samples
        corr = np.corrcoef(back[channel, :n].numpy(), wav[channel, :n].numpy())[0, 1]
        assert corr > 0.9


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3")
def test_mp3_round_trip_duration(tmp_path):
    path = save_audio(tmp_path / "x.mp3", sine(440, 1.0, 24000), 24000)
    back = load_audio(path)
    assert back.shape[0] == 1 and abs(back.shape[1] - 24000) < 0.1 * 24000
    assert back.abs().max() > 0.3


def test_save_accepts_1d_creates_folders_and_clips_with_warning(tmp_path):
    path = tmp_path / "a" / "b" / "x.wav"
    with pytest.warns(UserWarning, match="clipping"):
        save_audio(path, torch.tensor([0.5, 2.0, -3.0]), 8000)
    back = load_audio(path)
    assert back.shape == (1, 3)
    assert back[0, 0].item() == pytest.approx(0.5, abs=1e-4)
    assert back[0, 1].item() == pytest.approx(1.0, abs=1e-4) and back[0, 2].item() == pytest.approx(-1.0, abs=1e-4)


def test_save_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unsupported output format"):
        save_audio(tmp_path / "x.xyz", torch.zeros(10), 8000)
    with pytest.raises(ValueError, match="sample_rate"):
        save_audio(tmp_path / "x.wav", torch.zeros(10), 0)
    with pytest.raises(ValueError, match="NaN"):
        save_audio(tmp_path / "x.wav", torch.tensor([0.0, float("nan")]), 8000)
    with pytest.raises(ValueError, match="shape"):
        save_audio(tmp_path / "x.wav", torch.zeros(1, 1, 10), 8000)


def test_mono_mixdown_averages_and_keep_channels(tmp_path):
    left = sine(300, 0.25, 8000, 0.8)
    path = save_audio(tmp_path / "s.wav", torch.stack([left, -0.5 * left]), 8000, subtype="FLOAT")
    mono = load_audio(path)
    both = load_audio(path, mono=False)
    assert mono.shape == (1, 2000) and both.shape == (2, 2000)
    assert torch.allclose(mono[0], 0.25 * left, atol=1e-6)  # (x - 0.5 x) / 2
    assert torch.allclose(both[1], -0.5 * left, atol=1e-6)


@pytest.mark.parametrize("orig, new", [(16000, 24000), (44100, 24000), (48000, 24000), (22050, 24000), (24000, 8000)])
def test_resample_length(orig, new):
    wav = torch.randn(2, 12345)
    out = resample(wav, orig, new)
    assert out.shape == (2, math.ceil(12345 * new / orig))


@pytest.mark.parametrize("orig, new", [(44100, 24000), (16000, 24000)])
def test_resample_keeps_sine_frequency(orig, new):
    out = resample(sine(1000, 1.0, orig)[None], orig, new)[0].numpy()
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak_hz = np.argmax(spectrum) * new / out.size
    assert abs(peak_hz - 1000) <= new / out.size
    assert np.abs(out).max() == pytest.approx(0.5, abs=0.02)  # amplitude kept too


def test_resample_identity_and_errors():
    wav = torch.randn(1, 100)
    assert resample(wav, 16000, 16000) is wav
    with pytest.raises(ValueError, match="new_sr"):
        resample(wav, 16000, -1)


def test_load_audio_resamples_to_requested_rate(tmp_path):
    path = save_audio(tmp_path / "x.flac", sine(500, 1.0, 48000), 48000)
    wav, rate = load_audio(path, sample_rate=24000, return_sample_rate=True)
    assert rate == 24000 and wav.shape == (1, 24000)


def test_peak_normalize_per_signal_and_per_batch_item():
    wav = torch.tensor([[0.1, -0.4, 0.2]])
    assert peak_normalize(wav).abs().max().item() == pytest.approx(0.95)
    assert torch.allclose(peak_normalize(wav, 0.8), wav * 2.0)
    batch = torch.stack([wav, 0.01 * wav, torch.zeros_like(wav)])  # [3, 1, 3]
    out = peak_normalize(batch, 0.5)
    assert out[0].abs().max().item() == pytest.approx(0.5) and out[1].abs().max().item() == pytest.approx(0.5)
    assert torch.equal(out[2], batch[2])  # silence stays silence, no division by zero


def test_k_weighting_matches_bs1770_coefficients_at_48k():
    # The coefficients printed in ITU-R BS.1770-4, tables 1 and 2.
    (b1, a1), (b2, a2) = k_weighting_coefficients(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-9)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)


@pytest.mark.parametrize("sample_rate", [48000, 44100, 24000])
def test_loudness_of_full_scale_sine_is_minus_3_lufs(sample_rate):
    # BS.1770 calibration: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS; at amplitude a, +20 log10(a).
    wav = sine(997, 2.0, sample_rate, amplitude=1.0)[None]
    assert loudness(wav, sample_rate) == pytest.approx(-3.01, abs=0.05)
    assert loudness(0.1 * wav, sample_rate) == pytest.approx(-23.01, abs=0.05)


def test_loudness_gates_out_silence_and_normalize_hits_target():
    sample_rate = 24000
    tone = sine(997, 2.0, sample_rate, amplitude=0.3)[None]
    with_gap = torch.cat([tone, torch.zeros(1, 3 * sample_rate)], dim=1)
    # Without gating, 3 s of silence after 2 s of tone would lower the level by 10 log10(5 / 2) = 4 dB.
    # The silent blocks fall under the -70 LUFS absolute gate; only the few blocks straddling the edge
    # still count, so the loss stays well under 1 dB.
    assert 0 < loudness(tone, sample_rate) - loudness(with_gap, sample_rate) < 1.0
    out = loudness_normalize(tone, sample_rate, target_lufs=-23.0)
    assert out.abs().max().item() == pytest.approx(10 ** ((-23 + 3.01) / 20), rel=0.01)  # hand computation: 0.1
    assert loudness(out, sample_rate) == pytest.approx(-23.0, abs=0.01)
    capped = loudness_normalize(tone, sample_rate, target_lufs=0.0, max_peak=0.9)
    assert capped.abs().max().item() == pytest.approx(0.9, abs=1e-4)
    silence = torch.zeros(1, sample_rate)
    assert loudness(silence, sample_rate) == -math.inf
    assert torch.equal(loudness_normalize(silence, sample_rate), silence)


def test_loudness_of_clip_shorter_than_one_block():
    short = sine(997, 0.2, 48000, amplitude=1.0)[None]  # < 400 ms: measured as one ungated block
    assert loudness(short, 48000) == pytest.approx(-3.01, abs=0.1)


def test_load_audio_errors_name_file_and_reason(tmp_path):
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    nan_file = tmp_path / "nan.wav"
    sf.write(str(nan_file), np.array([0.0, np.nan, 0.5], dtype=np.float32), 8000, subtype="FLOAT")
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    cases = [(tmp_path / "missing.wav", "missing"), (garbage, "corrupt"), (nan_file, "nan_or_inf"),
             (text, "unsupported_format")]
    for path, reason in cases:
        with pytest.raises(AudioError) as info:
            load_audio(path)
        assert info.value.reason == reason
        assert path.name in str(info.value)
        assert isinstance(info.value, ValueError)


def test_load_audio_loads_silence_but_check_audio_rejects_it(tmp_path):
    path = save_audio(tmp_path / "quiet.wav", torch.zeros(800), 8000)
    assert load_audio(path).abs().max() == 0
    with pytest.raises(AudioError, match="silent"):
        check_audio(path)


def test_check_audio_info_and_pickled_error(tmp_path):
    path = save_audio(tmp_path / "x.flac", stereo_test_signal(16000, 0.5), 16000)
    info = check_audio(path)
    assert (info.sample_rate, info.channels, info.frames, info.format) == (16000, 2, 8000, "FLAC")
    assert info.duration == pytest.approx(0.5)
    err = pickle.loads(pickle.dumps(AudioError("a.wav", "corrupt", "bad header")))
    assert (err.path, err.reason, err.detail) == ("a.wav", "corrupt", "bad header")
