"""A second validation set for decisions: espeak-ng utterances in no split of the corpus, and checkpoints scored on it.

The 12-minute default corpus held 3 speech clips per held-out split (the 30-minute one 18-20), too few to separate
two codecs by 0.03 STOI. This script speaks new sentences with the corpus generator's English voices and variants
at rates and pitches of its own seed, so neither training nor the test split sees them, and scores checkpoints on
them with the race's metrics (`bench/quality.py`'s `evaluate`): speech at each n_q and unquantized (n_q = 0).

    python bench/extra_speech.py --make runs/extra_speech                     # 24 utterances (needs espeak-ng)
    python bench/extra_speech.py --clips runs/extra_speech runs/a/checkpoint.pt runs/b/checkpoint.pt
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# `common` before torch: it sets OMP_WAIT_POLICY, which libgomp reads only when torch loads it.
from common import markdown_table, set_threads  # noqa: E402
import torch  # noqa: E402
from lib.data import corpus  # noqa: E402
from lib.data.espeak_text import ENGLISH_VOICES, VOICE_VARIANTS  # noqa: E402
from lib.data.audio import load_audio, save_audio  # noqa: E402

# Not among the corpus generator's sentences.
SENTENCES = (
    "The lighthouse keeper counted ships until the fog rolled over the harbour.",
    "Please bring the blue folder and two pencils to the meeting tomorrow morning.",
    "Seven quiet foxes jumped across the frozen river before dawn.",
    "Our train leaves at a quarter past nine, so we should hurry.",
    "Numbers like forty two and three hundred sound different in every language.",
    "She measured the flour carefully and then forgot the sugar entirely.",
    "A warm wind moved through the orchard and shook the ripe apples loose.",
    "Thank you for calling; your request has been recorded and will be reviewed.",
)


def make_utterances(out_dir: str | Path, n: int = 24, seed: int = 424242, sample_rate: int = 24000) -> list[Path]:
    """Speak `n` utterances into `out_dir` (24 kHz mono WAV, the corpus's level); returns their paths."""
    if not shutil.which(corpus.ESPEAK_BINARY):
        raise RuntimeError(f"{corpus.ESPEAK_BINARY} is not installed (Debian package espeak-ng)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng, paths, failures = random.Random(seed), [], 0
    while len(paths) < n:
        voice = rng.choice(ENGLISH_VOICES) + rng.choice(VOICE_VARIANTS)
        rate, pitch, text = rng.randint(120, 220), rng.randint(20, 80), rng.choice(SENTENCES)
        wav = corpus._speak(voice, rate, pitch, text, sample_rate)
        if wav is None:
            failures += 1
            if failures > 4 * n:
                raise RuntimeError(f"espeak-ng failed {failures} times")
            continue
        path = out_dir / f"{len(paths):02d}_{voice.replace('+', '_')}_s{rate}_p{pitch}.wav"
        save_audio(path, wav, sample_rate)
        paths.append(path)
    return paths


def load_clips(clip_dir: str | Path, sample_rate: int, seconds: float = 6.0) -> list[tuple[str, str, torch.Tensor]]:
    """(name, "speech", clip `[1, 1, T]`) for every WAV in `clip_dir`, cut to `seconds`."""
    files = sorted(Path(clip_dir).glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no .wav files in {clip_dir} (make them with --make)")
    return [(f.name, "speech", load_audio(f, sample_rate, mono=True)[:, : int(seconds * sample_rate)].unsqueeze(0))
            for f in files]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", metavar="DIR", help="speak the utterances into DIR")
    ap.add_argument("-n", type=int, default=24, help="how many utterances --make speaks")
    ap.add_argument("--clips", metavar="DIR", help="score checkpoints on the WAVs in DIR")
    ap.add_argument("checkpoints", nargs="*")
    ap.add_argument("--n-q", type=int, nargs="+", default=[8, 1, 0], help="n_q to score (0 = unquantized)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam-width", type=int, default=None,
                    help="encode with this residual beam search (default: each run's own setting)")
    args = ap.parse_args(argv)
    if args.make:
        print(f"{len(make_utterances(args.make, args.n))} utterances in {args.make}")
    if args.checkpoints:
        import quality
        from lib.training.checkpoint import load_codec

        clip_dir = args.clips or args.make
        if clip_dir is None:
            ap.error("checkpoints to score need --clips DIR (or --make DIR)")
        set_threads(args.threads)
        rows, clips_at = [], {}  # clips loaded once per sample rate
        for ckpt in args.checkpoints:
            codec, cfg = load_codec(ckpt, beam_width=args.beam_width)
            sr = cfg.data.sample_rate
            if sr not in clips_at:
                clips_at[sr] = load_clips(clip_dir, sr)
            for r in quality.evaluate(codec, clips_at[sr], sr, args.n_q):
                rows.append({"checkpoint": ckpt, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                   for k, v in r.items() if k != "stft_distance"}})
        print(markdown_table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
