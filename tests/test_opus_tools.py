"""Tests for lib.analysis.baselines.opus_tools_roundtrip: Opus through Debian's opusenc/opusdec, as users run it."""
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from scipy import signal

from lib.analysis import baselines
from lib.analysis.baselines import ogg_packet_sizes, opus_tools_roundtrip, opus_tools_unavailable
from lib.analysis.metrics import si_sdr

SR = 16000  # the rate of the human_speech fixture (conftest.py)

needs_opus_tools = pytest.mark.skipif(opus_tools_unavailable() is not None, reason=str(opus_tools_unavailable()))


def _lag(decoded: np.ndarray, original: np.ndarray) -> int:
    """Samples by which `decoded` trails `original`: the peak of their cross-correlation."""
    correlation = signal.correlate(decoded, original, mode="full", method="fft")
    return int(np.argmax(correlation)) - (len(original) - 1)


@needs_opus_tools
@pytest.mark.parametrize("sample_rate", [16000, 24000])
def test_roundtrip_keeps_shape_and_is_sample_aligned(human_speech, speech_source, sample_rate):
    """No offset (a pre-skip left in would be 104 samples at 16 kHz): lag 0 where Opus is near transparent, and at
    low rates within the 1 sample (2 on espeak-ng speech at 24 kHz) that the SILK filters' own phase moves the peak."""
    wav = torchaudio.functional.resample(human_speech[: 4 * SR], SR, sample_rate)[None]  # [1, T], 4 s
    for kbps, tolerance in ((6.0, 1 if speech_source == "alsa-utils" else 2), (12.0, 1), (64.0, 0)):
        decoded, _ = opus_tools_roundtrip(wav, sample_rate, kbps)
        assert decoded.shape == wav.shape and decoded.dtype == wav.dtype
        assert abs(_lag(decoded[0].numpy(), wav[0].numpy())) <= tolerance, kbps
        assert si_sdr(decoded[0], wav[0]) > {6.0: 0.0, 12.0: 3.0, 64.0: 15.0}[kbps]  # a waveform match
    # [T] and [B, C, T] keep their shapes too, each item its own file
    assert opus_tools_roundtrip(wav[0], sample_rate, 8.0)[0].shape == wav[0].shape
    batch = wav.reshape(2, 1, -1)
    assert opus_tools_roundtrip(batch, sample_rate, 8.0)[0].shape == batch.shape


@needs_opus_tools
@pytest.mark.parametrize("kbps", [6.0, 8.0])
def test_payload_bitrate_is_near_the_target(human_speech, kbps):
    wav = human_speech[None, : 4 * SR]
    decoded, bits_per_second = opus_tools_roundtrip(wav, SR, kbps)
    assert abs(bits_per_second / (1000 * kbps) - 1.0) < 0.30, bits_per_second  # VBR on speech: 5.1 kb/s at 6
    again, bits_again = opus_tools_roundtrip(wav, SR, kbps)
    assert torch.equal(again, decoded) and bits_again == bits_per_second  # libopus is deterministic
    # more bits -> closer to the original
    better, more_bits = opus_tools_roundtrip(wav, SR, 4 * kbps)
    assert more_bits > 3 * bits_per_second and si_sdr(better[0], wav[0]) > si_sdr(decoded[0], wav[0])


@needs_opus_tools
@pytest.mark.skipif(shutil.which("opusinfo") is None, reason="opusinfo (opus-tools) not on PATH")
def test_payload_count_agrees_with_opusinfo(human_speech, tmp_path):
    """The Ogg page parser against opusinfo's "w/o overhead" figure (payload over playback length, 0.1 kbit/s)."""
    source, encoded = tmp_path / "speech.wav", tmp_path / "speech.opus"
    sf.write(source, human_speech[: 4 * SR].numpy(), SR, subtype="FLOAT")
    subprocess.run(["opusenc", "--quiet", "--bitrate", "6", str(source), str(encoded)], check=True,
                   capture_output=True)
    sizes = ogg_packet_sizes(encoded.read_bytes())
    assert len(sizes) == 2 + 201  # headers + 20 ms packets covering 4 s, the 6.5 ms pre-skip and the lookahead
    report = subprocess.run(["opusinfo", str(encoded)], check=True, capture_output=True, text=True).stdout
    opusinfo_kbps = float(re.search(r"w/o overhead: ([\d.]+) kbit/s", report).group(1))
    assert abs(8 * sum(sizes[2:]) / 4.0 / 1000 - opusinfo_kbps) <= 0.05
    with pytest.raises(ValueError, match="not an Ogg page"):
        ogg_packet_sizes(b"RIFF" + bytes(40))


def test_missing_programs_are_named_with_their_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: neither program can be found
    reason = opus_tools_unavailable()
    assert reason.startswith("opusenc and opusdec not found on PATH") and "opus-tools" in reason
    with pytest.raises(FileNotFoundError, match="install the Debian package opus-tools"):
        opus_tools_roundtrip(torch.zeros(1, SR), SR, 6.0)
    # opusdec alone missing: only it is named
    monkeypatch.setattr(baselines.shutil, "which", lambda name: None if name == "opusdec" else f"/usr/bin/{name}")
    assert opus_tools_unavailable().startswith("opusdec not found on PATH")


@needs_opus_tools
def test_bad_bitrate_is_refused():
    with pytest.raises(ValueError, match="kbps must be within opusenc's 6 .. 256"):
        opus_tools_roundtrip(torch.zeros(1, SR), SR, 3.0)
