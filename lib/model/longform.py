"""Long inputs through the codec in bounded memory: the streaming encoder/decoder fed in chunks.

An offline ``encode`` of 10 minutes of audio holds every intermediate activation of the whole signal at once
(gigabytes); the streaming path holds one chunk's. Streaming is exact up to float rounding (convolutions over
different lengths round differently), so the codes are those of one offline call except where two codes are
within rounding of each other. The work runs on a copy of the codec, so a stream the caller has in progress is
left alone.
"""
from __future__ import annotations

import copy

import torch


def _fresh_copy(codec):
    work = copy.deepcopy(codec)
    work.reset_stream()
    return work


@torch.no_grad()
def chunked_encode(codec, wav: torch.Tensor, n_q: int | None, chunk_frames: int) -> torch.Tensor:
    """``codec.encode(wav, n_q)`` through ``stream_encode`` in chunks of ``chunk_frames`` frames."""
    work, step, total = _fresh_copy(codec), chunk_frames * codec.hop_length, wav.shape[-1]
    parts = [work.stream_encode(wav[..., i:i + step], n_q=n_q, final=i + step >= total)
             for i in range(0, total, step)]
    return torch.cat(parts, dim=-1)


@torch.no_grad()
def chunked_decode(codec, codes: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """``codec.decode(codes)`` through ``stream_decode`` in chunks of ``chunk_frames`` frames, then the flush."""
    work = _fresh_copy(codec)
    parts = [work.stream_decode(codes[..., i:i + chunk_frames]) for i in range(0, codes.shape[-1], chunk_frames)]
    tail = work.stream_flush()  # [1, C, 0] from a decoder without look-ahead, whatever the batch
    if tail.shape[-1]:
        parts.append(tail.to(parts[-1]))
    return torch.cat(parts, dim=-1)
