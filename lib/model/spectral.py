"""Frame-rate spectral encoder and decoder: a causal STFT front, ConvNeXt blocks at the latent frame rate, and an
inverse-STFT head with a causal overlap-add (in the spirit of Vocos, made causal and streamable).

Everything after the STFT runs at the codec's frame rate (75 Hz at 24 kHz / hop 320) instead of at the sample
rate, which is what makes these models several times cheaper per second of audio than a SEANet of similar width.

Framing (``n_fft`` = window length = ``hop * 2^k``, k >= 1; ``hop`` = codec hop):

* :class:`STFTEncoder` is a fixed causal STFT (a strided causal convolution whose kernels are the windowed DFT
  basis): it returns ``ceil(T / hop)`` frames, frame ``j`` computed from samples ``j * hop - n_fft + 1 ... j * hop``.
  Inside :class:`lib.model.codec.Codec` (frame look-ahead on) latent frame ``f`` therefore sees exactly the window
  that ends with frame ``f``'s own hop: samples ``(f + 1) * hop - n_fft ... (f + 1) * hop - 1``.
* :class:`ISTFTDecoder` predicts that same window's spectrum (``head="complex"``: real and imaginary parts;
  ``head="polar"``: log magnitude and phase, as Vocos; ``head="compressed"``: real and imaginary parts of the
  power-compressed spectrum ``|X|^0.3 e^{i phase}``, the form the encoder reads), inverts it, applies
  the synthesis window and overlap-adds: frame ``f`` writes samples ``(f + 1) * hop - n_fft ... (f + 1) * hop - 1``.
  Analysis and synthesis windows are square-root periodic Hann windows (the synthesis one scaled by
  ``2 * hop / n_fft``), whose product overlap-adds to one: an encoder-decoder pair that passes the spectrum
  through reconstructs the input exactly (tested), so training starts from a structure that can already
  represent the signal.

Latency: output sample ``n`` is final once frame ``(n + n_fft - hop) // hop`` is decoded, i.e. the decoder adds
``n_fft - hop`` samples to the codec's one frame: with the default ``n_fft = 2 * hop`` the algorithmic latency is
``2 * hop`` samples (26.7 ms at 24 kHz / hop 320). Offline, the last ``n_fft - hop`` samples of a signal hold only
part of their overlap-add (they fade out); streaming returns them with :meth:`ISTFTDecoder.flush`.
A decoder that looks ``lookahead`` frames ahead (frame ``f``'s spectrum from latents ``f ... f + lookahead``) adds
``lookahead * hop`` samples to that: the default looks one frame ahead, 40 ms in all.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lib.model.conv import CausalConv1d, reset_streams
from lib.model.registries import DECODERS, ENCODERS

__all__ = ["ConvNeXtBlock", "STFTEncoder", "ISTFTDecoder", "sqrt_hann"]


def sqrt_hann(n_fft: int) -> torch.Tensor:
    """Square root of the periodic Hann window ``[n_fft]`` (analysis x synthesis = Hann)."""
    return torch.hann_window(n_fft, periodic=True).sqrt()


def _check_framing(hop: int, n_fft: int) -> None:
    if hop < 1 or n_fft < 2 * hop or n_fft % hop or (n_fft // hop) & (n_fft // hop - 1):
        raise ValueError(f"n_fft must be hop * 2^k (k >= 1) for the windows to overlap-add to one, got hop={hop}, "
                         f"n_fft={n_fft}")


class ConvNeXtBlock(nn.Module):
    """Causal ConvNeXt block at the frame rate: ``x + gamma * W2 gelu(W1 LN(dwconv(x)))``, ``[B, D, F] -> same``.

    The depthwise convolution is causal (frame ``f`` sees frames ``f - k + 1 ... f``); everything else acts on one
    frame at a time, so the block streams exactly. ``gamma`` (layer scale) starts small so that a deep stack starts
    near the identity.
    """

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 3.0, layer_scale: float = 0.1):
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, kernel_size, groups=dim, weight_norm=False)
        self.norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.pw1, self.pw2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def _pointwise(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = self.pw2(F.gelu(self.pw1(self.norm(h.transpose(1, 2)))))
        return x + (self.gamma * h).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pointwise(x, self.dwconv(x))

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        return self._pointwise(x, self.dwconv.stream(x))


class _Trunk(nn.Module):
    """``in_ch -> dim`` projection, ``n_blocks`` ConvNeXt blocks, final LayerNorm, ``dim -> out_ch`` projection."""

    def __init__(self, in_ch: int, dim: int, out_ch: int, n_blocks: int, kernel_size: int, mlp_ratio: float,
                 in_kernel: int = 1):
        super().__init__()
        self.inp = nn.Conv1d(in_ch, dim, in_kernel)  # unpadded: in_kernel - 1 frames fewer out than in
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, kernel_size, mlp_ratio) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Conv1d(dim, out_ch, 1)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(h.transpose(1, 2)).transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self._head(h)

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block.stream(h)
        return self._head(h)


def _spectral_kwargs(cfg) -> dict:
    m, sp = cfg.model, cfg.model.spectral
    return dict(channels=m.channels, dim=m.dim, hop_length=math.prod(m.ratios), n_fft=sp.n_fft, hidden=sp.hidden,
                kernel_size=sp.kernel_size, mlp_ratio=sp.mlp_ratio)


HEADS = ("complex", "polar", "compressed")
MAX_LOG_MAGNITUDE = math.log(100.0)  # polar head caps exp(): a full-scale sine peaks near 8 in these units
HEAD_COMPRESSION = 0.3  # "compressed" head: the trunk predicts |X|^0.3 e^{i phase}, the encoder's own features
MAX_COMPRESSED = 100.0 ** HEAD_COMPRESSION  # the same cap as the polar head's: magnitudes up to 100


@ENCODERS.register("stft")
class STFTEncoder(nn.Module):
    """Causal STFT front + ConvNeXt blocks: audio ``[B, C, T] -> latents [B, dim, ceil(T / hop)]``.

    Features per frame: the power-compressed complex spectrum ``|X|^0.3 e^{i phase}`` (real and imaginary parts),
    which keeps phase and tames the dynamic range, for each channel. Args mirror the SEANet encoder's where they
    mean the same (``channels``, ``dim``, ``hop_length``); ``hidden`` is the ConvNeXt width.
    """

    def __init__(self, channels: int = 1, dim: int = 64, hop_length: int = 320, n_fft: int | None = None,
                 hidden: int = 256, n_blocks: int = 4, kernel_size: int = 7, mlp_ratio: float = 3.0,
                 compression: float = 0.3):
        super().__init__()
        n_fft = 2 * hop_length if n_fft is None else n_fft
        _check_framing(hop_length, n_fft)
        self.channels, self.dim, self.hop_length, self.n_fft = channels, dim, hop_length, n_fft
        self.compression = compression
        n_bins = n_fft // 2 + 1
        self.stft = CausalConv1d(1, 2 * n_bins, n_fft, stride=hop_length, bias=False, weight_norm=False)
        del self.stft.conv.weight  # a fixed transform, not a learned filterbank: the kernels are a buffer
        self.stft.conv.register_buffer("weight", _dft_kernels(n_fft), persistent=False)
        self.trunk = _Trunk(2 * n_bins * channels, hidden, dim, n_blocks, kernel_size, mlp_ratio)

    @classmethod
    def from_config(cls, cfg) -> "STFTEncoder":
        """``model.encoder: stft``, sized by ``model.spectral``."""
        return cls(**_spectral_kwargs(cfg), n_blocks=cfg.model.spectral.encoder_blocks)

    def _features(self, spec: torch.Tensor, batch: int) -> torch.Tensor:
        """``[B * C, 2 * bins, F]`` raw STFT -> ``[B, C * 2 * bins, F]`` compressed complex features."""
        bins = spec.shape[1] // 2
        re, im = spec[:, :bins], spec[:, bins:]
        mag = (re.square() + im.square() + 1e-10).sqrt()
        scale = mag.pow(self.compression - 1.0)
        feats = torch.cat([re * scale, im * scale], dim=1)
        return feats.reshape(batch, -1, feats.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        spec = self.stft(x.reshape(b * self.channels, 1, x.shape[-1]))
        return self.trunk(self._features(spec, b))

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        spec = self.stft.stream(x.reshape(b * self.channels, 1, x.shape[-1]))
        if spec.shape[-1] == 0:
            return x.new_zeros(b, self.dim, 0)
        return self.trunk.stream(self._features(spec, b))

    def reset_stream(self) -> None:
        reset_streams(self)


def _dft_kernels(n_fft: int) -> torch.Tensor:
    """Windowed real-DFT basis as conv kernels ``[2 * bins, 1, n_fft]`` (cosines, then minus sines), scaled by
    ``1 / sqrt(n_fft)`` so that spectra have the signal's order of magnitude."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft
    window = sqrt_hann(n_fft).double()
    basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window / math.sqrt(n_fft)
    return basis.float().unsqueeze(1)


