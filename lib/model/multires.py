"""Multiresolution (wavelet-tree) layers for the codec: a causal MultiresConv, a residual block built on it, and a
strictly causal learned wavelet upsampler.

* :class:`MultiresConv` follows Shi et al. 2023, "Sequence Modeling with Multiresolution Convolutional Memory"
  (arXiv 2305.01638): two depthwise filters ``h0`` (low-pass) and ``h1`` (high-pass), shared by every level of a
  causal dilated tree, produce detail coefficients at every scale plus a final approximation; a learnable
  per-channel mix of them (and a skip) is the output. Recent samples are seen at fine resolution, distant ones
  only through coarse averages: the paper's "resolution fading" memory.
* :class:`MultiresResidualBlock` puts a MultiresConv where a SEANet dilated residual unit has its dilated conv.
* :class:`WaveletUpsampler` is a causal transposed convolution whose kernel is built from learnable Gabor-like
  wavelet atoms ``cos(w s + phi) * exp(-s^2 / sigma)`` mixed by a learnable matrix.

All three are strictly causal (an impulse at input sample ``t`` changes no output before ``t``; for the upsampler,
input frame ``f`` changes no output sample before ``f * stride``) and have ``.stream(chunk)`` /
``.reset_stream()`` that reproduce the offline output for any chunking, empty chunks included. Streaming state
lives in plain attributes (not buffers), as in :mod:`lib.model.conv`; run streaming code under ``torch.no_grad()``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lib.model.activations import make_activation
from lib.model.conv import CausalConv1d, check_chunk, check_positive_int, check_same_stream
from lib.model.registries import BLOCKS, UPSAMPLERS

__all__ = ["MAX_DYNAMIC_DEPTH", "multires_depth", "MultiresConv", "MultiresResidualBlock", "WaveletUpsampler"]

# Cap on the depth chosen from the input length when neither ``depth`` nor ``max_len`` is given. With kernel 2 the
# tree then sees 2**20 - 1 samples back (~22 s at 48 kHz); longer inputs are still processed, their coarsest
# approximation just covers 2**20 samples instead of the whole past.
MAX_DYNAMIC_DEPTH = 20


def multires_depth(seq_len: int, kernel_size: int = 2) -> int:
    """Smallest tree depth ``J >= 1`` whose receptive field covers ``seq_len`` samples.

    Level ``i`` (dilation ``2**i``) adds ``(kernel_size - 1) * 2**i`` samples of past, so ``J`` levels see
    ``(kernel_size - 1) * (2**J - 1) + 1`` samples: ``J = ceil(log2((seq_len - 1) / (kernel_size - 1) + 1))``,
    as in the paper. Example: kernel 2, 1024 samples -> 10; 1025 samples -> 11.
    """
    check_positive_int("seq_len", seq_len)
    if not isinstance(kernel_size, int) or kernel_size < 2:
        raise ValueError(f"kernel_size must be an integer >= 2, got {kernel_size!r}")
    # Integer search instead of floating log2, which can land a hair above an exact power of two.
    depth = 1
    while (kernel_size - 1) * (2 ** depth - 1) + 1 < seq_len:
        depth += 1
    return depth


def _haar_like_filters(kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm low-pass and high-pass taps of length ``kernel_size``; for 2 taps exactly the Haar pair.

    Taps are in ``conv1d`` order: the last tap multiplies the current sample, tap ``j`` the sample
    ``(kernel_size - 1 - j) * dilation`` steps back. Low-pass = box; high-pass = alternating signs (current sample
    positive) with the mean removed so it rejects DC for odd lengths too.
    """
    low = torch.full((kernel_size,), 1.0 / math.sqrt(kernel_size))
    signs = torch.tensor([(-1.0) ** (kernel_size - 1 - j) for j in range(kernel_size)])
    high = signs - signs.mean()
    return low, high / high.norm()


