"""bench/revisions.py: two checkouts' training steps, timed in their own workers on the same batches."""
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import revisions  # noqa: E402

from lib.data.corpus import build_default_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_summarise_against_a_hand_computation():
    rows = revisions.summarise({"old": [0.5, 0.4, 0.6], "new": [0.25, 0.3, 0.2, 0.25]})
    assert [r["revision"] for r in rows] == ["old", "new"]
    assert rows[0]["median_s"] == 0.5 and rows[0]["steps_per_min"] == 120.0 and rows[0]["ratio"] == 1.0
    assert rows[1]["mean_s"] == 0.25 and rows[1]["steps_per_min"] == 240.0 and rows[1]["ratio"] == 2.0


def test_two_revisions_run_the_same_steps(tmp_path, capsys):
    """HEAD against the working tree at the tiny preset: every step timed, both workers closed, no worktree
    left behind."""
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    build_default_corpus(tmp_path, minutes=0.3, sources="synthetic", progress=False)
    before = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert revisions.main(["HEAD", "--preset", "tiny", "--data", str(tmp_path), "--rounds", "2", "--steps", "2",
                           "--warmup", "1", "--out", "test_revisions"]) == 0
    out = capsys.readouterr().out
    assert "| HEAD | 4 |" in out and "| . | 4 |" in out
    after = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert after == before
    (REPO / "bench" / "results" / "test_revisions.csv").unlink()


def test_bad_input_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no corpus"):
        revisions.main(["HEAD", "--data", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="must differ"):
        revisions.main(["HEAD", "HEAD"])
    build_default_corpus(tmp_path, minutes=0.3, sources="synthetic", progress=False)
    with pytest.raises(SystemExit, match="no-such-commit"):
        revisions.main(["no-such-commit", "--data", str(tmp_path)])
