"""bench/repairs.py: the codec's output with one part taken from the input, scored like the codec."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import repairs  # noqa: E402

from lib.analysis.metrics import spectral_swap  # noqa: E402

SR = 24000


class PhaseScrambler(nn.Module):
    """A stand-in codec: the input with a noise's STFT phase below 2 kHz; without its quantizer, the input."""

    def forward(self, wav, bypass_quantizer=False):
        if bypass_quantizer:
            return SimpleNamespace(recon=wav)
        noise = torch.randn(wav.shape[-1], generator=torch.Generator().manual_seed(0))
        return SimpleNamespace(recon=spectral_swap(noise, wav[0, 0], SR, 0.0, 2000.0, "phase").float()[None, None])


@pytest.fixture(scope="module")
def speech_clip(human_speech):
    from lib.analysis.inputs import resample

    return [("speech/a", "speech", resample(human_speech[: 4 * 16000], 16000, SR).reshape(1, 1, -1))]


def test_the_phase_repair_below_the_split_undoes_a_phase_error_there_and_the_one_above_does_not(speech_clip):
    rows = {r["repair"]: r for r in repairs.repairs(PhaseScrambler(), speech_clip, SR, dnsmos=False)}
    assert len(rows) == 9
    codec = rows["codec"]
    below, above = rows["the input's phase below 2000 Hz"], rows["the input's phase above 2000 Hz"]
    assert codec["pesq_wb"] < 3.0  # a scrambled phase below 2 kHz is heard
    assert below["pesq_wb"] > codec["pesq_wb"] + 1.0 and below["stoi"] > 0.98
    assert abs(above["pesq_wb"] - codec["pesq_wb"]) < 0.3
    assert rows["the input's phase everywhere"]["pesq_wb"] > codec["pesq_wb"] + 1.0
    assert rows["codec without its quantizer"]["pesq_wb"] > 4.5 and rows["the input"]["stoi"] == pytest.approx(1.0)
    assert rows["low-passed at 4000 Hz"]["stoi"] == pytest.approx(codec["stoi"], abs=0.02)  # STOI ends near 4.3 kHz
    assert all(r["dnsmos_ovrl"] != r["dnsmos_ovrl"] for r in rows.values())  # NaN: DNSMOS was not asked for
    assert "the input's levels (5 ms, 1/4 octave)" in rows  # the 512-point window's hop at 24 kHz


def test_one_levels_repair_per_envelope_window(speech_clip):
    names = list(repairs.repaired(PhaseScrambler(), speech_clip[0][2], SR, 2000.0, envelope_windows=(512, 2048)))
    assert [n for n in names if "levels" in n] == ["the input's levels (5 ms, 1/4 octave)",
                                                    "the input's levels (21 ms, 1/4 octave)"]


def test_means_average_each_repair_over_clips_in_first_seen_order():
    rows = [{"repair": "b", "pesq_wb": 1.0}, {"repair": "a", "pesq_wb": 2.0}, {"repair": "b", "pesq_wb": 3.0}]
    rows = [{**r, **{k: r.get(k, float("nan")) for k in repairs.METRICS}} for r in rows]
    out = repairs.means(rows)
    assert [(m["repair"], m["clips"], m["pesq_wb"]) for m in out] == [("b", 2, 2.0), ("a", 1, 2.0)]


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        repairs.main([str(tmp_path / "nope.pt")])
    assert "nope.pt" in capsys.readouterr().err
