"""The default corpus: real CC0 recordings, synthetic speech, and procedural audio as a fallback.

``build_default_corpus(out_dir)`` writes about ``minutes`` of clean mono WAV (Debian ``sonic-pi-samples`` and
``alsa-utils`` recordings, ``espeak-ng`` speech, synthesised music and noise where those are missing) and reuses
an existing corpus made with the same request. Notebook 01 then builds its manifest (:mod:`lib.data.datasets`).
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch
from lib.headless import progress_bar as tqdm

from lib.atomic import atomic_path
from lib.data.audio import DEFAULT_SILENCE_THRESHOLD, load_audio, loudness_normalize, resample, save_audio
from lib.data.espeak_text import ENGLISH_SENTENCES, ENGLISH_VOICES, OTHER_SENTENCES, OTHER_VOICES, VOICE_VARIANTS
from lib.data.synth import SYNTH_KINDS, fade

# ----------------------------------------------------------------------------------------------------------
# The default corpus: real CC0 recordings, synthetic speech, and procedural audio as a fallback
# ----------------------------------------------------------------------------------------------------------

SONIC_PI_DIR = Path("/usr/share/sonic-pi/samples")  # Debian sonic-pi-samples: CC0 recordings from freesound.org
ALSA_SOUNDS_DIR = Path("/usr/share/sounds/alsa")  # Debian alsa-utils: short human speech clips
ESPEAK_BINARY = "espeak-ng"  # Debian espeak-ng
# Debian asterisk-core-sounds-{en,es,fr,it,ru}-g722: professional voice prompts, recorded human speech (CC-BY-SA 3.0),
# 16 kHz wideband G.722, one speaker per folder (Allison Smith recorded both the US English and the Mexican Spanish).
# Speaker-disjoint splits: the held-out voices' prompts go to valid or test only, never to training.
ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
ASTERISK_VOICES = {  # folder: (speaker, split); "train" voices fill the budget, held-out ones give held-out prompts
    "en_US_f_Allison": ("Allison", "train"),
    "es_MX_f_Allison": ("Allison", "train"),
    "fr_CA_f_June": ("June", "valid"),
    "it_IT_m_Carlo": ("Carlo", "test"),
    "ru_RU_f_IvrvoiceRU": ("IvrvoiceRU", "test"),
}
# Debian ktuberling-data: single words read by volunteers, one reader a language (GPL-2+), 20 languages once those
# of the held-out asterisk voices (fr, it, ru) are left out, so that no reader can be a held-out speaker. Words of
# one reader are joined with short pauses into clips of a few seconds, a list read aloud. Opt-in (OPT_IN_SOURCES).
KTUBERLING_DIR = Path("/usr/share/ktuberling/sounds")
KTUBERLING_SKIP = ("fr", "it", "ru", "sr@ijekavian", "sr@ijekavianlatin", "sr@latin")  # (sr's variants: one reader)
WORD_CLIP_SECONDS, WORD_GAP_SECONDS = 6.0, 0.25
# prompts of at least 3 s per held-out voice of each split in a 30-minute corpus (in proportion, at least 1): valid's
# one voice holds three times as many as each of test's two, so that a race's valid differences stand out of the noise
HELD_OUT_PROMPTS = {"valid": 36, "test": 12}
CORPUS_VERSION = 1
CORPUS_SOURCES = ("alsa", "ktuberling", "asterisk", "sonic_pi", "espeak", "synthetic")
OPT_IN_SOURCES = ("ktuberling",)  # used only when named: more voices did not pay (docs/results.md "More voices")
_CORPUS_LUFS, _CORPUS_MAX_PEAK = -20.0, 0.95  # every clip gets the same loudness, peaks kept below clipping


# a source's clip kind (lib.data.manifest.CLIP_KINDS)
SOURCE_KINDS = {"alsa": "speech", "ktuberling": "speech", "asterisk": "speech", "espeak": "synthetic speech"}
OTHER_SAMPLES = ("misc_", "vinyl_")  # sonic-pi samples that are effects rather than music (a burp, vinyl hiss)
OTHER_SYNTH = ("chirps", "noise")  # procedural clips that are not music


def clip_kind(record: dict) -> str:
    """The kind of a corpus clip from its corpus.json record: speech, synthetic speech, music or other."""
    if record["source"] in SOURCE_KINDS:
        return SOURCE_KINDS[record["source"]]
    if record["source"] == "sonic_pi":
        return "other" if record["origin"].startswith(OTHER_SAMPLES) else "music"
    return "other" if record["origin"] in OTHER_SYNTH else "music"


def available_sources() -> dict[str, bool]:
    """Which corpus sources exist on this machine (the Debian packages are optional)."""
    return {
        "alsa": ALSA_SOUNDS_DIR.is_dir() and any(ALSA_SOUNDS_DIR.glob("*.wav")),
        "ktuberling": bool(_word_readers()),
        "asterisk": g722_decoder() is not None and all(any((ASTERISK_DIR / v).rglob("*.g722")) for v in ASTERISK_VOICES),
        "sonic_pi": SONIC_PI_DIR.is_dir() and any(SONIC_PI_DIR.glob("*.flac")),
        "espeak": shutil.which(ESPEAK_BINARY) is not None,
        "synthetic": True,
    }


def _resolve_sources(sources: str | Sequence[str]) -> list[str]:
    available = available_sources()
    if sources == "auto":
        return [s for s in CORPUS_SOURCES if available[s] and s not in OPT_IN_SOURCES]
    if sources == "synthetic":
        return ["synthetic"]
    if sources == "real":
        chosen = [s for s in CORPUS_SOURCES if s != "synthetic" and available[s] and s not in OPT_IN_SOURCES]
        if not chosen:
            raise ValueError("sources='real' but none of sonic-pi-samples, espeak-ng, alsa-utils, the asterisk "
                             "sounds is installed")
        return chosen
    if isinstance(sources, str):
        raise ValueError(f"sources must be 'auto', 'real', 'synthetic' or a list of {CORPUS_SOURCES}, got {sources!r}")
    chosen = list(dict.fromkeys(sources))
    for name in chosen:
        if name not in CORPUS_SOURCES:
            raise ValueError(f"unknown corpus source {name!r}; choose from {CORPUS_SOURCES}")
        if not available[name]:
            raise ValueError(f"corpus source {name!r} is not available on this machine (Debian package missing)")
    return [s for s in CORPUS_SOURCES if s in chosen]


def _finish_clip(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Common level for corpus clips: `[1, T]` -> `[1, T]` at -20 LUFS, peak <= 0.95."""
    return loudness_normalize(wav, sample_rate, _CORPUS_LUFS, max_peak=_CORPUS_MAX_PEAK)


