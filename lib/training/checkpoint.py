"""Checkpoints: one file holding config, model/optimizer states, step and RNG states.

Written atomically (temp file in the same folder + ``os.replace``) so a crash mid-write never leaves a truncated
checkpoint; the trainer also keeps the one before as ``checkpoint.prev.pt`` (a hard link, no copy), so a checkpoint
damaged outside the atomic write can be recovered. Loaded with ``torch.load(weights_only=True)``, which refuses
any pickle that would run code.
Everything stored is therefore plain data: tensors, numbers, strings, lists and dicts. :func:`load_codec` rebuilds
a trained codec from one.
"""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.atomic import atomic_path
from lib.build import build_codec
from lib.config import config_from_dict


class CheckpointError(ValueError):
    """A checkpoint is missing, unsafe, or does not match the configuration it is loaded into."""


class CheckpointReadError(CheckpointError):
    """A checkpoint file that cannot be read at all (empty, truncated, corrupted)."""


def rng_state() -> dict:
    """RNG states of python, numpy and torch as plain data (safe for ``weights_only`` loading)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(x: Any) -> Any:
    return [_to_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _keep_previous(path: Path) -> None:
    """Make ``previous_path(path)`` the current ``path`` (a hard link where the file system allows, else a copy),
    itself atomically."""
    if not path.is_file():
        return
    prev = previous_path(path)
    tmp = prev.with_name(f".{prev.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        import shutil
        shutil.copyfile(path, tmp)
    os.replace(tmp, prev)


def atomic_torch_save(obj: Any, path: str | Path, keep_previous: bool = False) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over it (atomic on POSIX); with
    ``keep_previous`` the file it replaces stays as ``previous_path(path)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous:
            _keep_previous(path)


def save_checkpoint(path: str | Path, *, config: dict, step: int, model: dict, optimizers: dict | None = None,
                    extra: dict | None = None, include_rng: bool = True, keep_previous: bool = False) -> Path:
    """Write a checkpoint atomically.

    ``model`` and ``optimizers`` map names to ``state_dict()``s (e.g. ``{"codec": ..., "disc": ...}``).
    ``extra`` holds any other plain data (trainer counters, logs).
    """
    state = {"format": 1, "config": config, "step": int(step), "model": model,
             "optimizers": optimizers or {}, "extra": extra or {}}
    if include_rng:
        state["rng"] = rng_state()
    atomic_torch_save(state, path, keep_previous=keep_previous)
    return Path(path)


def load_checkpoint(path: str | Path, expected_config: dict | None = None, map_location: str | torch.device = "cpu",
                    compare_keys: tuple[str, ...] = ("model", "data.sample_rate", "data.channels"),
                    free_keys: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint safely (never unpickles code).

    With ``expected_config``, the stored config must agree with it on ``compare_keys`` (dotted paths; ``model``
    compares the whole model section) apart from ``free_keys`` (dotted paths inside them that may differ),
    otherwise ``CheckpointError`` lists the differing keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refusing to load {path}: it is not a plain-data checkpoint "
                              f"(weights_only loading rejected it: {str(e).splitlines()[0]})") from e
    except Exception as e:  # truncated zip, garbage, I/O error: name the file, its size and the reason
        size = path.stat().st_size if path.exists() else 0
        reason = "the file is empty (0 bytes)" if size == 0 else \
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'truncated or corrupted'}"
        raise CheckpointReadError(f"cannot read checkpoint {path} ({size} bytes): {reason}") from e
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a workbook checkpoint (no 'config'/'model' entries)")
    if expected_config is not None:
        stored, expected = _with_defaults(state["config"]), _with_defaults(expected_config)
        diffs = []
        for key in compare_keys:
            a, b = _get(stored, key), _get(expected, key)
            diffs += [f"{key}{k}: checkpoint={x!r} config={y!r}" for k, x, y in _diff(a, b)
                      if f"{key}{k}" not in free_keys]
        if diffs:
            raise CheckpointError(f"checkpoint {path} was made with a different configuration:\n  "
                                  + "\n  ".join(diffs[:20]))
    return state


def load_state(module: torch.nn.Module, state_dict: dict, what: str, path: str | Path) -> None:
    """``module.load_state_dict(state_dict)``; a mismatch is a ``CheckpointError`` naming the file and the keys."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as e:
        ours, theirs = set(module.state_dict()), set(state_dict)
        parts = [f"missing from the checkpoint: {sorted(ours - theirs)[:8]}" if ours - theirs else "",
                 f"not in this model: {sorted(theirs - ours)[:8]}" if theirs - ours else "",
                 "" if ours != theirs else str(e).strip().splitlines()[-1].strip()]
        raise CheckpointError(f"checkpoint {path}: its {what} weights do not fit this configuration ("
                              + "; ".join(p for p in parts if p) + ")") from e


