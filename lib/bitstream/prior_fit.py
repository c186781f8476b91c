"""Fitting a prior over codes (``lib.model.prior``) to a trained codec's codes: ``python -m lib fit-prior``.

:func:`fit_prior` encodes the clips of the data folder's train and valid splits once (through the codec's
streaming encoder, :func:`lib.bitstream.entropy.clip_codes`) and caches the codes beside the codec's checkpoint as
``codes-<codec weights hash>.npz`` (plain arrays, with a fingerprint of the clips they came from), for every prior
fitted to that codec. :func:`train_prior`
then trains the prior with AdamW on random windows of those codes (cross-entropy, i.e. bits per code), validates on
the valid split's codes (bits per code, top-1 and top-5 accuracy per level) and writes its checkpoint atomically:
settings, weights, optimizer, step, RNG states and the hash of the codec weights it was trained for. Run again,
it resumes from that checkpoint: the batches of step ``s`` are drawn from ``(seed, s)`` alone, so a resumed run
ends with the weights of an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lib.atomic import atomic_path
from lib.bitstream.prior_file import PRIOR_NAME, PriorError, prior_digest, prior_kind
from lib.headless import progress_bar
from lib.model.prior import TransformerPrior, prior_for_quantizer
from lib.training.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint, set_rng_state

__all__ = ["PriorTraining", "draw_batch", "evaluate_prior", "train_prior", "fit_prior", "split_codes"]

@dataclass
class PriorTraining:
    """How a prior is trained (stored in its checkpoint; a resumed run keeps them, except the step counts)."""

    steps: int = 3000
    batch_size: int = 16
    window: int = 0  # frames per training window; 0: the prior's context
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decay to lr * this at the last step
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    level_dropout: float = 0.25  # share of batches that see only a random prefix of the levels (lower bitrates)
    val_every: int = 250
    ckpt_every: int = 250
    seed: int = 0

    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup_steps``, then a cosine from ``lr`` to ``lr * min_lr_ratio``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        t = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def draw_batch(clips: list[np.ndarray], step: int, training: PriorTraining, window: int,
               n_levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of ``step``: windows ``[B, n, window]`` (int64, -1 past a clip's end) of clips drawn in proportion
    to their frames, and the frame before each window ``[B, n]`` (-1 at a clip's start). ``n`` is all levels, or
    with probability ``level_dropout`` a random prefix of them. Drawn from ``(seed, step)`` only."""
    rng = np.random.default_rng([training.seed, step])
    lengths = np.array([c.shape[1] for c in clips], dtype=np.float64)
    n = int(rng.integers(1, n_levels)) if n_levels > 1 and rng.random() < training.level_dropout else n_levels
    batch = np.full((training.batch_size, n, window), -1, dtype=np.int64)
    prev = np.full((training.batch_size, n), -1, dtype=np.int64)
    for b, i in enumerate(rng.choice(len(clips), size=training.batch_size, p=lengths / lengths.sum())):
        start = int(rng.integers(0, max(clips[i].shape[1] - window, 0) + 1))
        piece = clips[i][:n, start:start + window]
        batch[b, :, :piece.shape[1]] = piece
        if start:
            prev[b] = clips[i][:n, start - 1]
    return torch.from_numpy(batch), torch.from_numpy(prev)