def _copy_recordings(files: list[Path], subdir: str, out_dir: Path, sample_rate: int, budget: float,
                     rng: random.Random, progress: bool) -> list[dict]:
    """Shuffle `files` and convert them (mono, resampled, levelled) until `budget` seconds are written."""
    files = sorted(files)
    rng.shuffle(files)
    chosen, total = [], 0.0
    for file in files:  # choose from headers first, so conversion can run in parallel
        if total >= budget:
            break
        info = sf.info(str(file))
        chosen.append(file)
        total += info.frames / info.samplerate

    def convert(file: Path) -> dict:
        wav = _finish_clip(load_audio(file, sample_rate, mono=True), sample_rate)
        rel = f"{subdir}/{file.stem}.wav"
        save_audio(out_dir / rel, wav, sample_rate)
        return {"path": rel, "source": subdir, "seconds": wav.shape[-1] / sample_rate, "origin": file.name}

    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = pool.map(convert, chosen)
        return list(tqdm(jobs, total=len(chosen), desc=subdir, unit="file", disable=not progress))


def g722_decoder():
    """A function `bytes -> int16 array at 16 kHz` decoding ITU G.722 at 64 kb/s (the `G722` wheel, a bit-exact
    implementation that passes the ITU test vectors), or None where the wheel is not installed."""
    try:
        from G722 import G722
    except ImportError:
        return None
    return lambda data: np.asarray(G722(16000, 64000).decode(data), dtype=np.int16)


