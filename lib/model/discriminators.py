"""Adversarial discriminators for audio codecs.

Three families, each a set of sub-discriminators that look at the waveform in a different way:

- `MultiScaleSTFTDiscriminator` (EnCodec MS-STFT-D idea): complex STFTs at several window sizes, real and
  imaginary parts as two real channels, a 2-D conv stack over (time, frequency).
- `MultiScaleWaveformDiscriminator` (MelGAN idea): the waveform at several average-pooled sample rates,
  grouped strided 1-D convs.
- `MultiPeriodDiscriminator` (HiFi-GAN idea): the waveform folded into `[T / p, p]` for several periods p,
  2-D convs along the folded time axis only.

Every discriminator maps `wav [B, 1, T] -> (logits, features)`:
- `logits: list[Tensor]`, one raw-logit map per sub-discriminator (no sigmoid: hinge and least-squares losses
  need unbounded scores; a sigmoid turns the hinge loss linear);
- `features: list[list[Tensor]]`, per sub-discriminator the activations after every hidden layer (logits
  excluded), for the feature-matching loss.

All convolutions use weight norm and LeakyReLU(0.2). Every discriminator accepts any `T >= min_length`
(`min_length` attribute, 1 for the STFT and period discriminators); short inputs are padded internally.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from lib.model.registries import DISCRIMINATORS

LRELU_SLOPE = 0.2

DiscriminatorOutput = tuple[list[torch.Tensor], list[list[torch.Tensor]]]


def _pad1d(x: torch.Tensor, left: int, right: int, mode: str = "reflect") -> torch.Tensor:
    """Pad the last dim; reflect padding falls back to zero-extension first when the input is too short.

    `[..., T] -> [..., left + T + right]`. Reflect padding needs `T > max(left, right)`; for shorter inputs we
    append zeros, reflect, and cut the zeros off again, so any `T >= 1` works.
    """
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    length = x.shape[-1]
    max_pad = max(left, right)
    extra = 0
    if length <= max_pad:
        extra = max_pad - length + 1
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra]


def _check_wav(wav: torch.Tensor, min_length: int, name: str) -> None:
    if wav.dim() != 3 or wav.shape[1] != 1:
        raise ValueError(f"{name}: wav must be [B, 1, T], got shape {tuple(wav.shape)}")
    if wav.shape[-1] < min_length:
        raise ValueError(f"{name}: wav length {wav.shape[-1]} is shorter than the minimum {min_length}")


# --------------------------------------------------------------------------------------------------------------
# Multi-scale STFT discriminator
# --------------------------------------------------------------------------------------------------------------


class STFTDiscriminator(nn.Module):
    """One STFT sub-discriminator.

    `wav [B, 1, T] -> logits [B, 1, frames, F']` with `frames = 1 + T // hop` and `F'` the frequency bins
    (`n_fft // 2 + 1`) after three stride-2 convs. The STFT is centred (reflect padding), normalised by
    `1 / sqrt(n_fft)` so that every window size sees the same signal scale, Hann window of length `n_fft`.
    The conv stack is dilated in time (1, 2, 4) to widen the temporal context and strided by 2 in frequency.
    """

    def __init__(self, n_fft: int, hop_length: int, channels: int = 32, max_channels: Optional[int] = None,
                 dilations: Sequence[int] = (1, 2, 4), kernel_size: tuple[int, int] = (3, 9)):
        super().__init__()
        if n_fft < 2 or hop_length < 1:
            raise ValueError(f"n_fft must be >= 2 and hop_length >= 1, got n_fft={n_fft}, hop_length={hop_length}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        max_channels = channels if max_channels is None else max_channels
        kt, kf = kernel_size
        # Widths double per layer up to max_channels (flat by default, as in EnCodec).
        widths = [min(channels * 2 ** i, max_channels) for i in range(len(dilations) + 1)]
        convs = [weight_norm(nn.Conv2d(2, widths[0], kernel_size, padding=(kt // 2, kf // 2)))]
        for i, d in enumerate(dilations):
            convs.append(weight_norm(nn.Conv2d(widths[i], widths[i + 1], kernel_size, stride=(1, 2),
                                               dilation=(d, 1), padding=(d * (kt // 2), kf // 2))))
        convs.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (kt, kt), padding=(kt // 2, kt // 2))))
        self.convs = nn.ModuleList(convs)
        self.conv_post = weight_norm(nn.Conv2d(widths[-1], 1, (kt, kt), padding=(kt // 2, kt // 2)))

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """`[B, 1, T] -> [B, 2, frames, n_fft // 2 + 1]` (real, imag as channels; time before frequency)."""
        x = _pad1d(wav[:, 0], self.n_fft // 2, self.n_fft // 2, mode="reflect")
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.n_fft, window=self.window,
                          center=False, normalized=True, onesided=True, return_complex=True)  # [B, F, frames]
        return torch.view_as_real(spec).permute(0, 3, 2, 1)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.spectrogram(wav)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        return self.conv_post(x), features


class Discriminator(nn.Module):
    """Base of the registered discriminators: sub-discriminators in a `nn.ModuleList` named `discriminators`,
    each `wav [B, 1, T] -> (logits, features of every hidden layer)`; `forward` collects them.

    `from_config(cfg)` (used by `lib.build` for the names in `train.discriminators`) passes `channels` and
    `max_channels` from `train.disc_channels` / `train.disc_max_channels`; override it for other arguments.
    """

    min_length: int = 1
    discriminators: nn.ModuleList

    @classmethod
    def from_config(cls, cfg) -> "Discriminator":
        return cls(channels=cfg.train.disc_channels, max_channels=cfg.train.disc_max_channels)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        """`wav [B, 1, T] -> (logits: list[Tensor], features: list[list[Tensor]])`, one entry per sub-disc."""
        _check_wav(wav, self.min_length, type(self).__name__)
        logits, features = [], []
        for disc in self.discriminators:
            out, feats = disc(wav)
            logits.append(out)
            features.append(feats)
        return logits, features


@DISCRIMINATORS.register("stft")
class MultiScaleSTFTDiscriminator(Discriminator):
    """Complex-STFT discriminators at several window sizes (EnCodec's MS-STFT-D idea).

    Args:
        n_ffts: FFT/window sizes, one sub-discriminator each.
        hop_ratio: hop length as a fraction of the window (0.25 -> 75 % overlap).
        channels: conv width of the first layer.
        max_channels: widths double per layer up to this; None keeps every layer at `channels`.

    `forward(wav [B, 1, T])` -> logits `[B, 1, 1 + T // hop, F']` per window, features per layer.
    """

    def __init__(self, n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128), hop_ratio: float = 0.25,
                 channels: int = 32, max_channels: Optional[int] = None):
        super().__init__()
        if not 0 < hop_ratio <= 1:
            raise ValueError(f"hop_ratio must be in (0, 1], got {hop_ratio}")
        if len(n_ffts) == 0:
            raise ValueError("n_ffts must name at least one window size")
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n, max(1, int(n * hop_ratio)), channels, max_channels) for n in n_ffts)

    @classmethod
    def from_config(cls, cfg) -> "MultiScaleSTFTDiscriminator":
        """`train.stft_n_ffts` windows at `train.disc_channels` (flat widths, as in EnCodec)."""
        return cls(n_ffts=tuple(cfg.train.stft_n_ffts), channels=cfg.train.disc_channels)


# --------------------------------------------------------------------------------------------------------------
# Multi-scale waveform discriminator (MelGAN)
# --------------------------------------------------------------------------------------------------------------


class WaveformDiscriminator(nn.Module):
    """One MelGAN-style waveform sub-discriminator.

    `wav [B, 1, T] -> logits [B, 1, ceil(T / 4 ** n_strided)]`. Grouped strided convs (each group sees 4
    input channels) keep the parameter count down while the receptive field grows by 4x per layer.
    """

    def __init__(self, channels: int = 16, max_channels: int = 1024, n_strided: int = 4, stride: int = 4,
                 kernel_size: int = 41):
        super().__init__()
        self.first_pad = 7  # reflect padding for the first k=15 conv, as in MelGAN
        convs = [weight_norm(nn.Conv1d(1, channels, 2 * self.first_pad + 1))]
        in_ch = channels
        for _ in range(n_strided):
            out_ch = min(in_ch * stride, max_channels)
            groups = math.gcd(math.gcd(in_ch, out_ch), max(1, in_ch // 4))
            convs.append(weight_norm(nn.Conv1d(in_ch, out_ch, kernel_size, stride=stride,
                                               padding=kernel_size // 2, groups=groups)))
            in_ch = out_ch
        convs.append(weight_norm(nn.Conv1d(in_ch, in_ch, 5, padding=2)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = weight_norm(nn.Conv1d(in_ch, 1, 3, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = _pad1d(wav, self.first_pad, self.first_pad, mode="reflect")
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        return self.conv_post(x), features


@DISCRIMINATORS.register("waveform")
class MultiScaleWaveformDiscriminator(Discriminator):
    """MelGAN multi-scale discriminator: sub-discriminator k sees the waveform average-pooled k times by 2.

    Args:
        n_scales: number of sub-discriminators (scales 1, 1/2, 1/4, ...).
        channels: width of the first conv; widths grow 4x per strided layer up to `max_channels`.

    `forward(wav [B, 1, T])` with `T >= 2 ** n_scales` -> logits `[B, 1, ceil(T_k / 256)]` for the default four
    stride-4 layers, where `T_k = T // 2 ** k` is the pooled length of scale k.
    """

    def __init__(self, n_scales: int = 3, channels: int = 16, max_channels: int = 1024):
        super().__init__()
        if n_scales < 1:
            raise ValueError(f"n_scales must be >= 1, got {n_scales}")
        self.discriminators = nn.ModuleList(WaveformDiscriminator(channels, max_channels) for _ in range(n_scales))
        # Each pooling (k=4, s=2, p=1) maps T -> T // 2, so the coarsest scale needs T // 2 ** (n - 1) >= 2.
        self.min_length = 2 ** n_scales
        self.pool = nn.AvgPool1d(4, stride=2, padding=1, count_include_pad=False)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        _check_wav(wav, self.min_length, type(self).__name__)
        logits, features = [], []
        for i, disc in enumerate(self.discriminators):
            if i > 0:
                wav = self.pool(wav)
            out, feats = disc(wav)
            logits.append(out)
            features.append(feats)
        return logits, features


# --------------------------------------------------------------------------------------------------------------
# Multi-period discriminator (HiFi-GAN)
# --------------------------------------------------------------------------------------------------------------


class PeriodDiscriminator(nn.Module):
    """One HiFi-GAN period sub-discriminator.

    `wav [B, 1, T]` is reflect-padded on the right to a multiple of `period` and folded to
    `[B, 1, T' / period, period]`; kernels `(k, 1)` only mix samples that are `period` apart, so each column
    sees one phase of the periodic structure. Output logits `[B, 1, H', period]`.
    """

    def __init__(self, period: int, channels: int = 32, max_channels: int = 1024, n_strided: int = 4,
                 kernel_size: int = 5, stride: int = 3):
        super().__init__()
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        pad = (kernel_size // 2, 0)
        widths = [min(channels * 4 ** i, max_channels) for i in range(n_strided)]
        convs, in_ch = [], 1
        for w in widths:
            convs.append(weight_norm(nn.Conv2d(in_ch, w, (kernel_size, 1), stride=(stride, 1), padding=pad)))
            in_ch = w
        convs.append(weight_norm(nn.Conv2d(in_ch, in_ch, (kernel_size, 1), padding=pad)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = weight_norm(nn.Conv2d(in_ch, 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = wav.shape
        n_pad = (-t) % self.period
        if n_pad:
            wav = _pad1d(wav, 0, n_pad, mode="reflect")
        x = wav.view(b, c, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        return self.conv_post(x), features


@DISCRIMINATORS.register("period")
class MultiPeriodDiscriminator(Discriminator):
    """HiFi-GAN multi-period discriminator, one sub-discriminator per period.

    Args:
        periods: fold periods (primes avoid overlapping sub-discriminators).
        channels: width of the first conv; widths grow 4x per strided layer up to `max_channels`.

    `forward(wav [B, 1, T])`, any `T >= 1` -> logits `[B, 1, H_p, p]` per period p.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: int = 32, max_channels: int = 1024):
        super().__init__()
        if len(periods) == 0:
            raise ValueError("periods must name at least one period")
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels, max_channels) for p in periods)
