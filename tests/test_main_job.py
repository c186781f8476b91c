"""The main job a new user runs first (`make workbook`), shortened: the README's command path, on the real default
corpus, at the `cpu` preset, for a few dozen training steps.

`make workbook` runs `python -m lib.runner --preset cpu --run-dir runs/workbook --figures figures --data
data/default`; this test runs the same command with `--steps 40` into temporary folders (the committed figures stay
untouched) and checks what a user gets: every notebook executed to its end, `metrics.csv` with speech rows, the
figures (notebook 05's prior fitted for 60 steps and measured on one clip). The corpus is notebook 01's: built from the Debian packages where `make` could install them, otherwise
synthesised; the test says which in a warning, and asserts speech only where espeak-ng or alsa-utils exist.
"""
import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import nbformat
import pytest

from lib.data.corpus import available_sources
from lib.runner import notebook_paths

ROOT = Path(__file__).resolve().parent.parent
STEPS = 40
SHORTER = ["-p", "prior_steps=60", "-p", "damage_clips=1", "-p", "n_continuations=1"]  # notebook 05, shortened
FIGURES = ["01_durations.png", "01_spectrograms.png", "02_losses.png", "02_spectrograms.png",
           "02_codebook_usage.png", "03_usage.png", "03_path.png", "03_topography.png", "04_rate_distortion.png",
           "04_mushra.png", "05_damage.png", "05_context.png"]


@pytest.mark.notebook
def test_the_main_job_runs_on_the_default_corpus(tmp_path):
    run, figures, data = tmp_path / "run", tmp_path / "figures", tmp_path / "data"
    command = [sys.executable, "-m", "lib.runner", "--preset", "cpu", "--run-dir", str(run), "--figures",
               str(figures), "--data", str(data), "--steps", str(STEPS), *SHORTER]
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"), "OMP_WAIT_POLICY": "PASSIVE"}
    job = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert job.returncode == 0, f"the main job failed:\n{job.stdout[-4000:]}\n{job.stderr[-4000:]}"

    sources = json.loads((data / "corpus.json").read_text())["sources"]
    used = ", ".join(f"{name} {s['minutes']:.1f} min" for name, s in sources.items() if s["files"])
    warnings.warn(f"the shortened main job ran on the default corpus built from: {used}", UserWarning)

    for path in notebook_paths():  # each notebook ran to its last cell, without an error output
        executed = nbformat.read(str(run / "executed" / path.name), as_version=4)
        code = [c for c in executed.cells if c.cell_type == "code"]
        assert code[-1].get("execution_count"), f"{path.name} did not reach its last cell"
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"

    missing = [f for f in FIGURES if not (figures / f).is_file() or (figures / f).stat().st_size < 5000]
    assert not missing, f"the main job did not write {missing}"
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    clips = {r["clip"]: r["kind"] for r in rows}
    assert len(clips) >= 6
    if available_sources()["espeak"] or available_sources()["alsa"]:
        speech = [r for r in rows if r["kind"] in ("speech", "synthetic speech") and r["family"] == "codec"]
        assert sum(kind.endswith("speech") for kind in clips.values()) >= 4
        assert all(float(r["seconds"]) >= 3.0 for r in speech)  # long enough to judge
        assert all(r["pesq_wb"] and float(r["pesq_wb"]) >= 1.0 for r in speech)  # PESQ on speech, not on drums
        with open(run / "mushra.csv", newline="") as f:
            trials = {r["trial"] for r in csv.DictReader(f)}
        assert trials and all(clips[t].endswith("speech") for t in trials)  # MUSHRA on speech
