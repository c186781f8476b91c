"""Tests of lib.data.datasets: manifests, bad-file handling, stable splits, AudioFolder crops, corpus and conversion."""
import csv
import json
import os
import struct
import warnings
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch

import lib.data.corpus as corpus
import lib.data.datasets as data
import lib.data.manifest as manifest_module
from lib.data.audio import AudioError, check_audio
from lib.data.corpus import build_default_corpus
from lib.data.datasets import (SPLITS, AudioFolder, ManifestEntry, SkippedFileWarning, build_manifest, collate_segments,
                               convert_folder, format_report, held_out_clips, manifest_table, pick_examples,
                               read_manifest, scan_folder, split_of, summarize_manifest)

SR = 8000


def write_tone(path, seconds: float, sample_rate: int = SR, channels: int = 1, freq: float = 440.0):
    """A sine file; different `freq` values make files distinguishable. Returns `[C, T]` float32 samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    x = np.stack([0.5 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]).astype(np.float32)
    sf.write(str(path), x.T, sample_rate, subtype="FLOAT" if path.suffix == ".wav" else None)
    return x


def wav_bytes(channels: int, frames: int, sample_rate: int = SR) -> bytes:
    """A hand-made 16-bit PCM RIFF/WAVE file (lets us declare 0 channels, which no writer allows)."""
    block = max(channels, 1) * 2
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * block, block, 16)
    payload = b"\x01\x00" * frames * max(channels, 1)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def make_bad_file(folder, kind: str):
    """Write one unusable file of `kind` into folder; return its path."""
    rng = np.random.default_rng(1)
    if kind == "corrupt":
        path = folder / "corrupt.wav"
        path.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "corrupt_flac":  # a valid header followed by half the stream
        good = folder / "tmp.flac"
        sf.write(str(good), rng.standard_normal(SR) * 0.1, SR)
        path = folder / "truncated.flac"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        good.unlink()
    elif kind == "empty":
        path = folder / "empty.wav"
        path.write_bytes(b"")
    elif kind == "empty_header":
        path = folder / "header_only.wav"
        path.write_bytes(wav_bytes(channels=1, frames=0))
    elif kind == "zero_channels":
        path = folder / "zero_channels.wav"
        path.write_bytes(wav_bytes(channels=0, frames=100))
    elif kind in ("nan", "inf"):
        path = folder / f"{kind}.wav"
        x = np.full(SR // 4, 0.1, dtype=np.float32)
        x[100] = np.nan if kind == "nan" else np.inf
        sf.write(str(path), x, SR, subtype="FLOAT")
    elif kind == "silent":
        path = folder / "silent.wav"
        sf.write(str(path), np.zeros(SR // 4, dtype=np.float32), SR)
    elif kind == "unsupported":
        path = folder / "song.m4a"  # an audio extension libsndfile has no decoder for
        path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    else:
        raise ValueError(kind)
    return path


BAD_KINDS = {"corrupt": "corrupt", "corrupt_flac": "corrupt", "empty": "empty", "empty_header": "empty",
             "zero_channels": "zero_channels", "nan": "nan_or_inf", "inf": "nan_or_inf", "silent": "silent",
             "unsupported": "unsupported_format"}


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_bad_file_is_skipped_with_its_reason(tmp_path, kind):
    write_tone(tmp_path / "good.wav", 0.5)
    bad = make_bad_file(tmp_path, kind)
    with pytest.raises(AudioError) as info:
        check_audio(bad)
    assert info.value.reason == BAD_KINDS[kind]
    with pytest.warns(SkippedFileWarning, match=bad.name):
        entries = build_manifest(tmp_path, progress=False)
    status = {e.path: e.status for e in entries}
    assert status == {"good.wav": "ok", bad.name: BAD_KINDS[kind]}
    with pytest.raises(ValueError, match="no usable files"):  # the bad file is never served
        AudioFolder(tmp_path, split="all", manifest=[e for e in entries if not e.ok])


def test_non_audio_files_and_hidden_files_are_ignored(tmp_path):
    write_tone(tmp_path / "a.wav", 0.2)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "._a.wav").write_bytes(b"apple double")
    write_tone(tmp_path / ".hidden" / "b.wav", 0.2)
    assert [p.name for p in scan_folder(tmp_path)] == ["a.wav"]


def test_empty_or_unusable_folder_raises_naming_it(tmp_path):
    empty = tmp_path / "my_empty_folder"
    empty.mkdir()
    with pytest.raises(ValueError, match="no audio files in folder .*my_empty_folder"):
        build_manifest(empty, progress=False)
    bad_only = tmp_path / "all_bad"
    bad_only.mkdir()
    make_bad_file(bad_only, "silent")
    make_bad_file(bad_only, "corrupt")
    with pytest.warns(SkippedFileWarning), pytest.raises(ValueError, match="no usable audio in folder .*all_bad"):
        build_manifest(bad_only, progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        scan_folder(tmp_path / "nope")


def test_manifest_csv_columns_and_values(tmp_path):
    write_tone(tmp_path / "sub" / "x.flac", 0.75, sample_rate=16000, channels=2)
    build_manifest(tmp_path, progress=False)
    with open(tmp_path / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    row = rows[0]
    assert {"path", "duration", "sample_rate", "channels", "split", "status"} <= set(row)
    assert row["path"] == "sub/x.flac" and row["status"] == "ok"
    assert float(row["duration"]) == pytest.approx(0.75) and int(row["sample_rate"]) == 16000
    assert int(row["channels"]) == 2 and row["split"] == split_of("sub/x.flac")
    assert read_manifest(tmp_path / "manifest.csv")[0].frames == 12000


def test_split_of_is_stable_and_follows_fractions():
    names = [f"speaker{i % 7}/clip_{i:05d}.wav" for i in range(4000)]
    splits = [split_of(n) for n in names]
    assert splits == [split_of(n) for n in names]
    counts = Counter(splits)
    assert abs(counts["train"] / 4000 - 0.9) < 0.02 and abs(counts["valid"] / 4000 - 0.05) < 0.015
    assert {split_of(n, (0.5, 0.5, 0.0)) for n in names} == {"train", "valid"}  # zero fraction: never chosen
    assert split_of("a\\b.wav") == split_of("a/b.wav")  # same split on Windows paths
    with pytest.raises(ValueError, match="fractions"):
        split_of("a.wav", (0.9, 0.2, 0.1))


def test_adding_files_never_reshuffles_existing_ones(tmp_path):
    for i in range(30):
        write_tone(tmp_path / f"clip_{i:02d}.wav", 0.05, freq=200 + 10 * i)
    before = {e.path: e.split for e in build_manifest(tmp_path, fractions=(0.6, 0.2, 0.2), progress=False)}
    assert len(set(before.values())) == 3
    for i in range(30, 60):
        write_tone(tmp_path / "more" / f"clip_{i:02d}.wav", 0.05, freq=200 + 10 * i)
    after = {e.path: e.split for e in build_manifest(tmp_path, fractions=(0.6, 0.2, 0.2), progress=False)}
    assert len(after) == 60
    assert {p: after[p] for p in before} == before


def test_manifest_is_reused_and_only_changed_files_rechecked(tmp_path, monkeypatch):
    for i in range(5):
        write_tone(tmp_path / f"c{i}.wav", 0.1)
    first = build_manifest(tmp_path, progress=False)
    checked = []
    real_check = manifest_module.check_audio
    monkeypatch.setattr(manifest_module, "check_audio", lambda path, **kw: checked.append(path.name) or real_check(path, **kw))
    assert build_manifest(tmp_path, progress=False) == first
    assert checked == []
    write_tone(tmp_path / "c1.wav", 0.3)  # changed size
    os.utime(tmp_path / "c1.wav", ns=(1, 1))  # and mtime
    write_tone(tmp_path / "new.wav", 0.2)
    (tmp_path / "c4.wav").unlink()
    entries = build_manifest(tmp_path, progress=False)
    assert sorted(checked) == ["c1.wav", "new.wav"]
    by_path = {e.path: e for e in entries}
    assert "c4.wav" not in by_path and by_path["c1.wav"].duration == pytest.approx(0.3)


def test_unwritable_manifest_only_warns(tmp_path, monkeypatch):
    write_tone(tmp_path / "a.wav", 0.2)

    def refuse(path, entries):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(manifest_module, "write_manifest", refuse)
    with pytest.warns(UserWarning, match="could not write manifest"):
        entries = build_manifest(tmp_path, progress=False)
    assert [e.path for e in entries] == ["a.wav"] and not (tmp_path / "manifest.csv").exists()


def test_two_writers_of_one_manifest_do_not_collide(tmp_path, monkeypatch):
    """A second process writing the same manifest between the first one's write and rename (two runs started
    together on one data folder): with one shared temp name the first rename found its file gone."""
    write_tone(tmp_path / "a.wav", 0.2)
    entries = build_manifest(tmp_path, progress=False)
    target = tmp_path / "manifest.csv"
    real_replace, renames = os.replace, []

    def replace_after_a_rival(src, dst):
        if not renames:  # the first writer is about to rename: the rival writes and renames first
            renames.append("rival")
            manifest_module.write_manifest(target, entries)
        renames.append(str(src))
        real_replace(src, dst)

    monkeypatch.setattr(manifest_module.os, "replace", replace_after_a_rival)
    manifest_module.write_manifest(target, entries)
    assert len(renames) == 3 and renames[1] != renames[2]  # two distinct temp files, both renamed
    assert read_manifest(target) == entries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "manifest.csv"]  # no temp file left


def test_summary_and_table(tmp_path):
    write_tone(tmp_path / "a.wav", 1.0)
    write_tone(tmp_path / "b.wav", 3.0)
    make_bad_file(tmp_path, "silent")
    with pytest.warns(SkippedFileWarning):
        entries = build_manifest(tmp_path, fractions=(1.0, 0.0, 0.0), progress=False)
    summary = summarize_manifest(entries)
    assert summary["train"]["files"] == 2 and summary["train"]["seconds"] == pytest.approx(4.0)
    assert summary["train"]["mean"] == pytest.approx(2.0) and summary["skipped"] == {"silent": 1}
    table = manifest_table(entries)
    assert "train" in table and "0.07" in table and "silent" in table  # 4 s = 0.07 minutes


def test_pick_examples_round_robins_over_folders():
    entries = [ManifestEntry(f"{folder}/{i}.wav", "ok", "train", duration=d)
               for folder in ("music", "speech") for i, d in enumerate([0.5, 2.0, 3.0, 4.0])]
    entries.append(ManifestEntry("music/bad.wav", "corrupt", "train"))
    picked = pick_examples(entries, 3)
    assert len(picked) == 3 and {p.path.split("/")[0] for p in picked[:2]} == {"music", "speech"}
    assert all(p.ok and p.duration >= 1.0 for p in picked)
    assert pick_examples(entries, 3) == picked
    assert len(pick_examples(entries, 50)) == 6  # only the usable clips of at least 1 s


def one_split_folder(tmp_path, seconds_by_name):
    """Files of given lengths, all in the train split. Returns (entries, {name: samples [1, T]})."""
    samples = {name: write_tone(tmp_path / name, s, freq=100 + 50 * i)
               for i, (name, s) in enumerate(seconds_by_name.items())}
    entries = build_manifest(tmp_path, fractions=(1.0, 0.0, 0.0), progress=False)
    return entries, {name: torch.from_numpy(x) for name, x in samples.items()}


def test_crops_pad_short_keep_exact_and_slice_long_clips(tmp_path):
    entries, samples = one_split_folder(tmp_path, {"long.wav": 2.5, "exact.wav": 1.0, "short.wav": 0.3})
    ds = AudioFolder(tmp_path, "train", sample_rate=SR, segment_seconds=1.0, manifest=entries)
    assert len(ds) == 3 and ds.segment_samples == SR
    items = {e.path: ds[i] for i, e in enumerate(ds.entries)}
    assert all(x.shape == (1, SR) and x.dtype == torch.float32 for x in items.values())
    assert torch.allclose(items["exact.wav"], samples["exact.wav"])  # kept whole, not dropped or shifted
    short = samples["short.wav"].shape[-1]
    assert torch.allclose(items["short.wav"][:, :short], samples["short.wav"])
    assert items["short.wav"][:, short:].abs().max() == 0
    long_clip = samples["long.wav"][0]
    crop = items["long.wav"][0]
    candidates = torch.nonzero((long_clip[:long_clip.numel() - SR + 1] - crop[0]).abs() < 1e-6).flatten().tolist()
    assert any(torch.allclose(long_clip[s:s + SR], crop, atol=1e-6) for s in candidates)  # a contiguous window


def test_crops_are_random_but_seeded(tmp_path):
    entries, _ = one_split_folder(tmp_path, {"long.wav": 3.0})

    def crops(seed):
        ds = AudioFolder(tmp_path, "train", sample_rate=SR, segment_samples=800, manifest=entries, seed=seed)
        return torch.stack([ds[0] for _ in range(6)])

    assert torch.equal(crops(0), crops(0))
    first = crops(0)
    assert not all(torch.equal(first[0], first[i]) for i in range(1, 6))
    assert not torch.equal(first, crops(1))


def test_eval_returns_whole_resampled_clips_and_collate_pads(tmp_path):
    entries, _ = one_split_folder(tmp_path, {"a.wav": 0.5, "b.wav": 0.25})
    ds = AudioFolder(tmp_path, "train", sample_rate=SR // 2, manifest=entries)
    clips = [ds[i] for i in range(len(ds))]
    assert [c.shape for c in clips] == [(1, 2000), (1, 1000)]
    batch, lengths = collate_segments(clips)
    assert batch.shape == (2, 1, 2000) and lengths.tolist() == [2000, 1000]
    assert torch.equal(batch[1, :, :1000], clips[1]) and batch[1, :, 1000:].abs().max() == 0
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_segments)
    assert next(iter(loader))[0].shape == (2, 1, 2000)


def test_audiofolder_arguments_and_empty_split(tmp_path):
    entries, _ = one_split_folder(tmp_path, {"a.wav": 0.5})
    with pytest.raises(ValueError, match="split 'test'.*no usable files"):
        AudioFolder(tmp_path, "test", manifest=entries)
    with pytest.raises(ValueError, match="split must be"):
        AudioFolder(tmp_path, "training", manifest=entries)
    with pytest.raises(ValueError, match="not both"):
        AudioFolder(tmp_path, segment_seconds=1.0, segment_samples=10, manifest=entries)
    stereo = AudioFolder(tmp_path, "train", sample_rate=SR, mono=False, manifest=entries)
    assert stereo[0].shape == (1, SR // 2)
    # manifest=None builds (and then reuses) root/manifest.csv
    assert len(AudioFolder(tmp_path, "all", sample_rate=SR)) == 1 and (tmp_path / "manifest.csv").is_file()


def corpus_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.wav"))


def test_synthetic_corpus_is_deterministic_and_usable(tmp_path):
    report = build_default_corpus(tmp_path / "a", sample_rate=16000, minutes=0.25, seed=3, sources="synthetic",
                                  progress=False)
    assert report["sources"].keys() == {"synthetic"} and not report["reused"]
    assert 0.25 <= report["minutes_total"] < 0.25 + 8 / 60
    kinds = {f["origin"] for f in report["files"]}
    assert {"melody", "chords", "chirps"} <= kinds
    assert json.loads((tmp_path / "a" / "corpus.json").read_text())["minutes_total"] == report["minutes_total"]
    again = build_default_corpus(tmp_path / "b", sample_rate=16000, minutes=0.25, seed=3, sources="synthetic",
                                 progress=False)
    assert corpus_files(tmp_path / "a") == corpus_files(tmp_path / "b")
    for rel in corpus_files(tmp_path / "a"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    entries = build_manifest(tmp_path / "a", progress=False)
    assert all(e.ok and e.sample_rate == 16000 and e.channels == 1 for e in entries)
    assert sum(e.duration for e in entries) / 60 == pytest.approx(again["minutes_total"], abs=1e-3)
    expected = {"melody": "music", "chords": "music", "drums": "music", "chirps": "other", "noise": "other"}
    origin = {f["path"]: f["origin"] for f in report["files"]}
    assert {e.path: e.kind for e in entries} == {path: expected[o] for path, o in origin.items()}


def test_corpus_is_reused_and_rebuilt_when_the_request_changes(tmp_path):
    first = build_default_corpus(tmp_path, sample_rate=8000, minutes=0.1, sources="synthetic", progress=False)
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")}
    second = build_default_corpus(tmp_path, sample_rate=8000, minutes=0.1, sources="synthetic", progress=False)
    assert second["reused"] and second["files"] == first["files"]
    assert stamp == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")}
    assert "synthetic" in format_report(second) and "reused" in format_report(second)
    (tmp_path / "mine.wav").write_bytes(b"user file")  # not listed in corpus.json: must survive a rebuild
    third = build_default_corpus(tmp_path, sample_rate=8000, minutes=0.1, seed=1, sources="synthetic",
                                 progress=False)
    assert not third["reused"] and (tmp_path / "mine.wav").exists()
    assert set(corpus_files(tmp_path)) == {f["path"] for f in third["files"]} | {"mine.wav"}


def test_auto_corpus_falls_back_to_synthetic_without_debian_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "SONIC_PI_DIR", tmp_path / "no_sonic_pi")
    monkeypatch.setattr(corpus, "ALSA_SOUNDS_DIR", tmp_path / "no_alsa")
    monkeypatch.setattr(corpus, "ASTERISK_DIR", tmp_path / "no_asterisk")
    monkeypatch.setattr(corpus, "ESPEAK_BINARY", "espeak-ng-not-installed")
    report = build_default_corpus(tmp_path / "out", sample_rate=8000, minutes=0.1, progress=False)
    assert list(report["sources"]) == ["synthetic"] and report["sources"]["synthetic"]["minutes"] >= 0.1
    with pytest.raises(ValueError, match="not available"):
        build_default_corpus(tmp_path / "out2", minutes=0.1, sources=["espeak"], progress=False)


@pytest.mark.skipif(not all(corpus.available_sources()[s] for s in ("espeak", "sonic_pi", "alsa")),
                    reason="espeak-ng, sonic-pi-samples or alsa-utils not installed")
def test_default_corpus_with_real_sources(tmp_path):
    report = build_default_corpus(tmp_path, sample_rate=24000, minutes=1.0, progress=False)
    minutes = {name: s["minutes"] for name, s in report["sources"].items()}
    assert minutes["sonic_pi"] > 0.1 and minutes["espeak"] > 0.1 and minutes["alsa"] > 0
    assert minutes["synthetic"] == 0  # the real sources filled the request
    assert sum(minutes.values()) == pytest.approx(report["minutes_total"], abs=0.01)
    assert report["minutes_total"] >= 1.0
    voices = {f["origin"].split(":")[0] for f in report["files"] if f["source"] == "espeak"}
    assert len(voices) >= 2
    entries = build_manifest(tmp_path, progress=False)
    assert all(e.ok and e.sample_rate == 24000 and e.channels == 1 for e in entries)
    kinds = Counter((e.path.split("/")[0], e.kind) for e in entries)
    assert kinds[("alsa", "speech")] >= 1 and kinds[("speech", "synthetic speech")] >= 2
    assert {e.split for e in entries if e.path.startswith("alsa/")} == {"train"}  # its speakers never held out
    assert kinds[("sonic_pi", "music")] >= 1
    assert {kind for (folder, kind) in kinds if folder == "sonic_pi"} <= {"music", "other"}
    assert build_default_corpus(tmp_path, sample_rate=24000, minutes=1.0, progress=False)["reused"]


def test_a_corpus_built_before_clips_had_kinds_gets_them_without_a_rebuild(tmp_path):
    build_default_corpus(tmp_path, sample_rate=8000, minutes=0.1, sources="synthetic", progress=False)
    report = json.loads((tmp_path / "corpus.json").read_text())
    for record in report["files"]:
        del record["kind"]
    (tmp_path / "corpus.json").write_text(json.dumps(report))
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")}
    again = build_default_corpus(tmp_path, sample_rate=8000, minutes=0.1, sources="synthetic", progress=False)
    assert again["reused"] and stamp == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")}
    assert {e.kind for e in build_manifest(tmp_path, progress=False)} <= {"music", "other"}


def test_convert_folder_mirrors_resamples_and_skips(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_tone(src / "x" / "song.flac", 0.5, sample_rate=44100, channels=2)
    write_tone(src / "x" / "song.wav", 0.25, sample_rate=16000)
    sf.write(str(src / "speech.ogg"), 0.3 * np.sin(np.arange(22050) / 5.0), 22050)
    make_bad_file(src, "corrupt")
    make_bad_file(src, "unsupported")
    make_bad_file(src, "silent")
    with pytest.warns(SkippedFileWarning):
        report = convert_folder(src, dst, sample_rate=SR, progress=False)
    assert report["converted"] == 3
    assert report["skipped"] == {"corrupt.wav": "corrupt", "song.m4a": "unsupported_format", "silent.wav": "silent"}
    assert corpus_files(dst) == ["speech.wav", "x/song.wav", "x/song_wav.wav"]
    info = sf.info(str(dst / "x" / "song.wav"))
    assert (info.samplerate, info.channels, info.frames) == (SR, 1, SR // 2)
    assert report["minutes"] == pytest.approx((0.5 + 0.25 + 1.0) / 60, abs=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)
        again = convert_folder(src, dst, sample_rate=SR, progress=False)
    assert again["converted"] == 0 and again["up_to_date"] == 3
    assert json.loads((dst / "convert.json").read_text())["up_to_date"] == 3
    assert "skipped song.m4a: unsupported_format" in format_report(report)
    with pytest.raises(ValueError, match="inside"):
        convert_folder(src, src / "out", progress=False)


def test_held_out_clips_prefer_valid_then_test_then_train(tmp_path):
    names = [f"speech/clip{i:03d}.wav" for i in range(400)]
    by_split = {s: [n for n in names if split_of(n) == s] for s in ("train", "valid", "test")}
    for name in by_split["test"][:2] + by_split["train"][:3]:
        write_tone(tmp_path / name, 1.5)
    clips = held_out_clips(tmp_path, SR, n=5, seconds=1.0)  # no valid split: the test clips, never train
    assert set(clips) == {n[: -len(".wav")] for n in by_split["test"][:2]}
    assert all(wav.shape == (1, SR) for wav in clips.values())
    assert len(held_out_clips(tmp_path, SR, n=1, seconds=None)) == 1
    for name in by_split["test"][:2]:
        (tmp_path / name).unlink()
    (tmp_path / "manifest.csv").unlink()
    assert len(held_out_clips(tmp_path, SR, n=8)) == 3  # only train clips left: the fallback


def test_your_own_folder_is_labelled_by_kinds_and_keeps_them(tmp_path):
    write_tone(tmp_path / "talks" / "a.wav", 0.5)
    write_tone(tmp_path / "talks" / "b.wav", 0.5)
    write_tone(tmp_path / "songs" / "c.wav", 0.5)
    assert {e.kind for e in build_manifest(tmp_path, progress=False)} == {""}  # unlabelled by default
    entries = build_manifest(tmp_path, progress=False, kinds={"talks/*": "speech", "*": "music"})
    assert {e.path: e.kind for e in entries} == {"songs/c.wav": "music", "talks/a.wav": "speech",
                                                 "talks/b.wav": "speech"}
    assert [e.kind for e in read_manifest(tmp_path / "manifest.csv")] == ["music", "speech", "speech"]
    # later builds (the trainer's, notebook 04's) keep the labels: they are remembered in kinds.json
    assert [e.kind for e in build_manifest(tmp_path, progress=False)] == ["music", "speech", "speech"]
    assert {e.kind for e in build_manifest(tmp_path, progress=False, kinds="speech")} == {"speech"}
    with pytest.raises(ValueError, match=r"kinds\['\*'\]: unknown clip kind 'podcast'"):
        build_manifest(tmp_path, progress=False, kinds={"*": "podcast"})


def test_a_manifest_written_before_kinds_existed_still_reads(tmp_path):
    write_tone(tmp_path / "a.wav", 0.5)
    build_manifest(tmp_path, progress=False)
    with open(tmp_path / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "kind"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (entry,) = read_manifest(tmp_path / "manifest.csv")
    assert entry.ok and entry.kind == "" and entry.frames == 4000


def _labelled_folder(tmp_path, kinds_by_stem: dict[str, tuple[str, float]]):
    """Files in the valid split (names found by hash) with the given kinds and durations: {stem: path}."""
    paths = {}
    for stem, (kind, seconds) in kinds_by_stem.items():
        name = next(f"{stem}{i}.wav" for i in range(1000) if split_of(f"{stem}{i}.wav") == "valid")
        write_tone(tmp_path / name, seconds, freq=300 + 10 * len(paths))
        paths[stem] = name[:-4]
    kinds = {f"{paths[stem]}.wav": kind for stem, (kind, _) in kinds_by_stem.items()}
    build_manifest(tmp_path, progress=False, kinds=kinds)
    return paths


def test_held_out_clips_take_speech_first_then_other_kinds(tmp_path):
    p = _labelled_folder(tmp_path, {"a_drum": ("music", 0.5), "b_synth": ("synthetic speech", 4.0),
                                    "c_human": ("speech", 4.0), "d_short_human": ("speech", 1.0),
                                    "e_song": ("music", 4.0), "f_noise": ("other", 4.0)})
    clips = held_out_clips(tmp_path, SR, n=4, seconds=2.0, speech=2, min_seconds=3.0)
    # long clips before short ones, recorded speech before synthetic; then other kinds in manifest order
    assert list(clips) == [p["c_human"], p["b_synth"], p["e_song"], p["f_noise"]]
    assert [clips.kinds[name] for name in clips] == ["speech", "synthetic speech", "music", "other"]
    assert list(held_out_clips(tmp_path, SR, n=2, speech=0)) == [p["a_drum"], p["e_song"]]
    # a side that runs short is filled from the other
    assert len(held_out_clips(tmp_path, SR, n=6, speech=5)) == 6
    assert list(held_out_clips(tmp_path, SR, n=6, speech=5))[:3] == [p["c_human"], p["d_short_human"], p["b_synth"]]
    # (without min_seconds every clip is long enough: recorded speech first, whatever its length)
    assert list(held_out_clips(tmp_path, SR, n=2)) == [p["a_drum"], p["b_synth"]]  # speech=None: manifest order
    with pytest.raises(ValueError, match="speech must be None or a count in 0..n=2"):
        held_out_clips(tmp_path, SR, n=2, speech=3)


def test_splits_are_the_same_in_every_process(tmp_path):
    """The split is a function of the path alone: never Python's per-process salted hash()."""
    import subprocess
    import sys

    names = [f"speaker{i % 5}/clip_{i:04d}.wav" for i in range(300)]
    code = "import sys; from lib.data.manifest import split_of; print(''.join(split_of(n)[0] for n in sys.argv[1:]))"
    runs = {seed: subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip()
            for seed in (0, 1, 12345)}
    assert len(set(runs.values())) == 1
    assert runs[0] == "".join(split_of(n)[0] for n in names)
    assert {"t", "v"} <= set(runs[0])  # the names do spread over the splits


