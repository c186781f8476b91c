"""Reconstruction losses for audio codecs: spectral, waveform and downsampled-signal terms.

Audio tensors are `[B, C, T]` (C = 1 for mono); spectral losses fold channels into the batch.

Reconstruction:
- `MultiScaleMelLoss`: SoundStream's multi-window mel loss (L1 on mel + sqrt(w/2) * MSE on log-mel).
- `mel_distance`: a plain metric, mean L1 between log-mel spectrograms at one resolution.
- `MultiResolutionSTFTLoss`: spectral convergence + log-magnitude L1 (Yamamoto et al.), auraloss-compatible.
- `waveform_l1`, `waveform_mse`, `ComplexSTFTLoss` (phase-aware, power-compressed complex spectra),
  `downsampled_signal_loss`; a differentiable STOI proxy in `lib.training.envelope`.
The adversarial losses are in `lib.training.adversarial`; the gradient balancer that weighs the terms at the decoder
output in `lib.training.balancer`.
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn


def _check_same_shape(x: torch.Tensor, y: torch.Tensor, where: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{where}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def _check_hop_fraction(hop_fraction: float) -> None:
    if not 0 < hop_fraction <= 0.5:
        raise ValueError(f"hop_fraction must be in (0, 0.5] (Hann windows overlapping at least by half), "
                         f"got {hop_fraction}")


def _fold_channels(x: torch.Tensor, name: str) -> torch.Tensor:
    """`[B, C, T]` (or `[B, T]`, `[T]`) -> `[B * C, T]`."""
    if x.dim() == 0:
        raise ValueError(f"{name} must have a time axis, got a scalar")
    return x.reshape(-1, x.shape[-1])


# --------------------------------------------------------------------------------------------------------------
# Reconstruction losses
# --------------------------------------------------------------------------------------------------------------


class SpectrumPair:
    """Complex STFTs of an estimate and its reference, each computed once per FFT size and hop.

    `x`, `y` `[N, T]`; `pair(n_fft, hop) -> (X, Y)`, each `[N, n_fft // 2 + 1, frames]`: periodic Hann window of
    `n_fft`, centred with reflect padding, unnormalised. The mel and complex-STFT terms take theirs from one pair
    per step, so where their resolutions meet (256 to 2048 points in the `cpu` preset) the STFT and its backward
    run once, not twice.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        _check_same_shape(x, y, "SpectrumPair")
        self.x, self.y = x, y
        self._spectra: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, n_fft: int, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
        if (n_fft, hop) not in self._spectra:
            window = torch.hann_window(n_fft, device=self.x.device, dtype=self.x.dtype)
            self._spectra[n_fft, hop] = tuple(
                torch.stft(s, n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect",
                           return_complex=True) for s in (self.x, self.y))
        return self._spectra[n_fft, hop]

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, spectra: Optional["SpectrumPair"]) -> "SpectrumPair":
        """`spectra` if given (it must hold the same two signals), else a new pair of `x`, `y` `[B, C, T]`."""
        return spectra if spectra is not None else cls(_fold_channels(x, "x").float(), _fold_channels(y, "y").float())