@DECODERS.register("istft")
class ISTFTDecoder(nn.Module):
    """ConvNeXt blocks at the frame rate + a spectrum head (``head``: "complex" = real/imaginary parts, "polar" = log
    magnitude and phase, "compressed" = real/imaginary parts of ``|X|^0.3 e^{i phase}``) + inverse STFT with a
    causal overlap-add:
    latents ``[B, dim, F] -> audio [B, C, F * hop]``.

    Frame ``f``'s windowed inverse spectrum lands on samples ``(f + 1) * hop - n_fft ... (f + 1) * hop - 1`` (the
    window the :class:`STFTEncoder` analysed for frame ``f``); samples before 0 are dropped. ``stream`` returns the
    samples no later frame can change (it lags ``n_fft - hop`` samples behind the frames given); ``flush`` returns
    the rest, so that ``cat(stream(...), ..., flush())`` equals ``forward`` on the whole sequence.

    ``lookahead``: frames of latents after frame ``f`` that its spectrum may see (its first layer a convolution over
    latents ``f ... f + lookahead``, zeros past the end): the segments' phases can be placed knowing what the next
    frame's segment, which overlaps them, will hold; ``lookahead * hop`` samples more latency, and a stream holds
    back that many frames until later ones arrive.

    ``subframes``: ``s`` spectra per latent frame, synthesised with windows of ``n_fft / s`` samples at a hop of
    ``hop / s`` (sub-frame ``j`` of frame ``f`` ends at sample ``f * hop + (j + 1) * hop / s``), so levels can change
    within a frame; the head keeps about its size (``s`` spectra of ``n_fft / (2 s) + 1`` bins), and the overlap-add
    reaches back ``(n_fft - hop) / s`` samples instead of ``n_fft - hop``.

    ``envelope_band_hz``: band edges (Hz, ``sample_rate`` needed) that split each frame's spectrum into bands; the head
    also predicts ``envelope_steps`` log gains per band and frame, linearly interpolated across the frame's window
    and applied to that band's inverse spectrum before the synthesis window, so a band's level can rise and fall
    within a frame while its spectrum keeps the full window's resolution. The gains start at one (zero weights):
    an untrained envelope is the plain decoder. Off (``[]``) by default; only with ``subframes = 1``.
    """

    def __init__(self, channels: int = 1, dim: int = 64, hop_length: int = 320, n_fft: int | None = None,
                 hidden: int = 256, n_blocks: int = 6, kernel_size: int = 7, mlp_ratio: float = 3.0,
                 head: str = "complex", lookahead: int = 0, subframes: int = 1,
                 envelope_band_hz: list[float] | tuple = (), envelope_steps: int = 4, sample_rate: int | None = None):
        super().__init__()
        n_fft = 2 * hop_length if n_fft is None else n_fft
        _check_framing(hop_length, n_fft)
        if not isinstance(subframes, int) or subframes < 1 or hop_length % subframes or n_fft % subframes:
            raise ValueError(f"subframes={subframes!r}: expected a whole number >= 1 that divides hop_length="
                             f"{hop_length} and n_fft={n_fft}")
        if head not in HEADS:
            raise ValueError(f"head={head!r}: expected one of {HEADS}")
        if not isinstance(lookahead, int) or lookahead < 0:
            raise ValueError(f"lookahead={lookahead!r}: expected a whole number of frames >= 0")
        self.channels, self.dim, self.hop_length, self.n_fft, self.head = channels, dim, hop_length, n_fft, head
        self.lookahead, self.subframes = lookahead, subframes
        # the synthesis framing: s spectra per latent frame, windows n_fft / s long at a hop of hop / s
        self.synth_hop, self.synth_n_fft = hop_length // subframes, n_fft // subframes
        self.n_bins = self.synth_n_fft // 2 + 1
        self._init_envelope(list(envelope_band_hz), envelope_steps, sample_rate)
        self.n_spectral = subframes * 2 * self.n_bins * channels  # head outputs before the envelope's log gains
        self.trunk = _Trunk(dim, hidden, self.n_spectral + self.n_envelope, n_blocks, kernel_size, mlp_ratio,
                            in_kernel=lookahead + 1)
        with torch.no_grad():  # start quiet: a default-initialised head outputs noise ~20 dB above speech level
            self.trunk.out.weight.mul_(0.1)
            self.trunk.out.weight[self.n_spectral:].zero_()  # the envelope starts as gains of one
            self.trunk.out.bias[self.n_spectral:].zero_()
            if head == "polar":  # log magnitudes start at e^-6 ~ -52 dB, below quiet speech
                self.trunk.out.bias.view(channels, subframes, 2, self.n_bins)[:, :, 0].fill_(-6.0)
        # Hann windows at hop n_fft / 2^k overlap-add to 2^(k-1): scale the synthesis window back to a sum of one.
        self.register_buffer("window", sqrt_hann(self.synth_n_fft) * (2 * self.synth_hop / self.synth_n_fft),
                             persistent=False)
        self._tail: torch.Tensor | None = None  # streaming: overlap-add samples not final yet
        self._held: torch.Tensor | None = None  # streaming: the last `lookahead` latent frames, not decoded yet
        self._to_drop = self.overlap

    def _init_envelope(self, band_hz: list[float], steps: int, sample_rate: int | None) -> None:
        """Band masks ``[bands, bins]`` and the interpolation from ``steps`` gains to a window ``[steps, n_fft]``."""
        self.envelope_band_hz, self.envelope_steps = band_hz, steps
        self.n_envelope = 0
        if not band_hz:
            return
        if self.subframes != 1:
            raise ValueError(f"envelope_band_hz needs subframes=1, got subframes={self.subframes}")
        if sample_rate is None or any(not 0 < e < sample_rate / 2 for e in band_hz) or band_hz != sorted(band_hz):
            raise ValueError(f"envelope_band_hz={band_hz!r}: expected rising edges between 0 and the Nyquist "
                             f"frequency (sample_rate={sample_rate!r})")
        if not isinstance(steps, int) or steps < 2:
            raise ValueError(f"envelope_steps={steps!r}: expected a whole number >= 2")
        hz = torch.arange(self.n_bins) * sample_rate / self.synth_n_fft
        band = torch.bucketize(hz, torch.tensor(band_hz, dtype=hz.dtype), right=True)  # bin -> band index
        self.register_buffer("band_masks", F.one_hot(band, len(band_hz) + 1).T.float(), persistent=False)
        # hat functions centred at (k + 0.5) * n / steps, flat beyond the first and last centres: they sum to one
        centres = (torch.arange(steps) + 0.5) * self.synth_n_fft / steps
        pos = torch.arange(self.synth_n_fft) + 0.5
        hats = (1 - (pos[None] - centres[:, None]).abs() / (self.synth_n_fft / steps)).clamp(min=0)
        hats[0, pos < centres[0]], hats[-1, pos > centres[-1]] = 1.0, 1.0
        self.register_buffer("envelope_basis", hats, persistent=False)
        self.n_envelope = self.channels * (len(band_hz) + 1) * steps

    @classmethod
    def from_config(cls, cfg) -> "ISTFTDecoder":
        """``model.decoder: istft``, sized by ``model.spectral``."""
        sp = cfg.model.spectral
        return cls(**_spectral_kwargs(cfg), n_blocks=sp.decoder_blocks, head=sp.head, lookahead=sp.decoder_lookahead,
                   subframes=sp.decoder_subframes, envelope_band_hz=sp.envelope_band_hz,
                   envelope_steps=sp.envelope_steps, sample_rate=cfg.data.sample_rate)

    @property
    def overlap(self) -> int:
        """Samples of a segment that the next segments overlap-add onto (``(n_fft - hop) / subframes``)."""
        return self.synth_n_fft - self.synth_hop

    @property
    def latency(self) -> int:
        """Samples the decoder waits beyond the current frame before a sample is final
        (``(n_fft - hop) / subframes + lookahead * hop``)."""
        return self.overlap + self.lookahead * self.hop_length

    def _segments(self, h: torch.Tensor) -> torch.Tensor:
        """Trunk output ``[B, C * s * 2 * bins, F]`` -> windowed time segments ``[B * C, F * s, n_fft / s]``
        (``s = subframes``; each frame's sub-frames in turn)."""
        b, _, frames = h.shape
        h, env = h[:, : self.n_spectral], h[:, self.n_spectral:]
        h = h.reshape(b * self.channels, self.subframes, 2, self.n_bins, frames).permute(0, 4, 1, 3, 2)
        h = h.reshape(b * self.channels, frames * self.subframes, self.n_bins, 2).float()
        if self.head == "polar":
            spec = torch.polar(h[..., 0].clamp(max=MAX_LOG_MAGNITUDE).exp(), h[..., 1])  # [B * C, F * s, bins]
        elif self.head == "compressed":  # Z = |X|^c e^{i phase}: magnitude |Z|^(1/c), phase that of Z
            mag_c = (h[..., 0].square() + h[..., 1].square() + 1e-12).sqrt()
            unit = torch.complex(h[..., 0], h[..., 1]) / mag_c
            spec = unit * mag_c.clamp(max=MAX_COMPRESSED).pow(1.0 / HEAD_COMPRESSION)
        else:
            spec = torch.complex(h[..., 0], h[..., 1])
        if self.n_envelope:
            return self._banded_segments(spec, env) * self.window
        # Inverse of _dft_kernels' scaling: irfft's 1 / n_fft times sqrt(n_fft) -> the same scale as the input.
        seg = torch.fft.irfft(spec, n=self.synth_n_fft, dim=-1) * math.sqrt(self.synth_n_fft)
        return seg * self.window

    def _banded_segments(self, spec: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """Spectra ``[N, F, bins]`` and log gains ``[B, C * bands * steps, F]`` -> segments ``[N, F, n_fft]``: each
        band's inverse spectrum times its gain curve across the window, summed over the bands."""
        n, frames, _ = spec.shape
        bands = self.band_masks.shape[0]
        log_gain = env.float().reshape(n, bands, self.envelope_steps, frames).clamp(-MAX_LOG_MAGNITUDE,
                                                                                   MAX_LOG_MAGNITUDE)
        gain = torch.einsum("nbkf,kt->nfbt", log_gain, self.envelope_basis).exp()  # [N, F, bands, n_fft]
        per_band = torch.fft.irfft(spec[:, :, None] * self.band_masks, n=self.synth_n_fft, dim=-1)
        return (per_band * gain).sum(dim=2) * math.sqrt(self.synth_n_fft)

    def _overlap_add(self, seg: torch.Tensor) -> torch.Tensor:
        """``[N, G, n] -> [N, (G - 1) * h + n]`` for synthesis windows of ``n`` samples at hop ``h``, segment ``g``
        starting at ``g * h``."""
        n, segments, _ = seg.shape
        return F.fold(seg.transpose(1, 2), output_size=(1, (segments - 1) * self.synth_hop + self.synth_n_fft),
                      kernel_size=(1, self.synth_n_fft), stride=(1, self.synth_hop)).reshape(n, -1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, _, frames = z.shape
        if frames == 0:
            return z.new_zeros(b, self.channels, 0)
        h = self.trunk(F.pad(z, (0, self.lookahead)))
        y = self._overlap_add(self._segments(h))[:, self.overlap:]
        return y.reshape(b, self.channels, -1).to(z.dtype)

    def stream(self, z: torch.Tensor) -> torch.Tensor:
        """Next frames ``[B, dim, F]`` -> the samples now final ``[B, C, n]``."""
        if self.lookahead:  # decode all but the last `lookahead` frames; they wait for the frames after them
            z = z if self._held is None else torch.cat([self._held, z], dim=-1)
            self._held = z[..., max(0, z.shape[-1] - self.lookahead):]
        b, frames = z.shape[0], z.shape[-1] - self.lookahead
        if frames <= 0:
            return z.new_zeros(b, self.channels, 0)
        # Overlap-add positions count from the start of the first segment; the chunk's first segment starts where
        # the previous chunk's final samples ended, and the tail holds the n_fft - hop samples after that.
        ola = self._overlap_add(self._segments(self.trunk.stream(z)))
        if self._tail is not None:
            ola[:, : self._tail.shape[-1]] += self._tail
        final, self._tail = ola[:, : frames * self.hop_length], ola[:, frames * self.hop_length:]
        return self._emit(final, b).to(z.dtype)

    def _emit(self, samples: torch.Tensor, batch: int) -> torch.Tensor:
        """Drop what falls before output sample 0 (the first ``n_fft - hop`` overlap-add positions)."""
        drop = min(self._to_drop, samples.shape[-1])
        self._to_drop -= drop
        samples = samples[:, drop:]
        return samples.reshape(batch, self.channels, samples.shape[-1])

    def flush(self) -> torch.Tensor:
        """The frames held back for the look-ahead (zeros after them, as offline), then the last ``n_fft - hop``
        samples of the stream (partial overlap-add, as offline), then a reset."""
        held = []
        if self._held is not None and self._held.shape[-1]:
            rest = self._held
            held.append(self.stream(rest.new_zeros(*rest.shape[:2], self.lookahead)))
        tail = self._tail
        out = torch.zeros(1, self.channels, 0) if tail is None else self._emit(tail, tail.shape[0] // self.channels)
        self.reset_stream()
        return torch.cat([*held, out], dim=-1) if held else out

    def reset_stream(self) -> None:
        self._tail, self._held, self._to_drop = None, None, self.overlap
        for block in self.trunk.blocks:
            block.dwconv.reset_stream()
