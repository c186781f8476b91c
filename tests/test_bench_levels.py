"""bench/levels.py: each term's best gain per band finds a band the output leaves too quiet."""
import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import levels  # noqa: E402

from lib.config import load_config  # noqa: E402

SR = 24000


def test_band_gain_scales_one_band_and_leaves_the_rest():
    t = torch.arange(SR, dtype=torch.float64) / SR  # whole periods of both tones in 1 s: no leakage between bands
    low, high = torch.sin(2 * torch.pi * 500 * t).float(), torch.sin(2 * torch.pi * 3000 * t).float()
    out = levels.band_gain(low + high, SR, 2000, 4000, -20.0)
    assert torch.allclose(out, low + 0.1 * high, atol=1e-4)
    assert torch.allclose(levels.band_gain(low + high, SR, 8000, None, 12.0), low + high, atol=1e-4)


def test_best_gains_find_a_band_left_12_db_too_quiet():
    torch.manual_seed(0)
    ref = 0.1 * torch.randn(1, 1, SR)
    out = levels.band_gain(ref, SR, 2000, 4000, -12.0)
    parts = levels.objective_parts(load_config("cpu"))
    assert set(parts) == {"mel loss", "complex-STFT term", "its magnitude part", "its phase part",
                          "its phase-derivative part"}
    # the parts add up to the term
    noisy = ref + 0.05 * torch.randn_like(ref)
    whole = sum(parts[k](noisy, ref) for k in ("its magnitude part", "its phase part", "its phase-derivative part"))
    assert whole == pytest.approx(parts["complex-STFT term"](noisy, ref), rel=1e-4)
    terms = {"mel loss": parts["mel loss"], "its magnitude part": parts["its magnitude part"],
             **levels.metric_parts(SR, pesq=False)}
    rows = levels.best_gains([(out, ref)], SR, terms, gains=(-6.0, 0.0, 6.0, 12.0, 18.0))
    assert [r["band"] for r in rows] == ["0-500 Hz", "500-1000 Hz", "1000-2000 Hz", "2000-4000 Hz", "4000-8000 Hz",
                                         ">8000 Hz"]
    quiet = rows[3]
    assert quiet["energy_db"] == pytest.approx(-12.0, abs=0.1)
    assert quiet["mel loss"] == quiet["its magnitude part"] == quiet["mel distance"] == 12.0
    for row in rows[:3] + rows[4:]:
        assert row["energy_db"] == pytest.approx(0.0, abs=0.1)
        assert row["mel loss"] == row["its magnitude part"] == row["mel distance"] == 0.0
    assert "stoi" in quiet and "pesq_wb" not in quiet
    # a term that does not see a band has no best gain there
    def below_1k(x, y):  # the error's energy below 1 kHz, plus 1
        return 1.0 + float(levels.band_gain(x - y, SR, 1000, None, -300.0).square().sum())

    low_only = levels.best_gains([(out, ref)], SR, {"below 1 kHz": below_1k}, gains=(-6.0, 0.0, 6.0))
    assert [r["below 1 kHz"] == r["below 1 kHz"] for r in low_only] == [True, True, False, False, False, False]


def test_equaliser_bands_parse_and_refuse_bad_text():
    assert levels.equaliser_band("2000:4000:6") == (2000.0, 4000.0, 6.0)
    assert levels.equaliser_band("8000::-4.5") == (8000.0, None, -4.5)
    for bad in ("2000:4000", "a:b:c", "4000:2000:6", "-1:100:3"):
        with pytest.raises(argparse.ArgumentTypeError, match="--equaliser"):
            levels.equaliser_band(bad)


def test_equalised_scores_read_the_output_under_the_equaliser():
    torch.manual_seed(0)
    ref = 0.1 * torch.randn(1, 1, SR)
    out = levels.band_gain(ref, SR, 2000, 4000, -12.0)  # a codec that left 2-4 kHz 12 dB too quiet
    as_is, mended = levels.equalised_scores([(out, ref)], SR, [(2000, 4000, 12.0)], pesq=False, dnsmos=False)
    assert as_is["output"] == "as decoded" and mended["output"] == "equalised: 2000-4000 Hz +12 dB"
    assert as_is["mel_distance"] > 0.1 and mended["mel_distance"] < 1e-3  # the equaliser undoes the loss exactly
    assert mended["si_sdr"] > 40 > as_is["si_sdr"]
    none, zero = levels.equalised_scores([(out, ref)], SR, [(0, None, 0.0)], pesq=False, dnsmos=False)
    assert zero["mel_distance"] == pytest.approx(none["mel_distance"], abs=1e-6)
