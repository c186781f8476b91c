"""Losses against hand computations and reference packages; the balancer's gradient shares."""
import math

import auraloss
import pytest
import torch
import torchaudio

from lib.training.balancer import Balancer
from lib.training.adversarial import (feature_matching_loss, hinge_d_loss, hinge_g_loss, lsgan_d_loss, lsgan_g_loss,
                                      repulsion_loss)
from lib.training.losses import (ComplexSTFTLoss, MultiResolutionSTFTLoss, MultiScaleMelLoss, SpectrumPair,
                                 downsampled_signal_loss, lowpass, mel_distance, waveform_l1, waveform_mse)

SR = 16000

# Two sub-discriminators with hand-picked logits.
REAL = [torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([[1.5]])]
FAKE = [torch.tensor([[-2.0, 0.0, 0.5]]), torch.tensor([[2.0]])]


def _tone_plus_noise(t: int = 8000) -> torch.Tensor:
    time = torch.arange(t) / SR
    wav = 0.5 * torch.sin(2 * math.pi * 440 * time) + 0.05 * torch.randn(t)
    return wav.view(1, 1, t).repeat(2, 1, 1)


# ---------------------------------------------------------------------------------------------------------------
# Adversarial losses
# ---------------------------------------------------------------------------------------------------------------


def test_hinge_losses_by_hand():
    # disc 0: relu(1 - r) = [0, .5, 2] -> 5/6; relu(1 + f) = [0, 1, 1.5] -> 5/6
    # disc 1: relu(1 - 1.5) = 0;            relu(1 + 2) = 3
    assert hinge_d_loss(REAL, FAKE).item() == pytest.approx((5 / 6 + 5 / 6 + 0 + 3) / 2)
    # generator: relu(1 - f) = [3, 1, .5] -> 1.5; relu(1 - 2) = 0
    assert hinge_g_loss(FAKE).item() == pytest.approx((1.5 + 0.0) / 2)
    # single tensors are accepted as one sub-discriminator
    assert hinge_g_loss(FAKE[0]).item() == pytest.approx(1.5)


def test_lsgan_losses_by_hand():
    # disc 0: (r - 1)^2 = [1, .25, 4] -> 1.75; f^2 = [4, 0, .25] -> 4.25 / 3
    # disc 1: (1.5 - 1)^2 = .25;               2^2 = 4
    assert lsgan_d_loss(REAL, FAKE).item() == pytest.approx((1.75 + 4.25 / 3 + 0.25 + 4.0) / 2)
    # generator: (f - 1)^2 = [9, 1, .25] -> 10.25 / 3; (2 - 1)^2 = 1
    assert lsgan_g_loss(FAKE).item() == pytest.approx((10.25 / 3 + 1.0) / 2)


def test_adversarial_losses_reject_mismatched_lists():
    with pytest.raises(ValueError):
        hinge_d_loss(REAL, FAKE[:1])
    with pytest.raises(ValueError):
        lsgan_g_loss([])


def test_feature_matching_by_hand_and_detached_real():
    real = [[torch.tensor([[1.0, -1.0], [2.0, -2.0]], requires_grad=True)], [torch.tensor([4.0, 4.0])]]
    fake = [[torch.tensor([[1.0, 0.0], [2.0, -1.0]], requires_grad=True)], [torch.tensor([2.0, 6.0])]]
    # layer 1: mean|diff| = 0.5, mean|real| = 1.5 -> 1/3; layer 2: 2 / 4 = 0.5
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx((1 / 3 + 0.5) / 2, rel=1e-6)
    loss.backward()
    assert real[0][0].grad is None  # real features are targets only
    assert fake[0][0].grad is not None
    with pytest.raises(ValueError):
        feature_matching_loss(real, [fake[0]])


def test_waveform_l1_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 4)
    y = torch.tensor([1.0, 0.0, 3.0, 0.0]).view(1, 1, 4)
    assert waveform_l1(x, y).item() == pytest.approx(1.5)
    with pytest.raises(ValueError):
        waveform_l1(x, y[..., :3])


