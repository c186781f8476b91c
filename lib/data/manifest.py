"""Folder manifests and stable splits: scanning a folder, checking each file once, the manifest CSV and its
summaries (re-exported by :mod:`lib.data.datasets`).

Splits come from a hash of each file's relative path, so adding files never moves existing ones between
train, valid and test.
"""
from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from lib.headless import progress_bar as tqdm

from lib.atomic import atomic_path
from lib.data.audio import AUDIO_EXTENSIONS, DEFAULT_SILENCE_THRESHOLD, MISSING, AudioError, check_audio

SPLITS = ("train", "valid", "test")
# What a clip holds, for choosing clips to show and for reporting metrics apart: "speech" is recorded human speech,
# "synthetic speech" a speech synthesiser's; "" is an unlabelled clip (a folder of your own without `kinds`).
CLIP_KINDS = ("speech", "synthetic speech", "music", "other")
SPEECH_KINDS = ("speech", "synthetic speech")
DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)
MANIFEST_NAME = "manifest.csv"


class SkippedFileWarning(UserWarning):
    """Emitted once for each audio file that is left out of a manifest or a conversion."""


# ----------------------------------------------------------------------------------------------------------
# Scanning, splits and the manifest
# ----------------------------------------------------------------------------------------------------------

def scan_folder(root: str | os.PathLike, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """All files under `root` (recursively) whose extension is in `extensions`, sorted by relative path.

    Hidden files and folders (name starting with '.', e.g. macOS '._x.wav' shadows) are ignored.
    The default extensions include audio formats libsndfile cannot read (.m4a, .aac, ...) so that such files
    are reported as unsupported instead of vanishing silently.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"audio folder '{root}' does not exist or is not a folder")
    extensions = {e.lower() for e in extensions}
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [Path(folder) / n for n in names
                  if not n.startswith(".") and Path(n).suffix.lower() in extensions]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers (train, valid, test) summing to 1, "
                         f"got {tuple(fractions)}")
    return tuple(float(f) for f in fractions)


def split_of(relpath: str | os.PathLike, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """'train', 'valid' or 'test' for a file, from a SHA-1 of its relative path (stable across runs/machines).

    The hash maps the path to u in [0, 1); the split is the fraction interval u falls in. A file's split
    depends only on its own path and the fractions, never on which other files exist.
    """
    fractions = _check_fractions(fractions)
    key = str(relpath).replace("\\", "/").encode("utf-8")
    u = int.from_bytes(hashlib.sha1(key).digest()[:8], "big") / 2.0 ** 64
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions):
        edge += fraction
        if fraction > 0 and u < edge:
            return name
    return [n for n, f in zip(SPLITS, fractions) if f > 0][-1]  # u just below 1 with rounding in the sum


@dataclass
class ManifestEntry:
    """One row of manifest.csv. `path` is relative to the dataset root (POSIX separators)."""

    path: str
    status: str  # "ok" or an AudioError reason
    split: str
    duration: float = 0.0  # seconds
    sample_rate: int = 0
    channels: int = 0
    frames: int = 0
    size: int = 0  # bytes; with mtime_ns decides whether the row can be reused
    mtime_ns: int = 0
    kind: str = ""  # one of CLIP_KINDS, or "" when unlabelled

    @property
    def speech(self) -> bool:
        return self.kind in SPEECH_KINDS

    @property
    def ok(self) -> bool:
        return self.status == "ok"


MANIFEST_FIELDS = [f.name for f in fields(ManifestEntry)]
OPTIONAL_FIELDS = ("kind",)  # columns a manifest written before they existed may lack


def read_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """Read a manifest.csv written by `build_manifest`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"manifest '{path}' does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [k for k in MANIFEST_FIELDS if k in (reader.fieldnames or [])]
        missing = set(MANIFEST_FIELDS) - set(columns) - set(OPTIONAL_FIELDS)
        if missing:
            raise ValueError(f"manifest '{path}' lacks columns {sorted(missing)}")
        types = {f.name: f.type for f in fields(ManifestEntry)}
        convert = {"float": float, "int": int, "str": str}
        return [ManifestEntry(**{k: convert[types[k]](row[k]) for k in columns}) for row in reader]


def write_manifest(path: str | os.PathLike, entries: Sequence[ManifestEntry]) -> Path:
    """Write entries as CSV (atomically: a reader never sees half a file).

    Two runs started together on one data folder may both write it; :func:`lib.atomic.atomic_path` keeps them
    apart.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for entry in entries:
            row = asdict(entry)
            row["duration"] = f"{entry.duration:.6f}"
            writer.writerow(row)
    return path


CORPUS_REPORT = "corpus.json"  # written by lib.data.corpus.build_default_corpus; its records carry each clip's kind
KINDS_FILE = "kinds.json"  # the `kinds` a folder was last labelled with, so that every later build keeps them


def _check_kind(kind: str, where: str) -> str:
    if kind not in CLIP_KINDS + ("",):
        raise ValueError(f"{where}: unknown clip kind {kind!r}; choose from {CLIP_KINDS} (or '' for unlabelled)")
    return kind


def _read_json(path: Path):
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError) as err:
        warnings.warn(f"ignoring unreadable {path}: {err}", stacklevel=4)
        return None


def kind_labeller(root: str | os.PathLike, kinds: str | Mapping[str, str] | None = None):
    """A function `relative path -> kind` (one of CLIP_KINDS, or "" for unlabelled).

    kinds: one kind for every file ("speech" for a folder of recordings of people talking); or a mapping of
    glob patterns on the relative path to kinds, the first matching pattern wins (`{"podcasts/*": "speech",
    "*": "music"}`); or None: what `root/kinds.json` holds (the `kinds` `build_manifest` was last given for
    this folder), else the kinds `root/corpus.json` records (the default corpus), else unlabelled.
    """
    if kinds is None:
        kinds = _read_json(Path(root) / KINDS_FILE)
    if isinstance(kinds, str):
        kind = _check_kind(kinds, "kinds")
        return lambda rel: kind
    if isinstance(kinds, Mapping):
        patterns = [(pattern, _check_kind(kind, f"kinds[{pattern!r}]")) for pattern, kind in kinds.items()]
        return lambda rel: next((kind for pattern, kind in patterns if fnmatch.fnmatchcase(rel, pattern)), "")
    if kinds is not None:
        raise ValueError(f"kinds must be a kind, a mapping of glob patterns to kinds, or None; got {kinds!r}")
    recorded = {path: _check_kind(r.get("kind", ""), f"{Path(root) / CORPUS_REPORT} ({path})")
                for path, r in corpus_records(root).items()}
    return lambda rel: recorded.get(rel, "")


def corpus_records(root: str | os.PathLike) -> dict[str, dict]:
    """`{relative path: record}` of the clips `root/corpus.json` lists ({} where there is none)."""
    return {r["path"]: r for r in (_read_json(Path(root) / CORPUS_REPORT) or {}).get("files", [])}


def recorded_splits(root: str | os.PathLike) -> dict[str, str]:
    """The splits `root/corpus.json` fixes for some clips (`{relative path: split}`): the default corpus's held-out
    speakers, whose every clip goes to valid or test so that no test speaker is ever trained on."""
    fixed = {path: r["split"] for path, r in corpus_records(root).items() if r.get("split")}
    bad = {path: split for path, split in fixed.items() if split not in SPLITS}
    if bad:
        raise ValueError(f"{Path(root) / CORPUS_REPORT}: unknown split for {bad}; choose from {SPLITS}")
    return fixed


def _remember_kinds(root: Path, kinds: str | Mapping[str, str] | None) -> None:
    if kinds is not None:
        try:
            with atomic_path(root / KINDS_FILE) as tmp:
                Path(tmp).write_text(json.dumps(kinds if isinstance(kinds, str) else dict(kinds), indent=1))
        except OSError as err:  # a read-only folder: the labels hold for this build only
            warnings.warn(f"could not write {root / KINDS_FILE} ({err}); later builds will not know the kinds",
                          stacklevel=3)


def build_manifest(root: str | os.PathLike, manifest_path: str | os.PathLike | None = None,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS,
                   silence_threshold: float = DEFAULT_SILENCE_THRESHOLD,
                   progress: bool = True, kinds: str | Mapping[str, str] | None = None) -> list[ManifestEntry]:
    """Check every audio file under `root` and write `manifest_path` (default `root/manifest.csv`).

    A row from an existing manifest is reused when the file's size and mtime are unchanged, so only new or
    modified files are read (bad rows are reused too: a corrupt file stays skipped until it changes).
    Splits are recomputed from `fractions` every time (cheap, and stable per file; a split that `root/corpus.json`
    fixes for a clip wins, see `recorded_splits`), and so are the clip kinds
    from `kinds` (see `kind_labeller`; kinds given are kept in `root/kinds.json` for later builds). Each newly
    found bad file gives one SkippedFileWarning. Raises ValueError naming the folder when no file is usable.
    """
    root = Path(root)
    files = scan_folder(root)
    fractions = _check_fractions(fractions)
    kind_of = kind_labeller(root, kinds)
    _remember_kinds(root, kinds)
    fixed = recorded_splits(root)

    def split_for(rel: str) -> str:
        return fixed.get(rel) or split_of(rel, fractions)
    manifest_path = Path(manifest_path) if manifest_path is not None else root / MANIFEST_NAME
    previous: dict[str, ManifestEntry] = {}
    if manifest_path.is_file():
        try:
            previous = {e.path: e for e in read_manifest(manifest_path)}
        except (ValueError, KeyError) as err:  # unreadable old manifest: rebuild from scratch
            warnings.warn(f"ignoring unreadable manifest {manifest_path}: {err}", stacklevel=2)

    entries, to_check = [], []
    for file in files:
        rel = file.relative_to(root).as_posix()
        try:
            stat = file.stat()
        except OSError as err:  # a dangling or looping symlink: skipped like any missing file
            entries.append(ManifestEntry(rel, MISSING, split_for(rel), kind=kind_of(rel)))
            warnings.warn(f"skipping {AudioError(file, MISSING, err.strerror or str(err))}", SkippedFileWarning,
                          stacklevel=2)
            continue
        old = previous.get(rel)
        if old is not None and old.size == stat.st_size and old.mtime_ns == stat.st_mtime_ns:
            entries.append(replace(old, split=split_for(rel), kind=kind_of(rel)))
        else:
            to_check.append((file, rel, stat))
    for file, rel, stat in tqdm(to_check, desc="checking audio", unit="file", disable=not progress or not to_check):
        entry = ManifestEntry(rel, "ok", split_for(rel), size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                              kind=kind_of(rel))
        try:
            info = check_audio(file, silence_threshold=silence_threshold)
            entry.duration, entry.sample_rate = info.duration, info.sample_rate
            entry.channels, entry.frames = info.channels, info.frames
        except AudioError as err:
            entry.status = err.reason
            warnings.warn(f"skipping {err}", SkippedFileWarning, stacklevel=2)
        entries.append(entry)
    if not files:
        raise ValueError(f"no audio files in folder '{root}' (searched recursively for "
                         f"{', '.join(sorted(AUDIO_EXTENSIONS))})")
    entries.sort(key=lambda e: e.path)
    try:
        write_manifest(manifest_path, entries)
    except OSError as err:  # e.g. a read-only folder: still usable, only the cache is lost
        warnings.warn(f"could not write manifest {manifest_path} ({err}); pass manifest_path to keep it",
                      stacklevel=2)
    if not any(e.ok for e in entries):
        reasons = Counter(e.status for e in entries)
        raise ValueError(f"no usable audio in folder '{root}': all {len(entries)} audio files were skipped "
                         f"({', '.join(f'{n} {r}' for r, n in sorted(reasons.items()))}); see {manifest_path}")
    return entries


def summarize_manifest(entries: Sequence[ManifestEntry]) -> dict[str, dict]:
    """Per split: files, seconds, min/mean/max clip seconds; plus 'skipped': {reason: count}."""
    summary: dict[str, dict] = {}
    for split in SPLITS:
        durations = [e.duration for e in entries if e.ok and e.split == split]
        summary[split] = {
            "files": len(durations),
            "seconds": float(sum(durations)),
            "min": min(durations, default=0.0),
            "mean": float(np.mean(durations)) if durations else 0.0,
            "max": max(durations, default=0.0),
        }
    summary["skipped"] = dict(Counter(e.status for e in entries if not e.ok))
    return summary


def minutes_by_kind(entries: Sequence[ManifestEntry]) -> list[dict]:
    """Minutes of usable audio per kind of clip and split: rows `{"kind", "train", "valid", "test"}`, kinds in
    `CLIP_KINDS` order, unlabelled clips last."""
    rows: dict[str, dict] = {}
    for e in sorted((e for e in entries if e.ok), key=lambda e: (CLIP_KINDS + ("",)).index(e.kind)):
        row = rows.setdefault(e.kind, {"kind": e.kind or "unlabelled", **dict.fromkeys(SPLITS, 0.0)})
        row[e.split] += e.duration / 60
    return list(rows.values())


def manifest_table(entries: Sequence[ManifestEntry]) -> str:
    """A plain-text table of `summarize_manifest` (for notebooks without pandas)."""
    summary = summarize_manifest(entries)
    header = f"{'split':<8}{'files':>7}{'minutes':>10}{'min s':>9}{'mean s':>9}{'max s':>9}"
    lines = [header, "-" * len(header)]
    for split in SPLITS:
        s = summary[split]
        lines.append(f"{split:<8}{s['files']:>7}{s['seconds'] / 60:>10.2f}"
                     f"{s['min']:>9.2f}{s['mean']:>9.2f}{s['max']:>9.2f}")
    total = sum(summary[s]["files"] for s in SPLITS), sum(summary[s]["seconds"] for s in SPLITS)
    lines.append(f"{'total':<8}{total[0]:>7}{total[1] / 60:>10.2f}")
    for reason, count in sorted(summary["skipped"].items()):
        lines.append(f"skipped: {count} file(s) {reason}")
    return "\n".join(lines)


def pick_examples(entries: Sequence[ManifestEntry], n: int, min_seconds: float = 1.0,
                  split: str | None = None) -> list[ManifestEntry]:
    """Up to `n` usable clips for showing, taken in turn from each top-level folder (e.g. one music clip,
    one speech clip, ...) so that examples differ. Clips of at least `min_seconds` are preferred; the choice
    within a folder follows a hash of the path, so it is the same on every run."""
    usable = [e for e in entries if e.ok and (split is None or e.split == split)]
    long_enough = [e for e in usable if e.duration >= min_seconds] or usable
    groups: dict[str, list[ManifestEntry]] = {}
    for entry in sorted(long_enough, key=lambda e: hashlib.sha1(e.path.encode()).hexdigest()):  # stable shuffle
        groups.setdefault(entry.path.split("/")[0] if "/" in entry.path else "", []).append(entry)
    picked, queues = [], [list(reversed(g)) for g in groups.values()]
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return picked


def format_report(report: dict) -> str:
    """Human-readable lines for a `build_default_corpus` or `convert_folder` report."""
    if "sources" in report:
        lines = [f"{name:<10}{s['files']:>6} files{s['minutes']:>8.2f} min" for name, s in report["sources"].items()]
        lines.append(f"{'total':<10}{report['n_files']:>6} files{report['minutes_total']:>8.2f} min at "
                     f"{report['sample_rate']} Hz" + (" (reused from corpus.json)" if report.get("reused") else
                                                      f", built in {report['build_seconds']} s"))
        return "\n".join(lines)
    lines = [f"converted {report['converted']} files, {report['up_to_date']} already up to date, "
             f"{report['minutes']:.2f} min at {report['sample_rate']} Hz in {report['dst']}"]
    lines += [f"skipped {path}: {reason}" for path, reason in report["skipped"].items()]
    return "\n".join(lines)
