"""A prior over a codec's codes: a small causal transformer over frames, the levels of a frame coarse to fine.

The codes ``[B, n_q, F]`` of a residual quantizer (level ``l`` in ``0 .. K_l - 1``) are modelled as

    p(codes) = prod_t prod_l p(c[t, l] | frames < t, c[t, < l])

The frame is the transformer's step: the input of step ``t`` is the sum of the level embeddings of frame ``t - 1``
(a learned start vector at ``t = 0``), and its output ``h_t`` sums up the frames before ``t``. The levels of frame
``t`` are then read out one after another: ``logits_l = head_l(h_t + sum_{j<l} E_j[c[t, j]])``, each head a
pre-norm residual MLP and a linear layer. Positions enter through ALiBi (a per-head penalty linear in the distance,
no position table), so a stream of any length runs through a sliding window of ``context`` frames with a KV cache
and gives the same numbers as the full forward.

A prior may be asked about the first ``n <= n_q`` levels only (a file coded at a lower bitrate): the inputs then sum
the present levels and a learned offset per ``n`` tells the model how many there are.

Code embeddings (``embedding``): ``learned`` tables; ``som_grid``, fixed Fourier features of each code's place on
its level's 2-D grid through a learned linear map, plus a learned residual table that starts at zero (so codes that
are neighbours on a SOM start with neighbouring embeddings); ``codebook``, the level's frozen codebook ``[K, d]``
(standardised) through a learned linear map, plus the same residual table.

Registered as ``PRIORS["transformer"]``. Imports nothing outside the model layer.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor, nn

from lib.model.registries import PRIORS

__all__ = ["EMBEDDINGS", "PriorConfig", "PriorState", "TransformerPrior", "prior_for_quantizer",
           "sample_continuation"]

EMBEDDINGS = ("learned", "som_grid", "codebook")


@dataclass
class PriorConfig:
    """Settings of a :class:`TransformerPrior` (plain data: stored in the prior's checkpoint)."""

    alphabet: tuple[int, ...]  # K_l of every level
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    context: int = 256  # frames each step attends to (itself included)
    mlp_ratio: int = 4
    level_mlp: bool = True  # a residual MLP in each level head (else a norm and a linear layer)
    embedding: str = "learned"
    grid_shapes: tuple[tuple[int, int], ...] = ()  # som_grid: (rows, cols) of each level's grid
    grid_frequencies: int = 4  # som_grid: Fourier frequencies per grid axis
    code_dim: int = 0  # codebook: the dimension d of each level's codebook
    dropout: float = 0.0

    def __post_init__(self):
        self.alphabet = tuple(int(k) for k in self.alphabet)
        self.grid_shapes = tuple((int(r), int(c)) for r, c in self.grid_shapes)
        if not self.alphabet or min(self.alphabet) < 1:
            raise ValueError(f"prior: alphabet must list at least one size >= 1, got {self.alphabet}")
        if min(self.d_model, self.n_layers, self.n_heads, self.context, self.mlp_ratio) < 1:
            raise ValueError("prior: d_model, n_layers, n_heads, context and mlp_ratio must be >= 1")
        if self.d_model % self.n_heads:
            raise ValueError(f"prior: d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"prior: embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if self.embedding == "som_grid" and [r * c for r, c in self.grid_shapes] != list(self.alphabet):
            raise ValueError(f"prior: som_grid needs one grid per level whose cells match the alphabet "
                             f"{self.alphabet}, got {self.grid_shapes}")
        if self.embedding == "codebook" and self.code_dim < 1:
            raise ValueError("prior: the codebook embedding needs code_dim >= 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["alphabet"], d["grid_shapes"] = list(self.alphabet), [list(s) for s in self.grid_shapes]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"prior: unknown settings {unknown}; valid: {sorted(names)}")
        return cls(**d)


@dataclass
class PriorState:
    """The incremental path's state: per layer the cached keys and values ``[B, H, n, d_head]`` of the last
    ``n <= context`` steps, the number of steps taken and the number of levels coded."""

    keys: list[Tensor]
    values: list[Tensor]
    n_levels: int
    t: int = 0
    batch: int = 1


# ---------------------------------------------------------------------------------------------- embeddings

def grid_features(rows: int, cols: int, frequencies: int) -> Tensor:
    """Fixed features ``[rows * cols, 2 + 4 * frequencies]`` of code ``k`` at (k // cols, k % cols): both
    coordinates scaled to [0, 1] and their sines and cosines at ``pi * 1 .. frequencies``."""
    k = torch.arange(rows * cols)
    pos = torch.stack([(k // cols) / max(rows - 1, 1), (k % cols) / max(cols - 1, 1)], dim=1).double()
    waves = [fn(math.pi * f * pos) for f in range(1, frequencies + 1) for fn in (torch.sin, torch.cos)]
    return torch.cat([pos, *waves], dim=1).float()


class LevelEmbedding(nn.Module):
    """Codes ``[...]`` of one level -> vectors ``[..., d]`` (see the module docstring for the kinds)."""

    def __init__(self, k: int, d: int, kind: str, features: Tensor | None = None, persistent: bool = False):
        super().__init__()
        self.kind = kind
        self.table = nn.Embedding(k, d)  # learned: the embedding; else a residual on the fixed features' map
        if kind != "learned":
            self.register_buffer("features", features, persistent=persistent)
            self.proj = nn.Linear(features.shape[1], d)

    def forward(self, codes: Tensor) -> Tensor:
        if self.kind == "learned":
            return self.table(codes)
        return self.proj(self.features[codes]) + self.table(codes)


def _standardised(codebook: Tensor) -> Tensor:
    """``[K, d]`` centred and scaled to unit RMS: the learned map starts at one scale whatever the codec's latents."""
    c = codebook.detach().float()
    c = c - c.mean(dim=0)
    return c / c.pow(2).mean().sqrt().clamp(min=1e-8)


# ---------------------------------------------------------------------------------------------- transformer

def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi's per-head slopes ``2^(-8 (h + 1) / H)`` ``[H]``: head ``h`` penalises a key ``s`` steps back by
    ``slope_h * s``."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / n_heads) for h in range(n_heads)])


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention with ALiBi, then an MLP."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``[B, T, d]`` -> q, k, v ``[B, H, T, d_head]``."""
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        return tuple(t.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))

    def _finish(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1])) + bias
        y = self.drop(att.softmax(dim=-1)) @ v  # [B, H, Tq, d_head]
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(x.shape)))
        return x + self.drop(self.mlp(self.ln2(x)))

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """``x [B, T, d]``, ``bias [H, T, T]`` (ALiBi and the causal window) -> ``[B, T, d]``."""
        q, k, v = self._heads(x)
        return self._finish(x, q, k, v, bias)

    def step(self, x: Tensor, keys: Tensor, values: Tensor, slopes: Tensor,
             context: int) -> tuple[Tensor, Tensor, Tensor]:
        """One step ``x [B, 1, d]`` against the cache ``[B, H, n, d_head]``; returns (x, keys, values) with the
        new step's key and value appended and the cache cut to its last ``context`` steps."""
        q, k, v = self._heads(x)
        keys, values = torch.cat([keys, k], dim=2)[:, :, -context:], torch.cat([values, v], dim=2)[:, :, -context:]
        back = torch.arange(keys.shape[2] - 1, -1, -1, device=x.device, dtype=x.dtype)  # steps back, 0 = itself
        return self._finish(x, q, keys, values, -(slopes[:, None, None] * back)), keys, values


class LevelHead(nn.Module):
    """``u [..., d]`` -> logits ``[..., K]``: ``out(norm(u + mlp(norm(u))))`` (no MLP: ``out(norm(u))``)."""

    def __init__(self, d: int, k: int, mlp: bool):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)) if mlp else None
        self.norm, self.out = nn.LayerNorm(d), nn.Linear(d, k)

    def forward(self, u: Tensor) -> Tensor:
        if self.mlp is not None:
            u = u + self.mlp(u)
        return self.out(self.norm(u))


