"""What the trainer measures on its held-out clips at every validation."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from lib.analysis.metrics import si_sdr
from lib.model.codebook import codebook_stats
from lib.training.losses import mel_distance


@torch.no_grad()
def validation_metrics(codec: nn.Module, clips: Sequence[torch.Tensor], sample_rate: int, n_q: int | None = None,
                       bypass_quantizer: bool = False) -> dict[str, float]:
    """Mean mel distance and SI-SDR of ``codec``'s reconstructions of ``clips`` (each ``[1, C, T]``, on the codec's
    device) at ``n_q`` levels, and each level's code usage and perplexity over all their frames (``usage_i``,
    ``perplexity_i``). ``bypass_quantizer``: codebooks not initialised yet; the latents pass unquantized."""
    codec.eval()
    mels, sdrs, codes = [], [], []
    for wav in clips:
        out = codec(wav, n_q=n_q, bypass_quantizer=bypass_quantizer)
        mels.append(float(mel_distance(out.recon, wav, sample_rate)))
        sdrs.append(float(si_sdr(out.recon, wav).mean()))
        if out.codes is not None:
            codes.append(out.codes[0])
    result = {"mel_distance": float(np.mean(mels)), "si_sdr": float(np.mean(sdrs)), "quantized": not bypass_quantizer}
    if codes:
        k = codec.quantizer.codebook_size
        for level, level_codes in enumerate(torch.cat(codes, dim=-1)):  # [n_q, frames]
            stats = codebook_stats(level_codes, k)
            result[f"usage_{level}"], result[f"perplexity_{level}"] = stats["usage"], stats["perplexity"]
    return result
