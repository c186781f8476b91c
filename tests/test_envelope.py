"""The STOI proxy: STOI's bands, its invariances, and its ranking of degradations against the pystoi package."""
from types import SimpleNamespace

import pytest
import torch
from pystoi import stoi as reference_stoi
from pystoi.utils import thirdoct

from lib.config import load_config
from lib.training.envelope import EnvelopeCorrelationLoss, third_octave_bands
from lib.training.objectives import StepContext, build_terms


@pytest.mark.parametrize("sample_rate, n_fft", [(10000, 512), (24000, 512), (24000, 1024), (16000, 256)])
def test_third_octave_bands_are_pystois(sample_rate, n_fft):
    obm, _ = thirdoct(sample_rate, n_fft, 15, 150)
    assert torch.equal(third_octave_bands(sample_rate, n_fft), torch.from_numpy(obm).float())


def _speech_like(seconds: float = 3.0, sample_rate: int = 16000, seed: int = 0) -> torch.Tensor:
    """Harmonics of a gliding 120-200 Hz voice under a 4 Hz syllable envelope with pauses, `[1, 1, T]`."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 160 + 40 * torch.sin(2 * torch.pi * 0.7 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / sample_rate
    voice = sum(torch.sin(k * phase) / k for k in range(1, 30))
    syllables = torch.sin(torch.pi * 4 * t).clamp(min=0) ** 2 * (torch.sin(torch.pi * 0.5 * t) > -0.5)
    return (voice * syllables + 1e-3 * torch.randn(t.shape, generator=g))[None, None].float()


def test_zero_for_the_reference_at_any_gain_and_one_for_silence():
    loss = EnvelopeCorrelationLoss(16000)
    y = _speech_like()
    assert loss(y, y).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(0.3 * y, y).item() == pytest.approx(0.0, abs=1e-6)
    silence = torch.zeros(1, 1, 16000, requires_grad=True)
    value = loss(silence, torch.zeros(1, 1, 16000))
    value.backward()
    assert value.item() == pytest.approx(1.0) and torch.isfinite(silence.grad).all()
    with pytest.raises(ValueError, match="length 200 too short; need T > 256"):
        loss(torch.zeros(1, 1, 200), torch.zeros(1, 1, 200))
    with pytest.raises(ValueError, match="same shape"):
        loss(y, y[..., :-1])


def test_ranks_degradations_as_stoi_does():
    sample_rate, y = 16000, _speech_like()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(y.shape, generator=g) * y.std()
    spectrum, freqs = torch.fft.rfft(y), torch.fft.rfftfreq(y.shape[-1], 1 / sample_rate)
    degraded = {f"snr {snr} dB": y + noise * 10 ** (-snr / 20) for snr in (20, 10, 5, 0, -5)}
    degraded.update({f"low-passed at {hz} Hz": torch.fft.irfft(spectrum * (freqs < hz), n=y.shape[-1])
                     for hz in (2000, 1000, 500)})
    loss = EnvelopeCorrelationLoss(sample_rate)
    proxy = {k: loss(x, y).item() for k, x in degraded.items()}
    truth = {k: reference_stoi(y[0, 0].numpy(), x[0, 0].numpy(), sample_rate) for k, x in degraded.items()}
    # every pair STOI tells apart by more than 0.03 is ordered the same way by the proxy (lower STOI, higher loss)
    pairs = [(a, b) for a in degraded for b in degraded if truth[a] < truth[b] - 0.03]
    assert len(pairs) >= 15
    wrong = [(a, b) for a, b in pairs if not proxy[a] > proxy[b]]
    assert not wrong, (wrong, proxy, truth)


def test_the_term_trains_towards_the_reference():
    cfg = load_config("tiny", ["loss.envelope_correlation=1.0"])
    term = build_terms(cfg)["envelope_correlation"]
    y = _speech_like(1.0, cfg.data.sample_rate)
    x = (y + 0.5 * torch.randn_like(y) * y.std()).requires_grad_()
    ctx = StepContext(wav=y, out=SimpleNamespace(recon=x))
    optimizer, first = torch.optim.Adam([x], lr=1e-3), None
    for _ in range(30):
        value = term(ctx)
        first = value.item() if first is None else first
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert term(ctx).item() < 0.7 * first
