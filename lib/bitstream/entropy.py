"""Probability models of a codec's codes, and range coding under them (the ``.vqc`` entropy-coded payload).

One model per quantizer level ``l`` over its alphabet ``{0 .. K_l - 1}``, learned from the codes of the training
split. Each level uses one *context*, chosen per level by the bits it costs on held-out codes:

* ``none``   - the unigram ``q(s) = (n(s) + 1) / (N + K)`` (add-one smoothing: every symbol stays codable);
* ``prev``   - conditioned on the same level's code in the previous frame (row ``K`` = "no previous frame");
* ``coarse`` - conditioned on the coarser level's code in the same frame (levels ``l >= 1``).

A conditional model is smoothed towards the unigram: ``p(s | c) = (n(c, s) + beta * q(s)) / (n(c) + beta)`` with
``beta`` per level (a multiple of 1/16), also chosen on held-out codes. Multiplied through by ``16 (N + K)``, every
probability becomes a ratio of integers, so the weights handed to ``constriction`` are integers held exactly in
float64: the encoder and the decoder build identical quantised models on any machine.

Range coding uses ``constriction.stream.queue`` (``perfect=False`` categorical models). Within a block the
symbols are coded level by level (all frames of level 0, then level 1, ...), so ``none``/``coarse`` levels decode
in one batched call; ``prev`` levels decode frame by frame.

The model is stored as an ``.npz`` of integer arrays (no pickle), usually ``entropy_model.npz`` beside the
checkpoint; it records the hash of the codec weights it was fitted for.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lib.atomic import atomic_path

__all__ = ["CONTEXTS", "EntropyModel", "EntropyModelError", "count_codes", "fit_entropy_model",
           "SIDECAR_NAME", "FORMAT_VERSION"]

CONTEXTS = ("none", "prev", "coarse")
SIDECAR_NAME = "entropy_model.npz"
FORMAT_VERSION = 1
BETA_SCALE = 16  # beta is stored in 1/16ths, so that weak smoothing (beta < 1) stays an integer weight
BETAS = tuple(2 ** i for i in range(19))  # smoothing strengths tried when fitting: 1/16 ... 16384
_MAX_EXACT = 2 ** 53  # float64 holds every integer below this exactly


class EntropyModelError(ValueError):
    """An entropy model file that is missing, malformed, or made for other codes."""


def _family():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


@dataclass
class EntropyModel:
    """Per-level code models. ``unigram[l]`` ``[K_l]`` and ``counts[l]`` (``[K_l + 1, K_l]`` for ``prev``,
    ``[K_{l-1}, K_l]`` for ``coarse``, ``[0, K_l]`` for ``none``) are int64 counts from the training codes."""

    alphabet: tuple[int, ...]
    context: tuple[str, ...]
    beta: tuple[int, ...]
    unigram: list[np.ndarray]
    counts: list[np.ndarray]
    weights_hash: bytes = b""
    heldout_bits: dict[str, list[float]] = field(default_factory=dict)  # per level, bits/symbol of each context

    def __post_init__(self):
        L = len(self.alphabet)
        if not (len(self.context) == len(self.beta) == len(self.unigram) == len(self.counts) == L) or L == 0:
            raise EntropyModelError("entropy model: alphabet, context, beta, unigram and counts disagree in length")
        for l, (k, ctx, u, c) in enumerate(zip(self.alphabet, self.context, self.unigram, self.counts)):
            rows = {"none": 0, "prev": k + 1, "coarse": self.alphabet[l - 1] if l else -1}[ctx]
            if ctx not in CONTEXTS or u.shape != (k,) or c.shape != (rows, k):
                raise EntropyModelError(f"entropy model: level {l} ({ctx}) has unigram {u.shape} and counts "
                                        f"{c.shape} for an alphabet of {k}")
            if (int(u.sum()) + k) * (max(int(c.max(initial=0)), 1) * BETA_SCALE + max(self.beta)) * 2 >= _MAX_EXACT:
                raise EntropyModelError(f"entropy model: level {l} counts are too large for exact weights")

    @property
    def n_levels(self) -> int:
        return len(self.alphabet)

    # ------------------------------------------------------------------ probabilities (integer weights)

    def weights(self, level: int, ctx: np.ndarray | None) -> np.ndarray:
        """Unnormalised integer weights (as float64) of level ``level``: ``[K]`` for ``none``, else ``[n, K]``
        for the context codes ``ctx`` ``[n]``."""
        u = self.unigram[level] + 1
        if self.context[level] == "none":
            return u.astype(np.float64)
        total = int(self.unigram[level].sum()) + self.alphabet[level]
        return (self.counts[level][ctx] * (total * BETA_SCALE) + self.beta[level] * u).astype(np.float64)

    def _contexts(self, level: int, codes: np.ndarray, prev: np.ndarray | None) -> np.ndarray | None:
        kind = self.context[level]
        if kind == "coarse":
            return codes[level - 1]
        if kind == "prev":
            first = self.alphabet[level] if prev is None else int(prev[level])
            return np.concatenate([[first], codes[level, :-1]]).astype(np.int64)
        return None

    def bits(self, codes: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
        """Ideal code length in bits per level (``-sum log2 p``) of ``codes`` ``[L, n]`` (before quantisation)."""
        out = np.zeros(codes.shape[0])
        for l in range(codes.shape[0]):
            w = self.weights(l, self._contexts(l, codes, prev))
            if w.ndim == 1:
                out[l] = -np.log2(w[codes[l]] / w.sum()).sum()
            else:
                out[l] = -np.log2(w[np.arange(codes.shape[1]), codes[l]] / w.sum(axis=1)).sum()
        return out

    # ------------------------------------------------------------------ range coding

    def encode_block(self, codes: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        """Range-code ``codes`` ``[L, n]`` (``L <= n_levels``) given the previous frame's codes ``prev`` ``[L]``
        (None at the start of a file). Returns the compressed ``uint32`` words."""
        import constriction

        self._check_levels(codes.shape[0])
        enc = constriction.stream.queue.RangeEncoder()
        for l in range(codes.shape[0]):
            symbols = np.ascontiguousarray(codes[l], dtype=np.int32)
            w = self.weights(l, self._contexts(l, codes, prev))
            if w.ndim == 1:
                enc.encode(symbols, constriction.stream.model.Categorical(w, perfect=False))
            else:
                enc.encode(symbols, _family(), w)
        return enc.get_compressed()

    def decode_block(self, words: np.ndarray, n_levels: int, n_frames: int, prev: np.ndarray | None) -> np.ndarray:
        """Inverse of :meth:`encode_block`: ``[n_levels, n_frames]`` int64 codes."""
        import constriction

        self._check_levels(n_levels)
        dec = constriction.stream.queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))
        codes = np.zeros((n_levels, n_frames), dtype=np.int64)
        family = _family()
        for l in range(n_levels):
            kind = self.context[l]
            if kind == "none":
                w = self.weights(l, None)
                codes[l] = dec.decode(constriction.stream.model.Categorical(w, perfect=False), n_frames)
            elif kind == "coarse":
                codes[l] = dec.decode(family, self.weights(l, codes[l - 1]))
            else:  # each symbol's model depends on the one decoded before it
                last = self.alphabet[l] if prev is None else int(prev[l])
                for f in range(n_frames):
                    last = int(dec.decode(family, self.weights(l, np.array([last])))[0])
                    codes[l, f] = last
        return codes

    def block_coder(self) -> "EntropyModel":
        """What codes a file's blocks (``lib.bitstream.vqc``): the model itself, as each block gets its context
        from the previous block's last frame."""
        return self

    def _check_levels(self, n: int) -> None:
        if not 1 <= n <= self.n_levels:
            raise EntropyModelError(f"entropy model has {self.n_levels} levels, asked to code {n}")

    # ------------------------------------------------------------------ storage

    def digest(self) -> bytes:
        """16-byte SHA-256 prefix of everything that determines the coded bits."""
        h = hashlib.sha256(b"vqc-entropy-model-v%d" % FORMAT_VERSION)
        for name, values in (("alphabet", self.alphabet), ("beta", self.beta)):
            h.update(name.encode() + np.asarray(values, dtype="<i8").tobytes())
        h.update(",".join(self.context).encode())
        for arr in (*self.unigram, *self.counts):
            h.update(np.asarray(arr.shape, dtype="<i8").tobytes() + np.ascontiguousarray(arr, dtype="<i8").tobytes())
        return h.digest()[:16]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as a compressed ``.npz`` atomically (temp file + rename)."""
        path = Path(path)
        arrays = {"format_version": np.int64(FORMAT_VERSION), "alphabet": np.asarray(self.alphabet, np.int64),
                  "context": np.asarray([CONTEXTS.index(c) for c in self.context], np.int64),
                  "beta": np.asarray(self.beta, np.int64),
                  "weights_hash": np.frombuffer(self.weights_hash, dtype=np.uint8)}
        for l in range(self.n_levels):
            arrays[f"unigram_{l}"] = self.unigram[l].astype(np.int64)
            arrays[f"counts_{l}"] = self.counts[l].astype(np.int64)
        for ctx, values in self.heldout_bits.items():
            arrays[f"heldout_bits_{ctx}"] = np.asarray(values, np.float64)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EntropyModel":
        """Read a model written by :meth:`save` (``allow_pickle=False``)."""
        path = Path(path)
        if not path.is_file():
            raise EntropyModelError(f"entropy model {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                version = int(z["format_version"])
                if version != FORMAT_VERSION:
                    raise EntropyModelError(f"entropy model {path} has format version {version}, "
                                            f"this program reads {FORMAT_VERSION}")
                L = len(z["alphabet"])
                return cls(alphabet=tuple(int(k) for k in z["alphabet"]),
                           context=tuple(CONTEXTS[int(c)] for c in z["context"]),
                           beta=tuple(int(b) for b in z["beta"]),
                           unigram=[z[f"unigram_{l}"].astype(np.int64) for l in range(L)],
                           counts=[z[f"counts_{l}"].astype(np.int64) for l in range(L)],
                           weights_hash=z["weights_hash"].tobytes(),
                           heldout_bits={k[len("heldout_bits_"):]: z[k].tolist() for k in z.files
                                         if k.startswith("heldout_bits_")})
        except EntropyModelError:
            raise
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise EntropyModelError(f"entropy model {path} is unreadable: {e}") from None


# ---------------------------------------------------------------------------------------------- fitting

def count_codes(sequences: Iterable[np.ndarray], alphabet: Sequence[int]) -> dict[str, list[np.ndarray]]:
    """Counts of code sequences ``[L, F]`` (one per clip): ``unigram``, ``prev`` and ``coarse`` per level."""
    L = len(alphabet)
    uni = [np.zeros(k, np.int64) for k in alphabet]
    prev = [np.zeros((k + 1, k), np.int64) for k in alphabet]
    coarse = [np.zeros((alphabet[l - 1] if l else 0, k), np.int64) for l, k in enumerate(alphabet)]
    for codes in sequences:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] != L:
            raise ValueError(f"codes must be [{L}, F], got {codes.shape}")
        if codes.shape[1] == 0:
            continue
        for l, k in enumerate(alphabet):
            if codes[l].min() < 0 or codes[l].max() >= k:
                raise ValueError(f"level {l} codes outside [0, {k})")
            np.add.at(uni[l], codes[l], 1)
            ctx = np.concatenate([[k], codes[l, :-1]])
            np.add.at(prev[l], (ctx, codes[l]), 1)
            if l:
                np.add.at(coarse[l], (codes[l - 1], codes[l]), 1)
    return {"unigram": uni, "prev": prev, "coarse": coarse}


def _level_bits(kind: str, beta: int, level: int, counts: dict, heldout: list[np.ndarray], k: int) -> float:
    """Bits per symbol that (context ``kind``, ``beta``) spends on the held-out codes of ``level``."""
    u = counts["unigram"][level] + 1
    total = int(u.sum())  # N + K
    table = counts[kind][level] if kind != "none" else None
    row_sums = table.sum(axis=1) if table is not None else None
    bits, n = 0.0, 0
    for codes in heldout:
        s = codes[level]
        if table is None:
            p = u[s] / total
        else:
            ctx = codes[level - 1] if kind == "coarse" else np.concatenate([[k], s[:-1]])
            p = (table[ctx, s] * total * BETA_SCALE + beta * u[s]) / ((row_sums[ctx] * BETA_SCALE + beta) * total)
        bits += float(-np.log2(p).sum())
        n += len(s)
    return bits / max(n, 1)


def fit_entropy_model(train_codes: Sequence[np.ndarray], alphabet: Sequence[int],
                      heldout_codes: Sequence[np.ndarray] | None = None, weights_hash: bytes = b"") -> EntropyModel:
    """Fit per-level models on ``train_codes`` (a list of ``[L, F]`` arrays, one per clip).

    Context and ``beta`` of each level are those that spend the fewest bits on ``heldout_codes`` (default: every
    fifth training clip is held out for the choice; the counts then come from all training clips).
    """
    train_codes = [np.asarray(c, dtype=np.int64) for c in train_codes]
    if not train_codes or sum(c.shape[1] for c in train_codes) == 0:
        raise ValueError("fit_entropy_model: no training codes")
    if heldout_codes is None or sum(np.asarray(c).shape[1] for c in heldout_codes) == 0:
        heldout = train_codes[::5] if len(train_codes) >= 2 else train_codes
        selection = count_codes([c for i, c in enumerate(train_codes) if i % 5 or len(train_codes) < 2], alphabet)
    else:
        heldout = [np.asarray(c, dtype=np.int64) for c in heldout_codes]
        selection = count_codes(train_codes, alphabet)
    full = count_codes(train_codes, alphabet)
    context, beta, table = [], [], {c: [] for c in CONTEXTS}
    for l, k in enumerate(alphabet):
        best = ("none", 0, _level_bits("none", 0, l, selection, heldout, k))
        table["none"].append(best[2])
        for kind in ("prev", "coarse") if l else ("prev",):
            scores = [(kind, b, _level_bits(kind, b, l, selection, heldout, k)) for b in BETAS]
            top = min(scores, key=lambda s: s[2])
            table[kind].append(top[2])
            best = min(best, top, key=lambda s: s[2])
        if not l:
            table["coarse"].append(float("nan"))
        context.append(best[0])
        beta.append(best[1])
    counts = [full[c][l] if c != "none" else np.zeros((0, k), np.int64)
              for l, (c, k) in enumerate(zip(context, alphabet))]
    return EntropyModel(tuple(int(k) for k in alphabet), tuple(context), tuple(beta), full["unigram"], counts,
                        weights_hash=weights_hash, heldout_bits=table)


def clip_codes(codec, clips: Iterable, n_q: int | None = None, chunk_seconds: float = 30.0) -> list[np.ndarray]:
    """Codes ``[L, F]`` of each clip (``[C, T]`` tensors): ``codec.encode`` through the streaming encoder, chunk by
    chunk, so that long clips need bounded memory (the codes are the same)."""
    import torch

    device = next(codec.parameters()).device
    chunk = max(codec.hop_length, int(chunk_seconds * codec.sample_rate))
    out = []
    with torch.inference_mode():
        for wav in clips:
            x = torch.nn.functional.pad(wav, (0, -wav.shape[-1] % codec.hop_length)).unsqueeze(0).to(device)
            codec.reset_stream()
            try:
                codes = [codec.stream_encode(x[..., i:i + chunk], n_q=n_q) for i in range(0, x.shape[-1], chunk)]
            finally:
                codec.reset_stream()
            out.append(torch.cat(codes, dim=-1)[0].cpu().numpy())
    return out


def fit_for_checkpoint(checkpoint: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                       progress: bool = False) -> tuple[EntropyModel, Path]:
    """Fit the entropy model of a checkpoint's codec on ``data_dir``'s train split (choices on its valid split)
    and write it to ``out`` (default ``entropy_model.npz`` beside the checkpoint). Returns (model, path)."""
    from lib.bitstream.vqc import alphabet_sizes, weights_hash
    from lib.headless import progress_bar as tqdm
    from lib.data.datasets import AudioFolder
    from lib.training.checkpoint import load_codec

    codec, cfg = load_codec(checkpoint)
    sr = cfg.data.sample_rate
    train = AudioFolder(data_dir, split="train", sample_rate=sr, cache=False)
    try:
        valid = AudioFolder(data_dir, split="valid", sample_rate=sr, cache=False)
    except ValueError:
        valid = None
    clips = (train.load(i) for i in tqdm(range(len(train)), desc="codes", disable=not progress))
    train_codes = clip_codes(codec, clips)
    valid_codes = clip_codes(codec, (valid.load(i) for i in range(len(valid)))) if valid is not None else None
    model = fit_entropy_model(train_codes, alphabet_sizes(codec), valid_codes, weights_hash=weights_hash(codec))
    path = Path(out) if out is not None else Path(checkpoint).parent / SIDECAR_NAME
    return model, model.save(path)
