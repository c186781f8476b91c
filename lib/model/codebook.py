"""Codebook tools shared by the quantizers and by everything that measures a codebook.

* :class:`Quantizer`, ``VQOutput``, ``RVQOutput``, :func:`check_latents`, :class:`LevelStack`: what every quantizer
  is, returns and accepts, and what the residual ones share (levels, bitrate, quantizer dropout).
* :func:`codebook_stats`: usage, perplexity and codes used of a set of code indices: the one definition used by
  the quantizers' per-batch stats, the trainer's validation log, the codebook maps, the image-patch demo and the
  benchmarks.
* :func:`nearest_codes`, :func:`beam_search_codes`, :func:`kmeans`: the codebook search (one level; all levels of a
  residual quantizer at once) and its k-means initialisation.
* :func:`rotation_estimator`: the rotation trick, a gradient through the quantizer that keeps the angle between
  the input and its code (an alternative to the straight-through estimator).
* ``distributed_*``: the all-reduce / broadcast steps that keep codebooks identical across DDP ranks (no-ops
  outside torch.distributed).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol, Sequence, runtime_checkable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


# ----------------------------------------------------------------------------- what quantizers return


class VQOutput(NamedTuple):
    quantized: Tensor  # [B, D, T], straight-through: gradient w.r.t. the input is the identity
    codes: Tensor  # [B, T] long
    commit_loss: Tensor  # scalar
    stats: dict  # usage, perplexity, dead_codes, quant_error


class RVQOutput(NamedTuple):
    quantized: Tensor  # [B, D, T], one straight-through estimator on the sum of the levels
    codes: Tensor  # [B, n_q, T] long; -1 where quantizer dropout switched a level off for an item
    commit_loss: Tensor  # scalar, mean over the levels used
    n_q: int | Tensor  # int, or LongTensor [B] of per-item levels under quantizer dropout
    stats: list  # one stats dict per level


@runtime_checkable
class Quantizer(Protocol):
    """What the rest of the package relies on from a quantizer (registered in ``QUANTIZERS`` under
    ``model.quantizer.kind`` and built by its ``from_config(cfg)``). Latents ``[B, D, T]``, codes ``[B, n_q, T]``.

    Required (the codec, the trainer, the bitrate ladder):
        ``dim``, ``n_q``, ``codebook_size``: latent channels, levels, codes per level.
        ``forward(x, n_q=None) -> RVQOutput``: ``quantized`` (straight-through), ``codes``, ``commit_loss``
            (scalar; zero for a quantizer without one), ``n_q`` (int, or per-item LongTensor ``[B]`` under
            quantizer dropout), ``stats`` (one dict per level with ``usage`` and ``perplexity``, see
            :func:`lib.model.codebook.codebook_stats`). Training mode may update buffers: the trainer snapshots
            ``named_buffers()`` and restores them after a non-finite step.
        ``encode(x, n_q=None) -> codes`` and ``decode(codes) -> [B, D, T]`` (no updates; ``decode`` accepts the
            first ``n <= n_q`` levels).
        ``bits_per_frame(n_q=None) -> float``: the codec's bitrate is this times the frame rate.
    Optional, used by the codebook maps (``lib.analysis.maps``):
        ``levels``: per-level codebooks, each with ``embed [K, d]``, ``codebook_size``, ``codebook_dim``, ``som``
        (a :class:`lib.model.som.SOMGrid` or None), ``to_code_space(x) -> [B, d, T]`` and
        ``quantize(x) -> (q [B, D, T], codes [B, T])``.
    Optional, used by the ``.vqc`` format (``lib.bitstream.vqc``): ``alphabet_sizes`` (codes per level, default
        ``[codebook_size] * n_q``); ``radices``: FSQ levels per dimension, whose mixed-radix index is the code.
    """

    dim: int
    n_q: int
    codebook_size: int

    def forward(self, x: Tensor, n_q: int | None = None) -> RVQOutput: ...

    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor: ...

    def decode(self, codes: Tensor) -> Tensor: ...

    def bits_per_frame(self, n_q: int | None = None) -> float: ...


def check_latents(x: Tensor, dim: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] != dim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a [B, D={dim}, T] tensor, got {shape}")


class LevelStack(nn.Module):
    """What residual quantizers share: ``n_q`` levels of ``codebook_size`` codes each, the bitrate ladder and
    per-item quantizer dropout (a fraction ``quantizer_dropout`` of the batch items, True = all, draws its number of
    levels uniformly in ``[1, n_q]`` during training; the other items use every level)."""

    def __init__(self, dim: int, n_q: int, codebook_size: int, quantizer_dropout: bool | float):
        super().__init__()
        if n_q < 1:
            raise ValueError(f"n_q must be >= 1, got {n_q}")
        dropout = float(quantizer_dropout)
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be a bool or a fraction in [0, 1], got {quantizer_dropout}")
        self.dim, self.n_q, self.codebook_size, self.quantizer_dropout = dim, n_q, codebook_size, dropout

    def bits_per_frame(self, n_q: int | None = None) -> float:
        """``n_q * log2(codebook_size)`` (all levels by default)."""
        return self._check_n_q(n_q) * math.log2(self.codebook_size)

    def _check_n_q(self, n_q: int | None) -> int:
        if n_q is None:
            return self.n_q
        if not 1 <= int(n_q) <= self.n_q:
            raise ValueError(f"n_q must be in [1, {self.n_q}], got {n_q}")
        return int(n_q)

    def _draw_item_levels(self, batch: int, device: torch.device) -> Tensor:
        """Per-item number of levels ``[B]`` under quantizer dropout."""
        drawn = torch.randint(1, self.n_q + 1, (batch,), device=device)
        if self.quantizer_dropout >= 1.0:
            return drawn
        chosen = torch.rand(batch, device=device) < self.quantizer_dropout
        return torch.where(chosen, drawn, torch.full_like(drawn, self.n_q))


def codebook_stats(codes: Tensor, codebook_size: int) -> dict[str, float]:
    """How a codebook of ``codebook_size`` codes is used by ``codes`` (int indices of any shape; -1 = no code).

    Returns ``{"usage": fraction of the codes used at least once, "perplexity": exp(entropy) of the code
    histogram (natural log; ``codebook_size`` for a uniform histogram), "codes_used": count}``; NaN usage and
    perplexity (and 0 used) when no code is given.
    """
    codes = codes.reshape(-1)
    codes = codes[codes >= 0]
    if codes.numel() == 0:
        return {"usage": float("nan"), "perplexity": float("nan"), "codes_used": 0}
    counts = torch.bincount(codes, minlength=codebook_size).float()
    probs = counts / counts.sum()
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
    used = counts > 0
    usage, perplexity = torch.stack([used.float().mean(), entropy.exp()]).tolist()
    return {"usage": usage, "perplexity": perplexity, "codes_used": int(used.sum())}


# ----------------------------------------------------------------------------- distributed helpers


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if distributed() else 0


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum `tensor` over ranks in place (no-op outside torch.distributed)."""
    if distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_rank0(tensor: Tensor) -> Tensor:
    """Overwrite `tensor` on every rank with rank 0's copy (no-op outside torch.distributed)."""
    if distributed():
        dist.broadcast(tensor, src=0)
    return tensor