def _prompt_records(voice: str, rng: random.Random, budget: float | None,
                    held_out: int = 0) -> list[tuple[Path, float]]:
    """(file, seconds) of one asterisk voice: shuffled, until `budget` seconds (training voices) or, for a
    held-out voice (budget None), the first ``held_out`` prompts of at least 3 s (so a larger count keeps a smaller
    one's prompts). The shuffle does not depend on the count. G.722 is 64 kb/s: 8000 bytes a second."""
    files = sorted((ASTERISK_DIR / voice).rglob("*.g722"))
    rng.shuffle(files)
    timed = [(f, f.stat().st_size / 8000) for f in files]
    if budget is None:
        return [ft for ft in timed if ft[1] >= 3.0][:held_out]
    chosen, total = [], 0.0
    for f, seconds in timed:
        if total >= budget:
            break
        chosen.append((f, seconds))
        total += seconds
    return chosen


def _copy_prompts(out_dir: Path, sample_rate: int, budget: float, held_out: dict[str, int], rng: random.Random,
                  progress: bool) -> list[dict]:
    """The asterisk voices' prompts, decoded from G.722, resampled and levelled: the training voices (shared
    equally) until `budget` seconds, and ``held_out[split]`` prompts of each held-out voice. Every record carries its
    voice's split, so that no prompt of a training speaker is held out by the hash and none of a held-out one trains."""
    decode = g722_decoder()
    train_voices = [v for v, (_, split) in ASTERISK_VOICES.items() if split == "train"]
    jobs = []
    for voice, (speaker, split) in ASTERISK_VOICES.items():
        chosen = _prompt_records(voice, rng, budget / len(train_voices) if split == "train" else None,
                                 held_out.get(split, 0))
        jobs += [(voice, speaker, split, f) for f, _ in chosen]

    def convert(job) -> dict:
        voice, speaker, split, file = job
        pcm = decode(file.read_bytes()).astype(np.float32) / 32768.0
        wav = _finish_clip(resample(torch.from_numpy(pcm)[None], 16000, sample_rate), sample_rate)
        rel = f"asterisk/{voice}/{file.relative_to(ASTERISK_DIR / voice).with_suffix('.wav').as_posix()}"
        save_audio(out_dir / rel, wav, sample_rate)
        return {"path": rel, "source": "asterisk", "seconds": wav.shape[-1] / sample_rate,
                "origin": f"{speaker}: {voice}/{file.name}", "speaker": speaker, "split": split}

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(tqdm(pool.map(convert, jobs), total=len(jobs), desc="asterisk", unit="file", disable=not progress))


def _word_readers() -> dict[str, list[Path]]:
    """ktuberling's readers: {language: its word files}, the held-out voices' languages left out."""
    readers = {d.name: sorted(f for f in d.iterdir() if f.suffix in (".ogg", ".wav", ".opus"))
               for d in sorted(KTUBERLING_DIR.glob("*/")) if d.is_dir() and d.name not in KTUBERLING_SKIP}
    return {lang: files for lang, files in readers.items() if files}


def _read_words(out_dir: Path, sample_rate: int, budget: float, rng: random.Random, progress: bool) -> list[dict]:
    """ktuberling's words, each levelled, joined per reader with `WORD_GAP_SECONDS` pauses into clips of about
    `WORD_CLIP_SECONDS`; the readers take turns, clip by clip, until `budget` seconds (so every reader is heard
    even at a small budget). Training only: the held-out splits stay the asterisk voices'."""
    queues = {lang: rng.sample(files, len(files)) for lang, files in _word_readers().items()}
    gap = torch.zeros(1, round(WORD_GAP_SECONDS * sample_rate))
    records, total, index = [], 0.0, 0
    with tqdm(total=round(budget), desc="ktuberling", unit="s", disable=not progress) as bar:
        while total < budget and any(queues.values()):
            for lang, queue in queues.items():
                if total >= budget:  # (mid-turn: no word loaded that is not used)
                    break
                parts, seconds = [], 0.0
                while queue and seconds < WORD_CLIP_SECONDS:
                    word = _finish_clip(load_audio(queue.pop(), sample_rate, mono=True), sample_rate)
                    parts += [word, gap]
                    seconds += (word.shape[-1] + gap.shape[-1]) / sample_rate
                if not parts:
                    continue
                wav = _finish_clip(torch.cat(parts[:-1], dim=-1), sample_rate)
                rel = f"ktuberling/{lang}/{index:04d}.wav"
                save_audio(out_dir / rel, wav, sample_rate)
                records.append({"path": rel, "source": "ktuberling", "seconds": wav.shape[-1] / sample_rate,
                                "origin": f"ktuberling {lang} reader", "speaker": f"ktuberling-{lang}",
                                "split": "train"})
                total, index = total + records[-1]["seconds"], index + 1
                bar.update(round(records[-1]["seconds"]))
    return records