class MultiScaleMelLoss(nn.Module):
    """SoundStream multi-window mel loss.

    For each window size `w` (hop `w * hop_fraction`, `n_mels[i]` mel bands, magnitude mel spectrogram `S_w`):

        L_w = mean |S_w(x) - S_w(y)| + log_weight_w * mean (log S_w(x) - log S_w(y)) ** 2

    with `log S = log(max(S, eps))`. The log term is an MSE (squared L2, as in SoundStream; pass
    `log_distance="l1"` for an L1 log term). The loss is the SUM over windows (SoundStream sums over scales).

    Args:
        sample_rate: audio sample rate in Hz.
        windows: STFT window (= FFT) sizes.
        n_mels: mel bands per window; None -> `max(1, 5 * w // 32)` (5, 10, ..., 320 for 32..2048);
            an int uses the same count for every window.
        log_weight: weight of the log-mel term; None -> `sqrt(w / 2)` per window (SoundStream); a float for all.
        eps: floor of the mel magnitudes before the log.
        hop_fraction: hop as a fraction of the window, in (0, 0.5]: 0.25 (SoundStream's); 0.5 computes half the
            frames (the Hann windows still sum to a constant, so a small error weighs alike wherever it falls).

    `forward(x [B, C, T], y [B, C, T], spectra=None) -> scalar`, needs `T > max(windows) // 2` (reflect-padded
    STFT); `spectra` a :class:`SpectrumPair` of the same `x`, `y` that other terms share. The mel spectrogram is
    torchaudio's `MelSpectrogram` (HTK mel scale, no filter normalisation, magnitude), computed from the pair.
    """

    def __init__(self, sample_rate: int, windows: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
                 n_mels: Union[None, int, Sequence[int]] = None, log_weight: Optional[float] = None,
                 eps: float = 1e-5, log_distance: str = "l2", hop_fraction: float = 0.25):
        super().__init__()
        _check_hop_fraction(hop_fraction)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if len(windows) == 0:
            raise ValueError("windows must name at least one window size")
        if n_mels is None:
            n_mels = [max(1, 5 * w // 32) for w in windows]
        elif isinstance(n_mels, int):
            n_mels = [n_mels] * len(windows)
        if len(n_mels) != len(windows):
            raise ValueError(f"n_mels must have one entry per window ({len(windows)}), got {len(n_mels)}")
        if log_distance not in ("l1", "l2"):
            raise ValueError(f"log_distance must be 'l1' or 'l2', got {log_distance!r}")
        self.sample_rate = sample_rate
        self.windows = tuple(windows)
        self.eps = eps
        self.log_distance = log_distance
        self.log_weights = [math.sqrt(w / 2) if log_weight is None else float(log_weight) for w in windows]
        self.n_mels, self.hops = tuple(n_mels), tuple(max(1, int(w * hop_fraction)) for w in windows)
        with warnings.catch_warnings():
            # At 44.1/48 kHz a few low mel bands of the short windows hold no FFT bin (1 to 7 of the 320 at
            # w=2048). They are zero for both signals and add nothing to the loss, so the warning is noise.
            warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
            for w, m in zip(windows, n_mels):  # [bins, mels], as torchaudio.transforms.MelScale builds it
                self.register_buffer(f"filters_{w}", torchaudio.functional.melscale_fbanks(
                    w // 2 + 1, 0.0, float(sample_rate // 2), m, sample_rate), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor, spectra: Optional[SpectrumPair] = None) -> torch.Tensor:
        """`x` estimate, `y` reference, both `[B, C, T]` -> scalar loss."""
        _check_same_shape(x, y, "MultiScaleMelLoss")
        if x.shape[-1] <= max(self.windows) // 2:
            raise ValueError(f"MultiScaleMelLoss: length {x.shape[-1]} too short for window {max(self.windows)}; "
                             f"need T > {max(self.windows) // 2}")
        spectra = SpectrumPair.of(x, y, spectra)
        total = x.new_zeros(())
        for w, hop, log_weight in zip(self.windows, self.hops, self.log_weights):
            filters = getattr(self, f"filters_{w}")
            mx, my = ((s.abs().transpose(1, 2) @ filters).transpose(1, 2) for s in spectra(w, hop))
            log_diff = torch.log(mx.clamp(min=self.eps)) - torch.log(my.clamp(min=self.eps))
            log_term = log_diff.pow(2).mean() if self.log_distance == "l2" else log_diff.abs().mean()
            total = total + (mx - my).abs().mean() + log_weight * log_term
        return total


@lru_cache(maxsize=8)
def _metric_mel(sample_rate: int, device: str) -> torchaudio.transforms.MelSpectrogram:
    # Built once per (rate, device): the filterbank is the expensive part.
    return torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, win_length=1024, hop_length=256,
                                                n_mels=80, power=1.0, center=True, pad_mode="reflect").to(device)


@torch.no_grad()
def mel_distance(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> float:
    """Mean L1 distance between log-mel spectrograms (a metric: lower is better, 0 for identical signals).

    One resolution: 1024-sample Hann window, hop 256, 80 mel bands (HTK scale, 0 .. sample_rate / 2),
    magnitude mel, natural log of `max(mel, 1e-5)`. `x`, `y`: same shape `[..., T]`, `T > 512`.
    Returns a Python float averaged over batch, channels, bands and frames.
    """
    _check_same_shape(x, y, "mel_distance")
    if x.shape[-1] <= 512:
        raise ValueError(f"mel_distance: length {x.shape[-1]} too short; need T > 512")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    mel = _metric_mel(int(sample_rate), str(x.device))
    x, y = _fold_channels(x, "x").float(), _fold_channels(y, "y").float()
    lx, ly = torch.log(mel(x).clamp(min=1e-5)), torch.log(mel(y).clamp(min=1e-5))
    return (lx - ly).abs().mean().item()


class MultiResolutionSTFTLoss(nn.Module):
    """Multi-resolution STFT loss (Yamamoto et al. 2019): spectral convergence + log-magnitude L1.

    Per resolution (FFT size, hop, periodic Hann window of `win_length` centred in the FFT frame,
    `center=True` reflect padding, unnormalised STFT, magnitude `sqrt(max(re^2 + im^2, eps))`):

        SC  = ||  |Y| - |X|  ||_F / || |Y| ||_F     (Frobenius norms over the whole batch)
        LOG = mean | log|X| - log|Y| |
        L_r = w_sc * SC + w_log_mag * LOG

    The loss is the mean of `L_r` over resolutions. Defaults match `auraloss.freq.MultiResolutionSTFTLoss()`
    (w_sc = w_log_mag = 1, eps = 1e-8, hann window, no mel scale).

    `forward(x [B, C, T] estimate, y [B, C, T] reference) -> scalar`; `T > max(fft_sizes) // 2`.
    """

    def __init__(self, fft_sizes: Sequence[int] = (1024, 2048, 512), hop_sizes: Sequence[int] = (120, 240, 50),
                 win_lengths: Sequence[int] = (600, 1200, 240), w_sc: float = 1.0, w_log_mag: float = 1.0,
                 eps: float = 1e-8):
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths) > 0:
            raise ValueError("fft_sizes, hop_sizes and win_lengths must be non-empty and of equal length, got "
                             f"{len(fft_sizes)}, {len(hop_sizes)}, {len(win_lengths)}")
        for n, w in zip(fft_sizes, win_lengths):
            if w > n:
                raise ValueError(f"win_lengths: window {w} longer than its FFT size {n}")
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_lengths))
        self.w_sc, self.w_log_mag, self.eps = w_sc, w_log_mag, eps
        for i, w in enumerate(win_lengths):
            self.register_buffer(f"window_{i}", torch.hann_window(w), persistent=False)

    def _magnitude(self, x: torch.Tensor, i: int) -> torch.Tensor:
        n_fft, hop, win = self.resolutions[i]
        spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=getattr(self, f"window_{i}"),
                          center=True, pad_mode="reflect", return_complex=True)
        return torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=self.eps))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_same_shape(x, y, "MultiResolutionSTFTLoss")
        max_fft = max(n for n, _, _ in self.resolutions)
        if x.shape[-1] <= max_fft // 2:
            raise ValueError(f"MultiResolutionSTFTLoss: length {x.shape[-1]} too short; need T > {max_fft // 2}")
        x, y = _fold_channels(x, "x"), _fold_channels(y, "y")
        total = x.new_zeros(())
        for i in range(len(self.resolutions)):
            mx, my = self._magnitude(x, i), self._magnitude(y, i)
            sc = torch.linalg.norm(my - mx) / torch.linalg.norm(my)
            log_mag = (torch.log(mx) - torch.log(my)).abs().mean()
            total = total + self.w_sc * sc + self.w_log_mag * log_mag
        return total / len(self.resolutions)


