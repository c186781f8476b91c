"""Paired differences between systems scored on the same clips: is a difference more than the clips' noise?

    python bench/quality.py --score runs/a/checkpoint.pt runs/b/checkpoint.pt --split valid --out ab
    python bench/paired.py bench/results/ab_clips.csv                        # each system against the first
    python bench/paired.py bench/results/ab_clips.csv --n-q 4 --base runs/b/checkpoint.pt

Each system is compared with the base (the file's first system unless ``--base``) clip by clip, on the clips where
both have a finite score: the mean difference (system minus base), its standard error (the per-clip differences'
standard deviation over the square root of their number) and their ratio, ``t``. A difference within about two
standard errors is one the choice of clips could have made; one beyond it belongs to the two checkpoints, and may
still be one a second seed of the same recipe would show (docs/results.md, "A valid split three times larger").
Writes ``bench/results/paired.csv``.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_csv  # noqa: E402

METRICS = ("pesq_wb", "stoi", "si_sdr", "mel_distance", "dnsmos_ovrl", "dnsmos_p808")
PER_CLIP_COLUMNS = ("system", "n_q", "clip", "kind")


def read_clip_scores(path: str | Path) -> list[dict]:
    """The rows of a per-clip CSV (``bench/quality.py --score ... --out NAME`` writes ``NAME_clips.csv``), metric
    values as floats (an empty cell: NaN). A clear error for a missing file or another kind of CSV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (bench/quality.py --score ... --out NAME writes "
                                f"bench/results/NAME_clips.csv)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in PER_CLIP_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: not a per-clip score file (no column {', '.join(missing)}); "
                         f"bench/quality.py --score writes one as NAME_clips.csv")
    for row in rows:
        for key in METRICS:
            if key in row:
                row[key] = float(row[key]) if row[key] not in ("", "nan") else math.nan
    return rows


def paired_difference(rows: list[dict], base: str, system: str, metric: str) -> dict:
    """``system`` against ``base`` on ``metric`` over the clips both scored: the two means, the mean difference,
    its standard error and their ratio ``t`` (NaN where fewer than two clips pair up)."""
    a = {r["clip"]: r[metric] for r in rows if r["system"] == base}
    b = {r["clip"]: r[metric] for r in rows if r["system"] == system}
    clips = [c for c in a if c in b and math.isfinite(a[c]) and math.isfinite(b[c])]
    diffs = np.array([b[c] - a[c] for c in clips])
    se = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
    mean = float(diffs.mean()) if len(diffs) else math.nan
    return {"system": system, "metric": metric, "clips": len(clips),
            "base": float(np.mean([a[c] for c in clips])) if clips else math.nan,
            "mean": float(np.mean([b[c] for c in clips])) if clips else math.nan,
            "difference": mean, "standard_error": se, "t": mean / se if se > 0 else math.nan}


def compare(rows: list[dict], n_q: int, kind: str, base: str | None = None) -> list[dict]:
    """Every system of ``rows`` against ``base`` (default: the first) at ``n_q`` on clips of ``kind``, every metric
    the file has a finite value of."""
    chosen = [r for r in rows if int(r["n_q"]) == n_q and r["kind"] == kind]
    systems = list(dict.fromkeys(r["system"] for r in chosen))
    if not chosen:
        have = sorted({(int(r["n_q"]), r["kind"]) for r in rows})
        raise ValueError(f"no clip scored at n_q {n_q} of kind {kind!r}; the file has (n_q, kind): {have}")
    base = base or systems[0]
    if base not in systems:
        raise ValueError(f"--base {base!r} is not a system of the file; it has {systems}")
    metrics = [m for m in METRICS if any(math.isfinite(r.get(m, math.nan)) for r in chosen)]
    return [paired_difference(chosen, base, s, m) for s in systems if s != base for m in metrics]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips_csv", help="bench/results/NAME_clips.csv from bench/quality.py --score ... --out NAME")
    ap.add_argument("--n-q", type=int, default=8, help="the rung compared (default 8: 6 kbps)")
    ap.add_argument("--kind", default="speech", help="the clip group compared (speech, synthetic speech, other)")
    ap.add_argument("--base", default=None, help="the system the others are compared with (default: the first)")
    args = ap.parse_args(argv)
    try:
        rows = compare(read_clip_scores(args.clips_csv), args.n_q, args.kind, args.base)
    except (OSError, ValueError) as err:
        ap.error(str(err))
    print(f"against {args.base or 'the first system'}, n_q {args.n_q}, {args.kind}:")
    print(markdown_table(rows, list(rows[0])))
    write_csv(rows, "paired")
    return 0


if __name__ == "__main__":
    sys.exit(main())
