"""Audio datasets: folder manifests, stable splits, a torch Dataset, held-out clips and folder conversion.

The flow is
    corpus.build_default_corpus(out_dir) or convert_folder(my_audio, out_dir)  -> clean mono WAV files
    build_manifest(out_dir)                                               -> manifest.csv (checked once, reused)
    AudioFolder(out_dir, "train", segment_seconds=1.0)                    -> [1, T] tensors

Splits come from a hash of each file's relative path, so adding files never moves existing ones between
train, valid and test.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, get_worker_info
from tqdm.auto import tqdm

from lib.data.audio import (AUDIO_EXTENSIONS, DEFAULT_SILENCE_THRESHOLD, SILENT, AudioError, check_audio, load_audio,
                            save_audio)

SPLITS = ("train", "valid", "test")
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

    @property
    def ok(self) -> bool:
        return self.status == "ok"


MANIFEST_FIELDS = [f.name for f in fields(ManifestEntry)]


def read_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """Read a manifest.csv written by `build_manifest`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"manifest '{path}' does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(MANIFEST_FIELDS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"manifest '{path}' lacks columns {sorted(missing)}")
        types = {f.name: f.type for f in fields(ManifestEntry)}
        convert = {"float": float, "int": int, "str": str}
        return [ManifestEntry(**{k: convert[types[k]](row[k]) for k in MANIFEST_FIELDS}) for row in reader]


def write_manifest(path: str | os.PathLike, entries: Sequence[ManifestEntry]) -> Path:
    """Write entries as CSV (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for entry in entries:
            row = asdict(entry)
            row["duration"] = f"{entry.duration:.6f}"
            writer.writerow(row)
    os.replace(tmp, path)
    return path


def build_manifest(root: str | os.PathLike, manifest_path: str | os.PathLike | None = None,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS,
                   silence_threshold: float = DEFAULT_SILENCE_THRESHOLD,
                   progress: bool = True) -> list[ManifestEntry]:
    """Check every audio file under `root` and write `manifest_path` (default `root/manifest.csv`).

    A row from an existing manifest is reused when the file's size and mtime are unchanged, so only new or
    modified files are read (bad rows are reused too: a corrupt file stays skipped until it changes).
    Splits are recomputed from `fractions` every time (cheap, and stable per file). Each newly found bad file
    gives one SkippedFileWarning. Raises ValueError naming the folder when no file is usable.
    """
    root = Path(root)
    files = scan_folder(root)
    fractions = _check_fractions(fractions)
    manifest_path = Path(manifest_path) if manifest_path is not None else root / MANIFEST_NAME
    previous: dict[str, ManifestEntry] = {}
    if manifest_path.is_file():
        try:
            previous = {e.path: e for e in read_manifest(manifest_path)}
        except (ValueError, KeyError) as err:  # unreadable old manifest: rebuild from scratch
            warnings.warn(f"ignoring unreadable manifest {manifest_path}: {err}", stacklevel=2)

    entries, to_check = [], []
    for file in files:
        rel, stat = file.relative_to(root).as_posix(), file.stat()
        old = previous.get(rel)
        if old is not None and old.size == stat.st_size and old.mtime_ns == stat.st_mtime_ns:
            entries.append(replace(old, split=split_of(rel, fractions)))
        else:
            to_check.append((file, rel, stat))
    for file, rel, stat in tqdm(to_check, desc="checking audio", unit="file", disable=not progress or not to_check):
        entry = ManifestEntry(rel, "ok", split_of(rel, fractions), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
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


# ----------------------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------------------

def crop_or_pad(wav: torch.Tensor, segment: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`[C, T] -> [C, segment]`: a random crop if longer, right zero-padded if shorter, the whole clip if equal.

    The crop start is drawn from `generator`, so a caller that seeds it (the trainer seeds one per step) gets
    the same crops again.
    """
    length = wav.shape[-1]
    if length > segment:
        start = int(torch.randint(0, length - segment + 1, (1,), generator=generator))
        return wav[..., start:start + segment].clone()
    if length < segment:
        return F.pad(wav, (0, segment - length))
    return wav.clone()