def test_repulsion_by_hand():
    real = [torch.tensor([1.0, 2.0]), torch.tensor([0.5])]
    fake = [torch.tensor([0.0, 0.0]), torch.tensor([0.25])]
    # disc 0: mean|r - f| = 1.5 -> 1e-3 / 1.5; disc 1: 0.25 -> 4e-3
    assert repulsion_loss(real, fake).item() == pytest.approx((1e-3 / 1.5 + 4e-3) / 2, rel=1e-6)
    assert repulsion_loss(real[:1], fake[:1], scale=2.0).item() == pytest.approx(2.0 / 1.5, rel=1e-6)
    # collapsed discriminator -> large penalty
    assert repulsion_loss([torch.ones(3)], [torch.ones(3)]).item() > 1e4


# ---------------------------------------------------------------------------------------------------------------
# Spectral losses
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},
    {"fft_sizes": [256, 128], "hop_sizes": [64, 32], "win_lengths": [256, 100]},
])
def test_mr_stft_matches_auraloss(kwargs):
    x = _tone_plus_noise()
    y = x + 0.1 * torch.randn_like(x)
    ours = MultiResolutionSTFTLoss(**{k: tuple(v) for k, v in kwargs.items()})
    ref = auraloss.freq.MultiResolutionSTFTLoss(**kwargs)
    for a, b in [(x, y), (y, x), (x, torch.randn_like(x))]:
        assert abs(ours(a, b).item() - ref(a, b).item()) < 1e-4
    assert ours(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_mel_loss_zero_for_identical_and_grows_with_noise():
    loss = MultiScaleMelLoss(SR)
    x = _tone_plus_noise()
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    values = [loss(x + level * torch.randn_like(x), x).item() for level in (0.003, 0.03, 0.3)]
    assert values[0] > 0 and values[0] < values[1] < values[2]


@pytest.mark.parametrize("hop_fraction", [0.25, 0.5])
def test_mel_loss_defaults_and_one_window_by_hand(hop_fraction):
    loss = MultiScaleMelLoss(SR)
    assert loss.n_mels == (5, 10, 20, 40, 80, 160, 320)
    assert loss.log_weights == pytest.approx([math.sqrt(w / 2) for w in (32, 64, 128, 256, 512, 1024, 2048)])

    # One window, recomputed from torch.stft and a mel filterbank.
    w, n_mels, eps = 256, 40, 1e-5
    single = MultiScaleMelLoss(SR, windows=(w,), n_mels=(n_mels,), hop_fraction=hop_fraction)
    x, y = _tone_plus_noise(4000), _tone_plus_noise(4000)
    fb = torchaudio.functional.melscale_fbanks(w // 2 + 1, 0.0, SR / 2, n_mels, SR)  # [freq, mels]

    def mel(sig):
        spec = torch.stft(sig.view(-1, sig.shape[-1]), w, hop_length=int(w * hop_fraction), window=torch.hann_window(w),
                          center=True, pad_mode="reflect", return_complex=True).abs()
        return (spec.transpose(1, 2) @ fb).transpose(1, 2)

    mx, my = mel(x), mel(y)
    log_mse = (mx.clamp(min=eps).log() - my.clamp(min=eps).log()).pow(2).mean()
    expected = (mx - my).abs().mean() + math.sqrt(w / 2) * log_mse
    assert single(x, y).item() == pytest.approx(expected.item(), rel=1e-4)


def test_mel_loss_matches_torchaudio_mel_spectrogram():
    """Every default window against torchaudio's own MelSpectrogram: value and gradient (24 kHz, hop w / 4)."""
    sr, eps = 24000, 1e-5
    loss = MultiScaleMelLoss(sr, log_distance="l1")
    x = (0.1 * torch.randn(2, 1, 6000, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    y = 0.1 * torch.randn(2, 1, 6000, generator=torch.Generator().manual_seed(2))
    expected = 0.0
    for w, n_mels in zip(loss.windows, loss.n_mels):
        mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=w, win_length=w, hop_length=w // 4, n_mels=n_mels,
                                                   power=1.0, center=True, pad_mode="reflect")
        mx, my = mel(x.view(2, -1)), mel(y.view(2, -1))
        log_l1 = (mx.clamp(min=eps).log() - my.clamp(min=eps).log()).abs().mean()
        expected = expected + (mx - my).abs().mean() + math.sqrt(w / 2) * log_l1
    (ref_grad,) = torch.autograd.grad(expected, x)
    ours = loss(x, y)
    (grad,) = torch.autograd.grad(ours, x)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_shared_spectra_give_each_term_its_own_value_and_gradient():
    """Mel and complex STFT on one SpectrumPair: the values and gradients of the terms computed apart, and each
    resolution transformed once (7 mel windows and 4 complex sizes, 4 of them shared: 7 STFT pairs)."""
    sr = 24000
    mel, cx = MultiScaleMelLoss(sr), ComplexSTFTLoss(sample_rate=sr, phase_max_hz=2000.0, phase_derivative=1.0)
    x = (0.1 * torch.randn(2, 1, 6000, generator=torch.Generator().manual_seed(3))).requires_grad_(True)
    y = 0.1 * torch.randn(2, 1, 6000, generator=torch.Generator().manual_seed(4))
    pair = SpectrumPair(x.view(2, -1), y.view(2, -1))
    shared = [mel(x, y, spectra=pair), cx(x, y, spectra=pair)]
    assert sorted(n for n, _ in pair._spectra) == [32, 64, 128, 256, 512, 1024, 2048]
    for together, apart in zip(shared, [mel(x, y), cx(x, y)]):
        assert together.item() == pytest.approx(apart.item(), rel=1e-6)
        g_together = torch.autograd.grad(together, x, retain_graph=True)[0]
        torch.testing.assert_close(g_together, torch.autograd.grad(apart, x)[0], rtol=1e-5, atol=1e-9)
    # the complex term against torch.stft(normalized=True) by hand, one size, no limit
    n = 512
    spec = [torch.stft(s.view(2, -1), n, hop_length=n // 4, window=torch.hann_window(n), normalized=True,
                       return_complex=True) for s in (x.detach(), y)]
    mag = [s.abs() ** 0.3 for s in spec]
    comp = [m * torch.exp(1j * s.angle()) for m, s in zip(mag, spec)]
    expected = (comp[0] - comp[1]).abs().square().mean() + (mag[0] - mag[1]).square().mean()
    assert ComplexSTFTLoss(fft_sizes=(n,))(x, y).item() == pytest.approx(expected.item(), rel=1e-4)
    with pytest.raises(ValueError, match="SpectrumPair"):
        SpectrumPair(torch.zeros(2, 100), torch.zeros(2, 99))


def test_mel_loss_errors():
    with pytest.raises(ValueError):
        MultiScaleMelLoss(SR, windows=(64, 128), n_mels=(10,))
    loss = MultiScaleMelLoss(SR)
    with pytest.raises(ValueError):
        loss(torch.randn(1, 1, 500), torch.randn(1, 1, 500))  # shorter than half the largest window
    with pytest.raises(ValueError):
        loss(torch.randn(1, 1, 4000), torch.randn(1, 1, 3999))


def test_mel_distance_metric():
    x = _tone_plus_noise()
    assert mel_distance(x, x, SR) == pytest.approx(0.0, abs=1e-7)
    d = [mel_distance(x + level * torch.randn_like(x), x, SR) for level in (0.003, 0.03, 0.3)]
    assert isinstance(d[0], float)
    assert 0 < d[0] < d[1] < d[2]


# ---------------------------------------------------------------------------------------------------------------
# Downsampled-signal objective
# ---------------------------------------------------------------------------------------------------------------


def test_downsampled_signal_loss_zero_when_means_match():
    wav = torch.randn(2, 1, 960)
    stages = []
    for t_i, c_i in [(8, 16), (24, 8), (96, 4), (480, 2)]:
        target = wav.view(2, 1, t_i, -1).mean(-1)  # block means, by hand
        spread = torch.randn(2, c_i, t_i)
        spread = spread - spread.mean(1, keepdim=True)  # zero channel mean: only the mean is constrained
        stages.append(target + spread)
    assert downsampled_signal_loss(stages, wav).item() < 1e-12

    # Shift every stage by 1 -> MSE 1 per stage; weights are used as given.
    shifted = [s + 1.0 for s in stages]
    assert downsampled_signal_loss(shifted, wav).item() == pytest.approx(1.0, rel=1e-5)
    assert downsampled_signal_loss(shifted, wav, weights=[1, 2, 3, 4]).item() == pytest.approx(10.0, rel=1e-5)
    with pytest.raises(ValueError):
        downsampled_signal_loss(stages, wav, weights=[1.0])


# ---------------------------------------------------------------------------------------------------------------
# Balancer
# ---------------------------------------------------------------------------------------------------------------


def _shares(total_grad, grads):
    """Solve total_grad = sum_i s_i * grads[i] / ||grads[i]|| by least squares; return the shares s_i."""
    basis = torch.stack([(g / g.norm()).flatten() for g in grads], dim=1).double()  # unit columns: well posed
    coef = torch.linalg.lstsq(basis, total_grad.flatten().unsqueeze(1).double()).solution.squeeze(1)
    return coef.tolist()


def test_balancer_gives_each_loss_its_weight_share():
    x = torch.randn(4, 1, 1024, requires_grad=True)
    balancer = Balancer({"big": 3.0, "small": 1.0}, total_norm=1.0, ema_decay=0.9)

    def losses_for(out, t1, t2):
        return {"big": 1e4 * (out - t1).pow(2).mean(), "small": 1e-3 * (out - t2).abs().mean()}

    for _ in range(60):
        t1, t2 = torch.randn_like(x), torch.randn_like(x)
        x.grad = None
        out = x * 1.0  # d out / d x = identity, so x.grad is the balanced gradient at the output
        norms = balancer.backward(losses_for(out, t1, t2), out)
    assert norms["big"] / norms["small"] > 1e5  # very different raw scales

    # Independent per-loss gradients of the last step, then the coefficients the balancer gave them.
    out = x.detach().requires_grad_(True)
    raw = losses_for(out, t1, t2)
    grads = [torch.autograd.grad(raw[k], out)[0] for k in ("big", "small")]
    big, small = _shares(x.grad, grads)
    assert big / small == pytest.approx(3.0, rel=0.05)
    assert big + small == pytest.approx(1.0, rel=0.05)


def test_balancer_total_norm_and_other_term():
    x = torch.randn(2, 1, 2048, requires_grad=True)
    extra = torch.tensor(2.0, requires_grad=True)
    balancer = Balancer({"a": 1.0, "b": 1.0}, total_norm=0.5, ema_decay=0.8)
    for _ in range(30):
        t = torch.randn_like(x)
        x.grad, extra.grad = None, None
        out = x * 1.0
        # Parallel gradients of very different sizes: the balanced total has norm total_norm.
        losses = {"a": 1e3 * (out - t).pow(2).mean(), "b": 1e-4 * (out - t).pow(2).mean()}
        balancer.backward(losses, out, other=3.0 * extra ** 2)
    assert x.grad.norm().item() == pytest.approx(0.5, rel=0.02)
    assert extra.grad.item() == pytest.approx(12.0)  # d(3 e^2)/de at e=2, passed through unscaled
    assert set(balancer.ema_norms) == {"a", "b"}

    out = x * 1.0
    with pytest.raises(ValueError, match="other"):
        balancer.backward({"a": out.mean(), "b": extra * 1.0}, out)
    with pytest.raises(ValueError):
        balancer.backward({"unknown": out.mean()}, out)


def test_balancer_measuring_every_third_call():
    """norm_every=3: calls 0 and 3 measure (EMA decayed by 0.9 ** 3), the calls between backpropagate the weighted
    sum at the standing EMAs in one pass: the same gradient as the balanced sum built by hand."""
    x = torch.randn(2, 1, 256, requires_grad=True)
    balancer = Balancer({"a": 1.0, "b": 3.0}, total_norm=2.0, ema_decay=0.9, norm_every=3)
    targets = [torch.randn_like(x) for _ in range(4)]
    measured = []
    for call, t in enumerate(targets):
        x.grad = None
        out = x * 1.0
        losses = {"a": (out - t).pow(2).mean(), "b": 10 * (out - t).abs().mean()}
        raw = {k: torch.autograd.grad(v, out, retain_graph=True)[0] for k, v in losses.items()}
        ema_before = balancer.ema_norms
        norms = balancer.backward(losses, out)
        if call in (0, 3):
            assert set(norms) == {"a", "b"}
            measured.append({k: g.norm().item() for k, g in raw.items()})
            assert norms["a"] == pytest.approx(measured[-1]["a"], rel=1e-5)
            continue
        assert norms == {}
        expected = sum(2.0 * w / 4.0 * raw[k] / ema_before[k] for k, w in (("a", 1.0), ("b", 3.0)))
        torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-8)
        assert balancer.ema_norms == ema_before  # nothing measured, nothing moved
    decay = 0.9 ** 3
    for k in ("a", "b"):
        expected_ema = (decay * measured[0][k] + measured[1][k]) / (decay + 1.0)
        assert balancer.ema_norms[k] == pytest.approx(expected_ema, rel=1e-5)
    assert balancer.calls == 4 and balancer.state_dict()["calls"] == 4
    with pytest.raises(ValueError, match="norm_every"):
        Balancer({"a": 1.0}, norm_every=0)


def test_balancer_state_roundtrip():
    x = torch.randn(1, 1, 64, requires_grad=True)
    b1 = Balancer({"l": 1.0})
    out = x * 1.0
    b1.backward({"l": 5 * out.pow(2).sum()}, out)
    b2 = Balancer({"l": 1.0})
    b2.load_state_dict(b1.state_dict())
    assert b2.ema_norms == b1.ema_norms
    # bias-corrected EMA: after one step it equals the raw norm, 10 * ||x||
    assert b1.ema_norms["l"] == pytest.approx(10 * x.norm().item(), rel=1e-5)


# ----------------------------------------------------------------------------- phase-aware terms, band-limited


def _sine(hz: float, t: int = 8000, sr: int = SR) -> torch.Tensor:
    return torch.sin(2 * math.pi * hz * torch.arange(t) / sr).reshape(1, 1, t)


@pytest.mark.parametrize("hop_fraction", [0.25, 0.5])
def test_complex_stft_loss_matches_a_hand_computation(hop_fraction):
    torch.manual_seed(0)
    x, y = 0.1 * torch.randn(2, 1, 4000), 0.1 * torch.randn(2, 1, 4000)
    n, c = 256, 0.3

    def compressed(s):
        spec = torch.stft(s.reshape(-1, 4000), n, int(n * hop_fraction), window=torch.hann_window(n), normalized=True,
                          center=True, pad_mode="reflect", return_complex=True)
        mag = spec.abs()
        return torch.polar(mag.pow(c), spec.angle()), mag.pow(c)

    (cx, mx), (cy, my) = compressed(x), compressed(y)
    expected = (cx - cy).abs().pow(2).mean() + (mx - my).pow(2).mean()
    assert float(ComplexSTFTLoss(fft_sizes=(n,), hop_fraction=hop_fraction)(x, y)) == pytest.approx(float(expected),
                                                                                                rel=1e-4)


def test_complex_stft_loss_leaves_the_phase_above_phase_max_hz_free():
    low, high = _sine(500), 0.5 * _sine(5000)
    x, flipped = low + high, low - high  # same magnitudes everywhere, opposite phase above 2 kHz
    full = float(ComplexSTFTLoss(fft_sizes=(256, 512))(flipped, x))
    limited = ComplexSTFTLoss(fft_sizes=(256, 512), sample_rate=SR, phase_max_hz=2000.0)
    assert limited.phase_bins == {256: 33, 512: 65}  # 0 .. 2000 Hz at 62.5 and 31.25 Hz per bin
    assert full > 0.05
    assert float(limited(flipped, x)) < 0.01 * full  # what is left: the sidelobes of the 5 kHz tone below 2 kHz
    # below the limit the phase still counts: flipping the 500 Hz tone costs as much as without a limit
    assert float(limited(-low + high, x)) == pytest.approx(float(ComplexSTFTLoss(fft_sizes=(256, 512))(-low + high, x)),
                                                            rel=0.02)
    with pytest.raises(ValueError, match="phase_max_hz"):
        ComplexSTFTLoss(phase_max_hz=9000.0, sample_rate=SR)


@pytest.mark.parametrize("min_hz, d", [(None, 33), (0.0, 0), (1000.0, 16)])
def test_complex_stft_phase_derivative_matches_a_hand_computation(min_hz, d):
    """The derivative term from bin d: where the complex term stops (None), or from min_hz (below it both hold)."""
    torch.manual_seed(1)
    x, y = 0.1 * torch.randn(2, 1, 4000), 0.1 * torch.randn(2, 1, 4000)
    n, c, w = 256, 0.3, 0.7
    k = 33  # bins 0 .. 2000 Hz at 62.5 Hz per bin keep the phase itself

    def spectrum(s):
        return torch.stft(s.reshape(-1, 4000), n, n // 4, window=torch.hann_window(n), normalized=True,
                          center=True, pad_mode="reflect", return_complex=True)

    def differences(spec):
        mag, phase = spec.abs()[:, d:], spec.angle()[:, d:]
        over_time = torch.polar((mag[..., 1:] * mag[..., :-1]).pow(c / 2), phase[..., 1:] - phase[..., :-1])
        over_bins = torch.polar((mag[:, 1:] * mag[:, :-1]).pow(c / 2), phase[:, 1:] - phase[:, :-1])
        return over_time, over_bins

    x.requires_grad_(True)
    sx, sy = spectrum(x), spectrum(y)
    cx, cy = torch.polar(sx.abs().pow(c), sx.angle()), torch.polar(sy.abs().pow(c), sy.angle())
    (tx, fx), (ty, fy) = differences(sx), differences(sy)
    expected = ((cx - cy)[:, :k].abs().pow(2).sum() + w * ((tx - ty).abs().pow(2).sum() + (fx - fy).abs().pow(2).sum())
                ) / cx.numel() + (cx.abs() - cy.abs()).pow(2).mean()
    loss = ComplexSTFTLoss(fft_sizes=(n,), sample_rate=SR, phase_max_hz=2000.0, phase_derivative=w,
                           derivative_min_hz=min_hz)
    value = loss(x, y)
    assert float(value) == pytest.approx(float(expected), rel=1e-4)
    # the loss expands |D(X) - D(Y)|^2 into products of neighbours; its gradient must be the direct form's (built
    # here with the loss's eps: the angle's gradient above is singular where a bin is near zero)
    def direct(spec):
        h = spec[:, d:] * (spec.abs().square() + 1e-8)[:, d:].pow(c / 4 - 0.5)
        return h[..., 1:] * h[..., :-1].conj(), h[:, 1:] * h[:, :-1].conj()

    (tx, fx), (ty, fy) = direct(sx), direct(sy)
    derivative = w * ((tx - ty).abs().square().sum() + (fx - fy).abs().square().sum()) / cx.numel()
    only = ComplexSTFTLoss(fft_sizes=(n,), sample_rate=SR, phase_max_hz=2000.0, phase_derivative=w, mag_weight=0.0,
                           derivative_min_hz=min_hz)
    without = ComplexSTFTLoss(fft_sizes=(n,), sample_rate=SR, phase_max_hz=2000.0, mag_weight=0.0)
    (grad,), (expected_grad,) = torch.autograd.grad(only(x, y) - without(x, y), x), torch.autograd.grad(derivative, x)
    assert float(expected_grad.norm()) > 0
    assert float((grad - expected_grad).norm()) < 1e-4 * float(expected_grad.norm())
    assert loss.derivative_from[n] == d
    with pytest.raises(ValueError, match="phase_derivative"):
        ComplexSTFTLoss(phase_derivative=-1.0)
    with pytest.raises(ValueError, match="derivative_min_hz"):
        ComplexSTFTLoss(sample_rate=SR, phase_derivative=1.0, derivative_min_hz=SR)


def test_complex_stft_phase_derivative_sees_a_jittered_phase_but_not_a_constant_offset():
    low, high = _sine(500), 0.5 * _sine(5000)
    t = torch.arange(low.shape[-1]).reshape(1, 1, -1)
    jumps = (t // 480 % 2) * (math.pi / 2)  # the 5 kHz tone's phase jumps by a quarter turn every 20 ms
    jittered = low + 0.5 * torch.sin(2 * math.pi * 5000 * t / SR + jumps)
    plain = ComplexSTFTLoss(fft_sizes=(256, 512), sample_rate=SR, phase_max_hz=2000.0)
    held = ComplexSTFTLoss(fft_sizes=(256, 512), sample_rate=SR, phase_max_hz=2000.0, phase_derivative=1.0)
    x = low + high
    # a constant offset (here a sign flip) of the band above the limit: the differences barely see it (what they see
    # sits at the limit, where the two tones' sidelobes meet) ...
    flip_cost = float(held(low - high, x)) - float(plain(low - high, x))
    assert float(held(low - high, x)) < 0.02 * float(ComplexSTFTLoss(fft_sizes=(256, 512))(low - high, x))
    # ... a phase that jumps from frame to frame costs them over a hundred times as much
    jitter_cost = float(held(jittered, x)) - float(plain(jittered, x))
    assert jitter_cost > 100 * flip_cost
    assert float(held(jittered, x)) > 3 * float(plain(jittered, x))


def test_waveform_mse_below_max_hz_ignores_the_band_above():
    low, high = _sine(500), 0.5 * _sine(5000)
    assert float(lowpass(low + high, SR, 2000.0).sub(low).abs().max()) < 1e-3  # whole periods: exact bins
    assert float(waveform_mse(low + high, low - high)) == pytest.approx(0.5, rel=1e-3)  # mean (2 * high)^2
    assert float(waveform_mse(low + high, low - high, SR, 2000.0)) < 1e-8
    assert float(waveform_mse(-low, low, SR, 2000.0)) == pytest.approx(2.0, rel=1e-3)  # mean (2 * low)^2
    with pytest.raises(ValueError, match="sample_rate"):
        waveform_mse(low, low, max_hz=2000.0)


@pytest.mark.parametrize("overrides, hears_5k_hz", [
    (["loss.phase_max_hz=null"], True),
    (["loss.phase_max_hz=2000"], False),
    (["loss.waveform_mse_max_hz=2000"], False),
    (["loss.phase_max_hz=2000", "loss.waveform_mse_max_hz=8000"], True),  # its own limit wins
])
def test_waveform_mse_term_takes_its_own_band_limit_over_phase_max_hz(overrides, hears_5k_hz):
    from types import SimpleNamespace

    from lib.config import load_config
    from lib.training.objectives import LOSS_TERMS, StepContext
    cfg = load_config("tiny", ["data.sample_rate=16000", *overrides])
    term = LOSS_TERMS.get("waveform_mse")(cfg)
    low, high = _sine(500), 0.5 * _sine(5000)
    ctx = StepContext(wav=low - high, out=SimpleNamespace(recon=low + high))
    expected = 0.5 if hears_5k_hz else 0.0  # mean (2 * high)^2 where the 5 kHz error counts
    assert float(term(ctx)) == pytest.approx(expected, abs=1e-4)


def test_mel_log_weight_setting_reaches_the_loss():
    from lib.config import ConfigError, load_config
    from lib.training.objectives import LOSS_TERMS

    soundstream = LOSS_TERMS.get("mel")(load_config("tiny")).loss
    equal = LOSS_TERMS.get("mel")(load_config("tiny", ["loss.mel_log_weight=1"])).loss
    windows = soundstream.windows
    assert soundstream.log_weights == pytest.approx([math.sqrt(w / 2) for w in windows])
    assert equal.log_weights == [1.0] * len(windows)
    x, y = _tone_plus_noise(4000), _tone_plus_noise(4000)
    assert equal(x, y).item() < soundstream(x, y).item()  # every log term weighs 1 instead of 4 .. 32
    with pytest.raises(ConfigError, match=r"loss\.mel_log_weight"):
        load_config("tiny", ["loss.mel_log_weight=0"])


@pytest.mark.parametrize("hop_fraction, even", [(0.25, True), (1 / 3, True), (0.5, False)])
def test_a_squared_spectral_error_weighs_samples_by_the_squared_windows(hop_fraction, even):
    # Uncompressed and without the magnitude part the complex term is the squared STFT of the error: an error
    # impulse costs the sum of the squared windows over it, constant at hops of 1/4 and 1/3 of the window, swinging
    # 2:1 within each hop at 1/2.
    n, t = 256, 4000
    loss = ComplexSTFTLoss(fft_sizes=(n,), compression=1.0, mag_weight=0.0, hop_fraction=hop_fraction)
    y = torch.zeros(1, 1, t)
    costs = []
    for position in range(1024, 1024 + n // 2, 8):
        x = y.clone()
        x[..., position] = 1.0
        costs.append(float(loss(x, y)))
    spread = max(costs) / min(costs)
    assert (spread < 1.01) if even else (spread > 1.9)


def test_stft_hop_fraction_setting_reaches_both_spectral_losses():
    from lib.config import ConfigError, load_config
    from lib.training.objectives import LOSS_TERMS

    cfg = load_config("cpu", ["loss.stft_hop_fraction=0.5"])
    mel, spectral = LOSS_TERMS.get("mel")(cfg).loss, LOSS_TERMS.get("complex_stft")(cfg).loss
    assert list(mel.hops) == [w // 2 for w in mel.windows]
    assert spectral.hops == {n: n // 2 for n in spectral.fft_sizes}
    default = LOSS_TERMS.get("complex_stft")(load_config("cpu")).loss
    assert default.hops == {n: n // 4 for n in default.fft_sizes}
    for bad in ("0", "0.75"):  # no overlap or less than half: some samples would weigh less than others
        with pytest.raises(ConfigError, match=r"loss\.stft_hop_fraction"):
            load_config("cpu", [f"loss.stft_hop_fraction={bad}"])
    with pytest.raises(ValueError, match="hop_fraction"):
        ComplexSTFTLoss(hop_fraction=1.0)


def test_phase_derivative_setting_reaches_the_loss():
    from lib.config import ConfigError, load_config
    from lib.training.objectives import LOSS_TERMS

    term = LOSS_TERMS.get("complex_stft")(load_config("cpu", ["loss.phase_derivative=0.3"])).loss
    assert term.phase_derivative == 0.3 and term.phase_bins[2048] == 171  # the cpu preset's 2 kHz limit
    off = LOSS_TERMS.get("complex_stft")(load_config("cpu", ["loss.phase_derivative=0"])).loss
    t = torch.arange(8000).reshape(1, 1, -1)
    x, jittered = _sine(5000), torch.sin(2 * math.pi * 5000 * t / SR + (t // 480 % 2) * (math.pi / 2))
    assert float(term(jittered, x)) > 1.5 * float(off(jittered, x))
    with pytest.raises(ConfigError, match=r"loss\.phase_derivative"):
        load_config("cpu", ["loss.phase_derivative=-1"])
    low = LOSS_TERMS.get("complex_stft")(load_config("cpu", ["loss.phase_derivative_min_hz=0"])).loss
    assert low.derivative_from[2048] == 0 and term.derivative_from[2048] == 171
    # a phase jitter below the limit: the complex term sees it either way (and the differences above the limit its
    # spectral splatter), the differences from 0 Hz add the band itself: 0.39 against 0.27
    low_jittered = torch.sin(2 * math.pi * 500 * t / SR + (t // 480 % 2) * (math.pi / 2))
    above = LOSS_TERMS.get("complex_stft")(load_config("cpu")).loss  # the preset's: weight 1, from 2 kHz
    assert float(low(low_jittered, _sine(500))) > 1.2 * float(above(low_jittered, _sine(500)))
    with pytest.raises(ConfigError, match=r"loss\.phase_derivative_min_hz"):
        load_config("cpu", ["loss.phase_derivative_min_hz=-5"])
