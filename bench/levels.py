"""Which term sets the codec's level in each band: every loss term's and metric's best gain on the output.

    python bench/levels.py runs/a/checkpoint.pt                     # valid speech, full bitrate
    python bench/levels.py runs/a/checkpoint.pt --extra runs/extra_speech --n-q 4 --no-pesq
    python bench/levels.py runs/a/checkpoint.pt --quick              # one clip, four gains: seconds
    python bench/levels.py runs/a/checkpoint.pt --equaliser 2000:4000:6 4000:8000:5   # DNSMOS too, no scan

The codec's output is scaled in one frequency band at a time (a zero-phase gain on the spectrum of the whole clip,
-6 to +24 dB in 1.5 dB steps) and, at every gain, read by the run's own reconstruction terms and by the metrics.
Per band the table gives the output's energy over the input's and the gain at which each is smallest (PESQ-WB and
STOI: largest). A term whose best gain sits below the others' pulls the band quieter than they would have it; a
metric's best gain says which way a fixed equaliser after the codec would move it. The complex-STFT term is split
through its public settings: its magnitude part, its phase part (bins up to ``loss.phase_max_hz``) and its
phase-derivative part (above it), each the difference of two instances. Writes ``bench/results/levels.csv``.
``--equaliser LO:HI:DB ...`` instead scores the output once as decoded and once under that fixed equaliser (HI
empty: up to Nyquist), with every metric and DNSMOS: what a brighter or darker output would do to perceived quality
(``bench/results/equaliser.csv``).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, markdown_table, mean_rows, set_threads, write_csv  # noqa: E402

import torch  # noqa: E402

from lib.analysis.metrics import BAND_EDGES_HZ, band_energy_db, evaluate_all, mel_distance, pesq_wb, stoi  # noqa: E402
from lib.training.losses import ComplexSTFTLoss, MultiScaleMelLoss  # noqa: E402

GAINS_DB = tuple(np.arange(-6.0, 24.01, 1.5))
LOWER_IS_BETTER = {"pesq_wb": False, "stoi": False}  # everything else: smallest is best
METRICS = ("mel distance", "stoi", "pesq_wb")  # called on [T] signals; the loss terms on [1, 1, T]
FLAT = 1e-4  # a term that moves by less than this fraction over all gains does not see the band: NaN
Band = tuple[float, float | None, float]  # an equaliser band: (lo Hz, hi Hz or None for up to Nyquist, gain dB)


def band_gain(x: torch.Tensor, sample_rate: int, lo: float, hi: float | None, db: float) -> torch.Tensor:
    """``x [..., T]`` with the band ``[lo, hi)`` Hz (``hi=None``: up to Nyquist) scaled by ``db``, phase untouched."""
    spec = torch.fft.rfft(x.float())
    freqs = torch.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate)
    inside = (freqs >= lo) & (freqs < (hi if hi is not None else float("inf")))
    gain = torch.where(inside, torch.tensor(10.0 ** (float(db) / 20.0)), torch.tensor(1.0))
    return torch.fft.irfft(spec * gain, n=x.shape[-1])


def objective_parts(cfg) -> dict:
    """``{name: (estimate [B, 1, T], reference) -> float}``: the run's mel loss and the complex-STFT term's parts."""
    sr, lo = cfg.data.sample_rate, cfg.loss
    mel = MultiScaleMelLoss(sr, windows=tuple(lo.mel_windows), log_distance=lo.mel_log_distance,
                            log_weight=lo.mel_log_weight, hop_fraction=lo.stft_hop_fraction)

    def cx(mag_weight: float, derivative: float) -> ComplexSTFTLoss:
        return ComplexSTFTLoss(sample_rate=sr, phase_max_hz=lo.phase_max_hz, phase_derivative=derivative,
                               mag_weight=mag_weight, hop_fraction=lo.stft_hop_fraction)

    full, plain, phase = cx(1.0, lo.phase_derivative), cx(1.0, 0.0), cx(0.0, 0.0)
    parts = {"mel loss": lambda x, y: float(mel(x, y)), "complex-STFT term": lambda x, y: float(full(x, y)),
             "its magnitude part": lambda x, y: float(plain(x, y) - phase(x, y)),
             "its phase part": lambda x, y: float(phase(x, y))}
    if lo.phase_derivative > 0 and lo.phase_max_hz is not None:
        parts["its phase-derivative part"] = lambda x, y: float(full(x, y) - plain(x, y))
    return parts


def metric_parts(sample_rate: int, pesq: bool = True) -> dict:
    """``{name: (estimate [T], reference [T]) -> float}``: mel distance, STOI and (with ``pesq``) PESQ-WB."""
    parts = dict(zip(METRICS, (lambda x, y: mel_distance(x, y, sample_rate), lambda x, y: stoi(x, y, sample_rate),
                               lambda x, y: pesq_wb(x, y, sample_rate))))
    if not pesq:
        del parts["pesq_wb"]
    return parts


def best_gains(pairs: list[tuple[torch.Tensor, torch.Tensor]], sample_rate: int, terms: dict,
               gains=GAINS_DB, edges=BAND_EDGES_HZ) -> list[dict]:
    """One row per band: ``energy_db`` (output over input, all clips) and each term's best gain in dB.

    ``pairs``: ``(output, input)``, both ``[1, 1, T]``; ``terms``: ``{name: fn(output, input) -> float}``, called on
    ``[1, 1, T]`` tensors for loss terms and on ``[T]`` for the names in :data:`METRICS` (summed over clips)."""
    rows = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else None
        totals = np.zeros((len(gains), len(terms)))
        for g, db in enumerate(gains):
            for out, ref in pairs:
                scaled = band_gain(out, sample_rate, lo, hi, db)
                for t, (name, fn) in enumerate(terms.items()):
                    totals[g, t] += fn(scaled[0, 0], ref[0, 0]) if name in METRICS else fn(scaled, ref)
        energy = np.mean([band_energy_db(out[0], ref[0], sample_rate, edges)[0][i] for out, ref in pairs])
        row = {"band": f"{lo}-{hi} Hz" if hi else f">{lo} Hz", "energy_db": round(float(energy), 1)}
        for t, name in enumerate(terms):
            column = totals[:, t] if LOWER_IS_BETTER.get(name, True) else -totals[:, t]
            flat = np.ptp(column) <= FLAT * np.abs(column).mean()  # e.g. STOI above 5 kHz, which it never reads
            row[name] = math.nan if flat else float(gains[int(np.argmin(column))])
        rows.append(row)
    return rows


def equaliser_band(text: str) -> Band:
    """``"LO:HI:DB"`` (Hz, Hz, dB; HI empty for up to Nyquist) -> ``(lo, hi, db)``; a clear error otherwise."""
    try:
        lo, hi, db = text.split(":")
        band = (float(lo), float(hi) if hi else None, float(db))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--equaliser: {text!r} is not LO:HI:DB (e.g. 2000:4000:6, or 8000::4.5)")
    if band[0] < 0 or (band[1] is not None and band[1] <= band[0]):
        raise argparse.ArgumentTypeError(f"--equaliser: {text!r}: the band must have 0 <= LO < HI")
    return band


def equalised_scores(pairs: list[tuple[torch.Tensor, torch.Tensor]], sample_rate: int, bands: list[Band],
                     pesq: bool = True, dnsmos: bool = True) -> list[dict]:
    """Mean metrics of the output ``[1, 1, T]`` of each ``(output, input)`` pair as decoded and under the fixed
    equaliser ``bands`` (each ``(lo, hi, db)`` applied in turn): two rows, ``output`` naming which."""
    rows, named = [], " ".join(f"{lo:g}-{'Nyquist' if hi is None else f'{hi:g}'} Hz {db:+g} dB" for lo, hi, db in bands)
    for label, eq in (("as decoded", []), (f"equalised: {named}", bands)):
        scores = []
        for out, ref in pairs:
            y = out[0]
            for lo, hi, db in eq:
                y = band_gain(y, sample_rate, lo, hi, db)
            scores.append(evaluate_all(y, ref[0], sample_rate, pesq=pesq, dnsmos=dnsmos))
        rows += mean_rows({"speech": scores}, output=label)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--split", default="valid", choices=("valid", "test"))
    ap.add_argument("--extra", metavar="DIR", help="also the WAVs of DIR (bench/extra_speech.py --make DIR)")
    ap.add_argument("--n-q", type=int, default=None, help="levels to decode with (default: all)")
    ap.add_argument("--no-pesq", action="store_true")
    ap.add_argument("--quick", action="store_true", help="one clip, gains -6, 0, +6, +12 dB, no PESQ: a smoke run")
    ap.add_argument("--equaliser", nargs="+", type=equaliser_band, metavar="LO:HI:DB",
                    help="score the output as decoded and under this fixed equaliser instead of the gain scan")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args(argv)
    import quality
    from extra_speech import load_clips
    from lib.training.checkpoint import load_codec

    set_threads(args.threads)
    codec, cfg = load_codec(args.checkpoint)
    sr = cfg.data.sample_rate
    clips = [w for _, kind, w in quality.held_out(args.data, args.split, sr, 4.0) if kind == "speech"]
    if args.extra:
        clips += [w for _, _, w in load_clips(args.extra, sr)]
    if args.quick:
        clips, args.no_pesq = clips[:1], True
    codec.eval()
    with torch.no_grad():
        pairs = [(codec(w, n_q=args.n_q).recon[..., : w.shape[-1]], w) for w in clips]
    if args.equaliser:
        rows = equalised_scores(pairs, sr, args.equaliser, pesq=not args.no_pesq)
        print(f"{len(pairs)} speech clips, decoded at n_q {args.n_q or 'all'}:")
        print(markdown_table(rows, list(rows[0])))
        write_csv(rows, "equaliser")
        return 0
    gains = (-6.0, 0.0, 6.0, 12.0) if args.quick else GAINS_DB
    rows = best_gains(pairs, sr, {**objective_parts(cfg), **metric_parts(sr, not args.no_pesq)}, gains)
    print(f"{len(pairs)} speech clips; best gain (dB) of each term per band, against the output's level:")
    print(markdown_table(rows, list(rows[0])))
    write_csv(rows, "levels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
