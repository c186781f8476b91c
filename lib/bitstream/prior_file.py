"""A prior's checkpoint (``prior.pt`` beside the codec's, written by ``python -m lib fit-prior``).

Plain data, read with ``torch.load(weights_only=True)`` (:func:`lib.training.checkpoint.load_checkpoint`), which
refuses any pickle that would run code. ``config`` holds ``prior`` (its registry ``kind`` in
``lib.model.registries.PRIORS`` and its ``settings``), ``training`` (``lib.bitstream.prior_fit.PriorTraining``),
``codec_weights_hash`` (hex of :func:`lib.bitstream.vqc.weights_hash` of the codec it was trained for) and
``codec_checkpoint``; ``model["prior"]`` its weights; ``optimizers``, ``step``, ``rng`` and ``extra`` (the
validation history) what an exact resume needs. :func:`prior_digest` hashes what decides the coded bits; a ``.vqc``
file coded with the prior records it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from lib.model.registries import PRIORS
from lib.training.checkpoint import CheckpointError, load_checkpoint, load_state

__all__ = ["PRIOR_NAME", "PriorError", "load_prior", "prior_kind", "prior_digest"]

PRIOR_NAME = "prior.pt"


class PriorError(ValueError):
    """A prior checkpoint that is missing, unsafe, malformed, or made for other codes."""


def prior_kind(prior: torch.nn.Module) -> str:
    """The name under which the prior's class is registered in ``PRIORS``."""
    for name in PRIORS:
        if PRIORS.get(name) is type(prior):
            return name
    raise PriorError(f"{type(prior).__name__} is not a registered prior (lib.model.registries.PRIORS)")


def load_prior(path: str | os.PathLike, map_location: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The prior of a prior checkpoint (eval mode) and the whole checkpoint (plain data)."""
    path = Path(path)
    try:
        state = load_checkpoint(path, map_location=map_location)
    except CheckpointError as e:
        raise PriorError(str(e)) from None
    spec = state["config"].get("prior") if isinstance(state["config"], dict) else None
    if not isinstance(spec, dict) or not isinstance(state["model"], dict) or "prior" not in state["model"]:
        raise PriorError(f"{path} is not a prior checkpoint (make one with python -m lib fit-prior)")
    try:
        prior = PRIORS.get(spec["kind"]).from_config(spec["settings"])
        load_state(prior, state["model"]["prior"], "prior", path)
    except (KeyError, ValueError, TypeError, CheckpointError) as e:
        raise PriorError(f"prior checkpoint {path}: {e}") from None
    return prior.eval(), state


def prior_digest(prior: torch.nn.Module, codec_hash: bytes) -> bytes:
    """16-byte SHA-256 prefix of everything that decides the coded bits: the prior's kind, settings and weights,
    and the hash of the codec weights it was trained for."""
    h = hashlib.sha256(b"vqc-prior-v1|" + prior_kind(prior).encode() + b"|" + codec_hash)
    h.update(json.dumps(prior.config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(prior.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()[:16]
