"""A run folder's files: ``log.jsonl`` read and cut back tolerantly, stale temp files removed, an old run moved
aside before a fresh one.

``log.jsonl`` is append-only while a run lives; a run killed mid-write can leave a partial last line, and a run
killed after its last checkpoint leaves records that a resumed run will write again. :func:`truncate_log` (called
on every start, resumed or not) keeps exactly the records up to the checkpoint's step, so that the log of an
interrupted and resumed run equals that of an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from lib.atomic import atomic_path

RUN_FILES = ("checkpoint.pt", "checkpoint.prev.pt", "log.jsonl")


def _records(path: Path) -> tuple[list[dict], list[int]]:
    """The records of ``path`` and the numbers of the lines that are not JSON records (e.g. a partial last line)."""
    records, bad = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
        else:
            bad.append(number)
    return records, bad


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a run's ``log.jsonl`` ([] when there is none); unreadable lines are left out with a warning."""
    path = Path(path)
    if not path.is_file():
        return []
    records, bad = _records(path)
    if bad:
        warnings.warn(f"{path}: left out {len(bad)} unreadable line(s) (line {', '.join(map(str, bad[:5]))}; "
                      "a run killed while writing?)", stacklevel=2)
    return records


def truncate_log(path: str | os.PathLike, step: int) -> None:
    """Keep the records of steps ``<= step`` (written atomically); drop later ones and unreadable lines."""
    path = Path(path)
    if not path.is_file():
        return
    records, _ = _records(path)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records if r["step"] <= step))


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temp files of checkpoint and log writes that a killed run left behind; returns them."""
    stale = [p for pattern in (".checkpoint*.tmp", ".log.jsonl*.tmp") for p in Path(run_dir).glob(pattern)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def set_aside(run_dir: str | os.PathLike) -> Path | None:
    """Move a previous run (a folder holding a checkpoint or a log) to ``<run_dir>.old<k>`` (the first free k) and
    leave an empty ``run_dir``; returns where it went, or None when ``run_dir`` held no run."""
    run_dir = Path(run_dir)
    if not any((run_dir / name).exists() for name in RUN_FILES):
        return None
    k = 1
    while run_dir.with_name(f"{run_dir.name}.old{k}").exists():
        k += 1
    target = run_dir.with_name(f"{run_dir.name}.old{k}")
    os.rename(run_dir, target)
    run_dir.mkdir()
    return target