@pytest.mark.skipif(not corpus.available_sources()["asterisk"],
                    reason="the asterisk-core-sounds-*-g722 packages or the G722 wheel are not installed")
def test_recorded_speech_keeps_its_held_out_speakers_out_of_training(tmp_path):
    report = build_default_corpus(tmp_path, sample_rate=24000, minutes=1.0, sources=["asterisk", "synthetic"],
                                  progress=False, real_speech_share=0.5)
    prompts = [f for f in report["files"] if f["source"] == "asterisk"]
    trained = sum(f["seconds"] for f in prompts if f["split"] == "train") / 60
    assert 0.5 <= trained < 0.5 + 0.2  # the share of the minutes, on top of which come the held-out voices
    entries = {e.path: e for e in build_manifest(tmp_path, progress=False)}
    speakers = {split: {f["speaker"] for f in prompts if entries[f["path"]].split == split} for split in SPLITS}
    assert speakers == {"train": {"Allison"}, "valid": {"June"}, "test": {"Carlo", "IvrvoiceRU"}}
    held_out = [f for f in prompts if f["split"] != "train"]
    assert len(held_out) == 3 and all(f["seconds"] >= 3.0 for f in held_out)  # one a voice at 1 minute (30: 12)
    assert all(entries[f["path"]].kind == "speech" for f in prompts)
    # the same held-out prompts whatever the training share: races of two mixes score the same clips
    other = build_default_corpus(tmp_path / "b", sample_rate=24000, minutes=1.0, sources=["asterisk", "synthetic"],
                                 progress=False, real_speech_share=0.0)
    assert [f["path"] for f in other["files"] if f.get("split", "train") != "train"] == [f["path"] for f in held_out]
    # valid's one voice holds three times the prompts of each test voice (in proportion to the minutes); a larger
    # count keeps a smaller one's prompts, so that valid's earlier clips stay in it
    larger = build_default_corpus(tmp_path / "c", sample_rate=24000, minutes=2.5, sources=["asterisk", "synthetic"],
                                  progress=False, real_speech_share=0.2)
    per_speaker = Counter(f["speaker"] for f in larger["files"] if f.get("split", "train") != "train")
    assert per_speaker == {"June": 3, "Carlo": 1, "IvrvoiceRU": 1}
    assert larger["request"]["held_out_prompts"] == {"valid": 3, "test": 1}
    june = [f["origin"] for f in larger["files"] if f.get("speaker") == "June"]
    assert june[0] == next(f["origin"] for f in held_out if f["speaker"] == "June")
    # decoded G.722 is wideband speech: its energy sits below 7 kHz, mostly in 100 Hz - 4 kHz
    wav, rate = sf.read(tmp_path / held_out[0]["path"])
    power = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / rate)
    assert power[(freqs > 100) & (freqs < 4000)].sum() > 0.8 * power.sum()
    assert power[freqs > 7500].sum() < 1e-3 * power.sum()