class AudioFolder(Dataset):
    """Clips of one split of a folder, as float32 `[C, T]` tensors (C=1 with mono=True) at `sample_rate`.

    segment_seconds (or segment_samples) set: training mode, every item is a random crop of exactly that many
    samples; clips shorter than the segment are zero-padded on the right, a clip of exactly the segment
    length is returned whole. Neither set: evaluation mode, whole clips of varying length (batch them with
    `collate_segments`). Crops are random per call: in the main process they follow a generator seeded with
    `seed`; in DataLoader workers the seed also mixes in the worker seed, so workers and epochs differ.

    manifest: None builds/reuses `root/manifest.csv`; a path reads that CSV (building it if missing);
    a list of ManifestEntry is used as is. split="all" takes every usable file.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", sample_rate: int = 24000,
                 segment_seconds: float | None = None, mono: bool = True,
                 manifest: str | os.PathLike | Sequence[ManifestEntry] | None = None, seed: int = 0,
                 segment_samples: int | None = None, cache: bool = True):
        if split not in SPLITS + ("all",):
            raise ValueError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
        if segment_seconds is not None and segment_samples is not None:
            raise ValueError("give segment_seconds or segment_samples, not both")
        if segment_seconds is not None:
            if segment_seconds <= 0:
                raise ValueError(f"segment_seconds must be positive, got {segment_seconds}")
            segment_samples = max(1, int(round(segment_seconds * sample_rate)))
        if segment_samples is not None and segment_samples <= 0:
            raise ValueError(f"segment_samples must be positive, got {segment_samples}")
        self.root = Path(root)
        self.split, self.sample_rate, self.mono, self.seed = split, int(sample_rate), mono, int(seed)
        self.segment_samples = segment_samples
        if manifest is None:
            entries = build_manifest(self.root, progress=False)
        elif isinstance(manifest, (str, os.PathLike)):
            entries = read_manifest(manifest) if Path(manifest).is_file() else \
                build_manifest(self.root, manifest, progress=False)
        else:
            entries = list(manifest)
        self.entries = [e for e in entries if e.ok and (split == "all" or e.split == split)]
        if not self.entries:
            counts = Counter(e.split for e in entries if e.ok)
            raise ValueError(f"split '{split}' of '{self.root}' has no usable files (usable per split: "
                             f"{dict(counts)}); add audio or change the split fractions")
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None
        self._generator: torch.Generator | None = None
        self._generator_owner: tuple | None = None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def durations(self) -> list[float]:
        """Seconds per clip, in dataset order."""
        return [e.duration for e in self.entries]

    def load(self, index: int) -> torch.Tensor:
        """The whole clip `index` as `[C, T]` at self.sample_rate (cached in memory when cache=True)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        wav = load_audio(self.root / self.entries[index].path, self.sample_rate, mono=self.mono)
        if self._cache is not None:
            self._cache[index] = wav
        return wav

    def _rng(self) -> torch.Generator:
        # A forked worker inherits the parent's generator state; re-seed once per process/worker so that
        # workers draw different crops, and (through info.seed) different crops each epoch.
        info = get_worker_info()
        owner = (os.getpid(), None if info is None else info.id)
        if owner != self._generator_owner:
            seed = self.seed if info is None else (self.seed * 1_000_003 + info.seed) % (2 ** 63)
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_owner = owner
        return self._generator

    def crop(self, wav: torch.Tensor) -> torch.Tensor:
        """`[C, T] -> [C, segment_samples]`: see `crop_or_pad`."""
        return crop_or_pad(wav, self.segment_samples, generator=self._rng())

    def __getitem__(self, index: int) -> torch.Tensor:
        wav = self.load(index)
        return self.crop(wav) if self.segment_samples is not None else wav.clone()


class StepBatches(torch.utils.data.Dataset):
    """Training batches indexed by step: batch ``s`` depends only on (seed, rank, s).

    This is what makes resume exact without saving a data-loader state, and lets DataLoader workers load files
    in parallel. Each item is a random crop of ``segment`` samples (short clips zero-padded). Clips are drawn
    with probability proportional to their duration, i.e. uniformly over time, so a corpus of many short
    one-shots does not fill batches with padding.
    """

    def __init__(self, clips: AudioFolder, batch_size: int, segment: int, seed: int, rank: int = 0):
        self.clips, self.batch_size, self.segment = clips, batch_size, segment
        self.seed, self.rank = seed, rank
        self.weights = torch.tensor(clips.durations, dtype=torch.float64).clamp_min(1e-3)

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank * 7919 + step)
        idx = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=g).tolist()
        return torch.stack([crop_or_pad(self.clips.load(i), self.segment, generator=g) for i in idx])


HELD_OUT_ORDER = ("valid", "test", "train")


