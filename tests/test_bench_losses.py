"""bench/losses.py: the loss terms and training steps it times are the preset's and each override's."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import losses  # noqa: E402

from lib.data.corpus import build_default_corpus  # noqa: E402


def test_each_override_gets_its_own_loss_modules():
    modules = losses.loss_modules("cpu", ("loss.stft_hop_fraction=0.5", "loss.phase_derivative=0"))
    assert list(modules) == [f"{term}, {label}" for term in ("mel", "complex_stft")
                             for label in ("preset", "loss.stft_hop_fraction=0.5", "loss.phase_derivative=0")]
    assert modules["complex_stft, preset"].hops[1024] == 256
    assert modules["complex_stft, loss.stft_hop_fraction=0.5"].hops[1024] == 512
    assert modules["mel, loss.stft_hop_fraction=0.5"].hops[-1] == 1024
    assert modules["complex_stft, loss.phase_derivative=0"].phase_derivative == 0.0
    assert modules["complex_stft, preset"].phase_derivative == 1.0  # the cpu preset's
    # half the frames: the loss is the same kind of average, not twice or half the preset's
    torch.manual_seed(0)
    y = 0.1 * torch.randn(2, 1, 24000)
    x = y + 0.03 * torch.randn_like(y)
    for term in ("mel", "complex_stft"):
        ratio = float(modules[f"{term}, loss.stft_hop_fraction=0.5"](x, y) / modules[f"{term}, preset"](x, y))
        assert 0.8 < ratio < 1.25


def test_step_times_runs_the_preset_and_each_override(tmp_path):
    build_default_corpus(tmp_path, minutes=0.3, sources="synthetic", progress=False)
    gan = "train.discriminators=[stft];train.disc_every=2"  # several overrides make one setting
    rows = losses.step_times("tiny", rounds=1, compare=("loss.stft_hop_fraction=0.5", gan), data=tmp_path,
                             warmup_steps=1)
    assert [r["step"] for r in rows] == ["train_step, preset", "train_step, loss.stft_hop_fraction=0.5",
                                         f"train_step, {gan}"]
    assert rows[0]["ratio"] == 1.0 and all(r["median_s"] > 0 and r["mean_s"] > 0 for r in rows)
    assert losses.settings((gan,))[gan] == ["train.discriminators=[stft]", "train.disc_every=2"]


def test_step_times_names_a_missing_corpus(tmp_path):
    with pytest.raises(SystemExit, match="default corpus"):
        losses.step_times("tiny", rounds=1, data=tmp_path / "nowhere")
