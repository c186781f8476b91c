"""OpenMP's waiting policy for the main job, chosen by timing this machine as the job starts.

libgomp threads that reach a barrier either spin for a while (libgomp's default: ``GOMP_SPINCOUNT`` = 300,000
turns, then sleep) or sleep at once (``OMP_WAIT_POLICY=PASSIVE``). On two quiet cores spinning trains the default
codec about 1.4x faster (a step 0.32-0.34 s against 0.46 s, ``bench/threads.py``); beside a process that keeps a core
busy it is about 2x slower, because the spinning thread takes the core the working one needs. Which holds is a
property of the machine at the time, so :func:`choose` measures it: a step-sized workload (the default's encoder and
decoder on 8 x 1 s, forward and backward) timed in fresh interpreters under each policy, alternated ``rounds``
times; spinning is chosen only if it wins every round by ``margin``. libgomp reads the variables once, when torch
loads it, so the choice is applied to the environment that later processes (the notebooks' kernels) inherit.

A neighbour that starts after the choice is not seen: set ``OMP_WAIT_POLICY=PASSIVE`` yourself where other work
will share the cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import MutableMapping
from statistics import median

SPIN, PASSIVE = "spin", "PASSIVE"
OMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

_WORKLOAD = """
import json, os, sys, time
import torch
from lib.model.spectral import ISTFTDecoder, STFTEncoder
torch.manual_seed(0)
if int(sys.argv[1]):
    torch.set_num_threads(int(sys.argv[1]))
enc, dec = STFTEncoder(dim=64, hidden=256, n_blocks=4), ISTFTDecoder(dim=64, hidden=256, n_blocks=6, lookahead=1)
x = torch.randn(8, 1, 24000)
times = []
for i in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    y = dec(enc(x))
    spec = torch.stft(y.reshape(8, -1), 512, 128, window=torch.hann_window(512), return_complex=True)
    spec.abs().mean().backward()
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times[2:], "omp": [os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")]}))
"""


def policy_environment(policy: str, environ: MutableMapping[str, str]) -> None:
    """Set ``environ``'s OpenMP variables for ``policy`` ("spin": libgomp's default, "PASSIVE": sleep at once)."""
    if policy not in (SPIN, PASSIVE):
        raise ValueError(f"policy={policy!r}: expected {SPIN!r} or {PASSIVE!r}")
    for key in OMP_KEYS:
        environ.pop(key, None)
    if policy == PASSIVE:
        environ["OMP_WAIT_POLICY"] = PASSIVE


def time_workload(policy: str, threads: int = 0, iterations: int = 10) -> float:
    """Median seconds of one step-sized forward + backward in a fresh interpreter under ``policy`` (``threads``:
    torch's intra-op threads, 0 for torch's own default, which the notebooks' kernels train with)."""
    env = dict(os.environ)
    policy_environment(policy, env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _WORKLOAD, str(threads), str(iterations + 2)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the {policy} timing failed:\n{out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if got["omp"] != [env.get(k) for k in OMP_KEYS]:  # the variables the timing started with
        raise RuntimeError(f"the {policy} timing ran with OMP_WAIT_POLICY, GOMP_SPINCOUNT = {got['omp']}")
    return median(got["times"])


def decide(timings: list[tuple[float, float]], margin: float = 0.95) -> str:
    """``[(spin_s, passive_s), ...]`` per round -> "spin" if it took under ``margin`` x PASSIVE's time in every
    round, else "PASSIVE" (sleeping costs at most the spin's gain; spinning beside a busy core costs 2x)."""
    if not timings:
        raise ValueError("no timings to decide from")
    return SPIN if all(spin < margin * passive for spin, passive in timings) else PASSIVE


def resolve(environ: MutableMapping[str, str] = os.environ, report=print) -> str:
    """Where ``OMP_WAIT_POLICY`` is unset or "auto", time the machine, set ``environ`` for the choice and report it;
    a policy the user set is kept. Returns what the environment now says ("spin", "PASSIVE" or the user's value)."""
    given = environ.get("OMP_WAIT_POLICY")
    if given is not None and given.lower() != "auto":
        return given
    try:
        policy, timings = choose()
    except RuntimeError as err:  # the job does not depend on the timing: sleep, the safe choice, and say why
        policy_environment(PASSIVE, environ)
        report(f"OpenMP waiting: {PASSIVE} (the timing failed, so threads sleep: {str(err).splitlines()[0]})")
        return PASSIVE
    policy_environment(policy, environ)
    pairs = ", ".join(f"{spin:.3f} s against {passive:.3f} s" for spin, passive in timings)
    why = ("threads that spin at a barrier were faster" if policy == SPIN else
           "threads that spin at a barrier were not faster: another process may be using these cores")
    report(f"OpenMP waiting: {policy} ({why}; a step-sized workload, spinning against sleeping: {pairs}). "
           f"Set OMP_WAIT_POLICY=PASSIVE yourself if other work will share these cores.")
    return policy


def choose(threads: int = 0, rounds: int = 2, margin: float = 0.95, iterations: int = 10) -> tuple[str, list]:
    """Time both policies ``rounds`` times, alternating; returns the choice and the ``(spin_s, passive_s)`` pairs."""
    timings = []
    for r in range(rounds):
        order = (SPIN, PASSIVE) if r % 2 == 0 else (PASSIVE, SPIN)  # drift in the machine's speed hits both
        got = {policy: time_workload(policy, threads, iterations) for policy in order}
        timings.append((got[SPIN], got[PASSIVE]))
    return decide(timings, margin), timings
