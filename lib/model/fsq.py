"""Finite scalar quantization (Mentzer et al. 2023, arXiv 2309.15505) and a residual stack of it.

FSQ projects a latent to a few dimensions and rounds each one to a small fixed set of values: dimension ``i``
takes ``levels[i]`` values, so one group of ``levels = [8, 5, 5, 5]`` is one of ``8 * 5 * 5 * 5 = 1000`` codes
(9.97 bits). There is no codebook to learn, initialise, collapse or refill, and no commitment loss: the rounding
passes gradients straight through. The implicit codebook is a grid, so FSQ codes are a topographic map by
construction (neighbouring codes decode to neighbouring vectors).

:class:`ResidualFSQ` stacks groups residually, exactly like :class:`lib.model.quantize.ResidualVQ` stacks codebooks:
group ``i`` quantizes what groups ``< i`` left, through its own ``dim -> len(levels) -> dim`` projections, which
gives the same bitrate ladder and quantizer dropout (8 groups of ``[8, 5, 5, 5]`` at 75 Hz = 5.98 kbps).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from lib.model.codebook import LevelStack, RVQOutput, broadcast_from_rank0, check_latents, codebook_stats
from lib.model.registries import QUANTIZERS

__all__ = ["FSQ", "ResidualFSQ"]


class FSQ(nn.Module):
    """One FSQ group: ``[B, D, T]`` -> in-projection to ``d = len(levels)`` dims -> bounded, rounded -> out-projection.

    Args:
        dim: channels D of the input.
        levels: values per code dimension (each >= 2).

    ``quantize``/``dequantize`` convert between latents and integer codes in ``[0, codebook_size)``; the mixed-radix
    code of a grid point with digits ``d_i in [0, levels[i])`` is ``sum_i d_i * prod(levels[:i])``. Attributes
    shared with :class:`lib.model.quantize.VectorQuantizer`: ``dim``, ``codebook_size``, ``codebook_dim``, ``embed``
    (the grid ``[K, d]`` in code space), ``som`` (None), ``to_code_space``.
    """

    som = None

    def __init__(self, dim: int, levels: Sequence[int] = (8, 5, 5, 5), eps: float = 1e-3):
        super().__init__()
        levels = [int(v) for v in levels]
        if dim < 1 or not levels or min(levels) < 2:
            raise ValueError(f"FSQ needs dim >= 1 and every level >= 2, got dim={dim}, levels={levels}")
        self.dim, self.levels = dim, levels
        self.codebook_dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.in_proj = nn.Conv1d(dim, self.codebook_dim, 1)
        self.out_proj = nn.Conv1d(self.codebook_dim, dim, 1)
        lv = torch.tensor(levels, dtype=torch.float32)
        half = (lv - 1) * (1 - eps) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        self.register_buffer("_half", half, persistent=False)
        self.register_buffer("_offset", offset, persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half), persistent=False)
        self.register_buffer("_width", torch.floor(lv / 2), persistent=False)  # rounded values span [-w, w]
        basis = torch.cumprod(torch.tensor([1] + levels[:-1]), 0)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_lv", lv.long(), persistent=False)
        # The projection's output is standardised by a shift and scale measured on the first training batch.
        self.register_buffer("in_shift", torch.zeros(self.codebook_dim))
        self.register_buffer("in_scale", torch.ones(self.codebook_dim))
        self.register_buffer("initted", torch.tensor(False))

    def _project(self, x: Tensor) -> Tensor:
        """``[B, D, T] -> [B, d, T]``: the in-projection, standardised."""
        return (self.in_proj(x) - self.in_shift[:, None]) / self.in_scale[:, None]

    @torch.no_grad()
    def _init_scale(self, x: Tensor) -> None:
        """First training batch: measure the shift and scale that give each code dimension zero mean and unit
        variance (on rank 0, broadcast to all ranks).

        A latent with a large offset or scale (a random SEANet's output is nearly constant) would otherwise start where
        tanh is saturated: every frame on the same grid point, and no gradient through the bound. Buffers rather than
        an edit of the weights, so that a weight EMA, DDP replicas and a skipped step all see the same correction.
        """
        h = self.in_proj(x.float()).transpose(0, 1).reshape(self.codebook_dim, -1)
        self.in_shift.copy_(h.mean(dim=1))
        self.in_scale.copy_(h.std(dim=1).clamp_min(1e-5))
        broadcast_from_rank0(self.in_shift)
        broadcast_from_rank0(self.in_scale)
        self.initted.fill_(True)
    def extra_repr(self) -> str:
        return f"dim={self.dim}, levels={self.levels}, codebook_size={self.codebook_size}"

    def to_code_space(self, x: Tensor) -> Tensor:
        """``[B, D, T] -> [B, d, T]``: in-projection, then bounded to ``(-1, 1)`` per dimension (not rounded)."""
        return self._bound(self._project(x)) / self._width[:, None]

    def _bound(self, h: Tensor) -> Tensor:
        """``[B, d, T]`` -> values in ``(-half - offset, half - offset)``: rounding them gives ``levels`` values."""
        half, offset, shift = (v[:, None] for v in (self._half, self._offset, self._shift))
        return torch.tanh(h + shift) * half - offset

    def _grid(self, x: Tensor) -> Tensor:
        """``[B, D, T]`` -> rounded grid values ``[B, d, T]`` in ``[-w, w]`` (straight-through gradient)."""
        if self.training and not bool(self.initted) and x.shape[0] * x.shape[2] > 1:
            self._init_scale(x)
        bounded = self._bound(self._project(x).float())
        return bounded + (torch.round(bounded) - bounded).detach()

    def _codes(self, grid: Tensor) -> Tensor:
        """Grid values ``[B, d, T]`` -> codes ``[B, T]``."""
        digits = (grid.detach() + self._width[:, None]).round().long()
        return (digits * self._basis[:, None]).sum(dim=1)

    def grid_of_codes(self, codes: Tensor) -> Tensor:
        """Codes ``[...]`` -> normalised grid points ``[..., d]`` in ``[-1, 1]``."""
        digits = (codes[..., None] // self._basis) % self._lv
        return (digits.float() - self._width) / self._width

    @property
    def embed(self) -> Tensor:
        """The implicit codebook in code space ``[K, d]`` (normalised grid points)."""
        return self.grid_of_codes(torch.arange(self.codebook_size, device=self._basis.device))

    def quantize_level(self, x: Tensor, active: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, dict]:
        """``x [B, D, T]`` -> (q ``[B, D, T]`` with gradient, codes ``[B, T]``, zero loss, stats over active items)."""
        grid = self._grid(x)
        q = self.out_proj(grid / self._width[:, None]).to(x.dtype)
        codes = self._codes(grid)
        used = codes if active is None else codes[active]
        return q, codes, x.new_zeros(()), codebook_stats(used.reshape(-1), self.codebook_size)

    def quantize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest grid point, no gradient: ``[B, D, T] -> (q [B, D, T], codes [B, T])``."""
        check_latents(x, self.dim)
        with torch.no_grad():
            codes = self._codes(self._grid(x))
            return self.dequantize(codes).to(x.dtype), codes

    def dequantize(self, codes: Tensor) -> Tensor:
        """Codes ``[B, T]`` -> ``[B, D, T]``; entries of -1 (group switched off) give zero vectors."""
        if codes.dim() != 2:
            raise ValueError(f"codes must be [B, T], got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.max()) >= self.codebook_size or int(codes.min()) < -1):
            raise ValueError(f"codes must be in [-1, {self.codebook_size}), got [{int(codes.min())}, "
                             f"{int(codes.max())}]")
        valid = codes >= 0
        q = self.out_proj(self.grid_of_codes(codes.clamp(min=0)).transpose(1, 2))
        return q * valid[:, None, :].to(q.dtype)


@QUANTIZERS.register("fsq")
class ResidualFSQ(LevelStack):
    """Residual stack of :class:`FSQ` groups with quantizer dropout; the same interface as ``ResidualVQ``.

    Args:
        dim: channels D of ``[B, D, T]``.
        n_q: number of groups (levels of the bitrate ladder).
        levels: values per dimension of every group.
        quantizer_dropout: fraction of batch items (True = all) that draw their own number of groups uniformly in
            ``[1, n_q]`` during training; the rest use all groups.

    Each group sees the detached sum of the previous groups' outputs subtracted from the input, and its output
    carries the straight-through gradient of its own rounding, so every group trains the encoder.
    """

    def __init__(self, dim: int, n_q: int, levels: Sequence[int] = (8, 5, 5, 5),
                 quantizer_dropout: bool | float = 0.5):
        super().__init__(dim, n_q, math.prod(levels), quantizer_dropout)
        self.levels = nn.ModuleList(FSQ(dim, levels) for _ in range(n_q))
        self.fsq_levels = list(self.levels[0].levels)

    @classmethod
    def from_config(cls, cfg) -> "ResidualFSQ":
        """``model.quantizer.kind: fsq``: ``n_q`` groups of ``fsq_levels``."""
        q = cfg.model.quantizer
        return cls(cfg.model.dim, q.n_q, q.fsq_levels, quantizer_dropout=q.quantizer_dropout)

    @property
    def radices(self) -> tuple[int, ...]:
        """Levels per dimension of every group: a code is their mixed-radix index (read by the .vqc format)."""
        return tuple(self.fsq_levels)

    @property
    def ready(self) -> bool:
        """Always: there is no codebook to initialise."""
        return True

    def forward(self, x: Tensor, n_q: int | None = None) -> RVQOutput:
        """Quantize ``[B, D, T]``; returns ``RVQOutput`` (codes ``[B, n, T]``, -1 where a group is off for an item)."""
        check_latents(x, self.dim)
        use_dropout = self.training and n_q is None and self.quantizer_dropout > 0
        n_levels = self._check_n_q(n_q)
        item_n_q = self._draw_item_levels(x.shape[0], x.device) if use_dropout else None
        quantized, previous = torch.zeros_like(x), torch.zeros_like(x)
        codes, stats = [], []
        for i, group in enumerate(self.levels[:n_levels]):
            active = None if item_n_q is None else item_n_q > i
            q, group_codes, _, group_stats = group.quantize_level(x - previous, active)
            previous = previous + q.detach()
            if active is not None:
                q = q * active[:, None, None].to(q.dtype)
                group_codes = group_codes.masked_fill(~active[:, None], -1)
            quantized = quantized + q
            codes.append(group_codes)
            stats.append(group_stats)
        out_n_q = item_n_q if item_n_q is not None else n_levels
        return RVQOutput(quantized, torch.stack(codes, dim=1), x.new_zeros(()), out_n_q, stats)

    @torch.no_grad()
    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor:
        """``[B, D, T] -> codes [B, n_q, T]``."""
        check_latents(x, self.dim)
        previous, codes = torch.zeros_like(x), []
        for group in self.levels[: self._check_n_q(n_q)]:
            q, group_codes = group.quantize(x - previous)
            previous = previous + q
            codes.append(group_codes)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """``codes [B, n, T]`` (n <= n_q; -1 = group off) -> ``[B, D, T]``."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_q:
            raise ValueError(f"codes must be [B, n, T] with 1 <= n <= {self.n_q}, got {tuple(codes.shape)}")
        return sum(self.levels[i].dequantize(codes[:, i]) for i in range(codes.shape[1]))