# ----------------------------------------------------------------------------- codebook helpers


def nearest_codes(vectors: Tensor, codebook: Tensor, cosine: bool = False) -> Tensor:
    """Index of the nearest code for each vector.

    Args:
        vectors: `[N, d]`; codebook: `[K, d]`.
        cosine: if True, largest dot product (inputs and codes assumed l2-normalised).
    Returns: `[N]` long.

    The search runs in the codebook's dtype with autocast off: under bf16 autocast the ``vectors @ codebook.t()``
    product would be rounded to 8 mantissa bits and near ties decided by rounding.
    """
    vectors = vectors.to(codebook.dtype)  # a float64 (or half) codec searches in its own dtype
    with torch.autocast(device_type=vectors.device.type, enabled=False):
        if cosine:
            return (vectors @ codebook.t()).argmax(dim=1)
        sq_dist = (
            vectors.pow(2).sum(dim=1, keepdim=True) - 2 * vectors @ codebook.t() + codebook.pow(2).sum(dim=1)[None, :]
        )
        return sq_dist.argmin(dim=1)


def beam_search_codes(vectors: Tensor, codebooks: Sequence[Tensor], beam: int) -> Tensor:
    """Residual codes, one per level, whose sum is nearest each vector, searched with a beam.

    Greedy residual search (``beam=1``) takes each level's nearest code to what the levels before left over; a
    code that is nearest now can leave a residual the next levels fit badly. The beam keeps the ``beam`` partial
    sums of smallest error after each level, extends each by every code of the next level, and returns the codes
    of the best full sum. The codes stay valid for any decoder of the same codebooks.

    Args:
        vectors: ``[N, d]``; codebooks: one ``[K, d]`` per level (Euclidean codes in the vectors' space).
        beam: hypotheses kept per vector, >= 1.
    Returns: ``[N, n_levels]`` long.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    dtype = codebooks[0].dtype
    residual = vectors.to(dtype)[:, None, :]  # [N, h, d]: what each hypothesis leaves over
    error = residual.pow(2).sum(-1)  # [N, h]
    codes = residual.new_zeros(vectors.shape[0], 1, 0, dtype=torch.long)  # [N, h, levels so far]
    with torch.autocast(device_type=vectors.device.type, enabled=False):  # see nearest_codes
        for codebook in codebooks:
            # ||r - e||^2 for every hypothesis and code: [N, h, K]
            n, h, size = residual.shape[0], residual.shape[1], codebook.shape[0]
            cross = torch.addmm(codebook.pow(2).sum(dim=1), residual.reshape(n * h, -1), codebook.t(), alpha=-2)
            sq_dist = cross.view(n, h, size) + error[..., None]
            _, pick = sq_dist.flatten(1).topk(min(beam, sq_dist[0].numel()), dim=1, largest=False)
            parent, code = pick // size, pick % size  # [N, h']
            residual = residual.gather(1, parent[..., None].expand(-1, -1, residual.shape[-1])) - codebook[code]
            codes = torch.cat([codes.gather(1, parent[..., None].expand(-1, -1, codes.shape[-1])), code[..., None]],
                              dim=-1)
            error = residual.pow(2).sum(-1)
    return codes[:, 0]  # topk sorts ascending: hypothesis 0 has the smallest error


def rotation_estimator(x: Tensor, q: Tensor, eps: float = 1e-8) -> Tensor:
    """The rotation trick (Fifty et al. 2024): value ``q``, gradient w.r.t. ``x`` through ``sg(s R) x``.

    Per frame (vectors along dim 1 of ``[B, D, T]``), ``R`` is the rotation taking ``x / |x|`` to ``q / |q|`` in the
    plane they span and ``s = |q| / |x|``, both held constant: a gradient ``g`` at the output reaches ``x`` as
    ``s R^T g``. The straight-through estimator passes ``g`` unchanged, so every input in a code's cell gets the same
    gradient; here it turns with the input's angle to its code. Where ``q`` is zero (no level yet) the gradient is 0.
    ``R x = x - 2 w (w . x) + 2 v (u . x)`` with ``u = x / |x|``, ``v = q / |q|``, ``w = (u + v) / |u + v|``; the
    value returned is ``q`` itself, not the rounded ``s R x``.
    """
    if not x.requires_grad:  # evaluation and encoding: nothing to turn
        return q
    with torch.no_grad():
        x_norm = x.norm(dim=1, keepdim=True).clamp_min(eps)
        q_norm = q.norm(dim=1, keepdim=True)
        u, v = x / x_norm, q / q_norm.clamp_min(eps)
        w = u + v
        w = w / w.norm(dim=1, keepdim=True).clamp_min(eps)  # u = -v: w = 0, R x = x + 2 v |x| is still q's direction
        scale = q_norm / x_norm
    rotated = scale * (x - 2 * w * (w * x).sum(1, keepdim=True) + 2 * v * (u * x).sum(1, keepdim=True))
    return q + (rotated - rotated.detach())


def kmeans(samples: Tensor, num_clusters: int, iters: int = 10, cosine: bool = False) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means, centroids started on random samples (deterministic given the torch seed).

    Args:
        samples: `[N, d]` (N >= 1); cosine: spherical k-means on l2-normalised samples.
    Returns: centroids `[K, d]`, cluster sizes under the final centroids `[K]` (float).
    Empty clusters keep their previous centroid.
    """
    n = samples.shape[0]
    if n >= num_clusters:
        start = torch.randperm(n, device=samples.device)[:num_clusters]
    else:  # fewer samples than codes: some codes start on the same sample
        start = torch.randint(0, n, (num_clusters,), device=samples.device)
    centroids = samples[start].clone()
    for _ in range(iters):
        assign = nearest_codes(samples, centroids, cosine)
        bins = torch.bincount(assign, minlength=num_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assign, samples)
        means = sums / bins.clamp(min=1)[:, None].to(sums.dtype)
        if cosine:
            means = F.normalize(means, dim=1)
        centroids = torch.where(bins[:, None] > 0, means, centroids)
    bins = torch.bincount(nearest_codes(samples, centroids, cosine), minlength=num_clusters)
    return centroids, bins.to(samples.dtype)
