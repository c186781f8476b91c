"""Vector quantisers for codec latents: EMA VQ (optionally SOM-ordered) and residual VQ.

Layout: latents are channel-first `[B, D, T]`; codes are `[B, T]` (one level) or
`[B, n_q, T]` (residual). Codebooks are EMA-updated buffers, not parameters:

    counts_k  = #vectors assigned to code k in the batch         (SOM: blurred over the grid)
    sums_k    = sum of those vectors
    N_k      <- decay * N_k + (1 - decay) * counts_k              (buffer `cluster_size`)
    S_k      <- decay * S_k + (1 - decay) * sums_k                (buffer `embed_sum`)
    e_k       = S_k / ((N_k + eps) / (sum N + K eps) * sum N)     (Laplace-smoothed counts)

Under torch.distributed the batch counts and sums are summed over ranks before the
EMA step, and k-means init / dead-code replacements come from rank 0, so every
replica keeps the same codebook. Without an initialised process group this is a no-op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.model.codebook import (LevelStack, Quantizer, RVQOutput, VQOutput, all_reduce_sum,  # noqa: F401
                                beam_search_codes, broadcast_from_rank0, check_latents, codebook_stats, kmeans,
                                nearest_codes, rank, rotation_estimator)
from lib.model.registries import QUANTIZERS
from lib.model.som import SOMGrid


# ----------------------------------------------------------------------------- one codebook


class VectorQuantizer(nn.Module):
    """Vector quantiser with an EMA codebook, k-means init, dead-code replacement and optional SOM.

    Args:
        dim: channels D of the input `[B, D, T]`.
        codebook_size: number of codes K.
        codebook_dim: code dimension d; if it differs from `dim`, learned 1x1 in/out projections
            map to and from the low-dimensional code space (factorised codes, DAC-style).
        decay: EMA decay of the cluster counts and sums.
        epsilon: Laplace smoothing of the cluster counts.
        kmeans_init: initialise the codebook by k-means on the first training batch;
            otherwise codes start as N(0, 1) draws.
        kmeans_iters: Lloyd iterations of that k-means.
        dead_code_threshold: codes whose EMA cluster size falls below this are replaced by random
            vectors of the current batch (0 disables replacement).
        cosine: l2-normalise inputs (in code space) and codes; nearest = largest cosine.
        normalized_search: choose the code of largest cosine between the code-space input and the code, but keep
            the codes' magnitudes as their values (DAC's l2-normalised lookup); `cosine` normalises the values too.
        code_gradient: straight-through in code space, q = out_proj(z + sg(e - z)), so that the in-projection and
            the encoder learn from the reconstruction through each level (DAC's factorised codes; needs
            `codebook_dim < dim`). Off: the projections see the reconstruction only through the out-projection and
            the caller applies one identity straight-through estimator to the sum of the levels.
        som: a `lib.model.som.SOMGrid`; the one-hot assignments are blurred by `som.kernel(sigma)` before
            the EMA step (batch Kohonen update). At sigma 0 this is plain EMA VQ.

    Buffers: `embed [K, d]`, `cluster_size [K]`, `embed_sum [K, d]`, `initted`, `step` (training
    updates so far; drives the SOM annealing).
    """

    def __init__(
        self, dim: int, codebook_size: int, codebook_dim: int | None = None, decay: float = 0.99,
        epsilon: float = 1e-5, kmeans_init: bool = True, kmeans_iters: int = 10, dead_code_threshold: float = 2.0,
        cosine: bool = False, som: SOMGrid | None = None, kmeans_frames_per_code: float = 0.0,
        normalized_search: bool = False, code_gradient: bool = False,
    ) -> None:
        super().__init__()
        codebook_dim = dim if codebook_dim is None else codebook_dim
        if code_gradient and codebook_dim == dim:
            raise ValueError(f"code_gradient needs factorised codes (codebook_dim < dim={dim}), got {codebook_dim}")
        if dim < 1 or codebook_size < 1 or codebook_dim < 1:
            raise ValueError(
                f"dim, codebook_size and codebook_dim must be >= 1, got {dim}, {codebook_size}, {codebook_dim}"
            )
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        if kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be >= 0, got {kmeans_iters}")
        if kmeans_frames_per_code < 0:
            raise ValueError(f"kmeans_frames_per_code must be >= 0, got {kmeans_frames_per_code}")
        # k-means on fewer frames than codes memorises the batch: pool training frames (in memory only).
        self.kmeans_frames_per_code = kmeans_frames_per_code
        self._pool: list[Tensor] = []
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        if som is not None and som.codebook_size != codebook_size:
            raise ValueError(f"som has {som.codebook_size} cells but codebook_size is {codebook_size}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.cosine = cosine
        self.normalized_search = normalized_search
        self.code_gradient = code_gradient
        self.som = som
        self.projected = codebook_dim != dim
        self.in_proj = nn.Conv1d(dim, codebook_dim, 1) if self.projected else nn.Identity()
        self.out_proj = nn.Conv1d(codebook_dim, dim, 1) if self.projected else nn.Identity()

        embed = torch.randn(codebook_size, codebook_dim)
        if cosine:
            embed = F.normalize(embed, dim=1)
        self.register_buffer("embed", embed)
        # One pseudo-vector per code at its start position: an unused code keeps its place
        # under the EMA instead of collapsing to the origin.
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        self.register_buffer("step", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"decay={self.decay}, cosine={self.cosine}, normalized_search={self.normalized_search}, "
            f"code_gradient={self.code_gradient}, dead_code_threshold={self.dead_code_threshold}, "
            f"som={self.som is not None}"
        )

    # --- code space

    def to_code_space(self, x: Tensor) -> Tensor:
        """`[B, D, T] -> [B, d, T]`: in-projection, then l2 normalisation if cosine."""
        z = self.in_proj(x)
        return F.normalize(z, dim=1) if self.cosine else z

    def _flat(self, z: Tensor) -> Tensor:
        """`[B, d, T] -> [B*T, d]` float32, detached (codebook search and EMA never need gradients)."""
        return z.detach().float().transpose(1, 2).reshape(-1, self.codebook_dim)

    def _search(self, z_flat: Tensor) -> Tensor:
        """Nearest code `[N]` of each code-space vector `[N, d]`."""
        if self.normalized_search:
            return nearest_codes(F.normalize(z_flat, dim=1), F.normalize(self.embed, dim=1), cosine=True)
        return nearest_codes(z_flat, self.embed, self.cosine)

    def _lookup(self, codes: Tensor) -> Tensor:
        """`[B, T]` valid codes -> code vectors `[B, d, T]` (a copy, safe from later EMA writes)."""
        return self.embed[codes].transpose(1, 2)

    # --- public API

    def quantize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest codes, no EMA update.

        Args: x `[B, D, T]`. Returns: q `[B, D, T]` (no straight-through), codes `[B, T]`.
        """
        check_latents(x, self.dim)
        with torch.no_grad():
            codes = self._search(self._flat(self.to_code_space(x)))
        codes = codes.view(x.shape[0], x.shape[2])
        return self.dequantize(codes).to(x.dtype), codes

    def dequantize(self, codes: Tensor) -> Tensor:
        """`[B, T]` codes -> `[B, D, T]`; entries of -1 (a level switched off) give zero vectors."""
        if codes.dim() != 2:
            raise ValueError(f"codes must be [B, T], got {tuple(codes.shape)}")
        if codes.numel() and int(codes.max()) >= self.codebook_size:
            raise ValueError(f"codes must be < codebook_size={self.codebook_size}, got max {int(codes.max())}")
        valid = codes >= 0
        q = self.out_proj(self._lookup(codes.clamp(min=0)))
        return q * valid[:, None, :].to(q.dtype)

    def forward(self, x: Tensor) -> VQOutput:
        """Quantise `[B, D, T]`; in training mode also update the codebook (EMA, no gradients).

        Returns VQOutput(quantized `[B, D, T]` straight-through, codes `[B, T]`,
        commit_loss = mse(code-space input, sg(code)), stats).
        """
        check_latents(x, self.dim)
        q, codes, commit_loss, stats = self.quantize_level(x, None)
        # Straight-through x + sg(q - x), written so that the value is exactly q and the
        # out-projection (if any) still receives gradients through q.
        quantized = q if self.code_gradient else q + (x - x.detach())
        return VQOutput(quantized, codes, commit_loss, stats)

    def quantize_level(self, x: Tensor, active: Tensor | None,
                       codes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, dict]:
        """One quantisation step shared by `forward` and `ResidualVQ` (EMA update in training mode).

        Args:
            x: `[B, D, T]`; the search uses it detached, the commitment loss keeps its gradient.
            active: `[B]` bool, the items this level serves (quantizer dropout), or None for all.
                Inactive items get codes but neither update the codebook nor enter loss/stats.
            codes: `[B, T]` chosen by the caller (the residual VQ's beam search) instead of the nearest codes.
        Returns: q `[B, D, T]` (code vectors; gradient only to the out-projection, or with `code_gradient` also
            straight through the code space to the in-projection and x), codes `[B, T]`,
            commit loss (scalar, over active items; 0 if none), stats dict (over active items).
        """
        batch, _, length = x.shape
        z = self.to_code_space(x)  # [B, d, T]
        z_flat = self._flat(z)  # [B*T, d]
        if self.training and not bool(self.initted) and z_flat.shape[0] > 0:
            pooled = self._pool_for_init(z_flat)
            if pooled is None:  # still pooling frames: this level contributes nothing yet
                return self._off(x)
            self._init_codebook(pooled)
        codes = (self._search(z_flat) if codes is None else codes.reshape(-1)).view(batch, length)
        code_vectors = self._lookup(codes)  # [B, d, T], the codebook before this step's update
        if self.code_gradient:  # value out_proj(e), gradient through z to the in-projection and the encoder
            q = self.out_proj(z + (code_vectors.to(z.dtype) - z).detach()).to(x.dtype)
        else:
            q = self.out_proj(code_vectors).to(x.dtype)

        per_frame = (z.float() - code_vectors).pow(2).mean(dim=1)  # [B, T]
        quant_err = (x.detach().float() - q.detach().float()).pow(2).mean(dim=1)  # [B, T]
        if active is not None:
            per_frame, quant_err, used_codes = per_frame[active], quant_err[active], codes[active]
        else:
            used_codes = codes
        commit_loss = per_frame.mean() if per_frame.numel() else per_frame.sum()

        vector_mask = None if active is None else active[:, None].expand(batch, length).reshape(-1)
        if self.training:
            n_dead = self._ema_update(z_flat, codes.reshape(-1), vector_mask)
            self.step += 1
        else:
            n_dead = int((self.cluster_size < self.dead_code_threshold).sum())
        stats = self._batch_stats(used_codes.reshape(-1), quant_err, n_dead)
        return q, codes, commit_loss, stats

    @property
    def ready(self) -> bool:
        """True once the codebook is initialised (at once without k-means init)."""
        return bool(self.initted)

    def _pool_for_init(self, z_flat: Tensor) -> Tensor | None:
        """Add frames ``[N, d]`` to the k-means pool; all pooled frames once there are enough, else None."""
        if not bool(torch.isfinite(z_flat).all()):  # a step the trainer will skip: keep NaN out of k-means
            return None
        self._pool.append(z_flat)
        pooled = torch.cat(self._pool)
        if pooled.shape[0] < self.kmeans_frames_per_code * self.codebook_size:
            return None
        self._pool = []
        return pooled

    def _off(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, dict]:
        """What a level still pooling returns: zero vectors, codes -1 (off), no loss, NaN stats."""
        codes = torch.full((x.shape[0], x.shape[2]), -1, dtype=torch.long, device=x.device)
        stats = self._batch_stats(codes[:0].reshape(-1), x.new_zeros(0), 0)
        return torch.zeros_like(x), codes, x.new_zeros(()), stats

    # --- statistics

    def _batch_stats(self, codes: Tensor, quant_err: Tensor, n_dead: int) -> dict:
        """usage (fraction of codes used in the batch), perplexity (:func:`codebook_stats`), dead_codes (EMA
        cluster size under the threshold), quant_error (MSE)."""
        stats = codebook_stats(codes, self.codebook_size)
        error = quant_err.mean().item() if quant_err.numel() else float("nan")
        return {"usage": stats["usage"], "perplexity": stats["perplexity"], "dead_codes": n_dead, "quant_error": error}

    # --- codebook learning (no gradients)

    @torch.no_grad()
    def _init_codebook(self, z_flat: Tensor) -> None:
        """k-means on rank 0's first training batch `[N, d]`, broadcast to all ranks."""
        if rank() == 0:
            centroids, bins = kmeans(z_flat, self.codebook_size, self.kmeans_iters, self.cosine)
        else:
            centroids, bins = torch.empty_like(self.embed), torch.empty_like(self.cluster_size)
        broadcast_from_rank0(centroids)
        broadcast_from_rank0(bins)
        # An empty cluster keeps one pseudo-count so the EMA does not drag its code to the origin.
        bins = bins.clamp(min=min(1.0, self.dead_code_threshold * 0.5))
        self.embed.copy_(centroids)
        self.cluster_size.copy_(bins)
        self.embed_sum.copy_(centroids * bins[:, None])
        self.initted.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z_flat: Tensor, codes: Tensor, vector_mask: Tensor | None) -> int:
        """One EMA step from the batch vectors `[N, d]` and their codes `[N]`.

        Only vectors where `vector_mask` is True count. Returns the number of dead codes (EMA
        cluster size below threshold) found after the step; those are then replaced.
        """
        used_z = z_flat if vector_mask is None else z_flat[vector_mask]
        used_codes = codes if vector_mask is None else codes[vector_mask]
        size, dim = self.codebook_size, self.codebook_dim
        # counts and sums in one tensor: a single all-reduce
        stats = torch.zeros(size, dim + 1, device=z_flat.device, dtype=torch.float32)
        stats[:, 0] = torch.bincount(used_codes, minlength=size).float()
        stats[:, 1:].index_add_(0, used_codes, used_z)
        all_reduce_sum(stats)
        if float(stats[:, 0].sum()) == 0:  # no rank used this level in this batch: leave it as is
            return int((self.cluster_size < self.dead_code_threshold).sum())
        if self.som is not None:
            sigma = self.som.sigma_at(int(self.step))
            if sigma > 0:  # at sigma 0 the kernel is the identity: skip it so the result is exactly EMA VQ
                stats = self.som.spread(stats, sigma)  # = som.kernel(sigma).t() @ stats, computed per grid axis
        counts, sums = stats[:, 0], stats[:, 1:]

        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + size * self.epsilon) * total
        embed = self.embed_sum / smoothed[:, None]
        self.embed.copy_(F.normalize(embed, dim=1) if self.cosine else embed)

        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead > 0 and z_flat.shape[0] > 0:
            self._replace_codes(dead, n_dead, z_flat)
        return n_dead

    @torch.no_grad()
    def _replace_codes(self, dead: Tensor, n_dead: int, z_flat: Tensor) -> None:
        """Move dead codes onto random vectors of rank 0's batch `[N, d]`, broadcast to all ranks.

        A replaced code restarts with `dead_code_threshold` pseudo-counts at its new position.
        """
        if rank() == 0:
            n = z_flat.shape[0]
            if n >= n_dead:
                pick = torch.randperm(n, device=z_flat.device)[:n_dead]
            else:
                pick = torch.randint(0, n, (n_dead,), device=z_flat.device)
            new_codes = z_flat[pick].clone()
        else:
            new_codes = torch.empty(n_dead, self.codebook_dim, device=z_flat.device, dtype=torch.float32)
        broadcast_from_rank0(new_codes)
        self.embed[dead] = new_codes
        self.cluster_size[dead] = self.dead_code_threshold
        self.embed_sum[dead] = new_codes * self.dead_code_threshold