def _espeak_jobs(rng: random.Random):
    """Endless deterministic stream of (voice, rate, pitch, text) for espeak-ng."""
    while True:
        if rng.random() < 0.7:
            voice, text_pool = rng.choice(ENGLISH_VOICES), ENGLISH_SENTENCES
        else:
            language = rng.choice(sorted(OTHER_SENTENCES))
            voice, text_pool = rng.choice(OTHER_VOICES[language]), OTHER_SENTENCES[language]
        text = " ".join(rng.sample(text_pool, k=rng.choice([1, 1, 2])))
        yield voice + rng.choice(VOICE_VARIANTS), rng.randint(120, 220), rng.randint(20, 80), text


def _speak(voice: str, rate: int, pitch: int, text: str, sample_rate: int) -> torch.Tensor | None:
    """espeak-ng -> `[1, T]` at sample_rate, or None if this voice failed."""
    cmd = [ESPEAK_BINARY, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text]
    try:
        result = subprocess.run(cmd, capture_output=True, timeout=60, check=True)
        data, rate_in = sf.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    except (subprocess.SubprocessError, OSError, sf.LibsndfileError, RuntimeError):
        return None
    if data.shape[0] == 0 or np.abs(data).max() < DEFAULT_SILENCE_THRESHOLD:
        return None
    wav = resample(torch.from_numpy(np.ascontiguousarray(data.T)).mean(0, keepdim=True), int(rate_in), sample_rate)
    return _finish_clip(wav, sample_rate)


def _make_speech(out_dir: Path, sample_rate: int, budget: float, rng: random.Random, progress: bool) -> list[dict]:
    """espeak-ng utterances (several voices, variants, rates and pitches) until `budget` seconds."""
    jobs, records, total, failures = _espeak_jobs(rng), [], 0.0, 0
    bar = tqdm(total=round(budget), desc="espeak", unit="s", disable=not progress)
    with ThreadPoolExecutor(max_workers=4) as pool:
        while total < budget and failures < 32:
            chunk = [next(jobs) for _ in range(8)]  # chunks in order keep the result independent of timing
            for (voice, rate, pitch, text), wav in zip(chunk, pool.map(lambda j: _speak(*j, sample_rate), chunk)):
                if total >= budget:
                    break
                if wav is None:
                    failures += 1
                    continue
                slug = voice.replace("+", "_")
                rel = f"speech/{len(records):04d}_{slug}_s{rate}_p{pitch}.wav"
                save_audio(out_dir / rel, wav, sample_rate)
                seconds = wav.shape[-1] / sample_rate
                records.append({"path": rel, "source": "espeak", "seconds": seconds, "origin": f"{voice}: {text}"})
                total += seconds
                bar.update(round(seconds))
    bar.total = max(bar.total, bar.n)  # the last clip may overshoot the budget
    bar.close()
    if failures >= 32:
        warnings.warn(f"espeak-ng failed {failures} times; speech stopped at {total:.0f} s", stacklevel=2)
    return records


def synthesize_clip(kind: str, seconds: float, sample_rate: int, seed: int = 0) -> torch.Tensor:
    """One procedural clip `[1, round(seconds * sample_rate)]` of `kind` in SYNTH_KINDS, at -20 LUFS."""
    if kind not in SYNTH_KINDS:
        raise ValueError(f"kind must be one of {sorted(SYNTH_KINDS)}, got {kind!r}")
    x = fade(SYNTH_KINDS[kind](seconds, sample_rate, np.random.default_rng(seed)), sample_rate, 0.02)
    return _finish_clip(torch.from_numpy(x.astype(np.float32))[None], sample_rate)