def _loss(prior: TransformerPrior, batch: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) per code, padding left out."""
    total = sum(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), batch[:, l].reshape(-1), ignore_index=-1,
                                reduction="sum") for l, lg in enumerate(prior(batch, prev)))
    return total / (batch >= 0).sum().clamp(min=1)


@torch.no_grad()
def evaluate_prior(prior: TransformerPrior, clips: list[np.ndarray], window: int, batch_size: int = 8) -> dict:
    """Bits per code, top-1 and top-5 accuracy, per level and over all codes, of ``clips`` (``[L, F]`` each) cut
    into windows of ``window`` frames (each given the frame before it)."""
    was_training = prior.training
    prior.eval()
    L = prior.n_levels
    pieces = [(c[:, s:s + window], c[:, s - 1] if s else np.full(L, -1)) for c in clips
              for s in range(0, c.shape[1], window)]
    bits, top1, top5, count = np.zeros(L), np.zeros(L), np.zeros(L), 0
    for i in range(0, len(pieces), batch_size):
        group = pieces[i:i + batch_size]
        batch = np.full((len(group), L, window), -1, dtype=np.int64)
        for b, (piece, _) in enumerate(group):
            batch[b, :, :piece.shape[1]] = piece
        codes, mask = torch.from_numpy(batch), torch.from_numpy(batch[:, 0] >= 0)
        prev = torch.from_numpy(np.stack([p for _, p in group]).astype(np.int64))
        for l, lg in enumerate(prior(codes, prev)):
            target = codes[:, l].clamp(min=0)
            nll = -lg.log_softmax(-1).gather(-1, target[..., None])[..., 0]
            best = lg.topk(min(5, lg.shape[-1]), dim=-1).indices
            bits[l] += float(nll[mask].sum()) / math.log(2)
            top1[l] += float((best[..., 0] == target)[mask].sum())
            top5[l] += float((best == target[..., None]).any(-1)[mask].sum())
        count += int(mask.sum())
    prior.train(was_training)
    n = max(count, 1)
    return {"bits_per_code": float(bits.sum() / (n * L)), "bits": (bits / n).tolist(), "top1": (top1 / n).tolist(),
            "top5": (top5 / n).tolist(), "frames": count}


def _optimizer(prior: TransformerPrior, training: PriorTraining) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases, the start vector)."""
    params = [p for p in prior.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": training.weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=training.lr, betas=(0.9, 0.95))


def _resume(out: Path, prior: TransformerPrior, codec_hash: bytes) -> dict | None:
    """The checkpoint to resume from (its weights loaded into ``prior``), or None when there is none."""
    if not out.is_file():
        return None
    try:
        state = load_checkpoint(out)
    except CheckpointError as e:
        raise PriorError(str(e)) from None
    spec = state["config"].get("prior") if isinstance(state["config"], dict) else None
    if not isinstance(spec, dict) or "optimizers" not in state or "prior" not in state["optimizers"]:
        raise PriorError(f"{out} is not a resumable prior checkpoint; remove it or choose another output")
    if state["config"].get("codec_weights_hash") != codec_hash.hex():
        raise PriorError(f"{out} was trained for codec weights {state['config'].get('codec_weights_hash')}, not "
                         f"these ({codec_hash.hex()}); remove it or choose another output")
    if spec["settings"] != prior.config.to_dict():
        diffs = sorted(k for k in set(spec["settings"]) | set(prior.config.to_dict())
                       if spec["settings"].get(k) != prior.config.to_dict().get(k))
        raise PriorError(f"{out} holds a prior with other settings ({', '.join(diffs)}); remove it to start over")
    load_state(prior, state["model"]["prior"], "prior", out)
    return state


def train_prior(prior: TransformerPrior, train_codes: list[np.ndarray], valid_codes: list[np.ndarray] | None,
                out: str | os.PathLike, training: PriorTraining | None = None, *, codec_hash: bytes = b"",
                codec_checkpoint: str = "", progress: bool = False, stop_after: int | None = None) -> dict:
    """Train ``prior`` on ``train_codes`` (``[L, F]`` int arrays, one per clip) and write its checkpoint ``out``;
    resumes from ``out`` when it holds a run of the same prior. ``stop_after``: train at most that many steps in
    this call (checkpointed), to run a long fit in pieces. Returns the last validation (see
    :func:`evaluate_prior`; on ``valid_codes``, or on every fifth training clip when None)."""
    out = Path(out)
    training = training or PriorTraining()
    clips = [np.asarray(c, dtype=np.int64) for c in train_codes if np.asarray(c).shape[1] > 0]
    if not clips:
        raise ValueError("train_prior: no training codes")
    if valid_codes is None:
        valid_codes, clips = clips[::5], [c for i, c in enumerate(clips) if i % 5 or len(clips) < 2]
    L = prior.n_levels
    if any(c.shape[0] != L or c.min() < 0 or (c.max(axis=1) >= np.array(prior.alphabet)).any() for c in clips):
        raise ValueError(f"train_prior: codes must be [{L}, F] within the alphabet {prior.alphabet}")
    state = _resume(out, prior, codec_hash)
    if state is not None:  # the stored settings win, except how long to train and how often to report
        stored = {f.name: state["config"]["training"][f.name] for f in fields(PriorTraining)}
        training = replace(PriorTraining(**stored), steps=training.steps, val_every=training.val_every,
                           ckpt_every=training.ckpt_every)
    window = training.window or prior.config.context
    opt = _optimizer(prior, training)
    step, history, running = 0, [], []  # running: the training bits of the steps since the last validation
    if state is not None:
        opt.load_state_dict(state["optimizers"]["prior"])
        step, history = int(state["step"]), list(state["extra"].get("history", []))
        running = list(state["extra"].get("running", []))
        set_rng_state(state["rng"])
    metrics = history[-1]["valid"] if history else {}
    end = training.steps if stop_after is None else min(training.steps, step + stop_after)

    def save() -> None:
        config = {"prior": {"kind": prior_kind(prior), "settings": prior.config.to_dict()},
                  "training": asdict(training),
                  "codec_weights_hash": codec_hash.hex(), "codec_checkpoint": str(codec_checkpoint),
                  "digest": prior_digest(prior, codec_hash).hex()}
        save_checkpoint(out, config=config, step=step, model={"prior": prior.state_dict()},
                        optimizers={"prior": opt.state_dict()}, extra={"history": history, "running": running})

    prior.train()
    with progress_bar(total=training.steps, initial=step, desc="prior", disable=not progress) as bar:
        while step < end:
            batch, prev = draw_batch(clips, step, training, window, L)
            for group in opt.param_groups:
                group["lr"] = training.lr_at(step)
            loss = _loss(prior, batch, prev)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(prior.parameters(), training.grad_clip)
            opt.step()
            step += 1
            running.append(float(loss.detach()) / math.log(2))
            bar.update(1)
            if step % training.val_every == 0 or step == training.steps:
                metrics = evaluate_prior(prior, valid_codes, window)
                history.append({"step": step, "train_bits": float(np.mean(running)), "valid": metrics})
                running = []
                bar.set_postfix(valid_bits=f"{metrics['bits_per_code']:.3f}")
            if step % training.ckpt_every == 0 or step == end:
                save()
    if state is None and step == 0:
        save()
    prior.eval()
    return metrics or evaluate_prior(prior, valid_codes, window)


def _fingerprint(*datasets) -> np.ndarray:
    """What the cached codes came from: each clip's split, path, size and modification time."""
    h = hashlib.sha256()
    for ds in datasets:
        for e in ds.entries if ds is not None else ():
            h.update(f"{e.split}|{e.path}|{e.size}|{e.mtime_ns}|{ds.sample_rate}\n".encode())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def split_codes(codec, data_dir: str | os.PathLike, cache_dir: str | os.PathLike, codec_hash: bytes,
                sample_rate: int, progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Codes ``[L, F]`` of every train and valid clip (valid None when the folder has no valid split), from the
    cache ``cache_dir/codes-<hash>.npz`` when it was made from the same clips, else encoded and cached."""
    from lib.bitstream.entropy import clip_codes
    from lib.data.datasets import AudioFolder

    train = AudioFolder(data_dir, split="train", sample_rate=sample_rate, cache=False)
    try:
        valid = AudioFolder(data_dir, split="valid", sample_rate=sample_rate, cache=False)
    except ValueError:
        valid = None
    key = _fingerprint(train, valid)
    cache = Path(cache_dir) / f"codes-{codec_hash.hex()}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if np.array_equal(z["fingerprint"], key):
                    return ([z[f"train_{i}"].astype(np.int64) for i in range(int(z["n_train"]))],
                            [z[f"valid_{i}"].astype(np.int64) for i in range(int(z["n_valid"]))] if valid else None)
        except (OSError, ValueError, KeyError):
            pass  # unreadable: encode again
    clips = (train.load(i) for i in progress_bar(range(len(train)), desc="codes", disable=not progress))
    train_codes = clip_codes(codec, clips)
    valid_codes = clip_codes(codec, (valid.load(i) for i in range(len(valid)))) if valid is not None else None
    arrays = {"fingerprint": key, "n_train": np.int64(len(train_codes)), "n_valid": np.int64(len(valid_codes or []))}
    arrays.update({f"train_{i}": c.astype(np.int32) for i, c in enumerate(train_codes)})
    arrays.update({f"valid_{i}": c.astype(np.int32) for i, c in enumerate(valid_codes or [])})
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return train_codes, valid_codes


def fit_prior(checkpoint: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike | None = None,
              steps: int | None = None, embedding: str = "learned", settings: dict | None = None,
              training: PriorTraining | None = None, progress: bool = False,
              stop_after: int | None = None) -> tuple[TransformerPrior, Path, dict]:
    """Fit the prior of a codec checkpoint on ``data_dir`` (train split; validated on the valid split) and write it
    to ``out`` (default ``prior.pt`` beside the checkpoint), resuming a run there. ``settings``: the prior's
    (``lib.model.prior.PriorConfig`` fields: d_model, n_layers, context, ...). Returns (prior, path, metrics)."""
    from lib.bitstream.vqc import weights_hash
    from lib.training.checkpoint import load_codec

    codec, cfg = load_codec(checkpoint)
    codec_hash = weights_hash(codec)
    out = Path(out) if out is not None else Path(checkpoint).parent / PRIOR_NAME
    train_codes, valid_codes = split_codes(codec, data_dir, Path(checkpoint).parent, codec_hash, cfg.data.sample_rate,
                                           progress)
    training = training or PriorTraining()
    with torch.random.fork_rng(devices=[]):  # the initial weights follow the seed, the caller's RNG stays as it was
        torch.manual_seed(training.seed)
        prior = prior_for_quantizer(codec.quantizer, embedding, **(settings or {}))
    if steps is not None:
        training = replace(training, steps=int(steps))
    metrics = train_prior(prior, train_codes, valid_codes, out, training, codec_hash=codec_hash,
                          codec_checkpoint=str(Path(checkpoint).resolve()), progress=progress, stop_after=stop_after)
    return prior, out, metrics