def test_splits_a_corpus_fixes_win_over_the_hash(tmp_path):
    write_tone(tmp_path / "a.wav", 0.5)
    write_tone(tmp_path / "b.wav", 0.5)
    (tmp_path / "corpus.json").write_text(json.dumps({"files": [{"path": "a.wav", "split": "test"}]}))
    entries = {e.path: e.split for e in build_manifest(tmp_path, progress=False, fractions=(1.0, 0.0, 0.0))}
    assert entries == {"a.wav": "test", "b.wav": "train"}
    (tmp_path / "corpus.json").write_text(json.dumps({"files": [{"path": "a.wav", "split": "holdout"}]}))
    with pytest.raises(ValueError, match=r"corpus.json: unknown split for \{'a.wav': 'holdout'\}"):
        build_manifest(tmp_path, progress=False)


def test_word_readers_are_joined_into_clips_in_turns_and_only_train(tmp_path, monkeypatch):
    """ktuberling's words: per reader, joined with pauses into clips of about WORD_CLIP_SECONDS, readers in turns,
    at most half the recorded-speech share, never held out; a held-out voice's language is left out."""
    words = tmp_path / "words"
    for lang, n in (("ca", 30), ("de", 4), ("fr", 6)):  # fr: the valid voice's language, skipped
        for i in range(n):
            write_tone(words / lang / f"w{i:02d}.ogg", 0.8, sample_rate=44100, freq=200 + 10 * i)
    monkeypatch.setattr(corpus, "KTUBERLING_DIR", words)
    assert sorted(corpus._word_readers()) == ["ca", "de"]
    assert corpus.available_sources()["ktuberling"]
    assert "ktuberling" not in corpus._resolve_sources("auto")  # opt-in: more voices did not pay
    report = build_default_corpus(tmp_path / "c", sample_rate=SR, minutes=1.0, sources=["ktuberling", "synthetic"],
                                  progress=False, real_speech_share=0.4)
    clips = [f for f in report["files"] if f["source"] == "ktuberling"]
    assert [f["speaker"] for f in clips[:3]] == ["ktuberling-ca", "ktuberling-de", "ktuberling-ca"]  # turns
    gap = corpus.WORD_GAP_SECONDS
    words_per_clip = int(np.ceil(corpus.WORD_CLIP_SECONDS / (0.8 + gap)))  # the clip closes at the first word past 6 s
    assert clips[0]["seconds"] == pytest.approx(words_per_clip * 0.8 + (words_per_clip - 1) * gap, abs=1e-3)
    assert clips[1]["seconds"] == pytest.approx(4 * 0.8 + 3 * gap, abs=1e-3)  # de had four words: one short clip
    seconds = sum(f["seconds"] for f in clips)
    assert 0.2 * 60 <= seconds < 0.2 * 60 + corpus.WORD_CLIP_SECONDS + 0.8  # half of the share, one clip over at most
    entries = {e.path: e for e in build_manifest(tmp_path / "c", progress=False)}
    assert {entries[f["path"]].split for f in clips} == {"train"}
    assert {entries[f["path"]].kind for f in clips} == {"speech"}
    wav, rate = sf.read(tmp_path / "c" / clips[1]["path"])
    pause = wav[round(0.85 * rate):round(1.0 * rate)]  # between the first and second word
    assert rate == SR and np.abs(pause).max() < 1e-3 and np.abs(wav[: round(0.7 * rate)]).max() > 0.1


@pytest.mark.skipif(not corpus.available_sources()["asterisk"],
                    reason="the asterisk-core-sounds-*-g722 packages or the G722 wheel are not installed")
def test_word_readers_and_the_asterisk_voice_share_the_recorded_speech(tmp_path, monkeypatch):
    for i in range(40):
        write_tone(tmp_path / "words" / "ca" / f"w{i:02d}.wav", 0.8, freq=200 + 10 * i)
    monkeypatch.setattr(corpus, "KTUBERLING_DIR", tmp_path / "words")
    report = build_default_corpus(tmp_path / "c", sample_rate=SR, minutes=2.0, progress=False, real_speech_share=0.5,
                                  sources=["ktuberling", "asterisk", "synthetic"])
    trained = {source: sum(f["seconds"] for f in report["files"] if f["source"] == source and f["split"] == "train")
               for source in ("ktuberling", "asterisk")}
    assert 0.5 * 60 <= trained["ktuberling"] < 0.5 * 60 + 7  # half of the minute of recorded speech
    longest = max(f["seconds"] for f in report["files"] if f["source"] == "asterisk")
    assert 60 <= trained["ktuberling"] + trained["asterisk"] < 60 + longest  # Allison takes what the readers left