def _make_synthetic(out_dir: Path, sample_rate: int, budget: float, seed: int, progress: bool) -> list[dict]:
    """Procedural clips of 3-8 s, cycling through SYNTH_KINDS, until `budget` seconds."""
    rng = np.random.default_rng(seed)
    records, total = [], 0.0
    bar = tqdm(total=round(budget), desc="synthetic", unit="s", disable=not progress)
    while total < budget:
        kind = list(SYNTH_KINDS)[len(records) % len(SYNTH_KINDS)]
        seconds = float(min(rng.uniform(3.0, 8.0), max(1.0, budget - total)))
        wav = synthesize_clip(kind, seconds, sample_rate, seed=int(rng.integers(2 ** 31)))
        rel = f"synthetic/{len(records):04d}_{kind}.wav"
        save_audio(out_dir / rel, wav, sample_rate)
        records.append({"path": rel, "source": "synthetic", "seconds": wav.shape[-1] / sample_rate, "origin": kind})
        total += wav.shape[-1] / sample_rate
        bar.update(round(wav.shape[-1] / sample_rate))
    bar.total = max(bar.total, bar.n)  # the last clip may overshoot the budget
    bar.close()
    return records


def _reusable_report(out_dir: Path, request: dict) -> dict | None:
    """The existing corpus.json if it was built with `request` and all its files are still there."""
    try:
        report = json.loads((out_dir / "corpus.json").read_text())
    except (OSError, ValueError):
        return None
    if report.get("request") != request:
        return None
    if not all((out_dir / f["path"]).is_file() and (out_dir / f["path"]).stat().st_size == f["bytes"]
               for f in report.get("files", [])):
        return None
    return report


