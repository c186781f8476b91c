"""How OpenMP's waiting policy changes the cost of a training step at 2 threads, on a quiet machine and beside a
busy neighbour: the setting behind ``make``'s and the benchmarks' ``OMP_WAIT_POLICY``.

    python bench/threads.py                  # 3 rounds x 4 policies x (quiet, busy), 12 steps each (~12 min)
    python bench/threads.py --quick          # 1 round, 6 steps

libgomp reads its variables once, when torch loads it, so every measurement is a fresh worker process: it builds
the preset's ``Trainer`` on the default corpus (quantizer on after 2 steps), takes ``--warmup`` unmeasured steps,
then times ``--steps`` ``Trainer.train_step`` calls. Policies: ``PASSIVE`` (threads sleep at once at a barrier),
libgomp's default (they spin ``GOMP_SPINCOUNT`` = 300,000 times, then sleep), a short spin (``GOMP_SPINCOUNT`` =
10,000) and ``ACTIVE`` (they never sleep). The neighbour is a pure-Python busy loop holding one core, as another
user's job would. Policies and conditions alternate within each round, so drift in the machine's speed hits all
alike; the table gives medians over every measured step and each policy's ratio to ``PASSIVE`` under the same
condition. Writes ``bench/results/threads.csv``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

POLICIES = {  # name -> the variables the worker starts with (all others of the kind removed)
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "libgomp default": {},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
}
OMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
WORKER_ENV: dict[str, str | None] = {}
if os.environ.get("BENCH_THREADS_POLICY") in POLICIES:  # a worker: exactly its policy's variables when libgomp
    for key in OMP_KEYS:  # reads them (as torch loads it), so torch loads here, before `common` sets PASSIVE
        os.environ.pop(key, None)
    os.environ.update(POLICIES[os.environ["BENCH_THREADS_POLICY"]])
    WORKER_ENV = {k: os.environ.get(k) for k in OMP_KEYS}
    import torch  # noqa: F401, E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, machine_note, markdown_table, median, write_csv  # noqa: E402

NEIGHBOUR = "while True: pass"


def worker(preset: str, data: str, warmup: int, steps: int, threads: int) -> None:
    """Time ``steps`` training steps after ``warmup`` unmeasured ones; print their seconds as JSON."""
    import torch

    from common import timed
    from lib.config import load_config
    from lib.training.trainer import Trainer

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        tr = Trainer(load_config(preset, ["train.quantizer_warmup_steps=2"]), data, tmp, resume=False, progress=False)
        for _ in range(warmup):
            tr.train_step(tr.batches[tr.step + tr.skipped])
        times = [timed(lambda: tr.train_step(tr.batches[tr.step + tr.skipped]))[0] for _ in range(steps)]
        tr.close()
    print(json.dumps({"times": times, "env": WORKER_ENV}))


def measure(policy: str, args) -> list[float]:
    """One fresh worker process under ``policy``; its step times."""
    env = {**os.environ, "BENCH_THREADS_POLICY": policy}
    cmd = [sys.executable, __file__, "--worker", "--preset", args.preset, "--data", str(args.data),
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker under {policy} failed:\n{out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["env"] == {k: POLICIES[policy].get(k) for k in OMP_KEYS}, got["env"]  # the policy took effect
    return got["times"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=12)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    ap.add_argument("--quick", action="store_true", help="1 round, 6 steps")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.preset, args.data, args.warmup, args.steps, args.threads)
        return 0
    if not Path(args.data).is_dir():
        raise SystemExit(f"needs the default corpus in {args.data} (notebook 01 or `make workbook` builds it)")
    if args.quick:
        args.rounds, args.warmup, args.steps = 1, 6, 6
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for condition in ("quiet", "busy neighbour"):
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if condition != "quiet" else None
            try:
                for policy in args.policies:
                    got = measure(policy, args)
                    times.setdefault((policy, condition), []).extend(got)
                    print(f"round {r + 1}, {condition}, {policy}: median {median(got):.3f} s", flush=True)
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
    rows = []
    for (policy, condition), ts in times.items():
        base = median(times[("PASSIVE", condition)]) if ("PASSIVE", condition) in times else float("nan")
        rows.append({"condition": condition, "policy": policy, "steps": len(ts), "median_s": round(median(ts), 3),
                     "vs_PASSIVE": round(median(ts) / base, 2)})
    rows.sort(key=lambda row: (row["condition"] != "quiet", row["condition"]))
    print(machine_note())
    print(markdown_table(rows))
    write_csv(rows, "threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
