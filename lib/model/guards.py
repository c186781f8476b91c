"""What the codec's public API accepts, checked in one place with errors that say what was wrong.

- audio: ``[B, C, T]`` floating point, finite (NaN or inf would give normal-looking codes from ``encode``); any
  float dtype is accepted and cast to the codec's own dtype (float64 or float16 input to a float32 codec is a
  documented cast, not an error from inside a convolution);
- codes: ``[B, n_q, F]`` of any integer dtype (uint8, int16, ... are widened to int64), each level's codes in
  ``[0, alphabet)`` or -1 (the documented "level off" that quantizer dropout and a level still pooling frames for
  k-means write); anything else below 0 or past the alphabet is an error, not a silent "off";
- ``length``: a non-negative integer or None.
"""
from __future__ import annotations

import operator

import torch


def model_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of the module's first floating-point parameter (float32 for a module without one)."""
    for p in module.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.float32


def check_wav(wav, channels: int, dtype: torch.dtype, allow_empty: bool = False,
              finite: bool = True) -> torch.Tensor:
    """``wav`` checked (shape, floating point, non-empty, finite when ``finite``) and cast to ``dtype``."""
    if not isinstance(wav, torch.Tensor) or wav.dim() != 3 or wav.shape[1] != channels:
        shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
        raise ValueError(f"wav: expected a tensor [B, {channels}, T], got {shape}")
    if not wav.dtype.is_floating_point:
        raise ValueError(f"wav: expected a floating-point tensor, got dtype {wav.dtype}")
    if wav.shape[-1] == 0 and not allow_empty:
        raise ValueError("wav: has zero samples")
    if finite and wav.numel() and not bool(torch.isfinite(wav).all()):
        bad = (~torch.isfinite(wav)).nonzero()[0].tolist()
        raise ValueError(f"wav: contains NaN or inf (first at [batch, channel, sample] = {bad}); "
                         "the codec would return meaningless codes")
    return wav if wav.dtype == dtype else wav.to(dtype)


def check_codes(codes: torch.Tensor, alphabets: list[int]) -> torch.Tensor:
    """Integer codes ``[B, n, F]`` (n <= len(alphabets)) as int64, each level in ``[-1, alphabet)``."""
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype.is_complex \
            or codes.dtype == torch.bool:
        kind = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"codes: expected integer code indices, got {kind}")
    codes = codes.long()
    if codes.numel() == 0:
        return codes
    for level in range(min(codes.shape[1], len(alphabets))):
        c = codes[:, level]
        low, high = int(c.min()), int(c.max())
        if low < -1 or high >= alphabets[level]:
            raise ValueError(f"codes: level {level} holds codes in [{low}, {high}] but must be in "
                             f"[0, {alphabets[level]}) (or -1 for 'level off')")
    return codes


def check_length(length) -> int | None:
    """``length`` for ``decode``: None or an integer >= 0."""
    if length is None:
        return None
    try:
        value = operator.index(length)
    except TypeError:
        value = -1
    if isinstance(length, bool) or value < 0:
        raise ValueError(f"length must be a non-negative integer or None, got {length!r}")
    return value
