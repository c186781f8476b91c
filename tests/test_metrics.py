"""Tests for lib.analysis.metrics and lib.analysis.baselines: hand computations, reference packages, real codecs."""
import math
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

import lib.training.losses
from lib.analysis import metrics
from lib.analysis.baselines import (
    available_baselines,
    codec_roundtrip,
    lowpass_anchor,
    mulaw_8bit,
    mulaw_bitrate,
    opus_level_for_kbps,
)
from lib.analysis.metrics import (METRIC_MIN_SECONDS, SI_SDR_CAP_DB, band_energy_db, bitrate, envelope_swap,
                                  evaluate_all, pesq_wb, si_sdr, spectral_swap, stft_distance, stoi,
                                  unavailable_reason)

SR = 16000


def _harmonic_bursts(sample_rate: int, seconds: float) -> np.ndarray:
    """Speech-like fallback: voiced bursts (gliding f0, 1/k harmonics) separated by pauses."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 0.5
    return (0.1 * voiced * envelope).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> torch.Tensor:
    """~2.5 s of speech at 16 kHz `[T]`: espeak-ng when on PATH, else synthetic voiced bursts."""
    seconds = 2.5
    if shutil.which("espeak-ng"):
        path = tmp_path_factory.mktemp("speech") / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(path), "Codecs squeeze speech into very few bits per second."],
                       check=True, capture_output=True)
        wav, rate = sf.read(path, dtype="float32")
        wav = torchaudio.functional.resample(torch.from_numpy(wav), rate, SR)[: int(seconds * SR)]
        return (0.3 * wav / wav.abs().max()).contiguous()
    return torch.from_numpy(_harmonic_bursts(SR, seconds))


def _add_noise(x: torch.Tensor, snr_db: float) -> torch.Tensor:
    noise = torch.randn_like(x)
    noise *= x.norm() / noise.norm() / 10 ** (snr_db / 20)
    return x + noise


# ---------------------------------------------------------------- SI-SDR


def test_si_sdr_scaled_copy_hits_the_cap():
    ref = torch.randn(SR)
    assert si_sdr(0.3 * ref, ref) == SI_SDR_CAP_DB == 100.0
    # an offset does not matter either (zero-mean), and the cap is finite
    assert si_sdr(2.0 * ref + 0.5, ref) == SI_SDR_CAP_DB


def test_si_sdr_known_snr_with_orthogonal_noise():
    """est = 0.5 ref + n with n orthogonal to ref and to DC, so SI-SDR = 10 log10(|0.5 ref|^2 / |n|^2) exactly."""
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(8000, generator=g, dtype=torch.float64)
    ref -= ref.mean()
    noise = torch.randn(8000, generator=g, dtype=torch.float64)
    noise -= noise.mean()
    noise -= (noise @ ref) / (ref @ ref) * ref  # Gram-Schmidt: orthogonal to ref
    for snr_db in (-5.0, 0.0, 7.0, 23.0):
        scaled = noise * (0.5 * ref.norm() / noise.norm()) / 10 ** (snr_db / 20)
        assert abs(si_sdr(0.5 * ref + scaled, ref) - snr_db) < 1e-6
        # scale invariance: multiplying the estimate does not change the value
        assert abs(si_sdr(-4.0 * (0.5 * ref + scaled), ref) - snr_db) < 1e-6


def test_si_sdr_batch_shapes_and_silent_estimate():
    ref = torch.randn(3, 1, 4000)
    est = ref + 0.1 * torch.randn(3, 1, 4000)
    values = si_sdr(est, ref)
    assert isinstance(values, torch.Tensor) and values.shape == (3,)
    for i in range(3):  # the batched value equals the single-clip one
        assert abs(float(values[i]) - si_sdr(est[i, 0], ref[i, 0])) < 1e-9
    assert torch.allclose(si_sdr(est[:, 0], ref[:, 0]), values)  # [B, T] works too
    assert si_sdr(torch.zeros(4000), ref[0, 0]) == -SI_SDR_CAP_DB


def test_mismatch_errors_name_the_arguments():
    ref = torch.randn(1, 1, 4000)
    with pytest.raises(ValueError, match="estimate.*reference"):
        si_sdr(torch.randn(1, 1, 3999), ref)
    with pytest.raises(ValueError, match="estimate.*reference"):
        stft_distance(torch.randn(1, 1, 4001), ref)
    with pytest.raises(ValueError, match="batch mismatch"):
        si_sdr(torch.randn(2, 1, 4000), ref)
    with pytest.raises(ValueError, match="estimate must be mono"):
        si_sdr(torch.randn(1, 2, 4000), ref)
    with pytest.raises(ValueError, match="reference is silent"):
        si_sdr(ref, torch.zeros(1, 1, 4000))
    with pytest.raises(ValueError, match="sample_rate"):
        pesq_wb(ref, ref, 0)
    with pytest.raises(ValueError, match="sample_rate"):
        stoi(ref, ref, 16000.5)
    with pytest.raises(ValueError, match="estimate.*reference"):
        evaluate_all(torch.randn(4000), torch.randn(4100), SR)


# ---------------------------------------------------------------- spectral distances


def test_stft_distance_is_zero_for_identical_and_ln2_for_double_gain():
    ref = 0.1 * torch.randn(2, 1, 8000)
    assert torch.equal(stft_distance(ref, ref), torch.zeros(2, dtype=torch.float64))
    # every bin's magnitude doubles: |ln 2|X| - ln |X|| = ln 2 wherever |X| is above the floor
    assert torch.allclose(stft_distance(2.0 * ref, ref), torch.full((2,), math.log(2.0), dtype=torch.float64), atol=1e-4)
    noisy, noisier = _add_noise(ref, 20), _add_noise(ref, 0)
    assert (stft_distance(noisier, ref) > stft_distance(noisy, ref)).all()


def test_mel_distance_is_the_losses_one():
    assert metrics.mel_distance is lib.training.losses.mel_distance
    ref = 0.1 * torch.randn(1, 1, 8000)
    assert metrics.mel_distance(ref, ref, SR) == 0.0
    assert metrics.mel_distance(_add_noise(ref, 0), ref, SR) > metrics.mel_distance(_add_noise(ref, 20), ref, SR)


# ---------------------------------------------------------------- PESQ / STOI


def test_pesq_identical_is_max_and_noisy_is_lower(speech):
    assert abs(pesq_wb(speech, speech, SR) - 4.64) < 0.01
    noisy = pesq_wb(_add_noise(speech, 10.0), speech, SR)
    assert 1.0 <= noisy < 3.0
    # another rate goes through the 16 kHz resampling and still gives the maximum for identical input
    speech_24k = torchaudio.functional.resample(speech, SR, 24000)
    assert abs(pesq_wb(speech_24k, speech_24k, 24000) - 4.64) < 0.01


def test_pesq_silence_gives_nan_with_warning(speech):
    batch = torch.stack([speech, torch.zeros_like(speech)])
    with pytest.warns(RuntimeWarning, match="no utterance"):
        values = pesq_wb(batch, batch, SR)
    assert abs(float(values[0]) - 4.64) < 0.01 and math.isnan(float(values[1]))


def test_stoi_identical_is_one_and_noisy_is_lower(speech):
    assert abs(stoi(speech, speech, SR) - 1.0) < 1e-4
    assert stoi(_add_noise(speech, -5.0), speech, SR) < stoi(_add_noise(speech, 10.0), speech, SR) < 0.999


def test_evaluate_all_on_identical_speech(speech):
    results = evaluate_all(speech[None, None], speech[None, None], SR)
    assert set(results) == {"si_sdr", "mel_distance", "stft_distance", "pesq_wb", "stoi"}
    assert all(isinstance(v, float) for v in results.values())
    assert results["si_sdr"] == SI_SDR_CAP_DB and results["stft_distance"] == 0.0 and results["mel_distance"] == 0.0
    assert abs(results["pesq_wb"] - 4.64) < 0.01 and abs(results["stoi"] - 1.0) < 1e-4
    assert set(metrics.METRIC_DIRECTION) >= set(results)


# ---------------------------------------------------------------- short clips


def _loudest(x: torch.Tensor, seconds: float) -> torch.Tensor:
    """The `seconds` of `x` (at SR) centred on its loudest sample: speech throughout, no pause."""
    n = round(seconds * SR)
    start = min(max(int(x.abs().argmax()) - n // 2, 0), x.numel() - n)
    return x[start: start + n].contiguous()


def test_unavailable_reason_strings():
    assert unavailable_reason("pesq_wb", 0.184) == "n/a (0.18 s < 0.25 s)"
    assert unavailable_reason("pesq_wb", 2880 / SR) == "n/a (0.18 s < 0.25 s)"
    assert unavailable_reason("stoi", 0.18) == "n/a (0.18 s < 0.41 s)"
    assert unavailable_reason("pesq_wb", 0.2499) == "n/a (0.24 s < 0.25 s)"  # rounded down, never "0.25 < 0.25"
    assert unavailable_reason("stoi", 0.29) == "n/a (0.29 s < 0.41 s)"
    assert unavailable_reason("pesq_wb", 0.25) is None and unavailable_reason("stoi", 0.41) is None
    assert unavailable_reason("si_sdr", 0.001) is None
    assert unavailable_reason("mel_distance", 0.05) == "n/a (0.05 s < 0.07 s)"
    assert set(METRIC_MIN_SECONDS) >= set(metrics.METRIC_DIRECTION)
    with pytest.raises(ValueError, match="unknown metric 'pesq'"):
        unavailable_reason("pesq", 1.0)


def test_short_clip_gives_nan_from_evaluate_all_with_one_warning(speech):
    clip = _loudest(speech, 0.18)  # the drum hit that crashed the main job was 0.18 s
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = evaluate_all(_add_noise(clip, 10.0), clip, SR)
    assert math.isnan(results["pesq_wb"]) and math.isnan(results["stoi"])
    assert math.isfinite(results["si_sdr"]) and results["mel_distance"] > 0 and results["stft_distance"] > 0
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "pesq_wb n/a (0.18 s < 0.25 s)" in message and "stoi n/a (0.18 s < 0.41 s)" in message
    # a batch shares one length: every item NaN, one warning per metric call
    batch = torch.stack([clip, 0.5 * clip, _add_noise(clip, 5.0)])[:, None]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = pesq_wb(batch, batch, SR)
        extended = stoi(batch, batch, SR, extended=True)
    assert values.shape == (3,) and values.isnan().all() and extended.shape == (3,) and extended.isnan().all()
    assert [str(w.message) for w in caught] == ["pesq_wb: n/a (0.18 s < 0.25 s); returning NaN",
                                                "stoi: n/a (0.18 s < 0.41 s); returning NaN"]
    with pytest.warns(RuntimeWarning, match="n/a"):
        assert math.isnan(pesq_wb(clip, clip, SR)) and math.isnan(stoi(clip, clip, SR))  # [T] in, float out
    # even below every spectral metric's minimum nothing raises: a 5 ms click is NaN but for SI-SDR
    click = _loudest(clip, 0.005)
    with warnings.catch_warnings(record=True):
        results = evaluate_all(click, click, SR)
    assert results["si_sdr"] == SI_SDR_CAP_DB and all(math.isnan(v) for k, v in results.items() if k != "si_sdr")


def test_half_second_clip_is_scored(speech):
    clip = _loudest(speech, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all on a clip long enough
        identical = evaluate_all(clip, clip, SR)
        noisy = evaluate_all(_add_noise(clip, 5.0), clip, SR)
    assert abs(identical["pesq_wb"] - 4.64) < 0.01 and abs(identical["stoi"] - 1.0) < 1e-4
    assert 1.0 <= noisy["pesq_wb"] < 3.0 and 0.3 < noisy["stoi"] < 0.99


def test_minimum_lengths_are_where_the_packages_stop(speech):
    """PESQ runs from exactly 0.25 s at any rate; pystoi's own answer 10 ms under 0.41 s is its 1e-5 placeholder
    (on steady noise, which has no silent frame for pystoi to drop: the limit is the clip's length alone)."""
    from pystoi import stoi as pystoi_stoi

    clip = _loudest(speech, 1.0)
    at_min = clip[: round(0.25 * SR)]
    assert abs(pesq_wb(at_min, at_min, SR) - 4.64) < 0.02
    for rate in (22050, 24000):  # 5513 and 6000 samples, resampled to at least PESQ's 4000
        resampled = torchaudio.functional.resample(clip, SR, rate)[: math.ceil(0.25 * rate)]
        assert abs(pesq_wb(resampled, resampled, rate) - 4.64) < 0.02
    noise = 0.1 * torch.randn(round(METRIC_MIN_SECONDS["stoi"] * SR), dtype=torch.float64)
    assert abs(stoi(noise, noise, SR) - 1.0) < 1e-4
    under = noise[: round(0.40 * SR)].numpy()
    with pytest.warns(RuntimeWarning, match="Not enough STFT frames"):
        assert pystoi_stoi(under, under, SR) == 1e-5


def test_stoi_is_nan_where_silence_leaves_too_few_frames(speech):
    """1 s clips that pass the length check, one of them silent but for 0.1 s: pystoi's 1e-5 becomes NaN."""
    clip = _loudest(speech, 1.0)
    mostly_silent = torch.zeros_like(clip)
    mostly_silent[: SR // 10] = clip[: SR // 10]
    batch = torch.stack([clip, mostly_silent])
    with pytest.warns(RuntimeWarning, match=r"stoi: items \[1\] have under 30 frames"):
        values = stoi(batch, batch, SR)
    assert abs(float(values[0]) - 1.0) < 1e-4 and math.isnan(float(values[1]))


def test_bitrate_hand_computed():
    assert bitrate(8, 1024, 75) == 6000.0  # EnCodec 24 kHz at 6 kb/s: 8 x 10 bits x 75 Hz
    assert bitrate(1, 2, 50.0) == 50.0
    assert bitrate(4, 1000, 100) == pytest.approx(4 * 9.965784284662087 * 100)
    with pytest.raises(ValueError, match="codebook_size"):
        bitrate(4, 1, 75)
    with pytest.raises(ValueError, match="n_q"):
        bitrate(-1, 1024, 75)
    with pytest.raises(ValueError, match="frame_rate"):
        bitrate(4, 1024, 0)


# ---------------------------------------------------------------- baselines


def test_mulaw_roundtrip_error_is_bounded(speech):
    x = torch.cat([torch.linspace(-1, 1, 20001), 1e-3 * torch.randn(2000)])
    y = mulaw_8bit(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.unique(y).numel() <= 256  # 8 bits
    # Half a quantiser step in the companded domain (1/256) times the expander's slope
    # dx/dy = ln(1 + mu) / mu * (1 + mu |x|) at the larger magnitude of the pair.
    mu = 255.0
    magnitude = torch.maximum(x.abs(), y.abs()).double()
    bound = (1 / 256) * math.log1p(mu) / mu * (1 + mu * magnitude) + 1e-7
    assert ((y - x).abs().double() <= bound).all()
    # on speech that is roughly the textbook ~38 dB of 8-bit mu-law
    assert si_sdr(mulaw_8bit(speech), speech) > 30.0
    assert mulaw_bitrate(8000) == 64000.0


def test_lowpass_anchor_removes_energy_above_cutoff():
    x = torch.randn(2, 1, SR)
    y = lowpass_anchor(x, SR, cutoff=3500.0)
    assert y.shape == x.shape and y.dtype == x.dtype
    freqs = np.fft.rfftfreq(SR, 1 / SR)
    window = np.hanning(SR)  # a rectangular window would leak pass-band power into the stop band at ~-50 dB
    px = np.abs(np.fft.rfft(x.numpy() * window, axis=-1)) ** 2
    py = np.abs(np.fft.rfft(y.numpy() * window, axis=-1)) ** 2
    stop, passband = freqs > 4000, freqs < 3000
    assert py[..., stop].sum() / px[..., stop].sum() < 1e-7  # > 70 dB down
    assert abs(py[..., passband].sum() / px[..., passband].sum() - 1.0) < 0.01
    # zero phase: an in-band tone comes back time-aligned
    tone = torch.sin(2 * math.pi * 440 * torch.arange(SR) / SR)
    assert (lowpass_anchor(tone, SR)[2000:-2000] - tone[2000:-2000]).abs().max() < 1e-3
    with pytest.raises(ValueError, match="cutoff"):
        lowpass_anchor(x, SR, cutoff=9000.0)


def _needs(fmt: str, subtype: str):
    if not sf.check_format(fmt, subtype):
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} here cannot write {fmt}/{subtype}")


def test_opus_roundtrip_and_measured_bitrate(speech):
    _needs("OGG", "OPUS")
    decoded, bits_per_second = codec_roundtrip(speech[None], SR, "OGG", "OPUS", opus_level_for_kbps(12.0))
    assert decoded.shape == (1, speech.numel()) and decoded.dtype == speech.dtype
    assert 6000 < bits_per_second < 20000
    assert si_sdr(decoded[0], speech) > 0.0  # a real, time-aligned reconstruction
    # the rate comes from the file size: headers add bytes when counted
    _, with_header = codec_roundtrip(speech[None], SR, "OGG", "OPUS", opus_level_for_kbps(12.0), include_header=True)
    assert with_header > bits_per_second
    # more bits -> closer to the original
    better, _ = codec_roundtrip(speech, SR, "OGG", "OPUS", opus_level_for_kbps(64.0))
    assert si_sdr(better, speech) > si_sdr(decoded[0], speech)
    # 44.1 kHz is not an Opus rate: resampled inside, shape kept
    wav_44k = torchaudio.functional.resample(speech, SR, 44100)[None, None]
    assert codec_roundtrip(wav_44k, 44100, "OGG", "OPUS", 0.9)[0].shape == wav_44k.shape


@pytest.mark.parametrize("fmt,subtype,level", [("OGG", "VORBIS", 1.0), ("MP3", "MPEG_LAYER_III", 0.99)])
def test_vorbis_and_mp3_roundtrip(speech, fmt, subtype, level):
    _needs(fmt, subtype)
    decoded, bits_per_second = codec_roundtrip(speech, SR, fmt, subtype, level)
    assert decoded.shape == speech.shape
    assert 8000 < bits_per_second < 64000
    assert si_sdr(decoded, speech) > 0.0


def test_codec_roundtrip_rejects_unknown_format(speech):
    with pytest.raises(ValueError, match="fmt/subtype"):
        codec_roundtrip(speech, SR, "OGG", "PCM_16", 0.5)
    with pytest.raises(ValueError, match="compression_level"):
        codec_roundtrip(speech, SR, "OGG", "VORBIS", 1.5)


def test_available_baselines_run_and_keep_shape():
    baselines = available_baselines(SR)
    names = [b.name for b in baselines]
    assert {"lowpass_3.5k", "lowpass_7k", "mulaw_8bit"} <= set(names)
    assert dict((b.name, b.bitrate) for b in baselines)["mulaw_8bit"] == 128000.0
    x = 0.1 * torch.randn(1, 1, 4000)
    for b in baselines:
        assert b.available
        assert b.fn(x).shape == x.shape, b.name
        if b.name.startswith("opus"):
            assert 3000 < b.bitrate < 40000, (b.name, b.bitrate)


def test_band_energy_db_finds_a_missing_band_and_a_level_offset():
    sr, t = 16000, 16000
    n = torch.arange(t) / sr
    ref = torch.sin(2 * torch.pi * 300 * n) + 0.5 * torch.sin(2 * torch.pi * 3000 * n)
    lowpassed = torch.sin(2 * torch.pi * 300 * n) + 0.005 * torch.sin(2 * torch.pi * 3000 * n)
    got = band_energy_db(lowpassed, ref, sr, edges=(0, 1000))  # bands 0-1 kHz, 1 kHz-Nyquist
    assert got.shape == (2,)
    assert float(got[0]) == pytest.approx(0.0, abs=1e-4)  # float32 sines: leakage of the other tone
    assert float(got[1]) == pytest.approx(-40.0, abs=1e-3)  # 0.005 / 0.5 in amplitude
    batch = band_energy_db(torch.stack([0.5 * ref, ref]), torch.stack([ref, ref]), sr)
    assert batch.shape == (2, 5)
    assert torch.allclose(batch[0, 0], torch.tensor(-6.0206, dtype=torch.float64), atol=1e-3)
    with pytest.raises(ValueError, match="edges"):
        band_energy_db(ref, ref, sr, edges=(0, 9000))


def _tones(sr: int, t: int, parts: dict[float, tuple[float, float]]) -> torch.Tensor:
    """Sum of sines ``{hz: (amplitude, phase)}``, float64 ``[t]``."""
    n = torch.arange(t, dtype=torch.float64) / sr
    return sum(a * torch.sin(2 * torch.pi * hz * n + ph) for hz, (a, ph) in parts.items())


def test_spectral_swap_takes_one_component_in_one_band():
    sr, t = 16000, 16000
    ref = _tones(sr, t, {500: (1.0, 0.0), 3000: (0.5, 0.0)})
    louder_low = _tones(sr, t, {500: (2.0, 0.0), 3000: (0.5, 0.0)})  # the 500 Hz magnitude differs
    shifted_low = _tones(sr, t, {500: (1.0, 1.0), 3000: (0.5, 0.0)})  # the 500 Hz phase differs
    wrong_high = _tones(sr, t, {500: (1.0, 0.0), 3000: (1.5, 2.0)})  # only above 2 kHz differs
    mid = slice(1024, t - 1024)  # away from the clip's edges, where the STFT is not tight
    err = lambda a, b: float((a - b)[mid].abs().max())
    # the whole band, both parts: the estimate itself
    assert err(spectral_swap(louder_low, ref, sr, 0, 8000), louder_low) < 1e-6
    # a band the estimate does not differ in: the reference
    assert err(spectral_swap(wrong_high, ref, sr, 0, 2000), ref) < 1e-6
    # the estimate's magnitude under the reference's phase: the louder tone, at the reference's phase
    assert err(spectral_swap(louder_low, ref, sr, 0, 2000, part="magnitude"), louder_low) < 1e-6
    assert err(spectral_swap(louder_low, ref, sr, 0, 2000, part="phase"), ref) < 1e-6
    # the estimate's phase under the reference's magnitude: the shifted tone
    assert err(spectral_swap(shifted_low, ref, sr, 0, 2000, part="phase"), shifted_low) < 1e-6
    assert err(spectral_swap(shifted_low, ref, sr, 0, 2000, part="magnitude"), ref) < 1e-6
    batch = spectral_swap(torch.stack([louder_low, ref]), torch.stack([ref, ref]), sr, 0, 2000)
    assert batch.shape == (2, t) and err(batch[1], ref) < 1e-6
    with pytest.raises(ValueError, match="part"):
        spectral_swap(ref, ref, sr, 0, 2000, part="energy")
    with pytest.raises(ValueError, match="lo_hz"):
        spectral_swap(ref, ref, sr, 2000, 1000)


def test_envelope_swap_keeps_the_detail_and_takes_the_levels():
    sr, t = 16000, 16000
    mid = slice(1024, t - 1024)
    err = lambda a, b: float((a - b)[mid].abs().max())  # noqa: E731
    ref = _tones(sr, t, {500: (1.0, 0.0), 3000: (0.5, 0.0)})
    # a uniformly quieter estimate: every cell gains the same factor, so the result is the reference
    assert err(envelope_swap(0.3 * ref, ref, sr), ref) < 1e-6
    # a tone off by 150 Hz (same band, 2675-3211 Hz at 16 kHz) and 14 dB too quiet keeps its own frequency at the
    # reference's level
    ref = _tones(sr, t, {500: (1.0, 0.0), 2900: (0.5, 0.0)})
    off = _tones(sr, t, {500: (1.0, 0.0), 3050: (0.1, 0.0)})
    hybrid = envelope_swap(off, ref, sr)
    assert err(hybrid, _tones(sr, t, {500: (1.0, 0.0), 3050: (0.5, 0.0)})) < 1e-3
    assert err(hybrid, ref) > 0.9  # the detail is the estimate's, not the reference's
    # the levels follow the reference frame by frame: noise gated on and off every 100 ms
    noise = torch.randn(t, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gate = ((torch.arange(t) // 1600) % 2).to(torch.float64)
    gated = envelope_swap(noise, noise * gate, sr)
    inner = ((torch.arange(t) % 1600) >= 300) & ((torch.arange(t) % 1600) < 1300)  # away from the switches
    on, off_ = (gate > 0) & inner, (gate == 0) & inner
    on[:1024] = off_[:1024] = on[-1024:] = off_[-1024:] = False
    assert float(gated[off_].square().mean()) < 1e-3 * float(gated[on].square().mean())
    assert float(gated[on].square().mean() / noise[on].square().mean()) == pytest.approx(1.0, abs=0.15)
    assert envelope_swap(torch.stack([off, ref]), torch.stack([ref, ref]), sr).shape == (2, t)
    with pytest.raises(ValueError, match="n_bands"):
        envelope_swap(ref, ref, sr, n_bands=0)
