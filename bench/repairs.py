"""What one repair of the codec's output would give: its speech with one part put right, scored like the codec.

Each row is the trained codec's full-bitrate output on the held-out speech with one thing taken from the input (or
from the codec without its quantizer), scored with PESQ-WB, STOI and DNSMOS (SIG, BAK, OVRL, P.808) against the
input: a repair that lifts a score far says that part holds the loss; one that leaves it says the error is
elsewhere. Unlike the race's swap table (the input with one part of the codec's), it starts from what a listener
hears, and DNSMOS scores every row.

    python bench/repairs.py runs/workbook/checkpoint.pt                  # valid split, every speech clip
    python bench/repairs.py runs/workbook/checkpoint.pt --quick          # 6 clips of 3 s, repairs_quick.csv

Rows: the codec; the codec without its quantizer (the encoder's latents decoded directly: the quantizer's share);
the input's STFT phase below ``--phase-hz``, above it, and everywhere, under the codec's magnitudes (40 ms Hann
windows, ``spectral_swap``); the input's level in every 5 ms frame and quarter octave (``envelope_swap``; coarser
frames with ``--envelope-windows``: how fast the levels a listener misses change); the
codec's output low-passed at 4 kHz (does DNSMOS hear its highs?); and the input itself, low-passed too (the
ceiling). Writes ``bench/results/NAME.csv`` (one row per clip and repair) and prints the means.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, markdown_table, set_threads, write_csv  # noqa: E402

import torch  # noqa: E402

from lib.analysis.metrics import envelope_swap, spectral_swap  # noqa: E402
from lib.training.losses import lowpass  # noqa: E402
from quality import _metrics, held_out  # noqa: E402

LOWPASS_HZ = 4000.0
METRICS = ("pesq_wb", "stoi", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")


def repaired(codec, wav: torch.Tensor, sample_rate: int, phase_hz: float,
             envelope_windows: tuple[int, ...] = (512,)) -> dict[str, torch.Tensor]:
    """The codec's output on ``wav [1, 1, T]`` and its repairs, each ``[1, T]``, by name (the module docstring);
    one levels repair per STFT window of ``envelope_windows`` (samples; hop a quarter of it, named by the hop)."""
    ref = wav[:, 0]
    out = codec(wav).recon[:, 0]
    nyquist = sample_rate / 2

    def phase_of_input(lo: float, hi: float) -> torch.Tensor:  # the codec's output with the input's phase in a band
        return spectral_swap(ref, out, sample_rate, lo, hi, "phase").float()

    def levels(n_fft: int) -> tuple[str, torch.Tensor]:  # the input's level in every STFT frame and quarter octave
        name = f"the input's levels ({1000 * n_fft / 4 / sample_rate:.0f} ms, 1/4 octave)"
        return name, envelope_swap(out, ref, sample_rate, n_fft=n_fft).float()

    return {
        "codec": out,
        "codec without its quantizer": codec(wav, bypass_quantizer=True).recon[:, 0],
        f"the input's phase below {phase_hz:g} Hz": phase_of_input(0.0, phase_hz),
        f"the input's phase above {phase_hz:g} Hz": phase_of_input(phase_hz, nyquist + 1),
        "the input's phase everywhere": phase_of_input(0.0, nyquist + 1),
        **dict(levels(n) for n in envelope_windows),
        f"low-passed at {LOWPASS_HZ:g} Hz": lowpass(out, sample_rate, LOWPASS_HZ),
        "the input": ref,
        f"the input, low-passed at {LOWPASS_HZ:g} Hz": lowpass(ref, sample_rate, LOWPASS_HZ),
    }


@torch.no_grad()
def repairs(codec, clips, sample_rate: int, phase_hz: float = 2000.0, dnsmos: bool = True,
            envelope_windows: tuple[int, ...] = (512,)) -> list[dict]:
    """One row per (clip, repair) of ``clips`` (``(name, kind, wav [1, 1, T])``): the repair's scores against the
    clip (DNSMOS NaN unless ``dnsmos``)."""
    codec.eval()
    rows = []
    for name, kind, wav in clips:
        for repair, y in repaired(codec, wav, sample_rate, phase_hz, envelope_windows).items():
            scores = _metrics(y, wav[:, 0], sample_rate, True, name, dnsmos=dnsmos)
            rows.append({"clip": name, "kind": kind, "repair": repair, **{k: float(scores[k]) for k in METRICS}})
    return rows


def means(rows: list[dict]) -> list[dict]:
    """The mean of every metric per repair, in the order the repairs first appear (NaNs left out; NaN where a
    metric has no value, as DNSMOS without its models)."""
    out = []
    for repair in dict.fromkeys(r["repair"] for r in rows):
        group = [r for r in rows if r["repair"] == repair]
        values = {k: np.array([r[k] for r in group], dtype=float) for k in METRICS}
        out.append({"repair": repair, "clips": len(group),
                    **{k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in values.items()}})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--clips", type=int, default=None, help="the first N speech clips only (default: all)")
    ap.add_argument("--clip-seconds", type=float, default=6.0)
    ap.add_argument("--phase-hz", type=float, default=2000.0, help="the split of the phase repairs (Hz)")
    ap.add_argument("--envelope-windows", type=int, nargs="+", default=[512], metavar="N_FFT",
                    help="STFT windows (samples) of the levels repairs, one row each (default: 512, 21 ms at 24 kHz)")
    ap.add_argument("--kind", default="speech", help="the report group scored (default: recorded speech)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="the CSV's name, bench/results/NAME.csv (default: repairs)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 6 clips of 3 s, repairs_quick.csv")
    args = ap.parse_args(argv)
    if args.quick:
        args.clips, args.clip_seconds = 6, 3.0
    args.out = args.out or ("repairs_quick" if args.quick else "repairs")
    if not Path(args.checkpoint).is_file():
        ap.error(f"no such checkpoint: {args.checkpoint}")
    from lib.training.checkpoint import load_codec

    set_threads(args.threads)
    codec, cfg = load_codec(args.checkpoint)
    sr = cfg.data.sample_rate
    clips = [c for c in held_out(args.data, args.split, sr, args.clip_seconds) if c[1] == args.kind][:args.clips]
    if not clips:
        ap.error(f"no {args.kind!r} clips in the {args.split} split of {args.data}")
    print(f"{len(clips)} {args.split} {args.kind} clips", flush=True)
    rows = repairs(codec, clips, sr, args.phase_hz, envelope_windows=tuple(args.envelope_windows))
    write_csv(rows, args.out)
    print(markdown_table(means(rows), ["repair", "clips", *METRICS]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
