"""The prior over codes (``lib.model.prior``) as the ``.vqc`` payload's entropy model (``--mode prior``).

A prior lives in its own checkpoint (``lib.bitstream.prior_file``), which records the hash of the codec weights it
was trained for; the ``.vqc`` header records :func:`lib.bitstream.prior_file.prior_digest` of the prior it was
coded with.

Range coding runs frame by frame through the prior's incremental path (KV cache), a level at a time, in float64
and on one torch thread (whatever the caller's thread count, so no reduction order can change), on the encoder's
side as on the decoder's: both compute every probability through the same function, :meth:`PriorBlockCoder._frame`.
Each distribution is quantised to integer weights ``floor(p * 2^20) + 1`` (every code stays codable) held exactly
in float64 and handed to ``constriction``'s ``Categorical(perfect=False)``, as ``lib.bitstream.entropy`` does.
The stream's state runs on across blocks, so blocks decode in order, each from the end of the one before.
Bits agree between machines only as far as their float64 arithmetic does: decode on the kind of machine and torch
build that encoded.
"""
from __future__ import annotations

import contextlib
import copy
import os
from typing import Callable, Iterator

import numpy as np
import torch

from lib.bitstream.prior_file import PriorError, load_prior, prior_digest
from lib.model.prior import TransformerPrior

__all__ = ["PRECISION", "PriorModel", "PriorBlockCoder", "integer_weights", "one_thread"]

PRECISION = 20  # probabilities are quantised to multiples of 2^-20 (plus a floor of one)
CODING_DTYPE = torch.float64  # the coding copy of the prior: see the module docstring


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread inside the block, the caller's setting restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def integer_weights(logits: torch.Tensor) -> np.ndarray:
    """Logits ``[K]`` -> integer weights ``floor(p * 2^PRECISION) + 1`` as float64 ``[K]`` (exact integers)."""
    p = torch.softmax(logits.double(), dim=-1).numpy()
    return np.floor(p * float(2 ** PRECISION)) + 1.0


class PriorModel:
    """A prior ready to code ``.vqc`` payloads. ``weights_hash``: the codec weights it was trained for."""

    def __init__(self, prior: TransformerPrior, weights_hash: bytes, path: str | os.PathLike = ""):
        self.prior, self.weights_hash, self.path = prior.eval(), bytes(weights_hash), str(path)
        self.alphabet = tuple(prior.alphabet)
        self._digest = prior_digest(prior, self.weights_hash)
        self._coding = copy.deepcopy(prior).to(CODING_DTYPE).eval()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PriorModel":
        prior, state = load_prior(path)
        try:
            codec_hash = bytes.fromhex(state["config"]["codec_weights_hash"])
        except (KeyError, ValueError, TypeError):
            raise PriorError(f"prior checkpoint {path} records no codec weights hash") from None
        return cls(prior, codec_hash, path)

    @property
    def n_levels(self) -> int:
        return len(self.alphabet)

    def digest(self) -> bytes:
        return self._digest

    def block_coder(self) -> "PriorBlockCoder":
        """A fresh coder for one file: its blocks go through it in order."""
        return PriorBlockCoder(self._coding)

    def bits(self, codes: np.ndarray) -> float:
        """Ideal code length in bits of a whole stream ``[L, F]`` under the quantised weights the coder uses."""
        codes = np.asarray(codes, dtype=np.int64)
        spent: list[float] = []

        def cost(f: int, l: int, w: np.ndarray) -> int:
            spent.append(float(np.log2(w.sum() / w[codes[l, f]])))
            return int(codes[l, f])

        coder = self.block_coder()
        coder._start(codes.shape[0], None)
        coder._frames(codes.shape[0], codes.shape[1], cost)
        return float(sum(spent))


class PriorBlockCoder:
    """Range codes blocks of one stream under a prior, the KV cache carried from block to block."""

    def __init__(self, prior: TransformerPrior):
        self.prior = prior
        self.state = None
        self.last: np.ndarray | None = None

    def _start(self, n_levels: int, prev: np.ndarray | None) -> None:
        if not 1 <= n_levels <= self.prior.n_levels:
            raise ValueError(f"the prior has {self.prior.n_levels} levels, asked to code {n_levels}")
        if prev is None:
            self.state, self.last = self.prior.init_state(1, n_levels), None
        elif self.last is None or not np.array_equal(prev, self.last):
            raise ValueError("prior coding: blocks must be coded in order, from the start of the stream")

    def _frames(self, n_levels: int, n_frames: int, choose: Callable[[int, int, np.ndarray], int]) -> np.ndarray:
        """Step the prior through ``n_frames`` frames: for each frame and level, ``choose(frame, level, weights)``
        gets the integer weights and returns the code (the encoder's code, or the decoded one)."""
        codes = np.zeros((n_levels, n_frames), dtype=np.int64)
        with torch.inference_mode(), one_thread():
            for f in range(n_frames):
                codes[:, f] = self._frame(n_levels, lambda l, w: choose(f, l, w))
        return codes

    def _frame(self, n_levels: int, choose: Callable[[int, np.ndarray], int]) -> np.ndarray:
        prev = None if self.last is None else torch.from_numpy(self.last)[None]
        self.state, h = self.prior.step(self.state, prev)
        frame = np.zeros(n_levels, dtype=np.int64)
        known = torch.from_numpy(frame)[None]  # shares memory with frame: filled in level by level
        for l in range(n_levels):
            frame[l] = choose(l, integer_weights(self.prior.level_logits(h, known, l)[0]))
        self.last = frame
        return frame

    def encode_block(self, codes: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        """Range-code ``codes [L, n]`` (frame after frame, level after level); ``prev [L]``: the last frame of the
        block before (None: the stream starts). Returns the compressed ``uint32`` words."""
        import constriction

        self._start(codes.shape[0], prev)
        codes = np.asarray(codes, dtype=np.int64)
        weights: list[np.ndarray] = []
        self._frames(codes.shape[0], codes.shape[1], lambda f, l, w: weights.append(w) or int(codes[l, f]))
        enc = constriction.stream.queue.RangeEncoder()
        symbols = np.ascontiguousarray(codes.T.reshape(-1), dtype=np.int32)
        family = constriction.stream.model.Categorical(perfect=False)
        if len({len(w) for w in weights}) == 1:
            enc.encode(symbols, family, np.ascontiguousarray(np.stack(weights)))
        else:  # levels of different alphabets: one symbol at a time, in the same order
            for s, w in zip(symbols, weights):
                enc.encode(np.array([s], np.int32), family, w[None])
        return enc.get_compressed()

    def decode_block(self, words: np.ndarray, n_levels: int, n_frames: int, prev: np.ndarray | None) -> np.ndarray:
        """Inverse of :meth:`encode_block`: ``[n_levels, n_frames]`` int64 codes."""
        import constriction

        self._start(n_levels, prev)
        dec = constriction.stream.queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))
        family = constriction.stream.model.Categorical(perfect=False)
        return self._frames(n_levels, n_frames, lambda f, l, w: int(dec.decode(family, w[None])[0]))
