"""The .vqc command line: bits per payload mode per n_q on held-out audio, and compress/decompress speed.

    .venv/bin/python bench/bitstream.py --checkpoint runs/cpu/checkpoint.pt --data data/default
    .venv/bin/python bench/bitstream.py --preset tiny --steps 300     # trains a codec first (a few minutes)
    .venv/bin/python bench/bitstream.py --preset cpu --steps 400 --minutes 12 --set train.quantizer_warmup_steps=100

Method
- Bits: every clip of the data folder's *test* split (never seen by training, nor by the entropy model, whose
  context and smoothing are chosen on the valid split) is written in both payload modes at each n_q; the table
  sums payload bytes over the clips and divides by their duration. "model bits" is the entropy model's own
  ideal code length (-log2 p) on the same codes: the range coder's overhead is the gap to it. Headers (98
  bytes + 4 per level + the checkpoint path) are left out and given once.
- The entropy model is the one beside the checkpoint (``entropy_model.npz``); it is fitted first when missing or
  made for other weights (``python -m lib fit-entropy``).
- Speed: ``python -m lib compress`` and ``decompress`` run in this process (``lib.bitstream.cli.main``: checkpoint
  loading, audio reading/writing and the codec included; interpreter start-up and imports not) on a
  ``--seconds`` held-out clip, 2 torch threads, packed and entropy-coded interleaved, median of ``--repeats``
  rounds after a warm-up. RTF = wall time / audio duration (below 1 is faster than real time). The codec's
  bare ``encode`` + ``decode`` of the same clip is timed beside them for reference.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DATA, RESULTS, bench_clip, interleaved, machine_note, markdown_table, median,  # noqa: E402
                    set_threads, timed, write_csv)


def train_codec(preset: str, steps: int, data: Path, run_dir: Path, minutes: float, overrides: list[str]) -> Path:
    from lib.config import load_config
    from lib.data.corpus import build_default_corpus
    from lib.training.trainer import Trainer

    build_default_corpus(data, minutes=minutes, progress=False)
    cfg = load_config(preset, [f"train.steps={steps}", *overrides])
    Trainer(cfg, data, run_dir, progress=True).fit()
    return run_dir / "checkpoint.pt"


def entropy_model_for(checkpoint: Path, data: Path, codec):
    from lib.bitstream.entropy import SIDECAR_NAME, EntropyModel, EntropyModelError, fit_for_checkpoint
    from lib.bitstream.vqc import weights_hash

    try:
        model = EntropyModel.load(checkpoint.parent / SIDECAR_NAME)
        if model.weights_hash == weights_hash(codec):
            return model
    except EntropyModelError:
        pass
    print(f"fitting the entropy model of {checkpoint} on {data}", file=sys.stderr)
    return fit_for_checkpoint(checkpoint, data)[0]


def bits_table(codec, model, clips, tmp: Path) -> tuple[list[dict], int]:
    from lib.bitstream.entropy import clip_codes
    from lib.bitstream.vqc import encode_to_file

    seconds = sum(c.shape[-1] for c in clips) / codec.sample_rate
    rows, header_bytes = [], 0
    for n_q in range(1, model.n_levels + 1):
        packed = entropy = 0
        for x in clips:
            h = encode_to_file(codec, [x], tmp / "p.vqc", n_q=n_q, mode="packed")
            packed, header_bytes = packed + h.payload_size, h.size
            entropy += encode_to_file(codec, [x], tmp / "e.vqc", n_q=n_q, mode="entropy", model=model).payload_size
        ideal = sum(float(model.bits(c).sum()) for c in clip_codes(codec, clips, n_q=n_q))
        rows.append({"n_q": n_q, "nominal kbps": codec.bitrate(n_q) / 1000, "packed kbps": 8 * packed / seconds / 1000,
                     "entropy kbps": 8 * entropy / seconds / 1000, "model bits kbps": ideal / seconds / 1000,
                     "saving %": 100 * (1 - entropy / packed),
                     "contexts": " ".join(model.context[:n_q])})
    return rows, header_bytes


def speed_table(checkpoint: Path, clip, sample_rate: int, codec, repeats: int, tmp: Path) -> list[dict]:
    import soundfile as sf
    import torch

    from lib.bitstream.cli import main

    wav = tmp / "clip.wav"
    sf.write(str(wav), clip[0].numpy().T, sample_rate, subtype="FLOAT")
    seconds = clip.shape[-1] / sample_rate

    def cli(*argv):
        def run():
            t, rc = timed(lambda: main([*argv, "-q"]))
            assert rc == 0, argv
            return t
        return run

    def bare():
        with torch.inference_mode():
            return timed(lambda: codec.decode(codec.encode(clip)))[0]

    tasks = {}
    for mode in ("packed", "entropy"):
        tasks[f"compress {mode}"] = cli("compress", str(wav), str(tmp / f"{mode}.vqc"), "--checkpoint",
                                        str(checkpoint), "--mode", mode)
        tasks[f"decompress {mode}"] = cli("decompress", str(tmp / f"{mode}.vqc"), str(tmp / f"{mode}.wav"))
    tasks["codec encode+decode (bare)"] = bare
    results = interleaved(tasks, repeats=repeats, log=lambda s: print(s, file=sys.stderr))
    return [{"step": name, "seconds": median(v), "RTF": median(v) / seconds} for name, v in results.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="a trained codec (else one is trained)")
    ap.add_argument("--data", type=Path, default=None, help="its dataset folder (default data/default)")
    ap.add_argument("--preset", default="tiny", help="preset to train when no checkpoint is given")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--minutes", type=float, default=3.0, help="corpus size when training here")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides when training")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length for the speed table")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smoke run: a tiny codec of 40 steps, 3 s, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.preset, args.steps, args.minutes, args.seconds, args.repeats = "tiny", 40, 1.0, 3.0, 1
    set_threads(2)

    from lib.data.datasets import AudioFolder
    from lib.training.checkpoint import load_codec

    checkpoint, data = args.checkpoint, args.data
    if checkpoint is None:
        data = data or RESULTS / "bitstream" / "corpus"
        checkpoint = train_codec(args.preset, args.steps, data, RESULTS / "bitstream" / args.preset, args.minutes,
                                 args.set)
    data = data or DATA
    codec, cfg = load_codec(checkpoint)
    model = entropy_model_for(checkpoint, data, codec)
    sr = cfg.data.sample_rate
    test = AudioFolder(data, split="test", sample_rate=sr)
    clips = [test.load(i) for i in range(len(test))]
    with tempfile.TemporaryDirectory() as tmp:
        bits, header_bytes = bits_table(codec, model, clips, Path(tmp))
        clip, where = bench_clip(args.seconds, sr, data)
        speed = speed_table(checkpoint, clip, sr, codec, args.repeats, Path(tmp))
    held = sum(c.shape[-1] for c in clips) / sr
    print(f"\n## Bits per payload mode, held-out test split ({len(clips)} clips, {held:.1f} s), {checkpoint}\n")
    print(markdown_table(bits))
    print(f"\nHeaders: {header_bytes} bytes per file (not counted above).")
    print(f"\n## Speed on a {args.seconds:g} s clip ({where})\n")
    print(markdown_table(speed))
    print(f"\n{machine_note()}")
    write_csv(bits, "bitstream_bits")
    write_csv(speed, "bitstream_speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
