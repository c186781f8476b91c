"""How one training step of the `cpu` preset scales with segment length and batch size, and DDP on CPU.

    .venv/bin/python bench/scaling.py            # segments 0.5,1,2,4 s x batches 2,4,8,16; DDP 3 rounds
    .venv/bin/python bench/scaling.py --quick    # segments 0.5,1 s x batches 2,4; DDP 1 round of 6 steps

Method
- Step: ``Trainer.train_step`` of the ``cpu`` preset = codec forward, generator losses and backward, AdamW
  step, then the discriminator step. ``train.quantizer_warmup_steps=0``, ``train.adv_warmup_steps=0`` and
  ``train.one_disc_at_a_time=false`` so every timed step quantizes and runs the adversarial losses with both
  discriminators (the preset bypasses the quantizer for its first steps, trains without GAN until its
  adversarial warm-up ends and then draws one discriminator per step: a real step is somewhat cheaper).
  Crops come from the default corpus.
- Each (segment, batch) configuration lives in its own worker process (fresh interpreter, its own Trainer).
  The parent asks the workers for one step each in turn (round-robin), one warm-up round discarded, then the
  median of the timed rounds. 2 torch threads.
- Memory: resident-set high-water mark during a step (``/proc/self/status`` VmHWM, reset by writing 5 to
  ``/proc/self/clear_refs`` just before it) minus the resident memory then, worst over the timed steps:
  "step peak extra" = what the step needs on top of the loaded trainer; "peak RSS" = ``ru_maxrss``, the
  process total (Python, torch, data, trainer, step). Between steps a worker hands freed memory back to the
  OS (``malloc_trim``), so the idle workers do not add up their peaks.
- DDP: ``torchrun --nproc_per_node 2`` (gloo, 1 thread per process, each rank its own batch of 8 x 1 s) vs one
  process (``--nproc_per_node 1``, 2 threads, batch 8 x 1 s), alternated 1, 2, 1, 2, ...
  Throughput = seconds of audio trained per wall second, from the trainer's log (time between the first and the
  last logged step, so start-up, validation and checkpointing are left out); the whole command's wall time is
  reported too. On a 2-core machine DDP gets no more cores than one process with 2 threads, and it adds gradient
  all-reduces and a second copy of everything, so it is not expected to win. It can anyway when one process
  uses its 2 threads badly: torch only parallelises inside each op, and this model's ops are small (16-128
  channels), plus serial parts (Python, the RVQ levels, the optimizer); two 1-thread processes keep both cores
  busy the whole step. The table shows which effect wins on the machine at hand.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DATA, REPO, machine_note, markdown_table, median, peak_rss_mb,  # noqa: E402
                    peak_rss_since_reset_mb, reset_peak_rss, set_threads, write_csv, WorkerProcess)

# Every timed step quantizes (no quantizer warm-up) and runs the GAN with both discriminators.
STEP_OVERRIDES = ["train.quantizer_warmup_steps=0", "train.adv_warmup_steps=0", "train.one_disc_at_a_time=false"]
FIGURE = REPO / "figures" / "bench_scaling.png"


# ----------------------------------------------------------------------------- step worker


def release_free_memory() -> None:
    """Return memory freed by the last step to the OS (glibc keeps it for reuse otherwise).

    Seven workers wait while one steps; without this each keeps its own peak resident and together they can
    exceed the machine's memory.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def worker(segment: float, batch: int, data_dir: str, threads: int) -> None:
    """Build a cpu-preset Trainer for (segment, batch); run one step per "step" line on stdin."""
    import warnings

    warnings.filterwarnings("ignore")
    set_threads(threads)
    from lib.config import load_config
    from lib.training.trainer import Trainer

    cfg = load_config("cpu", STEP_OVERRIDES + [f"data.segment_seconds={segment}", f"data.batch_size={batch}"])
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as run_dir:
        trainer = Trainer(cfg, data_dir, run_dir, resume=False, progress=False)
        print("@@ " + json.dumps({"ready": True}), flush=True)
        step = 0
        for line in sys.stdin:
            if line.strip() != "step":
                break
            wav = trainer.batches[step]
            release_free_memory()
            baseline = reset_peak_rss() or peak_rss_mb()
            t0 = time.perf_counter()
            res = trainer.train_step(wav)
            seconds = time.perf_counter() - t0
            step += 1
            since = peak_rss_since_reset_mb()
            print("@@ " + json.dumps({"seconds": seconds, "skipped": res.skipped,
                                      "peak_extra_mb": (since or peak_rss_mb()) - baseline,
                                      "peak_rss_mb": peak_rss_mb()}), flush=True)
            release_free_memory()  # idle workers must not sit on freed step memory: they all share one machine