def waveform_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute sample difference. `x`, `y`: same shape `[B, C, T]` -> scalar."""
    _check_same_shape(x, y, "waveform_l1")
    return (x - y).abs().mean()


def bins_up_to(max_hz: float, n_fft: int, sample_rate: int) -> int:
    """How many real-FFT bins of size `n_fft` lie at or below `max_hz`: bins 0 .. floor(max_hz / bin width)."""
    return int(math.floor(max_hz * n_fft / sample_rate)) + 1


def lowpass(x: torch.Tensor, sample_rate: int, max_hz: float) -> torch.Tensor:
    """Brick-wall low-pass along the last axis: the real FFT of the whole signal with the bins above `max_hz`
    zeroed, `[..., T] -> [..., T]` (non-causal; for losses, not for the codec's signal path)."""
    n = x.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(x.float(), dim=-1)[..., :bins_up_to(max_hz, n, sample_rate)], n=n, dim=-1)


def waveform_mse(x: torch.Tensor, y: torch.Tensor, sample_rate: Optional[int] = None,
                 max_hz: Optional[float] = None) -> torch.Tensor:
    """Mean squared sample difference. `x`, `y`: same shape `[B, C, T]` -> scalar.

    Unlike the spectral losses it is not blind to polarity, phase or a time shift, and unlike L1 its gradient
    does not favour silence for a noise-like estimate; it anchors the waveform early in training. With `max_hz`
    (and `sample_rate`) both signals are first low-passed there (:func:`lowpass`): the error above `max_hz`
    is left to the magnitude losses.
    """
    _check_same_shape(x, y, "waveform_mse")
    if max_hz is not None:
        if sample_rate is None:
            raise ValueError("waveform_mse: max_hz needs the sample_rate")
        x, y = lowpass(x, sample_rate, max_hz), lowpass(y, sample_rate, max_hz)
    return (x - y).square().mean()