def build_default_corpus(out_dir: str | os.PathLike, sample_rate: int = 24000, minutes: float = 12,
                         seed: int = 0, sources: str | Sequence[str] = "auto", progress: bool = True,
                         real_speech_share: float = 0.0) -> dict:
    """Write a mixed corpus of about `minutes` of mono WAV at `sample_rate` into `out_dir`; return a report.

    Sources, in this order (see CORPUS_SOURCES):
      alsa      - /usr/share/sounds/alsa speech clips (alsa-utils), at most 5 % of the total;
      ktuberling - words read aloud by one reader a language (ktuberling-data), joined into clips; training
                  only, half of `real_speech_share` at most (the asterisk training voices take the rest); only
                  when named in `sources` (OPT_IN_SOURCES);
      asterisk  - recorded voice prompts (asterisk-core-sounds-*-g722, decoded with the `G722` wheel), the training
                  voices up to `real_speech_share` of the total; the held-out voices' prompts (ASTERISK_VOICES) go
                  to valid or test, whole speakers, and come on top of `minutes`;
      sonic_pi  - CC0 recordings from /usr/share/sonic-pi/samples (drums, loops, instruments, ambience),
                  at most half of the total;
      espeak    - espeak-ng speech: English voices and accents, German, French, Spanish, Italian, with voice
                  variants, speaking rates and pitches drawn from `seed`;
      synthetic - procedural tones with ADSR envelopes, chords, chirps, noise bursts and drum patterns;
                  fills whatever the others left (all of it when the Debian packages are missing).
    sources: "auto" (every available source but the opt-in ones, synthetic filling the rest), "real" (the same
    without synthetic), "synthetic", or a list.
    Each clip is mono, resampled, and levelled to -20 LUFS with peaks <= 0.95.
    The report {request, sources: {name: {files, minutes}}, minutes_total, files: [...], build_seconds,
    reused} is also written to out_dir/corpus.json. A second call with the same arguments returns it without
    rebuilding; different arguments delete the files of the previous build first. Deterministic given seed.
    """
    if minutes <= 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    out_dir = Path(out_dir)
    chosen = _resolve_sources(sources)
    if not 0 <= real_speech_share <= 1:
        raise ValueError(f"real_speech_share must be in [0, 1], got {real_speech_share}")
    request = {"version": CORPUS_VERSION, "sample_rate": int(sample_rate), "minutes": float(minutes),
               "seed": int(seed), "sources": chosen}
    if "asterisk" in chosen or "ktuberling" in chosen:  # (a corpus without them keeps the request it had before)
        request["real_speech_share"] = float(real_speech_share)
    held_out = {split: max(1, min(n, round(n * minutes / 30))) for split, n in HELD_OUT_PROMPTS.items()}
    if "asterisk" in chosen:  # (a corpus built with fewer held-out prompts is rebuilt)
        request["held_out_prompts"] = held_out
    report = _reusable_report(out_dir, request)
    if report is not None:
        if any("kind" not in r for r in report["files"]):  # a corpus built before clips had kinds
            report["files"] = [{**r, "kind": clip_kind(r)} for r in report["files"]]
            _write_report(out_dir, report)
        return {**report, "reused": True}
    _remove_previous_corpus(out_dir)

    started, target = time.perf_counter(), minutes * 60.0
    has_filler = "espeak" in chosen or "synthetic" in chosen
    shares = ({"alsa": 0.05, "ktuberling": real_speech_share / 2, "asterisk": real_speech_share, "sonic_pi": 0.5}
              if has_filler else {"alsa": 1.0, "ktuberling": 1.0, "asterisk": 1.0, "sonic_pi": 1.0})
    records: list[dict] = []
    for name in chosen:
        # the held-out voices' prompts come on top of the minutes
        remaining = target - sum(r["seconds"] for r in records if r.get("split", "train") == "train")
        if remaining <= 0:
            break
        rng = random.Random(f"{seed}-{name}")  # one stream per source: adding a source leaves the others alone
        if name == "alsa":  # a speaker or two whom the test split must not meet: training only
            records += [{**r, "split": "train"} for r in _copy_recordings(
                list(ALSA_SOUNDS_DIR.glob("*.wav")), "alsa", out_dir, sample_rate,
                min(remaining, shares["alsa"] * target), rng, progress)]
        elif name == "ktuberling":
            records += _read_words(out_dir, sample_rate, min(remaining, shares["ktuberling"] * target), rng, progress)
        elif name == "asterisk":  # the recorded speech the word readers left
            words = sum(r["seconds"] for r in records if r["source"] == "ktuberling")
            records += _copy_prompts(out_dir, sample_rate, min(remaining, shares["asterisk"] * target - words),
                                     held_out, rng, progress)
        elif name == "sonic_pi":
            records += _copy_recordings(list(SONIC_PI_DIR.glob("*.flac")), "sonic_pi", out_dir, sample_rate,
                                        min(remaining, shares["sonic_pi"] * target), rng, progress)
        elif name == "espeak":
            records += _make_speech(out_dir, sample_rate, remaining, rng, progress)
        else:
            records += _make_synthetic(out_dir, sample_rate, remaining, seed, progress)
    if "synthetic" not in chosen and sum(r["seconds"] for r in records) < 0.95 * target:
        warnings.warn(f"the chosen sources {chosen} only gave {sum(r['seconds'] for r in records) / 60:.1f} of "
                      f"{minutes} minutes", stacklevel=2)

    for r in records:
        r["bytes"] = (out_dir / r["path"]).stat().st_size
        r["kind"] = clip_kind(r)
    per_source = {name: {"files": sum(r["source"] == name for r in records),
                         "minutes": round(sum(r["seconds"] for r in records if r["source"] == name) / 60, 3)}
                  for name in chosen}
    report = {
        "request": request,
        "out_dir": str(out_dir),
        "sample_rate": int(sample_rate),
        "sources": per_source,
        "minutes_total": round(sum(r["seconds"] for r in records) / 60, 3),
        "n_files": len(records),
        "build_seconds": round(time.perf_counter() - started, 2),
        "files": records,
    }
    _write_report(out_dir, report)
    return {**report, "reused": False}


def _write_report(out_dir: Path, report: dict) -> None:
    with atomic_path(out_dir / "corpus.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False))


def _remove_previous_corpus(out_dir: Path) -> None:
    """Delete the files listed by an earlier corpus.json (only those: other files in out_dir are the user's)."""
    try:
        old = json.loads((out_dir / "corpus.json").read_text())
    except (OSError, ValueError):
        return
    for record in old.get("files", []):
        (out_dir / record["path"]).unlink(missing_ok=True)
    (out_dir / "corpus.json").unlink(missing_ok=True)
