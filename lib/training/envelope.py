"""A differentiable proxy of STOI for training: the correlation of band envelopes over short segments.

STOI (Taal et al., 2011) scores intelligibility by how well the reference's and the estimate's envelopes in
one-third-octave bands (150 Hz - 4.3 kHz) correlate over 384 ms segments. The codec's error is mostly there: its
fine structure under the input's band levels scores STOI 0.97 (`bench/quality.py`'s swaps), its own 0.85.
Audio `[B, C, T]`, channels folded into the batch.
"""
from __future__ import annotations

import torch
from torch import nn

from lib.training.losses import _check_same_shape, _fold_channels


def third_octave_bands(sample_rate: int, n_fft: int, low_hz: float = 150.0, n_bands: int = 15) -> torch.Tensor:
    """`[n_bands, n_fft // 2 + 1]` 0/1 matrix of STOI's one-third-octave bands (15 from 150 Hz reach 4.3 kHz): band k,
    centred on c_k = low_hz 2^(k / 3), holds the bins from the one nearest c_k 2^(-1/6) up to, not including, the one
    nearest c_k 2^(1/6)."""
    bin_hz = sample_rate / n_fft
    centres = low_hz * 2.0 ** (torch.arange(n_bands, dtype=torch.float64) / 3.0)
    lo, hi = torch.round(centres * 2.0 ** (-1 / 6) / bin_hz), torch.round(centres * 2.0 ** (1 / 6) / bin_hz)
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    return ((bins[None, :] >= lo[:, None]) & (bins[None, :] < hi[:, None])).float()


class EnvelopeCorrelationLoss(nn.Module):
    """1 - the correlation between the band envelopes of x and y over short segments: a differentiable proxy of
    STOI (Taal et al., 2011), which scores intelligibility by that correlation in one-third-octave bands, segments
    of 384 ms. Unlike STOI: no resampling to 10 kHz, no clipping of x's envelope, and segments more than 40 dB below
    y's loudest faded out instead of silent frames dropped. Scale-invariant per segment and band.

    x (the estimate), y (the reference): `[B, C, T]` -> scalar in [0, 2].
    """

    def __init__(self, sample_rate: int, n_fft: int = 512, segment_seconds: float = 0.384, eps: float = 1e-8):
        super().__init__()
        self.n_fft, self.hop, self.eps = n_fft, n_fft // 2, eps
        self.segment = max(2, round(segment_seconds * sample_rate / self.hop))
        self.register_buffer("bands", third_octave_bands(sample_rate, n_fft), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def envelopes(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, T]` -> band envelopes (root of the band's power) `[N, bands, frames]`."""
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True).abs().pow(2)
        return (self.bands @ spec + 1e-12).sqrt()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_same_shape(x, y, "EnvelopeCorrelationLoss")
        if x.shape[-1] <= self.n_fft // 2:
            raise ValueError(f"EnvelopeCorrelationLoss: length {x.shape[-1]} too short; need T > {self.n_fft // 2}")
        ex = self.envelopes(_fold_channels(x, "x").float())
        ey = self.envelopes(_fold_channels(y, "y").float())
        length = min(self.segment, ex.shape[-1])  # a crop shorter than a segment is one segment
        sx, sy = ex.unfold(-1, length, max(1, length // 2)), ey.unfold(-1, length, max(1, length // 2))
        dx, dy = sx - sx.mean(-1, keepdim=True), sy - sy.mean(-1, keepdim=True)
        corr = (dx * dy).sum(-1) / (dx.norm(dim=-1) * dy.norm(dim=-1) + self.eps)  # [N, bands, segments]
        # as STOI, every band counts alike and silence not at all: a segment's weight is 1 within 40 dB of the
        # item's loudest segment, falling with its energy below that
        energy = sy.pow(2).sum(dim=(1, -1))  # [N, segments]
        weight = (energy / energy.amax(-1, keepdim=True).clamp_min(self.eps) * 1e4).clamp(max=1.0)[:, None, :]
        return 1.0 - (corr * weight).sum() / (weight.sum() * corr.shape[1]).clamp_min(self.eps)