def _neighbour_products(hx: torch.Tensor, hy: torch.Tensor) -> torch.Tensor:
    """`sum |D(X) - D(Y)|^2` with `D(H) = H_j conj(H_{j-1})` between neighbouring frames plus the same between
    neighbouring bins; `hx`, `hy` `[2 (real, imaginary), B, bins, frames]`.

    Expanded as `|D(X)|^2 + |D(Y)|^2 - 2 Re(D(X) conj D(Y))`, where `|D(H)|^2 = |H_j|^2 |H_{j-1}|^2` and
    `D(X) conj D(Y) = P_j conj(P_{j-1})` with `P = H(X) conj H(Y)`: every part is a sum of products of a tensor with
    its own neighbour, so one stacked tensor and one shifted product per direction do it all (every slice costs
    autograd a zero-filled copy of the whole spectrum in the backward pass; the direct form took four pairs)."""
    (xr, xi), (yr, yi) = hx, hy
    z = torch.stack([xr.square() + xi.square(), yr.square() + yi.square(), xr * yr + xi * yi, xi * yr - xr * yi])
    weights = z.new_tensor([1.0, 1.0, -2.0, -2.0])
    total = z.new_zeros(())
    for dim in (3, 2):  # frames, bins
        m = z.shape[dim] - 1
        total = total + (z.narrow(dim, 1, m) * z.narrow(dim, 0, m)).sum(dim=(1, 2, 3)) @ weights
    return total


