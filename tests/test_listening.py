"""Tests for lib.analysis.listening: blind MUSHRA widgets, CSV appending, summaries, panels and plots."""
import csv
import io
import math

import ipywidgets as widgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import soundfile as sf
import torch

from lib.analysis.listening import comparison_panel
from lib.analysis.mushra import (CSV_COLUMNS, HIDDEN_REFERENCE, MushraTest, metric_to_score, plot_mushra,
                                 post_screening, summarize, summary_warnings)
from lib.data.audio import wav_bytes

SR = 8000
SYSTEMS = ("codec_nq2", "codec_nq8", "opus_6kbps")


def _trials(n_trials: int = 3) -> list[dict]:
    """Short clips: reference tone+noise; systems with decreasing noise so an objective listener ranks them."""
    t = torch.arange(SR // 4) / SR
    trials = []
    for i in range(n_trials):
        reference = 0.3 * torch.sin(2 * math.pi * (200 + 100 * i) * t) + 0.05 * torch.randn(t.shape)
        noise = torch.randn(t.shape)
        systems = {
            "codec_nq2": reference + 0.3 * noise,
            "codec_nq8": reference + 0.03 * noise,
            "opus_6kbps": reference + 0.1 * noise,
        }
        trials.append({"name": f"clip{i}", "reference": reference, "systems": systems})
    return trials


def _widget_texts(widget) -> list[str]:
    """Every visible string in a widget tree (descriptions, HTML, button labels)."""
    texts = []
    for attr in ("description", "value"):
        value = getattr(widget, attr, None)
        if isinstance(value, str):
            texts.append(value)
    for child in getattr(widget, "children", ()):
        texts.extend(_widget_texts(child))
    return texts


def _read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_order_is_shuffled_and_labels_hide_names(tmp_path):
    trials = _trials(4)
    test = MushraTest(trials, SR, tmp_path / "r.csv", "alice", seed=0)
    given = [list(SYSTEMS) + ["anchor", HIDDEN_REFERENCE]] * len(trials)
    shown = [t["order"] for t in test.trials]
    assert all(sorted(s) == sorted(g) for s, g in zip(shown, given))
    assert any(s != g for s, g in zip(shown, given))  # shuffled
    assert len({tuple(s) for s in shown}) > 1  # and shuffled per trial, not once for all
    assert list(test.sliders) == ["A", "B", "C", "D", "E"]
    assert all(isinstance(s, widgets.IntSlider) and (s.min, s.max) == (0, 100) for s in test.sliders.values())
    text = " ".join(_widget_texts(test.widget))
    for name in (*SYSTEMS, "anchor", HIDDEN_REFERENCE):
        assert name not in text
    assert "Reference" in text
    assert isinstance(test.widget, widgets.VBox)
    # explicit reference player + one player per stimulus
    players = [w for w in test._page.children[1].children if isinstance(w, widgets.Audio)]
    assert len(players) == 1


def test_seed_makes_order_reproducible(tmp_path):
    a = MushraTest(_trials(), SR, tmp_path / "a.csv", "x", seed=3)
    b = MushraTest(_trials(), SR, tmp_path / "b.csv", "x", seed=3)
    assert [t["order"] for t in a.trials] == [t["order"] for t in b.trials]


def test_human_path_writes_slider_values(tmp_path):
    path = tmp_path / "r.csv"
    test = MushraTest(_trials(2), SR, path, "bob", seed=1)
    expected = {}
    for _ in range(2):
        trial = test.trials[test.current_trial]
        for k, (label, name) in enumerate(zip(test.labels(), trial["order"])):
            test.play_buttons[label].click()
            test.sliders[label].value = 10 * k + 5
            expected[(trial["name"], name)] = 10 * k + 5
        test.next_button.click()
    assert test.finished
    rows = _read(path)
    assert [tuple(r) for r in rows][0] == CSV_COLUMNS
    assert {(r["trial"], r["system"]): int(r["score"]) for r in rows} == expected
    assert all(r["simulated"] == "False" and r["listener"] == "bob" for r in rows)


def test_scripted_listener_one_row_per_trial_and_stimulus(tmp_path):
    path = tmp_path / "r.csv"
    test = MushraTest(_trials(3), SR, path, "robot", seed=0)
    n_rows = test.score_with()  # SI-SDR mapped 0 dB -> 0, 30 dB -> 100
    rows = _read(path)
    assert n_rows == len(rows) == 3 * (len(SYSTEMS) + 2)
    assert sorted((r["trial"], r["system"]) for r in rows) == sorted(
        (f"clip{i}", s) for i in range(3) for s in (*SYSTEMS, "anchor", HIDDEN_REFERENCE)
    )
    assert all(r["simulated"] == "True" and r["session_id"] == test.session_id for r in rows)
    scores = {(r["trial"], r["system"]): int(r["score"]) for r in rows}
    for i in range(3):
        assert scores[(f"clip{i}", HIDDEN_REFERENCE)] == 100  # SI-SDR of the reference is the 100 dB cap
        assert scores[(f"clip{i}", "codec_nq8")] > scores[(f"clip{i}", "opus_6kbps")] > scores[(f"clip{i}", "codec_nq2")]
    with pytest.raises(ValueError, match="fresh"):
        test.score_with()


def test_two_sessions_append(tmp_path):
    path = tmp_path / "r.csv"
    first = MushraTest(_trials(), SR, path, "robot", seed=0)
    first.score_with()
    before = path.read_text().splitlines()
    second = MushraTest(_trials(), SR, path, "robot", seed=1)
    second.score_with()
    after = path.read_text().splitlines()
    assert len(after) - 1 == 2 * (len(before) - 1)  # one header, data rows doubled
    assert after[: len(before)] == before  # earlier session untouched
    assert sum(line.startswith("timestamp,") for line in after) == 1
    assert {r["session_id"] for r in _read(path)} == {first.session_id, second.session_id}


def test_refuses_csv_with_other_columns(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="results_csv"):
        MushraTest(_trials(1), SR, path, "x")


def test_bad_trials_are_rejected(tmp_path):
    trial = _trials(1)[0]
    with pytest.raises(ValueError, match="systems"):
        MushraTest([{"name": "x", "reference": trial["reference"]}], SR, tmp_path / "r.csv", "x")
    short = dict(trial, systems={"codec": trial["reference"][:-1]})
    with pytest.raises(ValueError, match="samples"):
        MushraTest([short], SR, tmp_path / "r.csv", "x")


def test_summary_ci_hand_checked(tmp_path):
    path = tmp_path / "tiny.csv"
    rows = [("2024-01-01T00:00:00", "s1", "l1", "t1", "sysA", score, "False") for score in (60, 70, 80)]
    rows += [("2024-01-01T00:00:00", "s1", "l1", "t1", "sysB", 40, "False")]
    rows += [("2024-01-01T00:00:00", "s2", "bot", "t1", "sysA", 0, "True")]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([CSV_COLUMNS, *rows])
    summary = summarize(path, simulated=False)
    a = summary["sysA"]
    # mean 70, s = 10, t_{0.975, 2} = 4.302653 (tables), half-width = 4.302653 * 10 / sqrt(3) = 24.8414
    assert a["n"] == 3 and a["mean"] == 70.0 and a["std"] == pytest.approx(10.0)
    assert a["ci95"] == pytest.approx(24.8414, abs=1e-3)
    assert (a["low"], a["high"]) == pytest.approx((70 - 24.8414, 70 + 24.8414), abs=1e-3)
    assert summary["sysB"]["n"] == 1 and math.isnan(summary["sysB"]["ci95"])
    assert list(summary) == ["sysA", "sysB"]  # best first
    assert summarize(path, simulated=True)["sysA"]["mean"] == 0.0
    with pytest.warns(RuntimeWarning, match="mixes"):
        assert summarize(path)["sysA"]["n"] == 4


def test_plot_mushra_marks_simulated(tmp_path):
    path = tmp_path / "r.csv"
    MushraTest(_trials(2), SR, path, "robot", seed=0).score_with()
    summary = summarize(path, simulated=True)
    fig, (ax1, ax2) = plt.subplots(1, 2)
    plot_mushra(summary, ax1, simulated=True)
    plot_mushra(summary, ax2)
    assert "SIMULATED listener" in ax1.get_title()
    assert "SIMULATED" not in ax2.get_title()
    assert len(ax1.patches) == len(summary) == len(SYSTEMS) + 2
    plt.close(fig)


def test_metric_to_score():
    assert metric_to_score(15.0, 0.0, 30.0) == 50
    assert metric_to_score(45.0, 0.0, 30.0) == 100 and metric_to_score(-3.0, 0.0, 30.0) == 0
    assert metric_to_score(0.5, 2.0, 0.0) == 75  # lower-is-better metric
    assert metric_to_score(float("nan"), 0.0, 1.0) == 0


def test_comparison_panel_players_at_true_level():
    t = torch.arange(SR // 2) / SR
    original = 0.25 * torch.sin(2 * math.pi * 300 * t)
    clips = {
        "tone": {"original": original, "codec_nq4": 0.5 * original[None], "mulaw": original[None, None]},
        "tone2": {"original": original, "codec_nq4": original},
    }
    panel = comparison_panel(clips, SR, show=False)
    players = []

    def walk(w):
        if isinstance(w, widgets.Audio):
            players.append(w)
        for c in getattr(w, "children", ()):
            walk(c)

    walk(panel)
    assert len(players) == 5
    images = [w for w in _flatten(panel) if isinstance(w, widgets.Image)]
    assert len(images) == 5 and all(img.value[:4] == b"\x89PNG" for img in images)
    decoded, rate = sf.read(io.BytesIO(players[1].value), dtype="float32")
    assert rate == SR
    assert np.abs(decoded - 0.5 * original.numpy()).max() <= 1 / 32768 + 1e-6  # not normalised
    assert "SI-SDR" in " ".join(_widget_texts(panel))
    with pytest.raises(ValueError, match="mono"):
        wav_bytes(torch.zeros(2, 100), SR)


def _flatten(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from _flatten(c)


def test_panel_draws_spectrogram_images():
    panel = comparison_panel({"noise": {"original": 0.1 * torch.randn(SR // 4)}}, SR, show=False)
    images = [w for w in _flatten(panel) if isinstance(w, widgets.Image)]
    assert len(images) == 1 and images[0].value[:4] == b"\x89PNG"


def test_next_refuses_until_every_stimulus_is_played_and_rated(tmp_path):
    path = tmp_path / "r.csv"
    test = MushraTest(_trials(2), SR, path, "carol", seed=3)
    labels = test.labels()
    test.next_button.click()  # nothing played, nothing moved
    assert test.current_trial == 0 and not path.exists()
    assert "play A" in test._status.value and "rate A" in test._status.value
    for label in labels:
        test.sliders[label].value = 50  # rated but never played
    test.next_button.click()
    assert test.current_trial == 0 and not path.exists() and "rate" not in test._status.value.split("(")[1]
    for label in labels[:-1]:
        test.play_buttons[label].click()
    test.next_button.click()
    assert test.current_trial == 0 and f"play {labels[-1]})" in test._status.value
    test.play_buttons[labels[-1]].click()
    test.next_button.click()
    assert test.current_trial == 1 and len(summarize(path)) == len(labels)
    # a slider moved and put back at 0 counts as rated: 0 is a valid score once it was chosen
    for label in test.labels():
        test.play_buttons[label].click()
        test.sliders[label].value = 3
        test.sliders[label].value = 0
    test.next_button.click()
    assert test.finished
    assert "(A)" in test.summary_html() or "(B)" in test.summary_html()


def _screening_csv(path, hidden_scores: dict[str, list[int]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for listener, scores in hidden_scores.items():
            for i, score in enumerate(scores):
                writer.writerow(("t", f"s-{listener}", listener, f"clip{i}", HIDDEN_REFERENCE, score, False))
                writer.writerow(("t", f"s-{listener}", listener, f"clip{i}", "codec", 40, False))


def test_post_screening_flags_listeners_who_miss_the_hidden_reference(tmp_path):
    path = tmp_path / "hand_made.csv"
    _screening_csv(path, {
        "careful": [100, 95, 90, 100, 98, 100, 100],  # never below 90
        "one_slip": [100, 100, 100, 100, 100, 100, 85],  # 1/7 = 14 % -> kept (not more than 15 %)
        "two_slips": [100, 100, 100, 100, 100, 80, 85],  # 2/7 = 29 % -> flagged
        "guessing": [50, 40, 60, 100, 30, 20, 45],
    })
    screening = post_screening(path)
    assert {k: v["flagged"] for k, v in screening.items()} == {
        "careful": False, "one_slip": False, "two_slips": True, "guessing": True}
    assert screening["two_slips"]["below"] == 2 and screening["two_slips"]["trials"] == 7
    summary = summarize(path, simulated=False)
    notes = summary_warnings(summary, screening)
    assert sum("post-screening" in n for n in notes) == 2
    kept = summarize(path, simulated=False, exclude_listeners=[k for k, v in screening.items() if v["flagged"]])
    assert kept[HIDDEN_REFERENCE]["n"] == 14
    assert not any("hidden reference averages" in n for n in summary_warnings(kept))
    _screening_csv(path, {"deaf": [50] * 4})
    assert any("averages 50" in n for n in summary_warnings(summarize(path)))