class MultiresConv(nn.Module):
    """Causal multiresolution convolution: ``[B, C, T] -> [B, C, T]``.

    With ``a_0 = x`` and level ``i = 0 .. J-1`` at dilation ``2**i`` (causal, zero left padding)::

        a_{i+1} = h0 *_{2^i} a_i        d_{i+1} = h1 *_{2^i} a_i
        y = sum_{i=1..J} w_i * d_i + w_a * a_J + w_skip * x        (per-channel weights)

    ``h0``, ``h1`` are depthwise ``[C, kernel_size]`` filters shared by all levels. They start as the (scaled)
    Haar pair plus noise of std 0.01, so at init the tree is an undecimated orthonormal Haar transform: for white
    input every ``d_i`` and ``a_J`` has unit variance, while a level's peak gain grows as ``2**(i/2)`` (``a_J`` has
    DC gain ``2**(J/2)``).

    Mixing-weight init ("resolution fading"): every weight is ``U(-1, 1) / sqrt(L + 2)`` (the paper's scale, ``L``
    = number of levels allocated), and the level-``i`` detail weight is further multiplied by ``2**(-i/2)`` and
    the approximation weight by ``2**(-L/2)``. The extra factor cancels each level's peak gain, so at init the
    layer's frequency response is flat-ish instead of boosting low frequencies by up to ``2**(L/2)`` (16x at
    depth 8 for a DC offset); coarse levels start quiet and grow only if training wants them.

    Depth: ``depth`` if given; else ``multires_depth(max_len, kernel_size)`` if ``max_len`` is given; else chosen
    per call from the input length, ``min(multires_depth(T, kernel_size), MAX_DYNAMIC_DEPTH)`` levels (detail
    weights are indexed by level, fine to coarse, so they mean the same thing whatever the depth). A per-call depth
    makes earlier outputs depend on how long the input is, so :meth:`stream` needs a fixed depth.

    The layer is linear (the paper adds its activation outside the tree); ``dropout`` acts on the output.
    """

    def __init__(self, channels: int, kernel_size: int = 2, depth: int | None = None, max_len: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        check_positive_int("channels", channels)
        if not isinstance(kernel_size, int) or kernel_size < 2:
            raise ValueError(f"kernel_size must be an integer >= 2, got {kernel_size!r}")
        if depth is not None:
            check_positive_int("depth", depth)
        if max_len is not None:
            check_positive_int("max_len", max_len)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.channels, self.kernel_size = channels, kernel_size
        if depth is not None:
            self.depth: int | None = depth
        elif max_len is not None:
            self.depth = multires_depth(max_len, kernel_size)
        else:
            self.depth = None  # chosen per call from T
        n_levels = self.depth if self.depth is not None else MAX_DYNAMIC_DEPTH

        low, high = _haar_like_filters(kernel_size)
        self.h0 = nn.Parameter(low.repeat(channels, 1) + 0.01 * torch.randn(channels, kernel_size))
        self.h1 = nn.Parameter(high.repeat(channels, 1) + 0.01 * torch.randn(channels, kernel_size))
        scale = 1.0 / math.sqrt(n_levels + 2)
        level_fade = 2.0 ** (-0.5 * torch.arange(1, n_levels + 1, dtype=torch.float32))
        self.w_detail = nn.Parameter(torch.empty(channels, n_levels).uniform_(-1, 1) * scale * level_fade)
        self.w_approx = nn.Parameter(torch.empty(channels).uniform_(-1, 1) * scale * 2.0 ** (-0.5 * n_levels))
        self.w_skip = nn.Parameter(torch.empty(channels).uniform_(-1, 1) * scale)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._history: list[torch.Tensor] | None = None

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, depth={self.depth}"

    def depth_for(self, seq_len: int) -> int:
        """Number of tree levels used for an input of ``seq_len`` samples."""
        if self.depth is not None:
            return self.depth
        return min(multires_depth(max(seq_len, 1), self.kernel_size), MAX_DYNAMIC_DEPTH)

    def _tree(self, x: torch.Tensor, depth: int, history: list[torch.Tensor] | None
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The wavelet tree on ``x [B, C, T]`` given each level's past input (zeros offline).

        Returns ``y [B, C, T]`` and, per level, the last ``(kernel_size - 1) * 2**i`` samples of that level's
        input (past included): the next chunk's history.
        """
        channels, k = self.channels, self.kernel_size
        # One grouped conv computes both filters: group c outputs channel 2c (low) and 2c+1 (high).
        filters = torch.stack([self.h0, self.h1], dim=1).reshape(2 * channels, 1, k)
        y = self.w_skip[:, None] * x
        approx = x
        new_history = []
        for level in range(depth):
            dilation = 2 ** level
            past = (k - 1) * dilation
            if history is None:
                padded = F.pad(approx, (past, 0))
            else:
                padded = torch.cat([history[level], approx], dim=-1)
            new_history.append(padded[..., padded.shape[-1] - past:])
            both = F.conv1d(padded, filters, dilation=dilation, groups=channels)
            approx, detail = both[:, 0::2], both[:, 1::2]
            y = y + self.w_detail[:, level, None] * detail
        y = y + self.w_approx[:, None] * approx
        return self.dropout(y), new_history

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, C, T]``; output ``t`` depends on inputs ``<= t`` only."""
        check_chunk("MultiresConv", x, self.channels)
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape)
        y, _ = self._tree(x, self.depth_for(x.shape[-1]), None)
        return y

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Next chunk ``[B, C, T]`` (``T >= 0``) -> its ``[B, C, T]`` outputs, equal to the offline ones.

        Keeps, per level, the last ``(kernel_size - 1) * 2**i`` samples of that level's input.
        """
        if self.depth is None:
            raise ValueError("MultiresConv.stream needs a fixed depth: construct it with depth=... or max_len=... "
                             "(a depth chosen from the input length would change with every chunk)")
        check_chunk("MultiresConv.stream", x, self.channels)
        check_same_stream("MultiresConv.stream", x, self._history[0] if self._history else None)
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape)
        if self._history is None:  # the zeros the offline forward pads on the left
            self._history = [x.new_zeros(x.shape[0], self.channels, (self.kernel_size - 1) * 2 ** level)
                             for level in range(self.depth)]
        y, self._history = self._tree(x, self.depth, self._history)
        return y

    def reset_stream(self) -> None:
        """Forget the streaming past (the next chunk starts a new signal)."""
        self._history = None


class MultiresResidualBlock(nn.Module):
    """Residual block with a MultiresConv, a drop-in for a SEANet residual unit: ``[B, C, T] -> [B, C, T]``.

    ``y = x + conv1x1_expand(act(MultiresConv(conv1x1_compress(act(x)))))`` with hidden width
    ``max(1, channels // compress)``. This is the SEANet unit (act, conv k, act, conv 1x1, identity skip) with its
    dilated conv replaced by a channel-mixing 1x1 followed by the depthwise multiresolution tree (which on its
    own mixes no channels). The 1x1 convs are weight-normalised :class:`lib.model.conv.CausalConv1d`. Streamable when
    ``depth`` is fixed (the default); ``depth=None`` picks it per call from the input length.
    """

    def __init__(self, channels: int, kernel_size: int = 2, depth: int | None = 8, activation: str = "elu",
                 compress: int = 2):
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("compress", compress)
        hidden = max(1, channels // compress)
        self.channels = channels
        self.act_in = make_activation(activation, channels)
        self.compress = CausalConv1d(channels, hidden, 1)
        self.multires = MultiresConv(hidden, kernel_size=kernel_size, depth=depth)
        self.act_mid = make_activation(activation, hidden)
        self.expand = CausalConv1d(hidden, channels, 1)

    def _branch(self, x: torch.Tensor, streaming: bool) -> torch.Tensor:
        h = self.compress(self.act_in(x))  # 1x1 conv: no state, the offline call is exact when streaming
        h = self.multires.stream(h) if streaming else self.multires(h)
        return self.expand(self.act_mid(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, C, T]``, causal."""
        check_chunk("MultiresResidualBlock", x, self.channels)
        return x + self._branch(x, streaming=False)

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Next chunk ``[B, C, T]`` -> its ``[B, C, T]`` outputs, equal to the offline ones."""
        check_chunk("MultiresResidualBlock.stream", x, self.channels)
        return x + self._branch(x, streaming=True)

    def reset_stream(self) -> None:
        """Forget the streaming past."""
        self.multires.reset_stream()


@BLOCKS.register("multires")
def multires_blocks(channels: int, dilations, kernel_size: int, activation: str, compress: int) -> list[nn.Module]:
    """``model.block: multires``: one :class:`MultiresResidualBlock` per SEANet stage (``dilations`` and
    ``kernel_size`` belong to the dilated units it replaces and are not used)."""
    return [MultiresResidualBlock(channels, activation=activation, compress=compress)]


@UPSAMPLERS.register("wavelet")
class WaveletUpsampler(nn.Module):
    """Strictly causal learned upsampler: ``[B, in_ch, T] -> [B, out_ch, T * stride]``.

    A transposed convolution with kernel length ``K = kernel_per_stride * stride`` whose kernel is not free but
    built from wavelet atoms. For every (atom ``m``, input channel ``i``) pair, with tap position
    ``s' = s - (K - 1) / 2`` (in output samples, centred on the kernel)::

        atom[m, i, s] = cos(freq[m, i] * s' + phase[m, i]) * exp(-s'^2 / sigma[m, i])
        kernel[i, o, s] = sum_m mix[o, m] * atom[m, i, s]          (m = 0 .. out_ch - 1)

    ``freq``, ``phase``, ``sigma`` (through ``log_sigma``) and the ``[out_ch, out_ch]`` mixing matrix are learnable.
    Init: frequencies uniform in ``[0, pi]`` rad/sample, ``sigma = stride**2`` (the envelope falls to 1/e at the
    kernel's ends for ``kernel_per_stride=2``), phase 0, and ``mix`` rescaled so the kernel has the std of a
    fan-in-initialised conv (``1 / sqrt(in_ch * kernel_per_stride)``).

    Causality: input frame ``f`` only reaches output samples ``f * stride .. f * stride + K - 1``; the full
    transposed conv is trimmed on the right to ``T * stride`` samples (offline) or its last ``K - stride`` samples
    kept as an overlap-add tail (streaming). Nothing is trimmed on the left, so, unlike a 'same'-padded
    upsampler, no output looks at a later frame.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, kernel_per_stride: int = 2, bias: bool = True):
        super().__init__()
        for name, value in (("in_ch", in_ch), ("out_ch", out_ch), ("stride", stride),
                            ("kernel_per_stride", kernel_per_stride)):
            check_positive_int(name, value)
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.kernel_size = kernel_per_stride * stride
        self.overlap = self.kernel_size - stride  # samples each chunk leaves for the next
        self.freq = nn.Parameter(torch.rand(out_ch, in_ch) * math.pi)
        self.phase = nn.Parameter(torch.zeros(out_ch, in_ch))
        self.log_sigma = nn.Parameter(torch.full((out_ch, in_ch), 2.0 * math.log(stride) if stride > 1 else 0.0))
        self.mix = nn.Parameter(torch.randn(out_ch, out_ch))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        with torch.no_grad():
            target_std = 1.0 / math.sqrt(in_ch * kernel_per_stride)
            self.mix.mul_(target_std / self.kernel().std().clamp_min(1e-8))
        self._tail: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}, kernel_size={self.kernel_size}"

    def atoms(self) -> torch.Tensor:
        """The wavelet atoms ``[out_ch, in_ch, K]`` (index ``m`` first)."""
        s = torch.arange(self.kernel_size, dtype=self.freq.dtype, device=self.freq.device)
        s = s - (self.kernel_size - 1) / 2
        sigma = self.log_sigma.exp()[..., None]
        return torch.cos(self.freq[..., None] * s + self.phase[..., None]) * torch.exp(-s.pow(2) / sigma)

    def kernel(self) -> torch.Tensor:
        """Transposed-conv weight ``[in_ch, out_ch, K]``: the atoms mixed by ``mix``."""
        return torch.einsum("om,mik->iok", self.mix, self.atoms())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_ch, T] -> [B, out_ch, T * stride]``; sample ``j`` depends on frames ``f <= j // stride``."""
        check_chunk("WaveletUpsampler", x, self.in_ch)
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.out_ch, 0)
        y = F.conv_transpose1d(x, self.kernel(), self.bias, stride=self.stride)
        return y[..., : x.shape[-1] * self.stride]

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Next chunk of frames ``[B, in_ch, T]`` -> the ``T * stride`` samples now final."""
        check_chunk("WaveletUpsampler.stream", x, self.in_ch)
        check_same_stream("WaveletUpsampler.stream", x, self._tail)
        if self._tail is None:
            self._tail = x.new_zeros(x.shape[0], self.out_ch, self.overlap)
        n_out = x.shape[-1] * self.stride
        if n_out == 0:
            return x.new_zeros(x.shape[0], self.out_ch, 0)
        # Bias is added after the overlap-add so each output sample gets it exactly once.
        y = F.conv_transpose1d(x, self.kernel(), None, stride=self.stride)  # [B, out_ch, n_out + overlap]
        y = torch.cat([y[..., : self.overlap] + self._tail, y[..., self.overlap:]], dim=-1)
        self._tail = y[..., n_out:]
        out = y[..., :n_out]
        return out if self.bias is None else out + self.bias[:, None]

    def reset_stream(self) -> None:
        """Drop the overlap-add tail (the next chunk starts a new signal)."""
        self._tail = None
