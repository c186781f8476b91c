"""Shared helpers for the benchmarks: threads, the test clip, interleaved timing, tables and CSV files.

Every benchmark times on 2 CPU threads and interleaves the things it compares (A B A B ...), so a load spike
from another process hits all of them alike; it reports medians.
"""
from __future__ import annotations

import csv
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

# Threads that wait at an OpenMP barrier sleep instead of spinning. On a 2-core machine shared with other
# processes, spinning threads steal the cores their peers need: 2-thread torch ran 5-12x slower than 1 thread
# here under load (0.23 s vs 4.3 s for one encode+decode of 2 s audio, cpu preset). Set before torch loads
# libgomp; inherited by every worker process. Override by setting OMP_WAIT_POLICY yourself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the scripts run as `python bench/X.py` from anywhere
    sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
DATA = REPO / "data" / "default"
THREADS = 2


def set_threads(n: int = THREADS) -> None:
    """Intra-op threads for timings (the machines this is written for have 2 cores)."""
    import torch

    torch.set_num_threads(n)


def bench_clip(seconds: float = 10.0, sample_rate: int = 24000, data_dir: str | Path = DATA):
    """A mono clip ``[1, 1, T]`` of exactly ``seconds``, plus a description of where it came from.

    Real held-out recordings from ``data_dir`` (``lib.data.datasets.held_out_clips``, the trainer's validation
    set) are concatenated until the length is reached; without a corpus (or with too little held-out audio) a
    deterministic synthetic mix (harmonic tone + noise bursts) is used.
    """
    import torch

    n = int(round(seconds * sample_rate))
    try:
        from lib.data.datasets import held_out_clips

        clips = held_out_clips(data_dir, sample_rate, n=10**9, seconds=None)
        pieces, names, total = [], [], 0
        for name, wav in clips.items():
            pieces.append(wav[:1])  # [1, T]
            names.append(name)
            total += wav.shape[-1]
            if total >= n:
                break
        if total >= n:
            clip = torch.cat(pieces, dim=-1)[..., :n].unsqueeze(0).float()
            return clip, (f"{len(pieces)} real clips from {data_dir} ({', '.join(names[:3])}"
                          f"{', ...' if len(names) > 3 else ''}) concatenated to {seconds:g} s")
    except Exception as err:  # no corpus or unreadable: fall back, and say so
        print(f"note: corpus not usable ({err}); using a synthetic clip", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n) / sample_rate
    tone = 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.1 * torch.sin(2 * math.pi * 660 * t)
    bursts = 0.1 * torch.randn(n, generator=g) * (torch.sin(2 * math.pi * 2 * t) > 0.7)
    return (tone + bursts).view(1, 1, n).float(), f"synthetic {seconds:g} s clip (no corpus at {data_dir})"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time (s) of one call, and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(tasks: dict[str, Callable[[], float | dict]], repeats: int, warmup: int = 1,
                log: Callable[[str], None] | None = None) -> dict[str, list]:
    """Run ``tasks`` round-robin (A B C A B C ...) ``warmup + repeats`` times; keep the last ``repeats`` results.

    Each task returns what it measured (seconds, or a dict of seconds). Round-robin rather than A A A B B B so
    that a burst of load from other processes lands on every task, not on one.
    """
    results: dict[str, list] = {name: [] for name in tasks}
    for r in range(warmup + repeats):
        for name, task in tasks.items():
            value = task()
            if r >= warmup:
                results[name].append(value)
            if log:
                label = "warm-up" if r < warmup else f"run {r - warmup + 1}/{repeats}"
                log(f"  {label} {name}: {value}")
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _proc_status_mb(field: str) -> float | None:
    """A memory field (``VmRSS``, ``VmHWM``) of /proc/self/status in MB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> float | None:
    """Reset the kernel's resident-memory high-water mark (VmHWM) to the current RSS; return that RSS in MB.

    Writing 5 to /proc/self/clear_refs does the reset (Linux >= 4.0). Returns None where that is impossible,
    and callers then fall back to ``ru_maxrss`` (the peak over the whole process life).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _proc_status_mb("VmRSS")


def peak_rss_since_reset_mb() -> float | None:
    """VmHWM in MB: the resident-memory peak since the last :func:`reset_peak_rss` (or process start)."""
    return _proc_status_mb("VmHWM")


def fmt(value, digits: int = 3) -> str:
    """Compact cell text: ints with thousands separators, floats to ``digits`` significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.{digits - len(str(int(abs(value))))}f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (dicts); ``columns`` picks and orders the keys."""
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def mean_rows(per_kind: dict[str, list[dict]], **fields) -> list[dict]:
    """One row per kind: ``fields``, the number of clips and each metric's mean over them (NaNs left out; a metric
    with no finite value is NaN, without numpy's empty-slice warning)."""
    import numpy as np

    return [{**fields, "kind": kind, "clips": len(ms),
             **{k: float(np.nanmean(v)) if np.isfinite(v := [m[k] for m in ms]).any() else math.nan for k in ms[0]}}
            for kind, ms in per_kind.items()]


def write_csv(rows: list[dict], name: str) -> Path:
    """Write ``rows`` to ``bench/results/<name>.csv`` (every key that appears in any row) and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


def machine_note() -> str:
    """One line on where the numbers came from (cores, load) for the printed report."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{os.cpu_count()} cores, {THREADS} torch threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
            f"load average {load[0]:.2f} at the end "
            f"(other processes share the machine: compare ratios within a table, not absolute times across runs)")


class WorkerProcess:
    """The parent's handle on a benchmark worker: a fresh interpreter answering one JSON line per request.

    The worker prints ``@@ {json}`` once when ready (kept as ``info``) and once per request line it reads;
    ``quit`` ends it. A fresh process per model keeps one model's memory peak from hiding another's.
    """

    def __init__(self, name: str, cmd: list[str], cwd: str | Path):
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd)
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        raise RuntimeError(f"worker {self.name} exited (code {self.proc.wait()}) without answering")

    def request(self, verb: str) -> dict:
        self.proc.stdin.write(verb + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
