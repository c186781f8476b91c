"""Encode/decode speed, real-time factor, parameters and peak memory: our presets vs EnCodec and DAC (24 kHz).

    .venv/bin/python bench/speed.py            # 10 s clip, 5 timed rounds (about 2.5-4 min with DAC)
    .venv/bin/python bench/speed.py --quick    # 2 s clip, 3 rounds
    .venv/bin/python bench/speed.py --models cpu cpu@model.quantizer.beam_width=8 encodec   # a preset with overrides

Method
- Every model lives in its own worker process (a fresh interpreter): it builds the model (random init, eval
  mode), loads the same clip and waits. The parent asks the workers in turn to encode and decode the clip once
  (round-robin A B C ... A B C ...), so load from other processes hits every model alike. One warm-up round is
  discarded; the table holds medians of the timed rounds. Each worker runs with 2 torch threads under
  ``torch.inference_mode()``.
- "time / EnCodec" is the median over rounds of (model enc+dec) / (EnCodec enc+dec in the same round).
- Memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the worker (tracemalloc cannot see torch's
  allocations). "peak RSS" is the high-water mark over the whole worker life (Python, torch, model, inference);
  "inference extra" is the peak during encode+decode minus the resident memory just before the first encode
  (the kernel's high-water mark is reset there by writing 5 to /proc/self/clear_refs), i.e. what running the
  codec on the clip adds on top of having it loaded. Worst case over the rounds.
- DAC runs from a separate virtual environment (its dependencies pin versions that must not enter ours); pass
  ``--dac-python`` (default /tmp/dacvenv/bin/python). Without one, DAC's row quotes the design notes and says
  it was not measured here.
- Bitrate: our ``cpu`` preset and EnCodec and DAC at 6 kbps (8 codebooks of 1024 at 75 Hz); ``paper`` is
  run at 8 of its 32 levels (6 kbps); ``tiny`` has 4 x 64 codes (1.8 kbps).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (REPO, bench_clip, machine_note, markdown_table, median, peak_rss_mb,  # noqa: E402
                    peak_rss_since_reset_mb, reset_peak_rss, set_threads, write_csv, WorkerProcess)

OUR_PRESETS = {"tiny": None, "cpu": 8, "cpu_seanet": 8, "paper": 8}  # preset -> n_q used (None = all levels)
# DAC's published 24 kHz model: encoder 64 channels, rates 2,4,5,8 (hop 320), decoder 1536 channels,
# 32 codebooks of 1024 factorised to 8 dims; 8 codebooks = 6 kbps at 75 Hz.
DAC_24KHZ = dict(encoder_dim=64, encoder_rates=[2, 4, 5, 8], decoder_dim=1536, decoder_rates=[8, 5, 4, 2],
                 n_codebooks=32, codebook_size=1024, codebook_dim=8, sample_rate=24000)
DAC_NOTES = {"params": 75_000_000, "enc_dec_s": 20.0}  # the project's design notes: 10 s on 2 cores, earlier
DEFAULT_DAC_PYTHON = "/tmp/dacvenv/bin/python"
SAMPLE_RATE = 24000


# ----------------------------------------------------------------------------- worker side


class Runner:
    """One codec behind a uniform interface: ``encode(wav [1,1,T]) -> codes``, ``decode(codes) -> [1,1,T']``."""

    def __init__(self, name: str):
        import torch

        self.name = name
        preset, *overrides = name.split("@")  # "cpu@model.quantizer.beam_width=8": a preset with overrides
        self.ours = preset in OUR_PRESETS
        if self.ours:
            from lib.build import build_codec
            from lib.config import load_config

            cfg = load_config(preset, overrides)
            self.model = build_codec(cfg).eval()
            self.n_q = OUR_PRESETS[preset] or cfg.model.quantizer.n_q
            self.bitrate = cfg.bitrate(self.n_q)
        elif name == "encodec":
            from encodec import EncodecModel

            self.model = EncodecModel.encodec_model_24khz(pretrained=False).eval()  # random init, offline
            self.model.set_target_bandwidth(6.0)
            self.bitrate = 6000.0
        elif name == "dac":
            import dac

            self.model = dac.DAC(**DAC_24KHZ).eval()
            self.n_q = 8
            self.bitrate = self.n_q * 10 * SAMPLE_RATE / self.model.hop_length
        else:
            raise ValueError(f"unknown model {name!r} (known: {', '.join([*OUR_PRESETS, 'encodec', 'dac'])})")
        self.params = sum(p.numel() for p in self.model.parameters())
        self.torch = torch

    def encode(self, wav):
        if self.ours:
            return self.model.encode(wav, n_q=self.n_q)
        if self.name == "encodec":
            return self.model.encode(wav)  # list of (codes [B, n_q, F], scale) frames
        _, codes, *_ = self.model.encode(self.model.preprocess(wav, SAMPLE_RATE), n_quantizers=self.n_q)
        return codes

    def decode(self, codes, length: int):
        if self.ours:
            return self.model.decode(codes, length=length)
        if self.name == "encodec":
            return self.model.decode(codes)[..., :length]
        z, _, _ = self.model.quantizer.from_codes(codes)
        return self.model.decode(z)[..., :length]


def worker(name: str, clip_path: str, threads: int) -> None:
    """Serve timing requests on stdin ("run" / "quit"); answer with one ``@@ {json}`` line each."""
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    set_threads(threads)
    runner = Runner(name)
    torch = runner.torch
    wav = torch.from_numpy(np.load(clip_path)).float()

    def reply(obj: dict) -> None:
        print("@@ " + json.dumps(obj), flush=True)

    reply({"params": runner.params, "bitrate": runner.bitrate})
    rss_loaded = None
    for line in sys.stdin:
        if line.strip() != "run":
            break
        if rss_loaded is None:  # model and clip in memory: what inference adds is measured from here
            rss_loaded = reset_peak_rss()
            if rss_loaded is None:  # no /proc: the high-water mark so far is the best baseline there is
                rss_loaded = peak_rss_mb()
        with torch.inference_mode():
            t0 = time.perf_counter()
            codes = runner.encode(wav)
            t1 = time.perf_counter()
            out = runner.decode(codes, wav.shape[-1])
            t2 = time.perf_counter()
        since = peak_rss_since_reset_mb()
        reply({"encode": t1 - t0, "decode": t2 - t1, "out_samples": int(out.shape[-1]),
               "finite": bool(torch.isfinite(out).all()), "peak_rss_mb": peak_rss_mb(),
               "inference_extra_mb": (since if since is not None else peak_rss_mb()) - rss_loaded})


# ----------------------------------------------------------------------------- parent side


def start_worker(name: str, python: str, clip_path: Path, threads: int) -> WorkerProcess:
    """A worker process that loads model ``name`` and the clip once, then answers ``run`` requests."""
    cmd = [python, str(Path(__file__).resolve()), "--worker", name, "--clip", str(clip_path), "--threads", str(threads)]
    return WorkerProcess(name, cmd, REPO)


def dac_available(python: str) -> tuple[bool, str]:
    """Whether ``python`` can import dac (and torch); with the reason when not."""
    if not Path(python).exists():
        return False, f"{python} does not exist (see bench/README.md for the separate DAC environment)"
    probe = subprocess.run([python, "-c", "import dac, torch"], capture_output=True, text=True)
    if probe.returncode:
        return False, f"`import dac` failed in {python}: {probe.stderr.strip().splitlines()[-1:]}"
    return True, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 s clip, 3 timed rounds")
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default 10, quick 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, quick 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="*", default=[*OUR_PRESETS, "encodec", "dac"])
    ap.add_argument("--dac-python", default=DEFAULT_DAC_PYTHON, help="python of an environment with dac")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.clip, args.threads)
        return 0

    seconds = args.seconds or (2.0 if args.quick else 10.0)
    repeats = args.repeats or (3 if args.quick else 5)
    if "encodec" not in args.models:
        raise ValueError("--models must include encodec: every ratio is taken against it")
    clip, clip_note = bench_clip(seconds, SAMPLE_RATE)
    print(f"clip: {clip_note}; {repeats} timed rounds after 1 warm-up, {args.threads} threads", flush=True)

    dac_note = ""
    models = list(args.models)
    if "dac" in models:
        ok, dac_note = dac_available(args.dac_python)
        if not ok:
            models.remove("dac")
            print(f"DAC not measured: {dac_note}", flush=True)

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        clip_path = Path(tmp) / "clip.npy"
        np.save(clip_path, clip.numpy())
        workers = {}
        try:
            for name in models:
                python = args.dac_python if name == "dac" else sys.executable
                workers[name] = start_worker(name, python, clip_path, args.threads)
                print(f"  started {name}: {workers[name].info}", flush=True)
            runs: dict[str, list[dict]] = {name: [] for name in workers}
            for r in range(1 + repeats):  # round 0 is the warm-up
                for name, w in workers.items():
                    res = w.request("run")
                    # DAC's unpadded convolutions lose a few samples at the end (8 of 240000): allow < one hop
                    if not 0 <= clip.shape[-1] - res["out_samples"] < 320 or not res["finite"]:
                        raise RuntimeError(f"{name}: bad output {res}")
                    if r > 0:
                        runs[name].append(res)
                    print(f"  round {r}{' (warm-up)' if r == 0 else ''} {name}: "
                          f"encode {res['encode']:.2f} s, decode {res['decode']:.2f} s", flush=True)
        finally:
            for w in workers.values():
                w.close()

    ref = [x["encode"] + x["decode"] for x in runs["encodec"]]
    ref_params = workers["encodec"].info["params"]
    rows = []
    for name, w in workers.items():
        total = [x["encode"] + x["decode"] for x in runs[name]]
        rows.append({
            "model": name if name in ("encodec", "dac") else f"ours/{name}",
            "kbps": w.info["bitrate"] / 1000,
            "params (M)": w.info["params"] / 1e6,
            "encode (s)": median([x["encode"] for x in runs[name]]),
            "decode (s)": median([x["decode"] for x in runs[name]]),
            "enc+dec (s)": median(total),
            "RTF": median(total) / seconds,
            "time / EnCodec": median([a / b for a, b in zip(total, ref)]),
            "params / EnCodec": w.info["params"] / ref_params,
            "peak RSS (MB)": max(x["peak_rss_mb"] for x in runs[name]),
            "inference extra (MB)": max(x["inference_extra_mb"] for x in runs[name]),
            "measured": "here",
        })
    if "dac" in args.models and "dac" not in workers:
        rows.append({"model": "dac (design notes)", "kbps": 6.0, "params (M)": DAC_NOTES["params"] / 1e6,
                     "enc+dec (s)": DAC_NOTES["enc_dec_s"] * seconds / 10, "RTF": DAC_NOTES["enc_dec_s"] / 10,
                     "params / EnCodec": DAC_NOTES["params"] / ref_params,
                     "measured": "NOT here: design notes, 10 s on 2 cores"})
    columns = list(rows[0])
    print(f"\n### Encode/decode of a {seconds:g} s clip at 24 kHz, {args.threads} CPU threads "
          f"(medians of {repeats} interleaved rounds)\n")
    print(markdown_table(rows, columns))
    print(f"\n{machine_note()}\nclip: {clip_note}")
    if "cpu" in workers:
        cpu = next(r for r in rows if r["model"] == "ours/cpu")
        ok_time, ok_params = cpu["time / EnCodec"] <= 0.5, cpu["params / EnCodec"] <= 1.0
        print(f"target (cpu preset enc+dec <= 0.5 x EnCodec at no more parameters): time ratio "
              f"{cpu['time / EnCodec']:.2f} -> {'met' if ok_time else 'MISSED'}; params ratio "
              f"{cpu['params / EnCodec']:.2f} -> {'met' if ok_params else 'MISSED'}")
    if dac_note:
        print(f"DAC: {dac_note}")
    path = write_csv([{**r, "clip_seconds": seconds, "repeats": repeats, "threads": args.threads} for r in rows],
                     "speed_quick" if args.quick else "speed")
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