def start_step_worker(segment: float, batch: int, data_dir: str, threads: int) -> WorkerProcess:
    """A worker process with its own Trainer for (segment, batch), answering ``step`` requests."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(segment), str(batch),
           "--data", data_dir, "--threads", str(threads)]
    return WorkerProcess(f"{segment} s x {batch}", cmd, REPO)


def step_scaling(segments: list[float], batches: list[int], repeats: int, data_dir: str,
                 threads: int) -> list[dict]:
    """Rows for every (segment, batch 8) and (1 s, batch) configuration."""
    configs = sorted({(s, 8) for s in segments} | {(1.0, b) for b in batches})
    workers = {}
    try:
        for seg, b in configs:
            workers[(seg, b)] = start_step_worker(seg, b, data_dir, threads)
        results: dict[tuple, list[dict]] = {c: [] for c in configs}
        for r in range(1 + repeats):
            for c, w in workers.items():
                res = w.request("step")
                if r > 0:
                    results[c].append(res)
                print(f"  round {r}{' (warm-up)' if r == 0 else ''} {c[0]} s x {c[1]}: {res['seconds']:.2f} s",
                      flush=True)
    finally:
        for w in workers.values():
            w.close()
    rows = []
    for (seg, b), res in results.items():
        t = median([x["seconds"] for x in res])
        rows.append({"segment (s)": seg, "batch": b, "audio per step (s)": seg * b, "step time (s)": t,
                     "audio s per wall s": seg * b / t,
                     "step peak extra (MB)": max(x["peak_extra_mb"] for x in res),
                     "peak RSS (MB)": max(x["peak_rss_mb"] for x in res),
                     "sweep": {(True, True): "both", (True, False): "segment", (False, True): "batch"}[
                         (b == 8, seg == 1.0)]})
    return rows


# ----------------------------------------------------------------------------- DDP


def ddp_run(nproc: int, steps: int, data_dir: str, log_every: int) -> dict:
    """One torchrun of lib.training.trainer; throughput from its log.jsonl."""
    torchrun = Path(sys.executable).parent / "torchrun"
    with tempfile.TemporaryDirectory(prefix=f"bench_ddp{nproc}_") as run_dir:
        cmd = [str(torchrun), "--standalone", "--nproc_per_node", str(nproc), "-m", "lib.training", "--preset", "cpu",
               "--data", data_dir, "--run-dir", run_dir, "--fresh", "--set", f"train.steps={steps}",
               f"train.log_every={log_every}", "train.val_every=100000", "train.ckpt_every=100000",
               "data.valid_clips=1", *STEP_OVERRIDES]
        env = {**os.environ, "OMP_NUM_THREADS": str(2 // nproc if nproc <= 2 else 1)}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"torchrun nproc={nproc} failed:\n{proc.stderr[-2000:]}")
        from lib.training.trainer import read_log

        train = [r for r in read_log(Path(run_dir) / "log.jsonl") if r["kind"] == "train"]
    first, last = train[0], train[-1]
    audio = (last["step"] - first["step"]) * 8 * 1.0 * nproc  # batch 8 x 1 s crops per rank per step
    return {"throughput": audio / (last["time"] - first["time"]), "wall": wall,
            "s_per_step": (last["time"] - first["time"]) / (last["step"] - first["step"])}


def ddp_compare(steps: int, repeats: int, data_dir: str) -> list[dict]:
    log_every = max(1, steps // 4)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(repeats):
        for nproc in (1, 2):
            res = ddp_run(nproc, steps, data_dir, log_every)
            runs[nproc].append(res)
            print(f"  DDP round {r + 1}/{repeats} nproc={nproc}: {res['throughput']:.2f} audio s / s, "
                  f"{res['s_per_step']:.2f} s/step, command {res['wall']:.0f} s", flush=True)
    base = runs[1]
    rows = []
    for nproc, res in runs.items():
        rows.append({"processes": nproc, "threads each": 2 // nproc, "global batch": 8 * nproc,
                     "steps": steps, "s per step": median([x["s_per_step"] for x in res]),
                     "audio s per wall s": median([x["throughput"] for x in res]),
                     "vs 1 process": median([x["throughput"] / b["throughput"] for x, b in zip(res, base)]),
                     "command wall (s)": median([x["wall"] for x in res])})
    return rows


# ----------------------------------------------------------------------------- plot


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.analysis.plots import save_figure

    by_seg = sorted((r for r in rows if r["batch"] == 8), key=lambda r: r["segment (s)"])
    by_batch = sorted((r for r in rows if r["segment (s)"] == 1.0), key=lambda r: r["batch"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for col, (sweep, key, label) in enumerate([(by_seg, "segment (s)", "segment length (s), batch 8"),
                                               (by_batch, "batch", "batch size (1 s segments)")]):
        x = [r[key] for r in sweep]
        t = [r["step time (s)"] for r in sweep]
        ax = axes[0, col]
        ax.plot(x, t, "o-", label="measured (median)")
        if t:  # proportional to the audio per step, anchored at the first point
            ax.plot(x, [t[0] * r["audio per step (s)"] / sweep[0]["audio per step (s)"] for r in sweep], "--",
                    color="grey", label="linear in audio per step")
        ax.set(title=f"Training step time vs {key.split(' ')[0]}", xlabel=label, ylabel="step time (s)",
               xscale="log", ylim=(0, None))
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.legend(fontsize=8)
        ax = axes[1, col]
        ax.plot(x, [r["step peak extra (MB)"] for r in sweep], "o-", color="C1", label="step peak extra")
        ax.plot(x, [r["peak RSS (MB)"] for r in sweep], "s--", color="C2", label="process peak RSS")
        ax.set(title=f"Peak memory vs {key.split(' ')[0]}", xlabel=label, ylabel="resident memory (MB)",
               xscale="log", ylim=(0, None))
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    fig.suptitle("cpu preset: one generator + discriminator step on 2 CPU threads (x axes log scale)")
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per configuration (default 5)")
    ap.add_argument("--ddp-steps", type=int, default=None, help="steps per DDP run (default 20)")
    ap.add_argument("--ddp-repeats", type=int, default=None, help="DDP rounds (default 3)")
    ap.add_argument("--no-ddp", action="store_true")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(float(args.worker[0]), int(args.worker[1]), args.data, args.threads)
        return 0
    segments = [0.5, 1.0] if args.quick else [0.5, 1.0, 2.0, 4.0]
    batches = [2, 4] if args.quick else [2, 4, 8, 16]
    repeats = args.repeats or (2 if args.quick else 5)
    suffix = "_quick" if args.quick else ""

    rows = step_scaling(segments, batches, repeats, args.data, args.threads)
    print(f"\n### One training step of the cpu preset (generator + both discriminators), {args.threads} threads, "
          f"median of {repeats} interleaved steps\n")
    print(markdown_table(rows))
    print(f"wrote {write_csv(rows, 'scaling' + suffix).relative_to(REPO)}")
    fig_path = FIGURE if not args.quick else Path(tempfile.gettempdir()) / "bench_scaling_quick.png"
    print(f"figure: {plot(rows, fig_path)}")

    if not args.no_ddp:
        steps = args.ddp_steps or (6 if args.quick else 20)
        ddp_rows = ddp_compare(steps, args.ddp_repeats or (1 if args.quick else 3), args.data)
        print("\n### DDP on CPU: torchrun 2 processes x 1 thread vs 1 process x 2 threads (cpu preset, 8 x 1 s "
              "per rank)\n")
        print(markdown_table(ddp_rows))
        ratio = ddp_rows[1]["vs 1 process"]
        print(f"both use the same 2 cores; DDP adds all-reduces and a second model copy. Measured: DDP gives "
              f"{ratio:.2f}x the throughput of one 2-thread process ("
              + ("intra-op threading of these small ops leaves the second core idle much of the step, two "
                 "1-thread processes do not)." if ratio > 1 else "the expected overhead).")
              + " Wall time per step is per rank; a DDP step trains twice the audio.")
        print(f"wrote {write_csv(ddp_rows, 'ddp' + suffix).relative_to(REPO)}")
    print(machine_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
