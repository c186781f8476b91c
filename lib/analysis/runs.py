"""Comparing training runs: the loss and validation curves of several run folders overlaid, and a table of their
final held-out metrics, so that an ablation is one notebook cell::

    fig, rows = compare_runs(["runs/base", "runs/no_som", "runs/balancer"])
    print(runs_table(rows))

A run folder is what the trainer writes: ``log.jsonl`` (train and validation records) and ``config.yaml``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import yaml

__all__ = ["Run", "load_run", "final_metrics", "plot_runs", "compare_runs", "runs_table"]


@dataclass
class Run:
    path: Path
    label: str
    config: dict
    records: list[dict]

    @property
    def train(self) -> list[dict]:
        return [r for r in self.records if r.get("kind") == "train"]

    @property
    def val(self) -> list[dict]:
        return [r for r in self.records if r.get("kind") == "val"]

    @property
    def steps(self) -> int:
        return max((r["step"] for r in self.records), default=0)

    def bitrate(self) -> float | None:
        """Bits per second at all quantizer levels, from the run's config (None for a continuous model)."""
        m = self.config.get("model", {})
        q, sr = m.get("quantizer", {}), self.config.get("data", {}).get("sample_rate")
        if m.get("continuous") or not (q.get("n_q") and q.get("codebook_size") and sr and m.get("ratios")):
            return None
        return q["n_q"] * math.log2(q["codebook_size"]) * sr / math.prod(m["ratios"])


def load_run(run_dir: str | os.PathLike, label: str | None = None) -> Run:
    """The records and config of one run folder; a ValueError names a folder without ``log.jsonl``."""
    path = Path(run_dir)
    log = path / "log.jsonl"
    if not log.is_file():
        raise ValueError(f"{path}: not a run folder (no log.jsonl; train into it first)")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    cfg_file = path / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else {}
    return Run(path, label or path.name, config or {}, records)


def _labels(paths: list[Path], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(paths):
            raise ValueError(f"{len(labels)} labels for {len(paths)} runs")
        return list(labels)
    names = [p.name for p in paths]
    # Folders with the same name (runs/a/run, runs/b/run) are told apart by their parent.
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def final_metrics(runs: Sequence[Run]) -> list[dict]:
    """One row per run: steps, bitrate, the last validation's held-out metrics (mean codebook usage and
    perplexity over levels) and the best validation mel distance with its step."""
    rows = []
    for run in runs:
        val = [r for r in run.val if "mel_distance" in r]
        last = val[-1] if val else {}
        best = min(val, key=lambda r: r["mel_distance"]) if val else {}
        usage = [v for k, v in last.items() if k.startswith("usage_")]
        perplexity = [v for k, v in last.items() if k.startswith("perplexity_")]
        bitrate = run.bitrate()
        rows.append({"run": run.label, "steps": run.steps, "kbps": bitrate / 1000 if bitrate else None,
                     "mel_distance": last.get("mel_distance"), "si_sdr": last.get("si_sdr"),
                     "usage": float(np.mean(usage)) if usage else None,
                     "perplexity": float(np.mean(perplexity)) if perplexity else None,
                     "best_mel_distance": best.get("mel_distance"), "best_step": best.get("step"),
                     "train_seconds": max((r.get("time", 0.0) for r in run.train), default=None)})
    return rows


def plot_runs(runs: Sequence[Run], train_key: str = "mel", axes=None) -> plt.Figure:
    """Overlay the runs: training ``train_key`` loss (log scale), validation mel distance, validation SI-SDR.
    One colour per run in all three panels. Returns the figure."""
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    fig = axes[0].figure
    panels = ((axes[0], "train", train_key, f"training {train_key} loss (log scale)"),
              (axes[1], "val", "mel_distance", "validation mel distance (lower is better)"),
              (axes[2], "val", "si_sdr", "validation SI-SDR, dB (higher is better)"))
    for i, run in enumerate(runs):
        for ax, kind, key, _ in panels:
            pts = [(r["step"], r[key]) for r in (run.train if kind == "train" else run.val) if key in r]
            if pts:
                ax.plot(*zip(*pts), "-" if kind == "train" else "o-", color=f"C{i}", label=run.label, ms=3)
    for ax, kind, key, title in panels:
        ax.set(title=title, xlabel="step")
        if kind == "train" and ax.lines:
            ax.set_yscale("log")
    if axes[1].lines:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def compare_runs(run_dirs: Sequence[str | os.PathLike], labels: Sequence[str] | None = None,
                 train_key: str = "mel") -> tuple[plt.Figure, list[dict]]:
    """Load the run folders, overlay their curves (:func:`plot_runs`) and tabulate :func:`final_metrics`."""
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise ValueError("compare_runs: no run folders given")
    runs = [load_run(p, label) for p, label in zip(paths, _labels(paths, labels))]
    return plot_runs(runs, train_key), final_metrics(runs)


def runs_table(rows: list[dict], digits: int = 3) -> str:
    """The rows of :func:`final_metrics` as a fixed-width text table."""
    if not rows:
        return ""
    cols = list(rows[0])

    def cell(v):
        if v is None:
            return "-"
        return f"{v:.{digits}g}" if isinstance(v, float) else str(v)

    table = [list(cols)] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) if j else v.ljust(w) for j, (v, w) in enumerate(zip(row, widths)))
                     for row in table)
