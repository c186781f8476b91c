"""Causal, weight-normalised 1-d convolutions that can also run in streaming mode.

Causality here is strict, per sample: an impulse at input sample ``t`` changes no output before ``t``.

* :class:`CausalConv1d` pads ``(k - 1) * d`` zeros on the left only, so output frame ``f`` is computed from inputs
  ``f * stride - (k - 1) * d ... f * stride`` and the output has ``ceil(T / stride)`` frames.
* :class:`CausalConvTranspose1d` runs a plain transposed convolution and keeps the first ``T * stride`` samples;
  input frame ``t`` only reaches outputs ``t * stride ... t * stride + k - 1``, so output sample ``n`` depends on
  inputs ``<= n // stride``.

Streaming: ``module.stream(chunk)`` processes the next piece of a signal and returns the outputs that piece
completes; feeding a signal in pieces of any sizes (including 1 and 0) gives the same samples as one ``forward``
over the whole signal. ``module.reset_stream()`` forgets the past. State lives in plain attributes (not buffers),
so it never reaches a ``state_dict``. Call streaming code under ``torch.no_grad()``: the state keeps tensors from
earlier chunks alive.
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

__all__ = ["CausalConv1d", "CausalConvTranspose1d", "StreamingSequential", "reset_streams", "check_positive_int",
           "check_chunk", "check_same_stream"]


def check_positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_chunk(name: str, x: torch.Tensor, channels: int) -> None:
    if x.dim() != 3 or x.shape[1] != channels:
        raise ValueError(f"{name}: expected input [B, {channels}, T], got shape {tuple(x.shape)}")


def check_same_stream(name: str, x: torch.Tensor, state: torch.Tensor | None) -> None:
    """A stream must keep its batch size, dtype and device between chunks."""
    if state is None:
        return
    if x.shape[0] != state.shape[0] or x.dtype != state.dtype or x.device != state.device:
        raise ValueError(f"{name}: chunk has batch {x.shape[0]} / {x.dtype} / {x.device} but the stream started "
                         f"with batch {state.shape[0]} / {state.dtype} / {state.device}; call reset_stream() first")


class CausalConv1d(nn.Module):
    """Causal 1-d convolution: ``[B, in_ch, T] -> [B, out_ch, ceil(T / stride)]``.

    Left pad ``(kernel_size - 1) * dilation``; frame ``f`` depends only on inputs ``<= f * stride``.
    The streaming buffer holds the last ``(kernel_size - 1) * dilation`` input samples (the receptive field's past)
    plus the samples received that do not yet reach the next frame.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True, weight_norm: bool = True):
        super().__init__()
        for name, value in (("in_ch", in_ch), ("out_ch", out_ch), ("kernel_size", kernel_size),
                            ("stride", stride), ("dilation", dilation), ("groups", groups)):
            check_positive_int(name, value)
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"groups={groups} must divide in_ch={in_ch} and out_ch={out_ch}")
        conv = nn.Conv1d(in_ch, out_ch, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias)
        self.conv = _weight_norm(conv) if weight_norm else conv
        self.in_ch, self.out_ch = in_ch, out_ch
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.padding = (kernel_size - 1) * dilation  # samples of the past each output needs
        self._buffer: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"causal_pad={self.padding}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_ch, T] -> [B, out_ch, ceil(T / stride)]``."""
        check_chunk("CausalConv1d", x, self.in_ch)
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.out_ch, 0)
        # With only left padding, floor((T + P - P - 1) / s) + 1 = ceil(T / s) frames come out.
        return self.conv(F.pad(x, (self.padding, 0)))

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Next chunk ``[B, in_ch, T]`` -> the frames it completes ``[B, out_ch, n]`` (``n`` may be 0)."""
        check_chunk("CausalConv1d.stream", x, self.in_ch)
        check_same_stream("CausalConv1d.stream", x, self._buffer)
        if self._buffer is None:  # the zeros the offline forward pads on the left
            self._buffer = x.new_zeros(x.shape[0], self.in_ch, self.padding)
        buffer = torch.cat([self._buffer, x], dim=-1)
        # The buffer starts at the first sample of the next frame's receptive field; frame j of it needs
        # samples j * s ... j * s + padding.
        available = buffer.shape[-1] - self.padding
        n_frames = (available - 1) // self.stride + 1 if available > 0 else 0
        if n_frames == 0:
            self._buffer = buffer
            return x.new_zeros(x.shape[0], self.out_ch, 0)
        out = self.conv(buffer[..., : (n_frames - 1) * self.stride + self.padding + 1])
        self._buffer = buffer[..., n_frames * self.stride:]
        return out

    def reset_stream(self) -> None:
        """Forget the streaming past (the next chunk starts a new signal)."""
        self._buffer = None


class CausalConvTranspose1d(nn.Module):
    """Causal transposed convolution: ``[B, in_ch, T] -> [B, out_ch, T * stride]``.

    The full transposed convolution is ``(T - 1) * stride + kernel_size`` long; its last ``kernel_size - stride``
    samples still wait for the next input frames and are trimmed (offline) or kept as an overlap-add tail
    (streaming). ``kernel_size >= stride`` is required, otherwise outputs between frames would stay empty.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, bias: bool = True,
                 weight_norm: bool = True):
        super().__init__()
        for name, value in (("in_ch", in_ch), ("out_ch", out_ch), ("kernel_size", kernel_size),
                            ("stride", stride)):
            check_positive_int(name, value)
        if kernel_size < stride:
            raise ValueError(f"CausalConvTranspose1d needs kernel_size >= stride, got kernel_size={kernel_size} "
                             f"< stride={stride} (outputs between input frames would get no contribution)")
        convtr = nn.ConvTranspose1d(in_ch, out_ch, kernel_size, stride=stride, bias=bias)
        self.convtr = _weight_norm(convtr) if weight_norm else convtr
        self.in_ch, self.out_ch = in_ch, out_ch
        self.kernel_size, self.stride = kernel_size, stride
        self.overlap = kernel_size - stride  # samples each chunk leaves for the next
        self._tail: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_ch, T] -> [B, out_ch, T * stride]``."""
        check_chunk("CausalConvTranspose1d", x, self.in_ch)
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.out_ch, 0)
        return self.convtr(x)[..., : x.shape[-1] * self.stride]

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Next frames ``[B, in_ch, T]`` -> the ``T * stride`` samples now final ``[B, out_ch, T * stride]``."""
        check_chunk("CausalConvTranspose1d.stream", x, self.in_ch)
        check_same_stream("CausalConvTranspose1d.stream", x, self._tail)
        if self._tail is None:
            self._tail = x.new_zeros(x.shape[0], self.out_ch, self.overlap)
        n_out = x.shape[-1] * self.stride
        if n_out == 0:
            return x.new_zeros(x.shape[0], self.out_ch, 0)
        # No bias here: the tail is added to the next chunk, and the bias must be counted once per sample.
        y = F.conv_transpose1d(x, self.convtr.weight, None, stride=self.stride)  # [B, out_ch, n_out + overlap]
        y = torch.cat([y[..., : self.overlap] + self._tail, y[..., self.overlap:]], dim=-1)
        self._tail = y[..., n_out:]
        out = y[..., :n_out]
        if self.convtr.bias is not None:
            out = out + self.convtr.bias[:, None]
        return out

    def reset_stream(self) -> None:
        """Drop the overlap-add tail (the next chunk starts a new signal)."""
        self._tail = None


class StreamingSequential(nn.Sequential):
    """``nn.Sequential`` with a ``.stream(x)`` that streams through each child.

    Children with a ``stream`` method are streamed; the others (activations and other per-sample maps) are
    simply called, which is exact because they keep no state over time.
    """

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Next chunk ``[B, C, T]`` -> outputs it completes ``[B, C', n]``."""
        for layer in self:
            x = layer.stream(x) if hasattr(layer, "stream") else layer(x)
        return x

    def reset_stream(self) -> None:
        """Reset every streaming module inside."""
        reset_streams(self)


_resetting = threading.local()


def reset_streams(module: nn.Module) -> None:
    """Call ``reset_stream()`` on ``module`` and on every submodule that has one.

    Containers may implement their own ``reset_stream`` as ``reset_streams(self)``: calls made while a reset is
    already walking the tree return at once, because the walk reaches every submodule anyway.
    """
    if getattr(_resetting, "active", False):
        return
    _resetting.active = True
    try:
        for m in module.modules():
            reset = getattr(m, "reset_stream", None)
            if callable(reset):
                reset()
    finally:
        _resetting.active = False