@PRIORS.register("transformer")
class TransformerPrior(nn.Module):
    """The prior over codes (see the module docstring). ``codebooks`` (``[K_l, code_dim]`` per level) feed the
    ``codebook`` embedding; a prior about to load a state dict needs none (the codebooks are buffers in it)."""

    def __init__(self, config: PriorConfig, codebooks: list[Tensor] | None = None):
        super().__init__()
        c = self.config = config
        d, L = c.d_model, len(c.alphabet)
        self.alphabet = c.alphabet
        self.embeddings = nn.ModuleList()
        for l, k in enumerate(c.alphabet):
            if c.embedding == "learned":
                self.embeddings.append(LevelEmbedding(k, d, "learned"))
            elif c.embedding == "som_grid":
                self.embeddings.append(LevelEmbedding(k, d, "som_grid", grid_features(*c.grid_shapes[l],
                                                                                       c.grid_frequencies)))
            else:
                book = _standardised(codebooks[l]) if codebooks is not None else torch.zeros(k, c.code_dim)
                if book.shape != (k, c.code_dim):
                    raise ValueError(f"prior: level {l} codebook is {tuple(book.shape)}, expected {(k, c.code_dim)}")
                self.embeddings.append(LevelEmbedding(k, d, "codebook", book, persistent=True))
        self.start = nn.Parameter(torch.zeros(d))
        self.depth = nn.Embedding(L, d)  # which prefix of the levels is coded
        self.blocks = nn.ModuleList(Block(d, c.n_heads, c.mlp_ratio, c.dropout) for _ in range(c.n_layers))
        self.heads = nn.ModuleList(LevelHead(d, k, c.level_mlp) for k in c.alphabet)
        self.register_buffer("slopes", alibi_slopes(c.n_heads), persistent=False)
        self.apply(self._init)
        for e in self.embeddings:
            if e.kind != "learned":
                nn.init.zeros_(e.table.weight)  # the residual starts at zero: the fixed features decide at first

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, config: PriorConfig | dict, codebooks: list[Tensor] | None = None) -> "TransformerPrior":
        """Build from a :class:`PriorConfig` or its ``to_dict()``."""
        return cls(config if isinstance(config, PriorConfig) else PriorConfig.from_dict(config), codebooks)

    @property
    def n_levels(self) -> int:
        return len(self.alphabet)

    # ------------------------------------------------------------------ shared pieces

    def _check(self, codes: Tensor) -> int:
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_levels:
            raise ValueError(f"prior: codes must be [B, n <= {self.n_levels}, F], got {tuple(codes.shape)}")
        return codes.shape[1]

    def frame_inputs(self, frames: Tensor, n_levels: int) -> Tensor:
        """Step inputs ``[B, F, d]`` from the frames before each step ``[B, n, F]``: the sum of the level embeddings
        of a frame, or the start vector where its level 0 is -1 (no frame before), plus the offset of ``n``."""
        x = self.embeddings[0](frames[:, 0].clamp(min=0))
        for l in range(1, frames.shape[1]):
            x = x + self.embeddings[l](frames[:, l].clamp(min=0))
        x = torch.where((frames[:, 0] < 0)[..., None], self.start.to(x.dtype), x)
        return x + self.depth.weight[n_levels - 1]

    def _bias(self, T: int, device, dtype) -> Tensor:
        """``[H, T, T]``: ``-slope_h * (i - j)`` for keys ``0 <= i - j < context``, ``-inf`` elsewhere."""
        i = torch.arange(T, device=device)
        back = (i[:, None] - i[None, :]).to(dtype)
        inside = (back >= 0) & (back < self.config.context)
        return torch.where(inside, -(self.slopes.to(dtype)[:, None, None] * back), float("-inf"))

    # ------------------------------------------------------------------ teacher forcing

    def context_vectors(self, codes: Tensor, prev: Tensor | None = None) -> Tensor:
        """``h [B, F, d]``: for each frame ``t`` of ``codes [B, n, F]``, what the frames before it say. ``prev
        [B, n]``: the frame before ``codes[..., 0]`` (None, or -1 in a row: the stream starts there)."""
        n = self._check(codes)
        B = codes.shape[0]
        first = prev[:, :, None] if prev is not None else codes.new_full((B, n, 1), -1)
        x = self.frame_inputs(torch.cat([first, codes[:, :, :-1]], dim=2), n)
        bias = self._bias(codes.shape[2], x.device, x.dtype)
        for block in self.blocks:
            x = block(x, bias)
        return x

    def forward(self, codes: Tensor, prev: Tensor | None = None) -> list[Tensor]:
        """Teacher forcing: logits ``[B, F, K_l]`` of every level ``l < n`` of ``codes [B, n, F]`` (int64; -1 in
        a frame of padding is read as code 0, mask its targets), each given the frames before and the coarser
        levels of its own frame."""
        u = self.context_vectors(codes, prev)
        logits = []
        for l in range(codes.shape[1]):
            logits.append(self.heads[l](u))
            if l + 1 < codes.shape[1]:
                u = u + self.embeddings[l](codes[:, l].clamp(min=0))
        return logits

    def log_prob(self, codes: Tensor, prev: Tensor | None = None) -> Tensor:
        """Natural log-probability of every code ``[B, n, F]`` of ``codes [B, n, F]``."""
        return torch.stack([lg.log_softmax(-1).gather(-1, codes[:, l, :, None].clamp(min=0))[..., 0]
                            for l, lg in enumerate(self(codes, prev))], dim=1)

    def bits(self, codes: Tensor, prev: Tensor | None = None) -> Tensor:
        """Bits of every code ``[B, n, F]`` (``-log2 p``): what ideal entropy coding spends on it."""
        return -self.log_prob(codes, prev) / math.log(2.0)

    # ------------------------------------------------------------------ incremental (coding, generation)

    def init_state(self, batch: int = 1, n_levels: int | None = None) -> PriorState:
        """An empty state for ``batch`` streams of ``n_levels`` levels (default all)."""
        n = self.n_levels if n_levels is None else int(n_levels)
        if not 1 <= n <= self.n_levels:
            raise ValueError(f"prior: n_levels must be in [1, {self.n_levels}], got {n}")
        h = self.config.n_heads
        empty = self.start.new_zeros(batch, h, 0, self.config.d_model // h)
        return PriorState([empty] * len(self.blocks), [empty] * len(self.blocks), n, 0, batch)

    def step(self, state: PriorState, previous_frame: Tensor | None) -> tuple[PriorState, Tensor]:
        """Advance one frame: ``previous_frame [B, n]`` holds the codes of frame ``t - 1`` (None at ``t = 0``).
        Returns the new state (``state`` is not changed) and ``h_t [B, d]``."""
        B, n = state.batch, state.n_levels
        if previous_frame is None:
            frame = torch.full((B, n, 1), -1, dtype=torch.long, device=self.start.device)
        else:
            if tuple(previous_frame.shape) != (B, n):
                raise ValueError(f"prior: previous_frame must be [{B}, {n}], got {tuple(previous_frame.shape)}")
            frame = previous_frame.long()[:, :, None]
        x = self.frame_inputs(frame, n)
        keys, values = [], []
        for block, k, v in zip(self.blocks, state.keys, state.values):
            x, k, v = block.step(x, k, v, self.slopes.to(x.dtype), self.config.context)
            keys.append(k)
            values.append(v)
        return PriorState(keys, values, n, state.t + 1, B), x[:, 0]

    def level_logits(self, h: Tensor, known: Tensor, level: int) -> Tensor:
        """Logits ``[B, K_level]`` of level ``level`` of a frame from its context ``h [B, d]`` and its coarser codes
        ``known [B, >= level]`` (the first ``level`` columns are read)."""
        u = h
        for j in range(level):
            u = u + self.embeddings[j](known[:, j].long())
        return self.heads[level](u)


def prior_for_quantizer(quantizer, embedding: str = "learned", **settings) -> TransformerPrior:
    """A fresh prior for the levels of a codec's quantizer: its alphabet, and for ``som_grid`` each level's grid
    (``lib.model.som.layout_grid``: the SOM's, or the near-square index layout of a plain codebook), for
    ``codebook`` each level's codebook ``[K, d]`` (FSQ: its grid points, the natural choice there; its 2-D layout
    is the index order)."""
    from lib.model.som import layout_grid

    levels = list(quantizer.levels)
    alphabet = [int(k) for k in getattr(quantizer, "alphabet_sizes", [lv.codebook_size for lv in levels])]
    books = None
    if embedding == "som_grid":
        if not all(hasattr(lv, "som") for lv in levels):
            raise ValueError("prior: the som_grid embedding needs levels laid out on a grid (see layout_grid)")
        settings["grid_shapes"] = [layout_grid(lv).shape for lv in levels]
    elif embedding == "codebook":
        books = [lv.embed.detach().cpu() for lv in levels]
        settings["code_dim"] = int(books[0].shape[1])
    return TransformerPrior(PriorConfig(tuple(alphabet), embedding=embedding, **settings), books)


@torch.no_grad()
def sample_continuation(prior: TransformerPrior, prompt_codes: Tensor, n_frames: int, temperature: float = 1.0,
                        top_k: int | None = None, seed: int = 0) -> Tensor:
    """Continue ``prompt_codes [n, F0]`` (``F0`` may be 0) by ``n_frames`` frames drawn from the prior, level by
    level through the incremental path; returns ``[n, F0 + n_frames]``. ``temperature`` 0 takes the most likely
    code; ``top_k`` keeps the k most likely codes; ``seed`` fixes the draws."""
    if temperature < 0 or (top_k is not None and top_k < 1):
        raise ValueError(f"temperature must be >= 0 and top_k >= 1, got {temperature}, {top_k}")
    device = prior.start.device
    codes = torch.as_tensor(prompt_codes, dtype=torch.long, device=device)
    if codes.dim() != 2 or not 1 <= codes.shape[0] <= prior.n_levels:
        raise ValueError(f"prompt_codes must be [n <= {prior.n_levels}, F0], got {tuple(codes.shape)}")
    gen = torch.Generator(device=device).manual_seed(seed)
    state = prior.init_state(1, codes.shape[0])
    frames = list(codes.T)
    for t in range(codes.shape[1] + n_frames):
        state, h = prior.step(state, frames[t - 1][None] if t else None)
        if t < codes.shape[1]:
            continue
        frame = torch.zeros(1, codes.shape[0], dtype=torch.long, device=device)
        for l in range(codes.shape[0]):
            logits = prior.level_logits(h, frame, l)[0].float()
            if temperature == 0:
                frame[0, l] = logits.argmax()
                continue
            if top_k is not None and top_k < logits.numel():
                logits = logits.masked_fill(logits < logits.topk(top_k).values[-1], float("-inf"))
            frame[0, l] = torch.multinomial((logits / temperature).softmax(-1), 1, generator=gen)[0]
        frames.append(frame[0])
    return torch.stack(frames, dim=1)
