"""The codec: an encoder to latent frames, a quantizer on them, and a decoder back to audio; here also the SEANet
encoder and decoder (strided convolutions at the sample rate). The default encoder and decoder work at the frame
rate instead (:mod:`lib.model.spectral`).

Shapes: audio ``[B, C, T]`` (C = 1 for mono), latents ``[B, D, F]`` with ``F = ceil(T / hop)`` and
``hop = prod(ratios)``, codes ``[B, n_q, F]`` (int64).

Every layer is causal per sample (see :mod:`lib.model.conv`), so by default the whole codec is too: a change of the input
at sample ``t`` changes no reconstructed sample before ``t``. The price is that latent frame ``f`` has seen the input
only up to sample ``f * hop``, so the decoder has to *extrapolate* the ``hop - 1`` samples that follow.
``Codec(..., frame_lookahead=True)`` instead lets frame ``f`` see its own ``hop`` samples (the usual SoundStream /
EnCodec framing, an algorithmic latency of one frame): then the reconstruction before ``t`` is unchanged only up to
the start of the frame holding ``t``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lib.model.activations import make_activation
from lib.model.conv import CausalConv1d, CausalConvTranspose1d, StreamingSequential, reset_streams
from lib.model.guards import check_codes, check_length, check_wav, model_dtype
from lib.model.longform import chunked_decode, chunked_encode
from lib.model.registries import ACTIVATIONS, BLOCKS, DECODERS, ENCODERS, UPSAMPLERS

__all__ = ["ResidualUnit", "seanet_kwargs", "SEANetEncoder", "SEANetDecoder", "CodecOutput", "Codec"]


# --------------------------------------------------------------------------------------------------- blocks

class ResidualUnit(nn.Module):
    """SEANet residual unit ``x + conv1x1(act(conv_k,d(act(x))))``, ``[B, C, T] -> [B, C, T]``.

    The dilated conv narrows to ``channels // compress`` channels and the 1x1 conv widens back.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1, activation: str = "elu",
                 compress: int = 2):
        super().__init__()
        hidden = max(channels // compress, 1)
        self.block = StreamingSequential(
            make_activation(activation, channels),
            CausalConv1d(channels, hidden, kernel_size, dilation=dilation),
            make_activation(activation, hidden),
            CausalConv1d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, C, T]``."""
        return x + self.block(x)

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Streaming ``forward``: the block has stride 1, so it returns as many samples as it gets."""
        return x + self.block.stream(x)

    def reset_stream(self) -> None:
        reset_streams(self)


@BLOCKS.register("conv")
def dilated_residual_units(channels: int, dilations: Sequence[int], kernel_size: int, activation: str,
                           compress: int) -> list[nn.Module]:
    """``model.block: conv``: one SEANet :class:`ResidualUnit` per dilation, at ``channels`` channels."""
    return [ResidualUnit(channels, kernel_size, d, activation, compress) for d in dilations]


def _residual_blocks(channels: int, dilations: Sequence[int], kernel_size: int, activation: str, block: str,
                     compress: int) -> list[nn.Module]:
    """The residual part of one SEANet stage at ``channels`` channels (the ``block`` kind from :data:`BLOCKS`)."""
    return BLOCKS.get(block)(channels, dilations, kernel_size, activation, compress)


@UPSAMPLERS.register("transposed")
def transposed_upsampler(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """``model.upsampler: transposed``: ``[B, in_ch, T] -> [B, out_ch, T * stride]``, a causal transposed conv
    with kernel ``2 * stride``."""
    return CausalConvTranspose1d(in_ch, out_ch, kernel_size=2 * stride, stride=stride)


def _check_seanet_args(channels: int, dim: int, n_filters: int, ratios: Sequence[int], dilations: Sequence[int],
                       kernel_size: int, residual_kernel_size: int, last_kernel_size: int, activation: str,
                       block: str, compress: int) -> None:
    for name, value in (("channels", channels), ("dim", dim), ("n_filters", n_filters),
                        ("kernel_size", kernel_size), ("residual_kernel_size", residual_kernel_size),
                        ("last_kernel_size", last_kernel_size), ("compress", compress)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if len(ratios) == 0 or any(not isinstance(r, int) or r < 1 for r in ratios):
        raise ValueError(f"ratios must be a non-empty sequence of positive integers, got {ratios!r}")
    if any(not isinstance(d, int) or d < 1 for d in dilations):
        raise ValueError(f"dilations must be positive integers, got {dilations!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS.names()}, got {activation!r}")
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS.names()}, got {block!r}")


def seanet_kwargs(m) -> dict:
    """The constructor arguments shared by :class:`SEANetEncoder` and :class:`SEANetDecoder`, read from a
    ``ModelConfig`` (``cfg.model``)."""
    return dict(channels=m.channels, dim=m.dim, n_filters=m.n_filters, ratios=tuple(m.ratios),
                dilations=tuple(m.dilations), kernel_size=m.kernel_size, residual_kernel_size=m.residual_kernel_size,
                last_kernel_size=m.last_kernel_size, activation=m.activation, block=m.block, compress=m.compress)


# --------------------------------------------------------------------------------------------------- encoder / decoder

@ENCODERS.register("seanet")
class SEANetEncoder(nn.Module):
    """Causal SEANet encoder ``[B, channels, T] -> [B, dim, ceil(T / hop)]``, ``hop = prod(ratios)``.

    Input conv (``kernel_size``) to ``n_filters``; then per ratio, in the order given: residual units with
    ``dilations``, activation, strided conv (k = 2 * ratio) doubling the channels; then activation and a conv
    (``last_kernel_size``) to ``dim``. Latent frame ``f`` depends only on input samples ``<= f * hop``.
    """

    def __init__(self, channels: int = 1, dim: int = 128, n_filters: int = 32, ratios: Sequence[int] = (2, 4, 5, 8),
                 dilations: Sequence[int] = (1, 3, 9), kernel_size: int = 7, residual_kernel_size: int = 3,
                 last_kernel_size: int = 7, activation: str = "elu", block: str = "conv", compress: int = 2):
        super().__init__()
        ratios, dilations = tuple(ratios), tuple(dilations)
        _check_seanet_args(channels, dim, n_filters, ratios, dilations, kernel_size, residual_kernel_size,
                           last_kernel_size, activation, block, compress)
        self.channels, self.dim, self.ratios = channels, dim, ratios
        self.hop_length = math.prod(ratios)

        width = n_filters
        layers: list[nn.Module] = [CausalConv1d(channels, width, kernel_size)]
        for ratio in ratios:
            layers += _residual_blocks(width, dilations, residual_kernel_size, activation, block, compress)
            layers += [make_activation(activation, width), CausalConv1d(width, 2 * width, 2 * ratio, stride=ratio)]
            width *= 2
        layers += [make_activation(activation, width), CausalConv1d(width, dim, last_kernel_size)]
        self.layers = StreamingSequential(*layers)

    @classmethod
    def from_config(cls, cfg) -> "SEANetEncoder":
        """``model.encoder: seanet``."""
        return cls(**seanet_kwargs(cfg.model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, channels, T] -> [B, dim, ceil(T / hop)]``."""
        return self.layers(x)

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Next audio chunk ``[B, channels, T]`` -> the latent frames it completes ``[B, dim, n]``."""
        return self.layers.stream(x)

    def reset_stream(self) -> None:
        reset_streams(self)


@DECODERS.register("seanet")
class SEANetDecoder(nn.Module):
    """Causal SEANet decoder ``[B, dim, F] -> [B, channels, F * hop]``, the mirror of :class:`SEANetEncoder`.

    Input conv (``kernel_size``) from ``dim`` to ``n_filters * 2 ** len(ratios)``; then per ratio, in *reversed*
    order (pass the encoder's ratios), one stage: activation, upsampler (causal transposed conv k = 2 * ratio, or
    ``lib.model.multires.WaveletUpsampler`` with ``upsampler="wavelet"``) halving the channels, residual units; then
    activation and a conv (``last_kernel_size``) to ``channels``. Output sample ``n`` depends only on latent
    frames ``<= n // hop``.
    """

    def __init__(self, channels: int = 1, dim: int = 128, n_filters: int = 32, ratios: Sequence[int] = (2, 4, 5, 8),
                 dilations: Sequence[int] = (1, 3, 9), kernel_size: int = 7, residual_kernel_size: int = 3,
                 last_kernel_size: int = 7, activation: str = "elu", block: str = "conv", compress: int = 2,
                 upsampler: str = "transposed"):
        super().__init__()
        ratios, dilations = tuple(ratios), tuple(dilations)
        _check_seanet_args(channels, dim, n_filters, ratios, dilations, kernel_size, residual_kernel_size,
                           last_kernel_size, activation, block, compress)
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS.names()}, got {upsampler!r}")
        self.channels, self.dim, self.ratios = channels, dim, ratios
        self.hop_length = math.prod(ratios)

        width = n_filters * 2 ** len(ratios)
        self.input = StreamingSequential(CausalConv1d(dim, width, kernel_size))
        stages = []
        for ratio in reversed(ratios):
            layers = [make_activation(activation, width), UPSAMPLERS.get(upsampler)(width, width // 2, ratio)]
            width //= 2
            layers += _residual_blocks(width, dilations, residual_kernel_size, activation, block, compress)
            stages.append(StreamingSequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.output = StreamingSequential(make_activation(activation, width),
                                          CausalConv1d(width, channels, last_kernel_size))

    @classmethod
    def from_config(cls, cfg) -> "SEANetDecoder":
        """``model.decoder: seanet``: the mirror of the encoder that :func:`seanet_kwargs` describes."""
        return cls(**seanet_kwargs(cfg.model), upsampler=cfg.model.upsampler)

    def forward(self, z: torch.Tensor, return_stages: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``[B, dim, F] -> [B, channels, F * hop]``.

        With ``return_stages`` also returns the output of every upsampling stage (upsampler + its residual
        blocks), coarsest first: a list of ``[B, C_i, F * r_1 * ... * r_i]`` (``r`` in decoder order).
        """
        x = self.input(z)
        stages = []
        for stage in self.stages:
            x = stage(x)
            stages.append(x)
        y = self.output(x)
        return (y, stages) if return_stages else y

    def stream(self, z: torch.Tensor) -> torch.Tensor:
        """Next latent frames ``[B, dim, F]`` -> the ``F * hop`` samples now final ``[B, channels, F * hop]``."""
        x = self.input.stream(z)
        for stage in self.stages:
            x = stage.stream(x)
        return self.output.stream(x)

    def reset_stream(self) -> None:
        reset_streams(self)


# --------------------------------------------------------------------------------------------------- codec

@dataclass
class CodecOutput:
    """What :meth:`Codec.forward` returns.

    ``recon`` ``[B, C, T]`` (trimmed to the input length); ``codes`` ``[B, n_q, F]`` (None when continuous);
    ``commit_loss`` scalar; ``stats`` the quantizer's per-level dicts; ``n_q`` quantizers used: an int, or a
    LongTensor ``[B]`` of per-item levels under quantizer dropout (0 when continuous);
    ``latents`` ``[B, D, F]`` what entered the quantizer; ``stages`` the decoder's stage outputs when asked.
    """

    recon: torch.Tensor
    codes: torch.Tensor | None
    commit_loss: torch.Tensor
    stats: list[dict[str, Any]] = field(default_factory=list)
    n_q: int | torch.Tensor = 0
    latents: torch.Tensor | None = None
    stages: list[torch.Tensor] | None = None


class Codec(nn.Module):
    """Encoder -> (bottleneck) -> quantizer -> decoder, on audio ``[B, C, T]`` of any length.

    Args:
        encoder: ``[B, C, T] -> [B, D, F]`` with attributes ``channels``, ``dim``, ``hop_length`` (a SEANetEncoder or an STFTEncoder).
        quantizer: a :class:`lib.model.codebook.Quantizer` (``forward(x, n_q)``, ``encode(x, n_q)``,
            ``decode(codes)``, ``n_q``, ``codebook_size``); may be None when ``continuous``.
        decoder: ``[B, D, F] -> [B, C, F * hop]`` with the same ``channels``, ``dim``, ``hop_length``.
        sample_rate: audio sample rate in Hz.
        bottleneck: optional ``[B, D, F] -> [B, D, F]`` module applied before the quantizer.
        continuous: skip the quantizer. The model is then an autoencoder, *not a codec*: it has no codes and no
            bitrate; ``encode`` returns the latents ``[B, D, F]`` and ``decode`` takes them.
        frame_lookahead: let latent frame ``f`` see its own ``hop`` input samples (one frame of algorithmic
            latency, as in SoundStream/EnCodec) instead of only samples ``<= f * hop`` (see the module docstring).

    Inputs are padded on the right with zeros to a multiple of ``hop_length``; outputs are trimmed back.
    """

    max_offline_frames = 3000  # longer inputs to encode/decode (no grad) go through the streaming path ...
    stream_chunk_frames = 750  # ... in chunks of this many frames (10 s at 75 Hz)

    def __init__(self, encoder: nn.Module, quantizer: nn.Module | None, decoder: nn.Module, sample_rate: int,
                 bottleneck: nn.Module | None = None, continuous: bool = False, frame_lookahead: bool = False):
        super().__init__()
        for name, module in (("encoder", encoder), ("decoder", decoder)):
            missing = [a for a in ("channels", "dim", "hop_length") if not hasattr(module, a)]
            if missing:
                raise ValueError(f"{name} lacks the attribute(s) {missing} the codec needs")
        for attr in ("channels", "dim", "hop_length"):
            if getattr(encoder, attr) != getattr(decoder, attr):
                raise ValueError(f"encoder.{attr}={getattr(encoder, attr)} but decoder.{attr}="
                                 f"{getattr(decoder, attr)}; they must match")
        if not continuous:
            if quantizer is None:
                raise ValueError("quantizer is None; pass a quantizer or continuous=True")
            q_dim = getattr(quantizer, "dim", encoder.dim)
            if q_dim != encoder.dim:
                raise ValueError(f"quantizer.dim={q_dim} but encoder.dim={encoder.dim}; they must match")
        if not isinstance(sample_rate, (int, float)) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number, got {sample_rate!r}")
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.bottleneck = bottleneck
        self.sample_rate = sample_rate
        self.continuous = continuous
        self.frame_lookahead = frame_lookahead
        self._reset_own_stream()

    # ---------------------------------------------------------------- properties

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (the product of the ratios)."""
        return int(self.encoder.hop_length)

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def unfinished_tail(self) -> int:
        """Samples at the end of a decoded crop that the next frame would still change (the iSTFT overlap-add's
        ``n_fft - hop``; 0 for decoders that do not declare a ``latency``): training losses leave them out."""
        return int(getattr(self.decoder, "latency", 0))

    @property
    def channels(self) -> int:
        return int(self.encoder.channels)

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second with ``n_q`` quantizers (all by default): ``quantizer.bits_per_frame(n_q) * frame_rate``
        (``n_q * log2(codebook_size) * frame_rate`` for a residual VQ)."""
        if self.continuous:
            raise ValueError("continuous=True: this model is not a codec and has no bitrate")
        return self.quantizer.bits_per_frame(self._check_n_q(n_q)) * self.frame_rate

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (weight-norm magnitude and direction counted separately)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---------------------------------------------------------------- offline

    def forward(self, wav: torch.Tensor, n_q: int | None = None, return_stages: bool = False,
                bypass_quantizer: bool = False) -> CodecOutput:
        """Training forward ``[B, C, T] -> CodecOutput`` (recon ``[B, C, T]``).

        ``n_q=None`` lets the quantizer choose (quantizer dropout in training mode, all levels in eval).
        ``bypass_quantizer`` feeds the latents to the decoder unquantized (the trainer's quantizer warm-up: the
        codebooks are k-means-initialised only once the encoder produces informative latents).
        """
        # In training a non-finite batch passes through, so that the trainer's guard skips the step.
        wav = self._wav(wav, finite=not self.training)
        if n_q is not None:
            self._check_n_q(n_q)
        z = self._latents(wav)
        if self.continuous or bypass_quantizer:
            quantized, codes, commit_loss, stats, n_used = z, None, z.new_zeros(()), [], 0
        else:
            with torch.autocast(z.device.type, enabled=False):  # codebooks and their statistics stay fp32 (autocast)
                q = self.quantizer(z.float(), n_q=n_q)
            quantized, codes, commit_loss, stats, n_used = q.quantized, q.codes, q.commit_loss, q.stats, q.n_q
        stages = None
        if return_stages:
            y, stages = self.decoder(quantized, return_stages=True)
        else:
            y = self.decoder(quantized)
        return CodecOutput(recon=y[..., : wav.shape[-1]], codes=codes, commit_loss=commit_loss, stats=stats,
                           n_q=n_used, latents=z, stages=stages)

    def encode(self, wav: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """``[B, C, T] -> codes [B, n_q, ceil(T / hop)]`` (latents ``[B, D, F]`` when continuous).

        Inputs longer than ``max_offline_frames`` frames go through the streaming encoder in chunks of
        ``stream_chunk_frames`` (a copy of the codec, so a stream in progress is left alone): memory stays bounded
        and the codes are those of one offline call up to float rounding."""
        wav = self._wav(wav)
        n_q = None if self.continuous else self._check_n_q(n_q)
        if not torch.is_grad_enabled() and wav.shape[-1] > self.max_offline_frames * self.hop_length:
            return chunked_encode(self, wav, n_q, self.stream_chunk_frames)
        z = self._latents(wav)
        return z if self.continuous else self.quantizer.encode(z, n_q=n_q)

    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """``codes [B, n_q, F] -> [B, C, F * hop]`` (trimmed to ``length`` samples when given); codes of any integer
        dtype, -1 for a level that is off. Long code sequences are decoded in chunks, as in :meth:`encode`."""
        length = check_length(length)
        if not torch.is_grad_enabled() and codes.dim() == 3 and codes.shape[-1] > self.max_offline_frames:
            y = chunked_decode(self, codes, self.stream_chunk_frames)
        else:
            y = self.decoder(self._dequantize(codes))
        return y if length is None else y[..., :length]

    def latents(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, D, ceil(T / hop)]``: pad, encode, bottleneck; what enters the quantizer."""
        return self._latents(self._wav(wav))

    def _latents(self, wav: torch.Tensor) -> torch.Tensor:
        hop = self.hop_length
        x = F.pad(wav, (0, -wav.shape[-1] % hop))
        if self.frame_lookahead:
            # One leading zero sample makes encoder frame f + 1 end at input sample (f + 1) * hop - 1, the last
            # sample of frame f; encoder frame 0 then holds no signal and is dropped.
            z = self.encoder(F.pad(x, (1, 0)))[..., 1:]
        else:
            z = self.encoder(x)
        return self.bottleneck(z) if self.bottleneck is not None else z

    def _dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, n_q, F]`` (or latents when continuous) -> latents ``[B, D, F]``."""
        if codes.dim() != 3:
            raise ValueError(f"codes: expected [B, n_q, F], got shape {tuple(codes.shape)}")
        if self.continuous:
            if codes.shape[1] != self.dim:
                raise ValueError(f"codes: continuous model expects latents [B, {self.dim}, F], "
                                 f"got shape {tuple(codes.shape)}")
            return codes
        if not 1 <= codes.shape[1] <= self.quantizer.n_q:
            raise ValueError(f"codes: has {codes.shape[1]} levels, the quantizer has {self.quantizer.n_q}")
        q = self.quantizer
        codes = check_codes(codes, list(getattr(q, "alphabet_sizes", None) or [q.codebook_size] * q.n_q))
        if codes.shape[-1] == 0:  # nothing to look up; spare the quantizer an empty tensor
            dtype = next(self.decoder.parameters()).dtype
            return torch.zeros(codes.shape[0], self.dim, 0, dtype=dtype, device=codes.device)
        return self.quantizer.decode(codes)

    # ---------------------------------------------------------------- streaming

    @torch.no_grad()
    def stream_encode(self, wav: torch.Tensor, n_q: int | None = None, final: bool = False) -> torch.Tensor:
        """Next audio chunk ``[B, C, T]`` (any T, 0 included) -> codes of the frames it completes ``[B, n_q, n]``.

        Frame ``f`` is complete once sample ``f * hop`` has arrived (``(f + 1) * hop - 1`` with frame_lookahead).
        ``final=True`` marks the last chunk: the last partial frame is zero-padded as :meth:`encode` pads it, so the
        stream yields ``ceil(T / hop)`` frames in all (call :meth:`reset_stream` before the next signal).
        The codes equal those of :meth:`encode` on the whole signal. A bottleneck without ``stream`` is rerun
        over the history of latents, which is exact when it is causal.
        """
        wav = self._wav(wav, allow_empty=True)
        n_q = None if self.continuous else self._check_n_q(n_q)
        self._stream_samples += wav.shape[-1]
        if final:
            wav = F.pad(wav, (0, -self._stream_samples % self.hop_length))
            self._stream_samples += -self._stream_samples % self.hop_length
        if self.frame_lookahead and not self._stream_started:
            wav = F.pad(wav, (1, 0))
        self._stream_started = True
        z = self.encoder.stream(wav)
        drop = min(self._frames_to_drop, z.shape[-1])
        z, self._frames_to_drop = z[..., drop:], self._frames_to_drop - drop
        z = self._stream_bottleneck(z)
        if self.continuous:
            return z
        if z.shape[-1] == 0:
            return torch.zeros(z.shape[0], n_q, 0, dtype=torch.long, device=z.device)
        return self.quantizer.encode(z, n_q=n_q)

    @torch.no_grad()
    def stream_decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Next codes ``[B, n_q, F]`` (latents when continuous) -> the next ``F * hop`` samples ``[B, C, F * hop]``."""
        return self.decoder.stream(self._dequantize(codes))

    @torch.no_grad()
    def stream_flush(self) -> torch.Tensor:
        """End of a decoded stream: the samples the decoder still holds ``[B, C, n]``, then a reset of its tail
        (n = 0 for a decoder whose samples are final once their frame is decoded, as SEANet's; ``n_fft - hop``
        for the iSTFT decoder). With them the concatenated stream equals :meth:`decode` on all the codes."""
        flush = getattr(self.decoder, "flush", None)
        return torch.zeros(1, self.channels, 0) if flush is None else flush()

    def reset_stream(self) -> None:
        """Forget the streaming past of encoder, decoder and bottleneck."""
        reset_streams(self)
        self._reset_own_stream()

    def _reset_own_stream(self) -> None:
        self._stream_started = False
        self._stream_samples = 0
        self._frames_to_drop = 1 if self.frame_lookahead else 0
        self._bottleneck_history: torch.Tensor | None = None

    def _stream_bottleneck(self, z: torch.Tensor) -> torch.Tensor:
        if self.bottleneck is None:
            return z
        if hasattr(self.bottleneck, "stream"):
            return self.bottleneck.stream(z)
        if getattr(self.bottleneck, "causal", True) is False:
            raise ValueError("bottleneck is not causal (causal=False), so the codec cannot stream")
        if z.shape[-1] == 0:
            return z
        history = z if self._bottleneck_history is None else torch.cat([self._bottleneck_history, z], dim=-1)
        self._bottleneck_history = history
        return self.bottleneck(history)[..., -z.shape[-1]:]

    # ---------------------------------------------------------------- checks

    def _wav(self, wav: torch.Tensor, allow_empty: bool = False, finite: bool = True) -> torch.Tensor:
        return check_wav(wav, self.channels, model_dtype(self), allow_empty, finite)

    def _check_n_q(self, n_q: int | None) -> int:
        """``n_q`` (default: all levels), checked against the quantizer."""
        if self.continuous:
            if n_q is not None:
                raise ValueError(f"n_q={n_q!r} given but continuous=True: the model has no quantizers")
            return 0
        total = int(self.quantizer.n_q)
        if n_q is None:
            return total
        if not isinstance(n_q, int) or isinstance(n_q, bool) or not 1 <= n_q <= total:
            raise ValueError(f"n_q must be an integer in [1, {total}], got {n_q!r}")
        return n_q
