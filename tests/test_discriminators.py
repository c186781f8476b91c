"""Discriminators: logit/feature shapes for awkward lengths, raw logits (no sigmoid), gradient flow."""
import math

import pytest
import torch

from lib.build import build_discriminators as build_from_config
from lib.config import load_config
from lib.model.discriminators import (MultiPeriodDiscriminator, MultiScaleSTFTDiscriminator,
                                      MultiScaleWaveformDiscriminator)
from lib.model.registries import DISCRIMINATORS
from lib.training.adversarial import lsgan_d_loss

LENGTHS = [4000, 4001, 3333, 777]


def build_discriminators(names, channels: int, max_channels: int) -> dict[str, torch.nn.Module]:
    return {n: DISCRIMINATORS.get(n)(channels=channels, max_channels=max_channels) for n in names}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def test_stft_discriminator_shapes():
    n_ffts = (2048, 512, 128)
    disc = MultiScaleSTFTDiscriminator(n_ffts=n_ffts, hop_ratio=0.25, channels=4)
    for t in LENGTHS + [1, 50]:
        logits, feats = disc(torch.randn(2, 1, t))
        assert len(logits) == len(feats) == len(n_ffts)
        for n_fft, lg, fs in zip(n_ffts, logits, feats):
            frames = 1 + t // (n_fft // 4)  # centred STFT
            freq = n_fft // 2 + 1
            for _ in range(3):  # three stride-2 convs in frequency (kernel 9, padding 4)
                freq = _ceil_div(freq, 2)
            assert lg.shape == (2, 1, frames, freq), (t, n_fft, lg.shape)
            assert len(fs) == 5
            assert fs[0].shape == (2, 4, frames, n_fft // 2 + 1)
            assert all(f.shape[0] == 2 and f.shape[1] == 4 for f in fs)


def test_stft_discriminator_channel_growth():
    disc = MultiScaleSTFTDiscriminator(n_ffts=(128,), channels=2, max_channels=8)
    _, feats = disc(torch.randn(1, 1, 500))
    assert [f.shape[1] for f in feats[0]] == [2, 4, 8, 8, 8]


def test_waveform_discriminator_shapes():
    disc = MultiScaleWaveformDiscriminator(n_scales=3, channels=2, max_channels=16)
    for t in LENGTHS + [8, 13]:
        logits, feats = disc(torch.randn(2, 1, t))
        assert len(logits) == len(feats) == 3
        for k, (lg, fs) in enumerate(zip(logits, feats)):
            t_k = t // 2 ** k  # avg-pool k=4, s=2, p=1 halves (floor) per scale
            assert lg.shape == (2, 1, _ceil_div(t_k, 4 ** 4)), (t, k, lg.shape)
            assert [f.shape[1] for f in fs] == [2, 8, 16, 16, 16, 16]
            assert [f.shape[-1] for f in fs] == [t_k] + [_ceil_div(t_k, 4 ** i) for i in range(1, 5)] + [
                _ceil_div(t_k, 4 ** 4)]
    with pytest.raises(ValueError):
        disc(torch.randn(1, 1, 7))


def test_period_discriminator_shapes():
    periods = (2, 3, 5, 7, 11)
    disc = MultiPeriodDiscriminator(periods=periods, channels=2, max_channels=16)
    for t in LENGTHS + [1, 10]:
        logits, feats = disc(torch.randn(2, 1, t))
        assert len(logits) == len(feats) == len(periods)
        for p, lg, fs in zip(periods, logits, feats):
            h = _ceil_div(t, p)  # padded to a multiple of p, folded
            for _ in range(4):  # four stride-3 convs, kernel 5, padding 2
                h = _ceil_div(h, 3)
            assert lg.shape == (2, 1, h, p), (t, p, lg.shape)
            assert [f.shape[1] for f in fs] == [2, 8, 16, 16, 16]
            assert all(f.shape[-1] == p for f in fs)


@pytest.mark.parametrize("name", ["stft", "waveform", "period"])
def test_raw_logits_not_squashed(name):
    disc = build_discriminators([name], channels=4, max_channels=16)[name]
    wav = torch.randn(2, 1, 4000)
    logits, _ = disc(wav)
    values = torch.cat([lg.flatten() for lg in logits])
    assert (values < 0).any()  # a sigmoid output could never be negative
    # LeakyReLU stacks are ~positively homogeneous: a loud input gives scores far outside [0, 1].
    loud, _ = disc(1000 * wav)
    assert torch.cat([lg.flatten() for lg in loud]).abs().max() > 1.0


@pytest.mark.parametrize("name", ["stft", "waveform", "period"])
def test_gradients_reach_input_and_every_parameter(name):
    disc = build_discriminators([name], channels=2, max_channels=8)[name]
    real = torch.randn(2, 1, 3001)
    fake = torch.randn(2, 1, 3001, requires_grad=True)
    # LSGAN, not hinge: with logits near 0 the hinge gradients of the last bias cancel exactly (-1 + 1).
    loss = lsgan_d_loss(disc(real)[0], disc(fake)[0])
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    for pname, p in disc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_weight_norm_is_used():
    ds = build_discriminators(["stft", "waveform", "period"], channels=2, max_channels=8)
    for name, disc in ds.items():
        convs = [m for m in disc.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d))]
        assert convs, name
        assert all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in convs), name


def test_build_discriminators_from_the_config_and_errors():
    cfg = load_config("tiny", ["train.discriminators=[stft, period]", "train.stft_n_ffts=[256, 64]",
                               "train.disc_channels=2", "train.disc_max_channels=4"])
    ds = build_from_config(cfg)
    assert list(ds.keys()) == ["stft", "period"]
    assert len(ds["stft"].discriminators) == 2
    assert len(ds["period"].discriminators) == 5
    with pytest.raises(KeyError, match="unknown discriminator 'mel'; valid: stft, waveform, period"):
        DISCRIMINATORS.get("mel")
    with pytest.raises(ValueError):
        ds["stft"](torch.randn(2, 4000))  # not [B, 1, T]
    with pytest.raises(ValueError):
        ds["period"](torch.randn(2, 2, 4000))  # stereo


def test_default_sizes_are_paper_scale():
    # Default widths: MelGAN ~17 M parameters, HiFi-GAN MPD ~41 M, EnCodec-like STFT disc < 1 M.
    n = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    assert 15 < n(MultiScaleWaveformDiscriminator()) < 19
    assert 38 < n(MultiPeriodDiscriminator()) < 44
    assert 0.1 < n(MultiScaleSTFTDiscriminator()) < 1.0
    assert math.isclose(len(MultiScaleSTFTDiscriminator().discriminators), 5)


def test_a_new_discriminator_is_one_class_and_one_registration_line():
    """The README's example: register, name it in train.discriminators, and the build and config accept it."""
    from torch import nn

    from lib.model.discriminators import Discriminator, WaveformDiscriminator

    @DISCRIMINATORS.register("raw_readme_example")
    class RawWaveformDiscriminator(Discriminator):
        def __init__(self, channels: int = 16, max_channels: int = 1024):
            super().__init__()
            self.discriminators = nn.ModuleList([WaveformDiscriminator(channels, max_channels)])

    cfg = load_config("tiny", ["train.discriminators=[stft, raw_readme_example]"])
    ds = build_from_config(cfg)
    assert isinstance(ds["raw_readme_example"], RawWaveformDiscriminator)
    logits, features = ds["raw_readme_example"](torch.randn(2, 1, 4000))
    assert len(logits) == 1 and len(features) == 1