# ----------------------------------------------------------------------------- residual VQ


@QUANTIZERS.register("rvq")
class ResidualVQ(LevelStack):
    """Residual vector quantiser: level i quantises what levels < i left over.

    Gradients: each level searches a detached residual; level i's commitment loss compares
    x - sg(sum of previous q) with sg(q_i) (in its code space), so the encoder gets gradient from
    every level; the output is one straight-through estimator on the sum of all levels.

    Args:
        dim: channels D of `[B, D, T]`.
        n_q: number of levels.
        codebook_size: codes per level.
        quantizer_dropout: in training (with n_q not given), each batch item draws its own number of
            levels uniformly in [1, n_q] (DAC-style); a float in [0, 1] applies that to this fraction
            of the items only (True = 1.0). Levels above an item's draw contribute nothing for it and
            do not learn from it.
        beam_width: 1 = greedy residual search; more = :func:`lib.model.codebook.beam_search_codes` keeps that many
            partial sums per frame and returns the codes of the nearest full sum, in training (the codes the EMA
            and the decoder see) and in encoding. Needs Euclidean codes in the latent space (no codebook_dim,
            cosine or normalized_search). The codes of the first n levels are then the best n-level sum only when
            encoded with n_q = n. `beam_in_training=False` keeps training greedy (the beam then serves eval and encode).
        rotation_trick: the gradient reaches x through the rotation and scaling that take x to the sum of the levels
            (:func:`lib.model.codebook.rotation_estimator`) instead of straight through.
        **vq_kwargs: passed to every `VectorQuantizer` (codebook_dim, decay, cosine, som, ...).
    """

    def __init__(
        self, dim: int, n_q: int, codebook_size: int, quantizer_dropout: bool | float = True, beam_width: int = 1,
        beam_in_training: bool = True, rotation_trick: bool = False, **vq_kwargs
    ) -> None:
        super().__init__(dim, n_q, codebook_size, quantizer_dropout)
        if rotation_trick and vq_kwargs.get("code_gradient"):
            raise ValueError("rotation_trick replaces the straight-through estimator on the sum; code_gradient "
                             "gives every level its own, so the two do not combine")
        self.rotation_trick = rotation_trick
        self.levels = nn.ModuleList([VectorQuantizer(dim, codebook_size, **vq_kwargs) for _ in range(n_q)])
        self.beam_width, self.beam_in_training = beam_width, beam_in_training

    @classmethod
    def from_config(cls, cfg) -> "ResidualVQ":
        """``model.quantizer.kind: rvq``: the residual VQ of ``cfg.model.quantizer`` (SOM codebooks when ``som``)."""
        m, q, t = cfg.model, cfg.model.quantizer, cfg.train
        som = None
        if q.som:
            # The codebooks update only after the quantizer warm-up: anneal within the first half of the steps left
            # after it, so that the map ends its run as plain EMA codebooks refining at the final width.
            anneal = min(q.som_anneal_steps, max(1, (t.steps - t.quantizer_warmup_steps) // 2))
            som = SOMGrid(q.codebook_size, shape=tuple(q.som_shape) if q.som_shape else None,
                          neighbourhood=q.som_neighbourhood, sigma_start=q.som_sigma_start,
                          sigma_end=q.som_sigma_end, anneal_steps=anneal, schedule=q.som_schedule)
        return cls(m.dim, q.n_q, q.codebook_size, quantizer_dropout=q.quantizer_dropout,
                   codebook_dim=q.codebook_dim, decay=q.decay, kmeans_init=q.kmeans_init,
                   kmeans_iters=q.kmeans_iters, dead_code_threshold=q.dead_code_threshold, cosine=q.cosine, som=som,
                   kmeans_frames_per_code=q.kmeans_frames_per_code, normalized_search=q.normalized_search,
                   code_gradient=q.code_gradient, beam_width=q.beam_width,
                   beam_in_training=q.beam_in_training, rotation_trick=q.rotation_trick)

    @property
    def beam_width(self) -> int:
        """Partial sums kept per frame by the residual search (1 = greedy); settable on a trained quantizer, since
        it changes only which codes the encoder picks."""
        return self._beam_width

    @beam_width.setter
    def beam_width(self, width: int) -> None:
        level = self.levels[0]
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"beam_width must be an integer >= 1, got {width!r}")
        if width > 1 and (level.projected or level.cosine or level.normalized_search):
            raise ValueError("beam_width > 1 needs Euclidean codes in the latent space (no codebook_dim, cosine or "
                             "normalized_search)")
        self._beam_width = width

    @property
    def ready(self) -> bool:
        """True once every level's codebook is initialised."""
        return all(level.ready for level in self.levels)

    @property
    def codebooks(self) -> Tensor:
        """All codebooks `[n_q, K, d]` (d = codebook_dim, = dim unless factorised)."""
        return torch.stack([level.embed for level in self.levels])

    def forward(self, x: Tensor, n_q: int | None = None) -> RVQOutput:
        """Quantise `[B, D, T]` with `n_q` levels (default all); EMA updates in training mode.

        Returns RVQOutput(quantized `[B, D, T]`, codes `[B, n_q, T]`, commit_loss, n_q, stats).
        With quantizer dropout (training, n_q not given) `n_q` is a LongTensor `[B]` of per-item
        levels and codes of switched-off levels are -1; otherwise `n_q` is an int.
        """
        check_latents(x, self.dim)
        use_dropout = self.training and n_q is None and self.quantizer_dropout > 0
        n_levels = self._check_n_q(n_q)
        item_n_q = self._draw_item_levels(x.shape[0], x.device) if use_dropout else None

        beam = self.beam_width > 1 and self.ready and (self.beam_in_training or not self.training)
        planned = self._beam_codes(x, n_levels) if beam else None
        quantized = torch.zeros_like(x)  # sum of the levels' q (gradient only to out-projections)
        previous = torch.zeros_like(x)  # detached sum of the q so far, for the residual search
        codes, losses, stats = [], [], []
        for i, level in enumerate(self.levels[:n_levels]):
            active = None if item_n_q is None else item_n_q > i
            residual = x - previous  # gradient reaches x: level i's commitment loss trains the encoder
            q, level_codes, loss, level_stats = level.quantize_level(
                residual, active, None if planned is None else planned[:, i])
            if not level.ready:  # pooling frames for its k-means: the next levels wait for its residuals
                codes += [level_codes] * (n_levels - i)
                stats.append(level_stats)
                break
            previous = previous + q.detach()
            if active is None:
                quantized = quantized + q
                losses.append(loss)
            else:
                quantized = quantized + q * active[:, None, None].to(q.dtype)
                level_codes = level_codes.masked_fill(~active[:, None], -1)
                if bool(active.any()):
                    losses.append(loss)
            codes.append(level_codes)
            stats.append(level_stats)

        # One estimator on the sum: value sum(q), gradient w.r.t. x the identity (straight through) or the rotation
        # taking x to the sum (with code-space gradients each level already carries its own).
        if self.rotation_trick:
            quantized = rotation_estimator(x, quantized)
        elif not self.levels[0].code_gradient:
            quantized = quantized + (x - x.detach())
        commit_loss = torch.stack(losses).mean() if losses else x.new_zeros(())
        out_n_q = item_n_q if item_n_q is not None else n_levels
        return RVQOutput(quantized, torch.stack(codes, dim=1), commit_loss, out_n_q, stats)

    @torch.no_grad()
    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor:
        """`[B, D, T] -> codes [B, n_q, T]` (no updates, no dropout)."""
        check_latents(x, self.dim)
        if self.beam_width > 1:
            return self._beam_codes(x, self._check_n_q(n_q))
        previous = torch.zeros_like(x)  # same arithmetic as forward, so the codes match exactly
        codes = []
        for level in self.levels[: self._check_n_q(n_q)]:
            q, level_codes = level.quantize(x - previous)
            previous = previous + q
            codes.append(level_codes)
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def _beam_codes(self, x: Tensor, n_levels: int) -> Tensor:
        """`[B, D, T] -> [B, n_levels, T]`: the beam search's codes for the first `n_levels` levels."""
        flat = x.detach().transpose(1, 2).reshape(-1, self.dim)  # searched in the codebooks' dtype
        codes = beam_search_codes(flat, [level.embed for level in self.levels[:n_levels]], self.beam_width)
        return codes.view(x.shape[0], x.shape[2], n_levels).transpose(1, 2)

    def decode(self, codes: Tensor) -> Tensor:
        """`codes [B, n, T]` with n <= n_q (-1 = level off for that item) -> `[B, D, T]`."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_q:
            raise ValueError(f"codes must be [B, n, T] with 1 <= n <= {self.n_q}, got {tuple(codes.shape)}")
        quantized = self.levels[0].dequantize(codes[:, 0])
        for i in range(1, codes.shape[1]):
            quantized = quantized + self.levels[i].dequantize(codes[:, i])
        return quantized
