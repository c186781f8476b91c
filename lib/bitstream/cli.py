"""The trained codec as a command-line tool::

    python -m lib compress in.wav out.vqc --checkpoint runs/x/checkpoint.pt [--kbps 3 | --n-q 4] [--mode packed]
    python -m lib decompress out.vqc out.wav [--checkpoint ...] [--offline] [--sample-rate source]
    python -m lib info out.vqc [--json]
    python -m lib fit-entropy --checkpoint runs/x/checkpoint.pt --data data/default
    python -m lib fit-prior --checkpoint runs/x/checkpoint.pt --data data/default [--steps 3000]

Any file soundfile reads goes in, at any rate and channel count: it is mixed down and resampled to what the
codec takes (said on stderr), block by block, so long files need bounded memory (the codec's streaming encoder
and decoder keep only their causal state). ``--mode auto`` (default) range-codes the codes under a prior over codes
trained for the checkpoint when one lies beside it (``prior.pt``, made by ``fit-prior``), else under the per-level
context models (``entropy_model.npz``, made by ``fit-entropy``), else packs them.
``decompress`` writes float WAV by default, so the samples are exactly those of
``lib.bitstream.vqc.reference_decode`` (see lib/bitstream/vqc.py for the file format and what it equals).

Exit status: 0 done, 1 a file could not be used (the message names it and says why; no output file is left
behind), 2 wrong arguments, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch

from lib.bitstream.entropy import SIDECAR_NAME, EntropyModel, EntropyModelError
from lib.bitstream.prior_coding import PriorModel
from lib.bitstream.prior_file import PRIOR_NAME, PriorError
from lib.bitstream.vqc import (DEFAULT_BLOCK_FRAMES, VqcError, alphabet_sizes, atomic_output, bits_per_level,
                               check_codec, check_model, check_output, decode_audio, encode_to_file, read_header,
                               weights_hash)
from lib.data.audio import (_FLOAT_SUBTYPES, _FORMAT_ALIASES, EMPTY, NON_FINITE, ZERO_CHANNELS, AudioError,
                            _check_path, _translate)
from lib.model.prior import EMBEDDINGS
from lib.training.checkpoint import CheckpointError

ERRORS = (VqcError, AudioError, CheckpointError, EntropyModelError, PriorError)


class UsageError(Exception):
    """Arguments that do not fit the codec (exit status 2)."""


def _say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- audio in / out

class StreamingResampler:
    """Chunk-by-chunk ``torchaudio.functional.resample`` (same sinc kernel): feeding a signal in pieces gives the
    samples of one call on the whole signal, up to float rounding. Works on ``[C, t]``."""

    def __init__(self, orig: int, new: int):
        g = math.gcd(orig, new)
        self.o, self.n = orig // g, new // g
        self.width = math.ceil(6 * self.o / (min(self.o, self.n) * 0.99)) + 1  # torchaudio's kernel half-width
        self.left = -(-self.width // self.o) * self.o  # history kept, in whole input blocks of o samples
        self.buf: torch.Tensor | None = None
        self.buf_start = self.done = self.total = 0  # buffer's first input sample, output blocks emitted, inputs

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.buf = x if self.buf is None else torch.cat([self.buf, x], dim=-1)
        self.total += x.shape[-1]
        ready = (self.total - self.width - self.o) // self.o + 1  # blocks whose whole window has arrived
        return self._emit(ready) if ready > self.done else x.new_zeros(x.shape[0], 0)

    def flush(self) -> torch.Tensor:
        if self.buf is None:
            return torch.zeros(1, 0)
        return self._emit(None)

    def _emit(self, upto: int | None) -> torch.Tensor:
        import torchaudio.functional as AF

        start = max(0, self.done * self.o - self.left)
        end = self.total if upto is None else min(self.total, (upto - 1) * self.o + self.width + self.o)
        y = AF.resample(self.buf[..., start - self.buf_start:end - self.buf_start], self.o, self.n)
        first = (self.done - start // self.o) * self.n
        if upto is None:
            y, self.done = y[..., first:], -(-self.n * self.total // self.o)  # done counts samples from here on
        else:
            y, self.done = y[..., first:(upto - start // self.o) * self.n], upto
            keep = max(0, self.done * self.o - self.left)
            self.buf, self.buf_start = self.buf[..., keep - self.buf_start:], keep
        return y


def read_audio(path: Path, sample_rate: int, channels: int, block_seconds: float = 10.0
               ) -> tuple[dict, Iterator[torch.Tensor]]:
    """Open ``path`` and return (facts, chunks ``[channels, t]`` float32 at ``sample_rate``)."""
    _check_path(path)
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise _translate(path, err) from None
    if f.channels == 0:
        raise AudioError(path, ZERO_CHANNELS)
    if f.seekable() and f.frames == 0:
        f.close()
        raise AudioError(path, EMPTY, "0 frames")
    facts = {"rate": f.samplerate, "channels": f.channels, "seconds": f.frames / f.samplerate if f.seekable() else 0.0}
    if f.channels not in (1, channels) and channels != 1:
        f.close()
        raise AudioError(path, "channels", f"{f.channels} channels; the codec takes {channels}")

    def chunks() -> Iterator[torch.Tensor]:
        resampler = StreamingResampler(f.samplerate, sample_rate) if f.samplerate != sample_rate else None
        frames = 0
        with f:
            try:
                for block in f.blocks(blocksize=max(1, int(block_seconds * f.samplerate)), dtype="float32",
                                      always_2d=True):
                    if not np.isfinite(block).all():
                        raise AudioError(path, NON_FINITE, f"near frame {frames}")
                    frames += block.shape[0]
                    x = torch.from_numpy(np.ascontiguousarray(block.T))
                    if x.shape[0] != channels:
                        x = x.mean(dim=0, keepdim=True) if channels == 1 else x.expand(channels, -1)
                    yield resampler(x) if resampler is not None else x
            except (sf.LibsndfileError, RuntimeError) as err:
                raise _translate(path, err) from None
        if frames == 0:
            raise AudioError(path, EMPTY, "0 frames")
        if resampler is not None:
            yield resampler.flush()

    return facts, chunks()


def _output_format(path: Path, subtype: str | None) -> tuple[str, str]:
    ext = path.suffix.lower()
    fmt = _FORMAT_ALIASES.get(ext, ext[1:].upper())
    if fmt not in sf.available_formats():
        raise VqcError(path, f"cannot write the output: unsupported audio format '{ext or '(no extension)'}' "
                             "(use .wav, .flac, .ogg)")
    subtype = subtype or ("FLOAT" if fmt in ("WAV", "W64", "RF64", "AIFF", "CAF") else sf.default_subtype(fmt))
    if not sf.check_format(fmt, subtype):
        raise VqcError(path, f"cannot write the output: format {fmt} has no subtype {subtype}")
    return fmt, subtype


# ---------------------------------------------------------------------------------------------- commands

def _load_codec(checkpoint: str | Path, device: str, beam_width: int | None = None):
    from lib.training.checkpoint import load_codec

    return load_codec(checkpoint, device=device, beam_width=beam_width)[0]


def _progress(args, total: float, desc: str):
    from lib.headless import progress_bar

    return progress_bar(total=total or None, unit="s", desc=desc, file=sys.stderr, disable=args.quiet, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]")


def _advance(bar, seconds: float) -> None:
    """Move the bar on, never past its total (resampling rounds the length a little)."""
    bar.update(min(seconds, bar.total - bar.n) if bar.total else seconds)


def _choose_n_q(args, codec) -> int:
    alphabet = alphabet_sizes(codec)
    if args.kbps is None:
        n_q = len(alphabet) if args.n_q is None else args.n_q
        if not 1 <= n_q <= len(alphabet):
            raise UsageError(f"--n-q must be in [1, {len(alphabet)}] for this codec, got {n_q}")
        return n_q
    rates = np.cumsum(bits_per_level(alphabet)) * codec.frame_rate / 1000
    fits = int((rates <= args.kbps * (1 + 1e-9)).sum())
    if fits == 0:
        raise UsageError(f"--kbps {args.kbps:g} is below one level of this codec ({rates[0]:.3g} kbps)")
    return fits


def _entropy_model(args, checkpoint: Path, required: bool) -> tuple[EntropyModel | None, Path]:
    path = Path(args.entropy_model) if args.entropy_model else checkpoint.parent / SIDECAR_NAME
    if not path.is_file() and not required:
        return None, path
    return EntropyModel.load(path), path


def _prior(args, checkpoint: Path, required: bool) -> tuple[PriorModel | None, Path]:
    path = Path(args.prior) if args.prior else checkpoint.parent / PRIOR_NAME
    if not path.is_file() and not required:
        return None, path
    if not path.is_file():
        raise PriorError(f"prior {path} does not exist (make one with python -m lib fit-prior, or pass --prior)")
    return PriorModel.load(path), path


def _payload_model(args, ckpt: Path, codec) -> tuple[str, PriorModel | EntropyModel | None, Path | None]:
    """(mode, model, its path) for ``--mode``: auto takes a prior made for these weights, then such context
    models, then packs; prior / entropy insist on theirs."""
    mine = weights_hash(codec)
    tried = []
    for mode, load in (("prior", _prior), ("entropy", _entropy_model)):
        if args.mode not in ("auto", mode):
            continue
        model, path = load(args, ckpt, args.mode == mode)
        if model is not None and model.weights_hash != mine:
            if args.mode == mode:
                raise VqcError(path, f"was made for codec weights {model.weights_hash.hex()}, but checkpoint {ckpt} "
                                     f"holds weights {mine.hex()}; make one for it (python -m lib fit-{mode})")
            _say(args, f"note: {path} was made for other codec weights than {ckpt}'s; not used "
                       f"(python -m lib fit-{mode} makes one for them)")
            model = None
        if model is not None:
            return mode, model, path
        tried.append(str(path))
    if args.mode == "auto":
        _say(args, f"note: no prior or entropy model for {ckpt} ({' or '.join(tried)}; make one with python -m lib "
                   "fit-prior or fit-entropy); writing the packed payload")
    return "packed", None, None


def cmd_compress(args) -> int:
    if args.block_frames < 8 or args.block_frames % 8:
        raise UsageError(f"--block-frames must be a positive multiple of 8, got {args.block_frames}")
    src, out, ckpt = Path(args.input), check_output(args.output), Path(args.checkpoint)
    codec = _load_codec(ckpt, args.device, args.beam_width)
    n_q = _choose_n_q(args, codec)
    mode, model, model_path = _payload_model(args, ckpt, codec)
    facts, chunks = read_audio(src, int(codec.sample_rate), codec.channels)
    changes = []
    if facts["channels"] != codec.channels:
        changes.append("mixed down to mono" if codec.channels == 1 else f"copied to {codec.channels} channels")
    if facts["rate"] != codec.sample_rate:
        changes.append(f"resampled to {int(codec.sample_rate)} Hz")
    _say(args, f"{src}: {facts['rate']} Hz, {facts['channels']} channel(s), {facts['seconds']:.2f} s"
               + (f" -> {', '.join(changes)}" if changes else ""))
    nominal = sum(bits_per_level(alphabet_sizes(codec)[:n_q])) * codec.frame_rate / 1000
    _say(args, f"{ckpt}: {n_q} of {len(alphabet_sizes(codec))} levels, {nominal:.3g} kbps nominal, "
               f"{f'{mode}-coded with {model_path}' if mode != 'packed' else 'packed'}")
    with _progress(args, facts["seconds"], "compress") as bar:
        header = encode_to_file(codec, chunks, out, n_q=n_q, mode=mode, model=model, block_frames=args.block_frames,
                                source_rate=facts["rate"], source_channels=facts["channels"],
                                checkpoint=str(ckpt.resolve()), progress=lambda n: _advance(bar, n / codec.sample_rate))
    packed = (header.n_frames * sum(header.bits) + 7) // 8
    saving = f", {100 * (1 - header.payload_size / packed):.1f}% below packed" if mode != "packed" and packed else ""
    _say(args, f"wrote {out}: {header.size + header.payload_size} bytes (header {header.size}), payload "
               f"{header.payload_bitrate / 1000:.3g} kbps{saving}")
    return 0


def cmd_decompress(args) -> int:
    src, out = Path(args.input), check_output(args.output)
    header = read_header(src)
    fmt, subtype = _output_format(out, args.subtype)
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    elif header.checkpoint:
        ckpt = Path(header.checkpoint)
        if not ckpt.is_file():
            raise VqcError(src, f"was written with checkpoint {ckpt}, which does not exist here; pass --checkpoint")
    else:
        raise VqcError(src, "names no checkpoint; pass --checkpoint")
    codec = _load_codec(ckpt, args.device)
    check_codec(header, codec, src, ckpt)
    model = None
    if header.mode != "packed":
        model, model_path = (_prior if header.mode == "prior" else _entropy_model)(args, ckpt, required=True)
        check_model(header, model, src, model_path)
    rate = header.sample_rate
    if args.sample_rate:
        rate = header.source_rate if args.sample_rate == "source" else int(args.sample_rate)
    resampler = StreamingResampler(header.sample_rate, rate) if rate != header.sample_rate else None
    _say(args, f"{src}: {header.duration:.2f} s, {header.n_levels} levels, {header.mode}; writing {out} at {rate} Hz "
               f"{'mono' if header.channels == 1 else f'{header.channels} channels'} ({subtype})"
               + (f", resampled from {header.sample_rate} Hz" if resampler else ""))
    clipped = 0
    with atomic_output(out) as tmp, _progress(args, header.duration, "decompress") as bar, \
            sf.SoundFile(str(tmp), "w", rate, header.channels, subtype, format=fmt) as f:
        def write(y: torch.Tensor) -> None:
            nonlocal clipped
            data = y.numpy().T
            if subtype not in _FLOAT_SUBTYPES:
                clipped += int((np.abs(data) > 1).sum())
                data = np.clip(data, -1.0, 1.0)
            f.write(data)

        for y in decode_audio(codec, src, header, model, offline=args.offline):
            _advance(bar, y.shape[-1] / header.sample_rate)
            write(resampler(y) if resampler is not None else y)
        if resampler is not None:
            write(resampler.flush())
    if clipped:
        _say(args, f"note: {clipped} samples outside [-1, 1] were clipped ({subtype}; use .wav for float output)")
    return 0


def info_dict(header, path: Path) -> dict:
    return {"file": str(path), "format_version": header.version, "mode": header.mode, "quantizer": header.quantizer,
            "sample_rate": header.sample_rate, "hop": header.hop, "channels": header.channels,
            "levels": header.n_levels, "alphabet": list(header.alphabet), "radices": list(header.radices),
            "frames": header.n_frames, "samples": header.length, "seconds": round(header.duration, 4),
            "block_frames": header.block_frames, "source_rate": header.source_rate,
            "source_channels": header.source_channels, "header_bytes": header.size,
            "payload_bytes": header.payload_size, "nominal_kbps": round(header.nominal_bitrate / 1000, 4),
            "payload_kbps": round(header.payload_bitrate / 1000, 4), "weights_hash": header.weights_hash.hex(),
            "entropy_model_hash": header.model_hash.hex() if header.mode != "packed" else None,
            "checkpoint": header.checkpoint}


def cmd_info(args) -> int:
    rows = [info_dict(read_header(p), Path(p)) for p in args.input]
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=1))
    else:
        for row in rows:
            print("\n".join(f"{k:>18}: {v}" for k, v in row.items()) + "\n")
    return 0


def cmd_fit_entropy(args) -> int:
    from lib.bitstream.entropy import fit_for_checkpoint

    model, path = fit_for_checkpoint(args.checkpoint, args.data, args.out, progress=not args.quiet)
    for l, (ctx, beta) in enumerate(zip(model.context, model.beta)):
        bits = model.heldout_bits.get(ctx, [float("nan")] * model.n_levels)[l]
        _say(args, f"level {l}: context {ctx:6s} beta {beta:5d}  held-out {bits:.3f} bits/code "
                   f"(packed {bits_per_level(model.alphabet)[l]})")
    print(path)
    return 0


def cmd_fit_prior(args) -> int:
    from lib.bitstream.prior_fit import PriorTraining, fit_prior

    settings = {k: v for k, v in (("d_model", args.d_model), ("n_layers", args.layers), ("context", args.context))
                if v is not None}
    training = PriorTraining(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    prior, path, metrics = fit_prior(args.checkpoint, args.data, args.out, embedding=args.embedding,
                                     settings=settings, training=training, progress=not args.quiet)
    packed = bits_per_level(prior.alphabet)
    for l, (bits, top1, top5) in enumerate(zip(metrics.get("bits", []), metrics.get("top1", []),
                                               metrics.get("top5", []))):
        _say(args, f"level {l}: held-out {bits:.3f} bits/code (packed {packed[l]}), top-1 {top1:.3f}, "
                   f"top-5 {top5:.3f}")
    if metrics:
        _say(args, f"all levels: {metrics['bits_per_code']:.3f} bits/code over {metrics['frames']} held-out frames")
    print(path)
    return 0


# ---------------------------------------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lib", description="Use a trained codec on audio files.")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, threads=True):
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes on stderr")
        if threads:
            p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
            p.add_argument("--device", default="cpu", help="torch device for the codec (default cpu)")

    p = sub.add_parser("compress", help="audio file -> .vqc")
    p.add_argument("input", help="any audio file soundfile reads (WAV, FLAC, OGG, ...)")
    p.add_argument("output", help="the .vqc file to write")
    p.add_argument("--checkpoint", required=True, help="the trained codec (checkpoint.pt)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--n-q", type=int, default=None, help="quantizer levels to keep (default all)")
    rate.add_argument("--kbps", type=float, default=None, help="the most levels whose nominal bitrate fits")
    p.add_argument("--mode", choices=("auto", "packed", "entropy", "prior"), default="auto",
                   help="payload: auto = coded with the prior when one is found, else with the entropy model, "
                        "else packed")
    p.add_argument("--entropy-model", default=None, help=f"default: {SIDECAR_NAME} beside the checkpoint")
    p.add_argument("--prior", default=None, help=f"default: {PRIOR_NAME} beside the checkpoint")
    p.add_argument("--block-frames", type=int, default=DEFAULT_BLOCK_FRAMES, help="frames per payload block")
    p.add_argument("--beam-width", type=int, default=None,
                   help="residual VQ: search this many partial sums per frame (default: the trained setting)")
    common(p)
    p.set_defaults(run=cmd_compress)

    p = sub.add_parser("decompress", help=".vqc -> audio file")
    p.add_argument("input", help="a .vqc file")
    p.add_argument("output", help="the audio file to write (format from the extension; float WAV by default)")
    p.add_argument("--checkpoint", default=None, help="default: the path recorded in the file")
    p.add_argument("--entropy-model", default=None, help=f"default: {SIDECAR_NAME} beside the checkpoint")
    p.add_argument("--prior", default=None, help=f"default: {PRIOR_NAME} beside the checkpoint")
    p.add_argument("--offline", action="store_true", help="one codec.decode over the whole file (more memory)")
    p.add_argument("--subtype", default=None, help="soundfile subtype (default FLOAT for WAV)")
    p.add_argument("--sample-rate", default=None, help="resample the output: a rate in Hz or 'source'")
    common(p)
    p.set_defaults(run=cmd_decompress)

    p = sub.add_parser("info", help="print a .vqc header")
    p.add_argument("input", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_info, quiet=True, threads=None)

    p = sub.add_parser("fit-entropy", help=f"fit the entropy model of a checkpoint ({SIDECAR_NAME} beside it)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="the dataset folder the codec was trained on")
    p.add_argument("--out", default=None, help=f"default: {SIDECAR_NAME} beside the checkpoint")
    common(p)
    p.set_defaults(run=cmd_fit_entropy)

    p = sub.add_parser("fit-prior", help=f"train a prior over the codes of a checkpoint ({PRIOR_NAME} beside it)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="the dataset folder the codec was trained on")
    p.add_argument("--out", default=None, help=f"default: {PRIOR_NAME} beside the checkpoint (resumed when there)")
    p.add_argument("--steps", type=int, default=3000, help="training steps in all (default 3000)")
    p.add_argument("--embedding", choices=EMBEDDINGS, default="learned", help="code embeddings (default learned)")
    p.add_argument("--d-model", type=int, default=None, help="transformer width (default 192)")
    p.add_argument("--layers", type=int, default=None, help="transformer layers (default 4)")
    p.add_argument("--context", type=int, default=None, help="frames attended to (default 256)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per step (default 16)")
    p.add_argument("--seed", type=int, default=0)
    common(p)
    p.set_defaults(run=cmd_fit_prior)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "sample_rate", None):
        if args.sample_rate != "source" and not args.sample_rate.isdigit():
            print(f"error: --sample-rate must be a rate in Hz or 'source', got {args.sample_rate!r}", file=sys.stderr)
            return 2
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            print(f"error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        return args.run(args)
    except ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
