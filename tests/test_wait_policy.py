"""The main job's OpenMP waiting policy: the decision from timings, the environment it leaves, the runner's use."""
import os

import pytest

import lib.wait_policy as wp


def test_spinning_is_chosen_only_if_it_wins_every_round():
    assert wp.decide([(0.32, 0.46)]) == wp.SPIN
    assert wp.decide([(0.32, 0.46), (0.30, 0.46)]) == wp.SPIN
    assert wp.decide([(0.32, 0.46), (0.45, 0.46)]) == wp.PASSIVE  # one round inside the margin
    assert wp.decide([(1.05, 0.52)]) == wp.PASSIVE  # beside a busy core: spinning 2x slower
    assert wp.decide([(0.44, 0.46)], margin=1.0) == wp.SPIN
    with pytest.raises(ValueError, match="no timings"):
        wp.decide([])


def test_policy_environment_sets_exactly_the_policys_variables():
    env = {"OMP_WAIT_POLICY": "auto", "GOMP_SPINCOUNT": "10", "PATH": "/bin"}
    wp.policy_environment(wp.SPIN, env)
    assert env == {"PATH": "/bin"}  # libgomp's default: spin, then sleep
    wp.policy_environment(wp.PASSIVE, env)
    assert env == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    with pytest.raises(ValueError, match="policy='ACTIVE'"):
        wp.policy_environment("ACTIVE", env)


def test_resolve_keeps_the_users_setting(monkeypatch):
    monkeypatch.setattr(wp, "choose", lambda *a, **k: pytest.fail("timed although the user chose"))
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert wp.resolve(env, report=lambda line: pytest.fail(line)) == "ACTIVE" and env == {"OMP_WAIT_POLICY": "ACTIVE"}


@pytest.mark.parametrize("given", [None, "auto", "AUTO"])
@pytest.mark.parametrize("timings,expected", [([(0.32, 0.46), (0.33, 0.47)], "spin"), ([(1.05, 0.52)], "PASSIVE")])
def test_resolve_times_the_machine_when_unset_or_auto(monkeypatch, given, timings, expected):
    monkeypatch.setattr(wp, "choose", lambda *a, **k: (wp.decide(timings), timings))
    env = {} if given is None else {"OMP_WAIT_POLICY": given}
    lines = []
    assert wp.resolve(env, report=lines.append) == expected
    assert env.get("OMP_WAIT_POLICY") == (None if expected == "spin" else "PASSIVE")
    assert len(lines) == 1 and lines[0].startswith(f"OpenMP waiting: {expected} (")
    assert f"{timings[0][0]:.3f} s against {timings[0][1]:.3f} s" in lines[0]


def test_a_failed_timing_leaves_threads_sleeping(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the spin timing failed:\nTraceback ...")

    monkeypatch.setattr(wp, "time_workload", broken)
    env, lines = {"OMP_WAIT_POLICY": "auto"}, []
    assert wp.resolve(env, report=lines.append) == "PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert lines == ["OpenMP waiting: PASSIVE (the timing failed, so threads sleep: the spin timing failed:)"]


def test_the_workload_runs_under_the_policy_it_is_given(monkeypatch):
    """One real timing in a fresh interpreter (the parent's variables do not leak into it: PASSIVE here, spin asked)."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    seconds = wp.time_workload(wp.SPIN, threads=1, iterations=1)
    assert 0.0 < seconds < 60.0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # the parent's environment untouched


def test_the_runner_applies_the_choice_before_the_notebooks(monkeypatch, capsys):
    import lib.runner as runner

    seen = {}
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(wp, "choose", lambda *a, **k: (wp.PASSIVE, [(1.0, 0.5)]))
    monkeypatch.setattr(runner, "run_all", lambda *args: seen.setdefault("policy", os.environ.get("OMP_WAIT_POLICY")))
    assert runner.main([]) == 0
    assert seen["policy"] == "PASSIVE"  # set before the first kernel starts
    assert "[runner] OpenMP waiting: PASSIVE" in capsys.readouterr().out
