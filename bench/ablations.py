"""Ablation of the workbook's research ideas on the quality race's curve (``bench/quality.py``): held-out quality
against training minutes at equal compute, same corpus, seed and batches, interleaved step by step.

    python bench/ablations.py                       # 30 minutes per variant on 2 threads, valid split
    python bench/ablations.py --split test          # the reported numbers
    python bench/ablations.py --quick               # 2 minutes per variant

Variants, each the ``cpu`` preset with one change: plain EMA codebooks instead of SOM codebooks; FSQ (8 groups of
[8, 5, 5, 5], 5.98 kbps) instead of a residual VQ; an energy transformer before the quantizer; the iSTFT decoder's
real/imaginary head instead of its log-magnitude/phase head; and, on the former
SEANet default (``cpu_seanet``, which has blocks and upsamplers to swap), MultiresConv blocks and the wavelet
upsampler. Every variant trains with the default's objective. Writes bench/results/ablations.csv and
figures/bench_ablations.png. Any other argument is passed to ``bench/quality.py`` (``--minutes``, ``--set``, ...).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

DEFAULT_OBJECTIVE = ["loss.l1=0", "loss.mel=1", "loss.waveform_mse=2", "loss.complex_stft=2", "loss.balancer=true",
                     "train.discriminators=[]"]
VARIANTS = {
    "ema_codebooks": ("cpu", ["model.quantizer.som=false"]),
    "fsq": ("cpu", ["model.quantizer.kind=fsq", "model.quantizer.som=false", "train.quantizer_warmup_steps=0"]),
    "energy_transformer": ("cpu", ["model.bottleneck=energy"]),
    "complex_head": ("cpu", ["model.spectral.head=complex"]),
    "seanet_multires": ("cpu_seanet", ["model.block=multires"] + DEFAULT_OBJECTIVE),
    "seanet_wavelet": ("cpu_seanet", ["model.upsampler=wavelet"] + DEFAULT_OBJECTIVE),
}


def main(argv: list[str] | None = None) -> int:
    quality.SYSTEMS.update(VARIANTS)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--systems" not in argv:
        argv += ["--systems", "default", *VARIANTS]
    if "--out" not in argv:
        argv += ["--out", "ablations"]
    return quality.main(argv)


if __name__ == "__main__":
    sys.exit(main())
