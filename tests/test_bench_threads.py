"""bench/threads.py: each worker starts under exactly its OpenMP policy (bench/common.py sets PASSIVE where nothing
is set, which would otherwise turn every policy into PASSIVE) and times real training steps."""
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
