"""Audio datasets: a torch Dataset, step-indexed training batches, held-out clips and folder conversion; the
folder manifests and stable splits (:mod:`lib.data.manifest`) are re-exported here.

The flow is
    corpus.build_default_corpus(out_dir) or convert_folder(my_audio, out_dir)  -> clean mono WAV files
    build_manifest(out_dir)                                               -> manifest.csv (checked once, reused)
    AudioFolder(out_dir, "train", segment_seconds=1.0)                    -> [1, T] tensors

Splits come from a hash of each file's relative path, so adding files never moves existing ones between
train, valid and test.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import soundfile as sf
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, get_worker_info
from lib.headless import progress_bar as tqdm

from lib.data.audio import DEFAULT_SILENCE_THRESHOLD, MAX_PEAK, OUT_OF_RANGE, SILENT, AudioError, load_audio, save_audio
from lib.data.manifest import (DEFAULT_FRACTIONS, MANIFEST_FIELDS, MANIFEST_NAME, SPLITS,  # noqa: F401 (re-exported)
                               ManifestEntry, SkippedFileWarning, build_manifest, format_report, manifest_table,
                               minutes_by_kind, pick_examples, read_manifest, scan_folder, split_of,
                               summarize_manifest, write_manifest)

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
        self.dropped: set[int] = set()  # clips that failed to load during this run

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank * 7919 + step)
        idx = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=g).tolist()
        items = []
        for i in idx:
            wav = self._load(i)
            while wav is None:  # a clip that does not load is redrawn from the same generator
                wav = self._load(int(torch.multinomial(self.weights, 1, generator=g)))
            items.append(crop_or_pad(wav, self.segment, generator=g))
        return torch.stack(items)

    def _load(self, index: int) -> torch.Tensor | None:
        """Clip ``index``, or None once it has failed to load. The draws never depend on which clips are known to
        fail (a failed clip is redrawn whether it failed now or earlier), so a batch is a function of (seed, rank,
        step) alone: a resumed run, a DataLoader worker and the first run find the same batches."""
        if index in self.dropped:
            return None
        try:
            return self.clips.load(index)
        except AudioError as err:  # changed or made unreadable since the manifest was built
            self._drop(index, err)
            return None

    def _drop(self, index: int, err: AudioError) -> None:
        """Leave a clip that fails to load out for the rest of the run (one warning naming it)."""
        self.dropped.add(index)
        warnings.warn(f"skipping {err} for the rest of the run", SkippedFileWarning, stacklevel=4)
        if len(self.dropped) == len(self.clips):
            raise ValueError(f"no training clip of '{self.clips.root}' can be loaded any more (last: {err})") from err


HELD_OUT_ORDER = ("valid", "test", "train")
JUDGE_SECONDS = 3.0  # shorter clips are hard to judge by ear (and PESQ/STOI need 0.25-0.4 s): taken last
_ACTIVE_STEP_SECONDS = 0.01  # grid of the active window's start


def active_window(wav: torch.Tensor, length: int, sample_rate: int, share: float = 0.99) -> torch.Tensor:
    """The `length` samples of `wav [C, T]` where the sound is: `[C, min(T, length)]`.

    The window with the most energy, its start on a 10 ms grid (of windows holding at least `share` of that
    energy, the earliest): a clip that opens with seconds of silence (a podcast, an audiobook) is judged where it
    speaks, and a steady sound keeps its beginning.
    """
    if wav.shape[-1] <= length:
        return wav
    step = max(1, int(_ACTIVE_STEP_SECONDS * sample_rate))
    energy = F.pad(wav.double().pow(2).sum(0).cumsum(0), (1, 0))  # [T + 1]
    starts = torch.arange(0, wav.shape[-1] - length + 1, step)
    window = energy[starts + length] - energy[starts]
    start = int(starts[int(torch.nonzero(window >= share * window.max())[0])])
    return wav[..., start:start + length]


class ClipSet(dict):
    """`{name: wav [C, T]}` in selection order, plus `kinds[name]`: the clip's kind (`lib.data.manifest.CLIP_KINDS`,
    or "" when unlabelled)."""

    def __init__(self, kinds: dict[str, str] | None = None):
        super().__init__()
        self.kinds: dict[str, str] = dict(kinds or {})


def _selection_order(entries: Sequence[ManifestEntry], n: int, speech: int | None,
                     min_seconds: float) -> list[int]:
    """Indices of `entries` in the order held-out clips are taken (see `held_out_clips`)."""
    short = [entries[i].duration < min_seconds for i in range(len(entries))]
    order = sorted(range(len(entries)), key=lambda i: short[i])  # stable: manifest order within
    if speech is None:
        return order
    spoken = sorted((i for i in order if entries[i].speech), key=lambda i: (short[i], entries[i].kind != "speech"))
    others = [i for i in order if not entries[i].speech]
    first = spoken[:speech] + others[:n - speech]
    chosen = set(first)
    return first + [i for i in spoken + others if i not in chosen]


def held_out_clips(data_dir: str | os.PathLike, sample_rate: int, n: int = 8, seconds: float | None = 4.0,
                   split: str | None = None, speech: int | None = None, min_seconds: float = 0.0) -> ClipSet:
    """The held-out clips every measurement uses: a `ClipSet` `{name: wav [C, T]}` of at most ``n`` clips.

    Clips of the first non-empty split of ``valid``, ``test``, ``train`` (a corpus too small to have held-out files
    falls back to its training clips), or of ``split`` alone (the quality race reports ``test``, which nothing is
    tuned on). Which clips: with ``speech=None`` the first ``n`` in manifest order; with ``speech=k``, ``k`` speech
    clips (recorded speech before synthetic, `ManifestEntry.kind`) and ``n - k`` of the other kinds, either side
    filled from the other where it runs short. Clips shorter than ``min_seconds`` come after every longer one.
    Each clip is cut to its most active ``seconds`` (`active_window`; the whole clip for None). Names are the
    relative paths without extension; ``kinds`` maps them to their kinds. A clip that no longer loads, or is silent
    or constant throughout (SI-SDR is undefined on it), is skipped with a warning naming it and the next one taken.
    The trainer's validation, notebooks 02-04 and the benchmarks call this, so their numbers come from one set.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds must be positive or None, got {seconds}")
    if speech is not None and not 0 <= speech <= n:
        raise ValueError(f"speech must be None or a count in 0..n={n}, got {speech}")
    problems = []
    for split in (HELD_OUT_ORDER if split is None else (split,)):
        try:
            folder = AudioFolder(data_dir, split=split, sample_rate=sample_rate)
        except ValueError:  # an empty split: try the next one
            problems.append(f"{split}: no usable files")
            continue
        clips, rejected = ClipSet(), Counter()
        for i in _selection_order(folder.entries, n, speech, min_seconds):
            if len(clips) == n:
                break
            entry = folder.entries[i]
            try:
                wav = folder.load(i)
            except AudioError as err:  # changed since the manifest was built
                warnings.warn(f"skipping held-out {err}", SkippedFileWarning, stacklevel=2)
                rejected["no longer loads"] += 1
                continue
            if float(wav.amax() - wav.amin()) < DEFAULT_SILENCE_THRESHOLD:  # SI-SDR is undefined on it
                warnings.warn(f"skipping held-out clip '{folder.root / entry.path}': silent or constant throughout",
                              SkippedFileWarning, stacklevel=2)
                rejected["silent or constant"] += 1
                continue
            name = Path(entry.path).with_suffix("").as_posix()
            clips[name] = wav if seconds is None else active_window(wav, int(seconds * sample_rate), sample_rate)
            clips.kinds[name] = entry.kind
        if clips:
            return clips
        problems.append(f"{split}: all {sum(rejected.values())} clips skipped ("
                        + ", ".join(f"{k} {why}" for why, k in rejected.items()) + ")")
    raise ValueError(f"{os.fspath(data_dir)}: no usable held-out clip ({'; '.join(problems)}); see the warnings "
                     f"above for each file")


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
            if peak > MAX_PEAK:  # load_audio refuses these too; kept for clips that only resampling pushes over
                raise AudioError(file, OUT_OF_RANGE, f"peak {peak:.3g} > {MAX_PEAK:g}")
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