def held_out_clips(data_dir: str | os.PathLike, sample_rate: int, n: int = 8,
                   seconds: float | None = 4.0, split: str | None = None) -> dict[str, torch.Tensor]:
    """The held-out clips every measurement uses: ``{name: wav [C, T]}``, at most ``n`` of them.

    The first ``n`` clips (manifest order) of the first non-empty split of ``valid``, ``test``, ``train`` (a corpus
    too small to have held-out files falls back to its training clips), each cut to its first ``seconds``
    (whole clip for None). Names are the relative paths without extension. The trainer's validation, notebooks 03
    and 04 and the benchmarks all call this, so their numbers come from the same clips. ``split`` names one split
    instead (the quality race reports the ``test`` split, which nothing is tuned on).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds must be positive or None, got {seconds}")
    for split in (HELD_OUT_ORDER if split is None else (split,)):
        try:
            folder = AudioFolder(data_dir, split=split, sample_rate=sample_rate)
        except ValueError:  # an empty split: try the next one
            continue
        if len(folder):
            max_len = None if seconds is None else int(seconds * sample_rate)
            return {Path(folder.entries[i].path).with_suffix("").as_posix(): folder.load(i)[..., :max_len]
                    for i in range(min(n, len(folder)))}
    raise ValueError(f"{os.fspath(data_dir)}: no usable clips (no valid, test or train split with audio)")


def collate_segments(batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `[C, T_i]` clips of any lengths: `([B, C, max T_i] right zero-padded, lengths [B] int64)`.

    Use as DataLoader(collate_fn=collate_segments) for whole-clip evaluation; fixed-length training crops
    batch with it too (all lengths equal). Losses on padded batches should mask with `lengths`.
    """
    if not batch:
        raise ValueError("collate_segments got an empty batch")
    channels = {wav.shape[0] for wav in batch}
    if len(channels) != 1 or any(wav.dim() != 2 for wav in batch):
        raise ValueError(f"collate_segments needs [C, T] clips with one channel count, got shapes "
                         f"{[tuple(w.shape) for w in batch]}")
    lengths = torch.tensor([wav.shape[-1] for wav in batch], dtype=torch.long)
    out = batch[0].new_zeros(len(batch), batch[0].shape[0], int(lengths.max()))
    for i, wav in enumerate(batch):
        out[i, :, :wav.shape[-1]] = wav
    return out, lengths


# ----------------------------------------------------------------------------------------------------------
# Converting a user's folder
# ----------------------------------------------------------------------------------------------------------

def convert_folder(src: str | os.PathLike, dst: str | os.PathLike, sample_rate: int = 24000, mono: bool = True,
                   subtype: str = "PCM_16", overwrite: bool = False,
                   silence_threshold: float = DEFAULT_SILENCE_THRESHOLD, progress: bool = True) -> dict:
    """Convert every audio file under `src` into WAV at `sample_rate` under `dst`, mirroring subfolders.

    'a/b/song.flac' becomes 'dst/a/b/song.wav' (if 'song.mp3' is beside it, that one becomes 'song_mp3.wav').
    Bad files are skipped with their reason and a SkippedFileWarning. A clip whose peak exceeds 1 after
    resampling is scaled down to 0.999 rather than clipped. Outputs newer than their source are kept unless
    overwrite=True, so re-running is cheap. Returns (and writes as dst/convert.json) a report:
    {src, dst, sample_rate, mono, converted, up_to_date, skipped: {relpath: reason}, rescaled, minutes}.
    Raises ValueError when nothing usable was found.
    """
    src, dst = Path(src), Path(dst)
    files = scan_folder(src)
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"dst '{dst}' must not be src '{src}' or inside it")
    report = {"src": str(src), "dst": str(dst), "sample_rate": int(sample_rate), "mono": mono,
              "converted": 0, "up_to_date": 0, "skipped": {}, "rescaled": [], "minutes": 0.0}
    taken: set[str] = set()
    seconds = 0.0
    for file in tqdm(files, desc="converting", unit="file", disable=not progress or not files):
        rel = file.relative_to(src)
        target = rel.with_suffix(".wav")
        if target.as_posix() in taken:
            target = rel.with_name(f"{rel.stem}_{rel.suffix.lstrip('.').lower()}.wav")
        taken.add(target.as_posix())
        out = dst / target
        if not overwrite and out.is_file() and out.stat().st_mtime_ns >= file.stat().st_mtime_ns:
            report["up_to_date"] += 1
            seconds += sf.info(str(out)).duration
            continue
        try:
            wav = load_audio(file, sample_rate, mono=mono)
            peak = float(wav.abs().max())
            if peak < silence_threshold:
                raise AudioError(file, SILENT, f"peak {peak:.2e} < {silence_threshold:g}")
        except AudioError as err:
            report["skipped"][rel.as_posix()] = err.reason
            warnings.warn(f"skipping {err}", SkippedFileWarning, stacklevel=2)
            continue
        if peak > 1.0:
            wav = wav * (0.999 / peak)
            report["rescaled"].append(rel.as_posix())
        save_audio(out, wav, sample_rate, subtype=subtype)
        report["converted"] += 1
        seconds += wav.shape[-1] / sample_rate
    report["minutes"] = seconds / 60.0
    if report["converted"] + report["up_to_date"] == 0:
        raise ValueError(f"no usable audio in folder '{src}' ({len(files)} audio files found, "
                         f"{len(report['skipped'])} skipped)")
    (dst / "convert.json").write_text(json.dumps(report, indent=2))
    return report