def _with_defaults(config: dict) -> dict:
    """A stored config with the keys added since it was written filled in with their defaults (so a run saved
    before ``model.decoder`` existed still resumes); as stored when it no longer validates."""
    try:
        return config_from_dict(config).to_dict()
    except ValueError:
        return config


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [(prefix, a, b)]


CHECKPOINT_NAME = "checkpoint.pt"
# What must agree between a checkpoint and the configuration that resumes it (the weights' shapes follow them) ...
RESUME_KEYS = ("model", "data.sample_rate", "data.channels", "train.discriminators", "train.disc_channels",
               "train.disc_max_channels", "train.stft_n_ffts")
# ... except how codes are searched: any trained codebooks follow another beam width.
RESUME_FREE_KEYS = ("model.quantizer.beam_width", "model.quantizer.beam_in_training")


def resolve_checkpoint(checkpoint: str | Path, run_dir: str | Path | None = None) -> Path:
    """``"latest"`` -> ``run_dir/checkpoint.pt`` (the trainer's rolling checkpoint); a path as it is. Must exist."""
    if str(checkpoint) == "latest":
        if run_dir is None:
            raise CheckpointError('checkpoint="latest" needs the run_dir that holds it')
        path = Path(run_dir) / CHECKPOINT_NAME
    else:
        path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: train one (notebook 02 or python -m lib.training) "
                              "or pass the path of a checkpoint file")
    return path


def init_codec_from(codec: torch.nn.Module, checkpoint: str | Path, use_ema: bool = True) -> int:
    """Load the codec weights and codebooks of ``checkpoint`` into ``codec`` (built from the config of the run that
    starts from them); returns the checkpoint's step. Its weight EMA is taken where it has one and ``use_ema``:
    the weights the checkpoint's run reported. Raises CheckpointError naming the file when the architectures
    differ."""
    state = load_checkpoint(checkpoint)
    weights = state["model"].get("ema") if use_ema and "ema" in state["model"] else state["model"]["codec"]
    try:
        codec.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"train.init_from {checkpoint}: its codec does not fit this config's "
                              f"({str(err).splitlines()[0]}); start from a checkpoint of the same "
                              "architecture") from None
    return int(state.get("step", 0))


def load_codec(checkpoint: str | Path, run_dir: str | Path | None = None, device: str = "cpu", use_ema: bool = True,
               beam_width: int | None = None):
    """Rebuild a trained codec (and its config) from a checkpoint path, or ``"latest"`` of ``run_dir``; eval mode.

    Returns ``(codec, cfg)``; the generator weight EMA is used when the run kept one and ``use_ema``;
    ``codec.trained_steps`` is the checkpoint's training step (for figure footers and reports).
    ``beam_width`` (residual VQ only): encode with this beam search instead of the trained setting; the codes
    still decode with the same codebooks, so it changes the encoder alone (``cfg`` records the trained value).
    """
    state = load_checkpoint(resolve_checkpoint(checkpoint, run_dir), map_location=device)
    cfg = config_from_dict(state["config"])
    codec = build_codec(cfg)
    weights = state["model"].get("ema") if use_ema and "ema" in state["model"] else state["model"]["codec"]
    codec.load_state_dict(weights)
    codec.trained_steps = int(state.get("step", 0))
    if beam_width is not None:
        if not hasattr(codec.quantizer, "beam_width"):
            raise CheckpointError(f"beam_width={beam_width}: the {cfg.model.quantizer.kind!r} quantizer of "
                                  f"{checkpoint} has no beam search (model.quantizer.kind rvq has)")
        try:
            codec.quantizer.beam_width = beam_width
        except ValueError as err:
            raise CheckpointError(f"{checkpoint}: {err}") from None
    return codec.to(device).eval(), cfg
