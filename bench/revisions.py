"""Training steps of two commits side by side: what a change to the code (not to a setting) does to a step's time.

    python bench/revisions.py f9116f4              # that commit against the working tree, the cpu preset
    python bench/revisions.py f9116f4 HEAD --rounds 12 --set data.batch_size=4

Each revision (a commit, or ``.`` for the working tree as it is) runs in its own worker process from its own
checkout (``git worktree``, removed afterwards) with the same preset, overrides, seed and corpus, so the same
batches, and the quantizer on after 2 warm-up steps (``train.quantizer_warmup_steps=2``, as in
``bench/losses.py --train-steps``); after ``--warmup`` unmeasured steps (past the k-means pooling of every level,
so that the quantizer's whole cost is in the step) the workers take
``--steps`` steps each in turn for ``--rounds`` rounds, one worker computing at a time on 2 threads. Prints
per revision the median and mean seconds a step and the steps per minute, and the ratio of the steps per minute
against the first revision; writes ``bench/results/revisions.csv`` (``--out`` names another).

Compares speed only: a change that also changes what a step computes needs a quality race as well
(``bench/quality.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, REPO, THREADS, machine_note, markdown_table, median, write_csv  # noqa: E402

# Runs inside each checkout: builds the trainer, warms up, then times N steps per line read from stdin.
WORKER = """
import json, sys, tempfile, time
from pathlib import Path
import torch
preset, data, threads, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from lib.config import load_config
from lib.training.trainer import Trainer
cfg = load_config(preset, ["train.quantizer_warmup_steps=2"] + sys.argv[5:])
with tempfile.TemporaryDirectory(prefix="bench-revision-") as tmp:
    tr = Trainer(cfg, Path(data), Path(tmp) / "run", resume=False, progress=False)
    for _ in range(warmup):
        tr.train_step(tr.batches[tr.step + tr.skipped])
    print("@@" + json.dumps({"ready": tr.step}), flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            tr.train_step(tr.batches[tr.step + tr.skipped])
            times.append(time.perf_counter() - t0)
        print("@@" + json.dumps(times), flush=True)
    tr.close()
"""


def checkout(rev: str, root: Path) -> Path:
    """A detached worktree of ``rev`` under ``root`` (``.``: the working tree itself)."""
    if rev == ".":
        return REPO
    path = root / rev.replace("/", "_")
    done = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"revision {rev!r}: git worktree add failed: {done.stderr.strip()}")
    return path


class Worker:
    """One revision's trainer in a child process; ``steps(n)`` times n training steps there."""

    def __init__(self, rev: str, code: Path, args: argparse.Namespace):
        env = dict(os.environ, PYTHONPATH=str(code), OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
        self.rev = rev
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, args.preset, str(Path(args.data).resolve()), str(args.threads),
             str(args.warmup), *args.set],
            cwd=code, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # {"ready": step}

    def _read(self):
        """The worker's next answer (a line marked ``@@``); anything else it prints passes through to stderr."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"revision {self.rev!r}: the worker stopped (exit code {self.proc.wait()}); "
                                 "its error is above")
            if line.startswith("@@"):
                return json.loads(line[2:])
            sys.stderr.write(line)

    def steps(self, n: int) -> list[float]:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:  # never leave a worker behind (nor skip the worktrees' removal)
                self.proc.kill()
                self.proc.wait()


def summarise(times: dict[str, list[float]]) -> list[dict]:
    """Per revision: median and mean seconds a step, steps per minute (from the mean: what a run pays), and the
    ratio of steps per minute against the first revision."""
    base = None
    rows = []
    for rev, t in times.items():
        per_minute = 60.0 / statistics.mean(t)
        base = per_minute if base is None else base
        rows.append({"revision": rev, "steps": len(t), "median_s": round(median(t), 3),
                     "mean_s": round(statistics.mean(t), 3), "steps_per_min": round(per_minute, 1),
                     "ratio": round(per_minute / base, 3)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revisions", nargs="+", help="commits to compare; '.' is the working tree (default second)")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every revision")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="steps a worker takes per round")
    ap.add_argument("--warmup", type=int, default=70, help="unmeasured steps (every level's k-means: ~56 at cpu)")
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--out", default="revisions")
    args = ap.parse_args(argv)
    revisions = args.revisions + (["."] if len(args.revisions) == 1 else [])
    if len(set(revisions)) != len(revisions):
        raise SystemExit(f"revisions must differ, got {revisions}")
    if not Path(args.data).is_dir():
        raise SystemExit(f"no corpus in {args.data} (notebook 01 or `make workbook` builds data/default)")
    with tempfile.TemporaryDirectory(prefix="bench-revisions-") as tmp:
        codes = {rev: checkout(rev, Path(tmp)) for rev in revisions}
        workers = []
        try:
            workers = [Worker(rev, code, args) for rev, code in codes.items()]
            times = {rev: [] for rev in revisions}
            for r in range(args.rounds):
                for w in (workers if r % 2 == 0 else workers[::-1]):  # A B, B A, ...: drift hits both alike
                    times[w.rev] += w.steps(args.steps)
        finally:
            for w in workers:
                w.close()
            for rev, code in codes.items():
                if code != REPO:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(code)],
                                   capture_output=True)
    rows = summarise(times)
    print(f"Training steps by revision ({args.preset}{' ' + ' '.join(args.set) if args.set else ''}; "
          f"{args.rounds} rounds x {args.steps} steps after {args.warmup}; {machine_note()})\n")
    print(markdown_table(rows))
    print(f"\nwrote {write_csv(rows, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
