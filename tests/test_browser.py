"""End to end in a real browser: the blind MUSHRA widget rendered by JupyterLab in headless Chromium, a slider
moved with the keyboard, "Finish" clicked, and the score found in the results CSV. See tests/browser_check.py.

Skips when /usr/bin/chromium (Debian package `chromium`) or the `playwright` Python package is missing.
Set WORKBOOK_SCREENSHOT_DIR to keep the screenshot of the widget (mushra_widget.png) there.
"""
import os
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from browser_check import (ARROW_PRESSES, LISTENER, check_executed_notebooks, expected_order, missing_requirements,
                           run_check)

REASON = missing_requirements()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=f"browser check: {REASON}")]

# How long the browser may take before a wait gives up (a bound against a hang, not a speed target: on 2 shared
# cores a first Chromium and JupyterLab start took 80-90 s).
WAIT_S = 300.0


def test_mushra_widget_scores_reach_the_csv(tmp_path):
    screenshot_dirs = [tmp_path / "screenshots"]
    if os.environ.get("WORKBOOK_SCREENSHOT_DIR"):
        screenshot_dirs.append(Path(os.environ["WORKBOOK_SCREENSHOT_DIR"]))
    summary = run_check(tmp_path / "work", screenshot_dirs, timeout_s=WAIT_S)

    # Every player decoded its clip: 1 s of audio each (reference + 5 stimuli).
    assert summary["durations_s"] == pytest.approx([1.0] * 6, abs=0.01)

    # The slider shows what the arrow keys did, and the CSV holds it for the system behind letter "A".
    order = expected_order()  # same trials and seed as the notebook in the browser
    assert summary["readout"] == ARROW_PRESSES
    assert "must be played and rated" in summary["refused"]  # Finish was refused before every stimulus was played
    rows = summary["rows"]
    assert sorted(r["system"] for r in rows) == sorted(order)
    scores = {r["system"]: int(r["score"]) for r in rows}
    assert scores[order[0]] == ARROW_PRESSES
    assert all(scores[system] == 0 for system in order[1:])
    assert all(r["simulated"] == "False" and r["listener"] == LISTENER and r["trial"] == "tone" for r in rows)

    for folder in screenshot_dirs:
        image = matplotlib.image.imread(folder / "mushra_widget.png")
        assert image.shape[0] > 200 and image.shape[1] > 500  # the whole widget, not a sliver
        assert np.ptp(image[..., :3]) > 0.5  # not blank


def test_executed_notebooks_open_as_a_person_sees_them(tiny_workbook, tmp_path):
    """The executed notebooks of a tiny run, opened in JupyterLab without running anything: trusted, every player
    loaded (duration > 0), no raw widget text or widget errors, not marked modified on open."""
    for prefix in ("01", "02", "03", "04", "05"):
        tiny_workbook.run(prefix)
    screenshot_dirs = [tmp_path / "screenshots"]
    if os.environ.get("WORKBOOK_SCREENSHOT_DIR"):
        screenshot_dirs.append(Path(os.environ["WORKBOOK_SCREENSHOT_DIR"]))
    report = check_executed_notebooks(tiny_workbook.executed_dir, screenshot_dirs, timeout_s=WAIT_S)
    report.pop("_seconds")
    assert sorted(report) == ["01_data_prep.ipynb", "02_train_vqvae.ipynb", "03_codebook_maps.ipynb",
                              "04_listening_tests.ipynb", "05_codebook_priors.ipynb"], report
    for name, seen in report.items():
        assert seen["trusted"], f"{name} opens untrusted"
        assert seen["saved_players"] > 0 and len(seen["durations_s"]) == seen["saved_players"], (name, seen)
        assert all(d > 0 for d in seen["durations_s"]), (name, seen["durations_s"])
        assert not seen["raw_widget_text"], (name, seen["raw_widget_text"])
        assert not seen["modified"], f"{name} is marked modified on open"
