"""bench/threads.py: each worker starts under exactly its OpenMP policy (bench/common.py sets PASSIVE where nothing
is set, which would otherwise turn every policy into PASSIVE) and times real training steps."""
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import threads  # noqa: E402

from lib.data.corpus import build_default_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_default_corpus(out, minutes=0.3, sources="synthetic", progress=False)
    return out


@pytest.mark.parametrize("policy", ["libgomp default", "GOMP_SPINCOUNT=10000"])
def test_a_worker_runs_under_its_own_policy_and_times_each_step(corpus, monkeypatch, policy):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # the parent's setting must not leak into the worker
    args = Namespace(preset="tiny", data=corpus, warmup=1, steps=2, threads=1)
    times = threads.measure(policy, args)  # asserts the worker's variables are the policy's
    assert len(times) == 2 and all(0 < t < 60 for t in times)


# Stops the interpreter at the first `import torch` and prints the policy libgomp would read then.
PROBE = """
import importlib, importlib.abc, os, sys
class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("at torch import:", os.environ.get("OMP_WAIT_POLICY"), flush=True)
            os._exit(0)
sys.meta_path.insert(0, Probe())
sys.path[:0] = ["bench", "."]
importlib.import_module(sys.argv[1])
print("torch never imported")
"""
SCRIPTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "bench").glob("*.py") if p.stem != "common")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_sets_passive_waiting_before_torch_loads(script):
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: `common`'s default must come first, or a benchmark
    documented as PASSIVE runs with spinning threads (the race did, until 2026-11-28)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "BENCH_THREADS_POLICY")}
    out = subprocess.run([sys.executable, "-c", PROBE, script], env=env, capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() in ("at torch import: PASSIVE", "torch never imported"), out.stdout + out.stderr[-500:]