class ComplexSTFTLoss(nn.Module):
    """Multi-resolution loss on power-compressed complex spectra (phase-aware).

    Per resolution (FFT size `n`, hop `n * hop_fraction`, periodic Hann window, `normalized=True` STFT; a hop of
    `n / 4` or `n / 3` weighs a squared error alike wherever it falls, `n / 2` up to 2:1 within a hop), with
    `C(X) = |X|^c * X / |X|` (magnitude compressed to the power `c`, phase kept):

        L_n = mean |C(X) - C(Y)|^2 + mag_weight * mean (|X|^c - |Y|^c)^2

    averaged over resolutions (Braun & Tashev 2021 use this for speech enhancement: the compressed complex term
    fixes phase where there is energy, the magnitude term keeps quiet bands from being ignored). With
    `phase_max_hz` (and `sample_rate`) the complex term sums only the bins up to that frequency (still divided by
    the number of all bins), the magnitude term keeps them all: above it only the magnitude is held to the target.
    With `phase_derivative` > 0 the bins above `phase_max_hz` (from `derivative_min_hz` where given, so that the
    bins below the limit can hold both) hold the phase's differences instead of the phase itself: between
    neighbouring frames (instantaneous frequency) and neighbouring bins (group delay), as complex products
    `D_t = H_t conj(H_{t-1})` with `H(X) = |X|^(c/2) X / |X|`, so that `|D|` is `(|X_t| |X_{t-1}|)^(c/2)` and no
    phase is ever unwrapped (APNet, Ai & Ling 2023, holds the same two differences with anti-wrapping losses):
    `L_n += phase_derivative * (sum |D_t(X) - D_t(Y)|^2 + sum |D_f(X) - D_f(Y)|^2)`, divided like the complex term
    by the number of all bins and frames. A sinusoid whose phase advances at its own frequency from frame to frame
    adds up coherently across overlapping windows; one with an arbitrary phase per frame is heard as noise, which
    the magnitude terms do not see directly.

    `forward(x [B, C, T] estimate, y [B, C, T] reference, spectra=None) -> scalar`; `T > max(fft_sizes) // 2`;
    `spectra` a :class:`SpectrumPair` of the same `x`, `y` that other terms share.
    """

    def __init__(self, fft_sizes: Sequence[int] = (256, 512, 1024, 2048), compression: float = 0.3,
                 mag_weight: float = 1.0, eps: float = 1e-8, sample_rate: Optional[int] = None,
                 phase_max_hz: Optional[float] = None, phase_derivative: float = 0.0, hop_fraction: float = 0.25,
                 derivative_min_hz: Optional[float] = None):
        super().__init__()
        _check_hop_fraction(hop_fraction)
        if not fft_sizes:
            raise ValueError("fft_sizes must name at least one FFT size")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        if phase_max_hz is not None and (sample_rate is None or not 0 < phase_max_hz <= sample_rate / 2):
            raise ValueError(f"phase_max_hz must be in (0, sample_rate / 2] with a sample_rate, got {phase_max_hz} "
                             f"at sample_rate={sample_rate}")
        if phase_derivative < 0:
            raise ValueError(f"phase_derivative must be >= 0, got {phase_derivative}")
        if derivative_min_hz is not None and (sample_rate is None or not 0 <= derivative_min_hz <= sample_rate / 2):
            raise ValueError(f"derivative_min_hz must be in [0, sample_rate / 2] with a sample_rate, got "
                             f"{derivative_min_hz} at sample_rate={sample_rate}")
        self.fft_sizes, self.compression, self.mag_weight, self.eps = tuple(fft_sizes), compression, mag_weight, eps
        self.phase_derivative = phase_derivative
        self.hops = {n: max(1, int(n * hop_fraction)) for n in self.fft_sizes}
        # complex-term bins per FFT size: all of them without a limit
        self.phase_bins = {n: n // 2 + 1 if phase_max_hz is None else bins_up_to(phase_max_hz, n, sample_rate)
                           for n in self.fft_sizes}
        # first bin of the derivative term: the first one the complex term leaves, or the first at derivative_min_hz
        self.derivative_from = {n: self.phase_bins[n] if derivative_min_hz is None
                                else math.ceil(derivative_min_hz * n / sample_rate) for n in self.fft_sizes}

    def _planes(self, spec: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised STFT (`torch.stft(normalized=True)`: divided by `sqrt(n)`) as planes `[2 (real,
        imaginary), B, n // 2 + 1, frames]`, and `|X|^2 + eps` `[B, bins, frames]`.

        Planar copies: elementwise work on the interleaved views of `view_as_real` ran 3.5x slower per operation
        than on contiguous planes (a multiply at the cpu batch's 2048-point spectrum)."""
        planes = torch.view_as_real(spec).movedim(-1, 0).contiguous() * n ** -0.5
        return planes, planes.square().sum(0) + self.eps

    def _resolution(self, spectra: SpectrumPair, n: int) -> torch.Tensor:
        """`L_n` of the class docstring for one FFT size."""
        (zx, px), (zy, py) = (self._planes(s, n) for s in spectra(n, self.hops[n]))
        cells = px.numel()  # the complex and derivative terms are sums divided by all bins and frames
        # one power per spectrum (a transcendental, and so is its gradient); the other scales follow from it
        mx, my = px.pow(self.compression / 2), py.pow(self.compression / 2)  # |X|^c
        total = self.mag_weight * (mx - my).square().mean()
        k, d, bins = self.phase_bins[n], self.derivative_from[n], px.shape[1]
        if self.phase_derivative > 0 and d < bins:
            # H = X |X|^(c/2 - 1) = |X|^(c/2) e^(i phase), so that a product of two neighbours has magnitude |X|^c;
            # one split rather than slices: autograd turns each slice into a zero-filled full-size copy
            hx, hy = ((z.split([d, bins - d], dim=2)[1] * (m.split([d, bins - d], dim=1)[1]
                                                          / p.split([d, bins - d], dim=1)[1]).sqrt())
                      for z, m, p in ((zx, mx, px), (zy, my, py)))
            total = total + self.phase_derivative * _neighbour_products(hx, hy) / cells
        # C(X) = X |X|^(c - 1) on the bins up to the limit
        (zx, _), (zy, _) = zx.split([k, bins - k], dim=2), zy.split([k, bins - k], dim=2)
        (px, _), (py, _) = px.split([k, bins - k], dim=1), py.split([k, bins - k], dim=1)
        (mx, _), (my, _) = mx.split([k, bins - k], dim=1), my.split([k, bins - k], dim=1)
        cx, cy = zx * (mx * px.rsqrt()), zy * (my * py.rsqrt())
        total = total + (cx - cy).square().sum() / cells
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor, spectra: Optional[SpectrumPair] = None) -> torch.Tensor:
        _check_same_shape(x, y, "ComplexSTFTLoss")
        if x.shape[-1] <= max(self.fft_sizes) // 2:
            raise ValueError(f"ComplexSTFTLoss: length {x.shape[-1]} too short; need T > {max(self.fft_sizes) // 2}")
        spectra = SpectrumPair.of(x, y, spectra)
        return sum(self._resolution(spectra, n) for n in self.fft_sizes) / len(self.fft_sizes)


def downsampled_signal_loss(stages: Sequence[torch.Tensor], wav: torch.Tensor,
                            weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The "downsampled signal" objective on decoder stage activations.

    For each stage activation `[B, C_i, T_i]` the channel mean `[B, 1, T_i]` should approximate the input
    `wav [B, C, T]` (channels averaged) resampled to `T_i` by area (average) pooling,
    `F.adaptive_avg_pool1d(wav, T_i)`: with `T` a multiple of `T_i` this is the mean over each block of
    `T / T_i` samples. Pass `wav` padded to the decoder's output length so that blocks line up with frames.

    Returns `sum_i weights[i] * MSE_i`; `weights` default to `1 / n_stages` each (a plain mean).
    """
    stages = list(stages)
    if len(stages) == 0:
        raise ValueError("stages must hold at least one activation")
    if weights is None:
        weights = [1.0 / len(stages)] * len(stages)
    if len(weights) != len(stages):
        raise ValueError(f"weights must have one entry per stage ({len(stages)}), got {len(weights)}")
    if wav.dim() != 3:
        raise ValueError(f"wav must be [B, C, T], got shape {tuple(wav.shape)}")
    target_full = wav.mean(dim=1, keepdim=True).detach()
    total = wav.new_zeros(())
    for i, (stage, w) in enumerate(zip(stages, weights)):
        if stage.dim() != 3 or stage.shape[0] != wav.shape[0]:
            raise ValueError(f"stages[{i}] must be [B={wav.shape[0]}, C, T], got shape {tuple(stage.shape)}")
        target = F.adaptive_avg_pool1d(target_full, stage.shape[-1])
        total = total + w * F.mse_loss(stage.mean(dim=1, keepdim=True), target)
    return total
