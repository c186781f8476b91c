"""A blind MUSHRA-style listening test (after ITU-R BS.1534), its scripted listeners and its summaries.

- `mushra_trials(ladder)`: one trial per clip of a bitrate ladder (`lib.analysis.evaluation`).
- `MushraTest`: per trial the stimuli (hidden reference and low anchor included) appear in a random order under
  letters "A", "B", ...; one play button and one 0-100 slider each; "Next" appends the trial's scores to a CSV,
  and refuses until every stimulus has been played and its slider moved (BS.1534). `.score_with(fn)`
  drives the same widgets with an objective metric (a scripted listener, `scripted_listener(name)`) for tests and
  headless runs; its rows are marked `simulated=True` and must never be reported as listening results.
- `summarize(csv)` -> per-system mean and 95% t-interval; `post_screening(csv)` flags listeners who rate the
  hidden reference below 90 in more than 15 % of their trials (BS.1534-3 section 4.1.2); `summary_warnings`;
  `plot_mushra`; `MushraTest.summary_html()`, the static stand-in for the widget in a saved notebook.
"""
from __future__ import annotations

import csv
import math
import os
import random
import string
import uuid
import warnings
from datetime import datetime, timezone
from typing import Callable, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

from lib.analysis.baselines import lowpass_anchor
from lib.analysis.evaluation import REFERENCE, Ladder
from lib.analysis.listening import audio_player
from lib.analysis.metrics import mel_distance, pesq_wb, si_sdr
from lib.data.audio import mono_numpy, wav_bytes

CSV_COLUMNS = ("timestamp", "session_id", "listener", "trial", "system", "score", "simulated")
HIDDEN_REFERENCE = "hidden_reference"  # system name under which the hidden reference is logged
SCREEN_SCORE, SCREEN_FRACTION = 90, 0.15  # post-screening: hidden reference < 90 in more than 15 % of trials


def mushra_trials(ladder: Ladder, systems: Sequence[str] | None = None,
                  clips: Sequence[str] | None = None) -> list[dict]:
    """MUSHRA trials from a ladder: one per clip of `clips` (None: every clip), reference = the original,
    stimuli = `systems` (None: all). Feed to `lib.analysis.listening.MushraTest(trials, ladder.sample_rate, ...,
    anchor_name=ANCHOR)`."""
    unknown = [clip for clip in clips or () if clip not in ladder]
    if unknown:
        raise ValueError(f"clips {unknown} are not in the ladder (it has {list(ladder)})")
    trials = []
    for clip, entries in ladder.items():
        if clips is not None and clip not in clips:
            continue
        chosen = [s for s in entries if s != REFERENCE] if systems is None else list(systems)
        missing = [s for s in chosen if s not in entries]
        if missing:
            raise ValueError(f"systems {missing} are not in the ladder (it has {[s for s in entries if s != REFERENCE]})")
        trials.append({"name": clip, "reference": entries[REFERENCE], "systems": {s: entries[s] for s in chosen}})
    return trials


def _mel(estimate, reference, sample_rate: int) -> float:
    return float(mel_distance(torch.as_tensor(estimate)[None, None], torch.as_tensor(reference)[None, None], sample_rate))


def _si_sdr(estimate, reference, sample_rate: int) -> float:
    return si_sdr(torch.as_tensor(estimate), torch.as_tensor(reference))


def _pesq(estimate, reference, sample_rate: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no speech -> NaN -> score 0
        return pesq_wb(torch.as_tensor(estimate), torch.as_tensor(reference), sample_rate)


# name -> (fn(stimulus [T], reference [T], sample_rate) -> value, value scored 0, value scored 100)
SCRIPTED_LISTENERS: dict[str, tuple[Callable, float, float]] = {
    "mel_distance": (_mel, 4.0, 0.0),  # works on any audio; an untrained codec sits near 3, the anchor 3-4
    "si_sdr": (_si_sdr, 0.0, 30.0),  # waveform match: harsh on GAN codecs, which do not keep phase
    "pesq_wb": (_pesq, 1.0, 4.5),  # speech only
}


def scripted_listener(name: str) -> tuple[Callable, float, float]:
    """`(fn, worst, best)` for `MushraTest.score_with(fn, worst, best)`: an objective metric standing in for
    a listener in headless runs. Names: "mel_distance", "si_sdr", "pesq_wb"."""
    if name not in SCRIPTED_LISTENERS:
        raise ValueError(f"scripted listener must be one of {sorted(SCRIPTED_LISTENERS)}, got {name!r}")
    return SCRIPTED_LISTENERS[name]


def metric_to_score(value: float, worst: float, best: float) -> int:
    """Map a metric value linearly onto the 0-100 MUSHRA scale, clipped: `worst` -> 0, `best` -> 100.
    Works for lower-is-better metrics too (give worst > best). NaN -> 0."""
    if worst == best:
        raise ValueError("worst and best must differ")
    if value is None or math.isnan(value):
        return 0
    return int(round(min(max((value - worst) / (best - worst), 0.0), 1.0) * 100))


def _labels(n: int) -> list[str]:
    """"A".."Z", then "AA", "AB", ... for more than 26 stimuli."""
    letters = string.ascii_uppercase
    return [letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26] for i in range(n)]


class MushraTest:
    """Blind MUSHRA-style test (multiple stimuli, hidden reference, anchor).

    Args:
        trials: list of `dict(name=str, reference=wav, systems={system_name: wav})`; wavs mono, the same
            length as the reference within a trial.
        sample_rate: Hz of all audio.
        results_csv: path; rows are appended (header written only when the file is new or empty).
        listener_id: who is listening (free text, stored in every row).
        anchor_name: system name of the low anchor; when a trial has no such system the anchor is made
            from the reference with `lowpass_anchor` (3.5 kHz).
        seed: seeds the per-trial random order (None = fresh randomness).

    Each trial shows the explicit reference player and the stimuli {hidden reference, anchor, systems}
    shuffled under letters; system names never appear in the widget. "Next" appends one row per
    stimulus (timestamp, session_id, listener, trial, system, score, simulated) and moves on.
    """

    def __init__(
        self,
        trials: list[dict],
        sample_rate: int,
        results_csv: str | os.PathLike,
        listener_id: str,
        anchor_name: str = "anchor",
        seed: int | None = None,
    ):
        if not trials:
            raise ValueError("trials is empty")
        if not str(listener_id).strip():
            raise ValueError("listener_id must be a non-empty string")
        self.sample_rate = int(sample_rate)
        self.results_csv = os.fspath(results_csv)
        self.listener_id = str(listener_id)
        self.session_id = uuid.uuid4().hex[:12]
        self._check_csv_header()
        rng = random.Random(seed)
        self.trials = []  # per trial: name, reference, order (system names in display order), audio
        for index, trial in enumerate(trials):
            for key in ("name", "reference", "systems"):
                if key not in trial:
                    raise ValueError(f"trials[{index}] is missing the key {key!r} (needs name, reference, systems)")
            reference = mono_numpy(trial["reference"], f"trials[{index}]['reference']")
            audio = {}
            for name, wav in trial["systems"].items():
                if name == HIDDEN_REFERENCE:
                    raise ValueError(f"trials[{index}]: system name {HIDDEN_REFERENCE!r} is reserved for the hidden reference")
                wav = mono_numpy(wav, f"trials[{index}]['systems'][{name!r}]")
                if wav.size != reference.size:
                    raise ValueError(
                        f"trials[{index}]['systems'][{name!r}] has {wav.size} samples, reference has {reference.size}"
                    )
                audio[name] = wav
            if anchor_name not in audio:
                audio[anchor_name] = lowpass_anchor(torch.from_numpy(reference), self.sample_rate).numpy()
            audio[HIDDEN_REFERENCE] = reference
            order = list(audio)
            rng.shuffle(order)
            self.trials.append({"name": str(trial["name"]), "reference": reference, "order": order, "audio": audio})

        self.current_trial = 0
        self.finished = False
        self._simulated = self._last_simulated = False
        self.results: list[dict] = []  # per submitted trial: {"trial": name, system: score, ...}
        self.sliders: dict[str, widgets.IntSlider] = {}
        self.play_buttons: dict[str, widgets.Button] = {}
        self.played: set[str] = set()
        self.touched: set[str] = set()
        self.next_button = widgets.Button(description="Next", button_style="primary")
        self.next_button.on_click(self._on_next)
        self._status = widgets.HTML()
        self._page = widgets.VBox()
        self._widget = widgets.VBox([self._page, self.next_button, self._status])
        self._widget.add_class("mushra-test")  # a stable CSS hook for styling and browser tests
        self._show_trial()

    @property
    def widget(self) -> widgets.VBox:
        """The ipywidgets container to display in a notebook."""
        return self._widget

    def labels(self, trial: int | None = None) -> list[str]:
        """Letters shown for the stimuli of `trial` (default: the current one), in display order."""
        return _labels(len(self.trials[self.current_trial if trial is None else trial]["order"]))

    def _check_csv_header(self) -> None:
        """Refuse to append into a CSV written with other columns (it would corrupt both)."""
        if os.path.exists(self.results_csv) and os.path.getsize(self.results_csv) > 0:
            with open(self.results_csv, newline="") as f:
                header = next(csv.reader(f), None)
            if tuple(header or ()) != CSV_COLUMNS:
                raise ValueError(f"results_csv {self.results_csv!r} has header {header}, expected {list(CSV_COLUMNS)}")

    def _stimulus_row(self, label: str, wav) -> widgets.HBox:
        """Play button, player (its controls appear once played) and slider of one stimulus."""
        slider = widgets.IntSlider(value=0, min=0, max=100, step=1, description=label, continuous_update=False,
                                   layout=widgets.Layout(width="440px"), style={"description_width": "30px"})
        button = widgets.Button(description=f"play {label}", icon="play", layout=widgets.Layout(width="90px"))
        player = widgets.Audio(value=wav_bytes(wav, self.sample_rate), format="wav", autoplay=False, controls=False)
        row = widgets.HBox([button, player, slider], layout=widgets.Layout(align_items="center"))
        row.add_class("mushra-stimulus")

        def play(_button=None):
            self.played.add(label)
            row.children = [button, audio_player(wav, self.sample_rate, autoplay=True), slider]

        def touched(_change=None):
            self.touched.add(label)

        button.on_click(play)
        slider.observe(touched, names="value")
        self.sliders[label] = slider
        self.play_buttons[label] = button
        return row

    def _show_trial(self) -> None:
        trial = self.trials[self.current_trial]
        self.sliders, self.play_buttons = {}, {}
        self.played, self.touched = set(), set()
        rows = [self._stimulus_row(label, trial["audio"][name]) for label, name in zip(self.labels(), trial["order"])]
        last = self.current_trial == len(self.trials) - 1
        self.next_button.description = "Finish" if last else "Next"
        header = widgets.HTML(
            f"<h4>Trial {self.current_trial + 1} / {len(self.trials)}: {trial['name']}</h4>"
            "Rate each stimulus against the reference (100 = indistinguishable). "
            "One of them is the reference itself. Play every stimulus and move every slider before going on."
        )
        reference_row = widgets.HBox([audio_player(trial["reference"], self.sample_rate), widgets.HTML("&emsp;<b>Reference</b>")],
                                     layout=widgets.Layout(align_items="center"))
        scale = widgets.HTML("<small>Scale (ITU-R BS.1534): 0-20 bad, 20-40 poor, 40-60 fair, 60-80 good, "
                             "80-100 excellent.</small>")
        self._status.value = ""
        self._page.children = [header, reference_row, scale, *rows]

    def missing(self) -> tuple[list[str], list[str]]:
        """Letters of the current trial not yet played, and not yet rated (slider never moved)."""
        labels = self.labels()
        return [x for x in labels if x not in self.played], [x for x in labels if x not in self.touched]

    def _on_next(self, _button=None) -> None:
        if self.finished:
            return
        unplayed, unrated = self.missing()
        if unplayed or unrated:
            parts = ([f"play {', '.join(unplayed)}"] if unplayed else []) + ([f"rate {', '.join(unrated)}"] if unrated else [])
            self._status.value = (f"<span class='mushra-refused' style='color:#b00'>Not saved: every stimulus must be "
                                  f"played and rated first ({'; '.join(parts)}).</span>")
            return
        trial = self.trials[self.current_trial]
        timestamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = [
            (timestamp, self.session_id, self.listener_id, trial["name"], name, int(self.sliders[label].value), self._simulated)
            for label, name in zip(self.labels(), trial["order"])
        ]
        self._append_rows(rows)
        self.results.append({"trial": trial["name"], **{name: int(self.sliders[label].value)
                                                        for label, name in zip(self.labels(), trial["order"])}})
        if self.current_trial + 1 < len(self.trials):
            self.current_trial += 1
            self._show_trial()
        else:
            self.finished = True
            self.next_button.disabled = True
            self._page.children = []
            self._status.value = f"Done: {len(self.trials)} trials saved to {self.results_csv}. Thank you."

    def summary_html(self) -> str:
        """A static summary of this session (what a saved notebook shows instead of the widget): per trial the
        score of every system, with the letter it had."""
        from lib.analysis.html import table_html

        kind = "SIMULATED listener" if self._last_simulated else f"listener {self.listener_id}"
        if not self.results:
            return (f"<p>MUSHRA test: {len(self.trials)} trial(s) of {len(self.trials[0]['order'])} stimuli, "
                    "not rated in this run; run the notebook in JupyterLab to rate them.</p>")
        systems = list(dict.fromkeys(name for trial in self.trials for name in trial["order"]))
        rows = []
        for trial, result in zip(self.trials, self.results):
            letters = dict(zip(trial["order"], _labels(len(trial["order"]))))
            rows.append({"trial": result["trial"], **{display_name(s): f"{result[s]} ({letters[s]})" if s in result else "-"
                                                      for s in systems}})
        caption = (f"MUSHRA session {self.session_id}, {kind}: score (letter shown) per trial and system, "
                   f"saved to {self.results_csv}")
        return table_html(rows, caption=caption)

    def _append_rows(self, rows: list[tuple]) -> None:
        # Append mode, header only for a new/empty file: earlier sessions are never touched.
        new_file = not os.path.exists(self.results_csv) or os.path.getsize(self.results_csv) == 0
        with open(self.results_csv, "a", newline="") as f:
            writer = csv.writer(f)
            if new_file:
                writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)

    def score_with(self, fn: Callable | None = None, worst: float = 0.0, best: float = 30.0) -> int:
        """Scripted listener: rate every remaining trial from an objective metric. Returns rows written.

        For each stimulus, `fn(stimulus, reference, sample_rate) -> value` (default: SI-SDR in dB,
        the hidden reference then scores 100) is mapped to 0-100 by `metric_to_score(value, worst,
        best)`; the scores are set on the same sliders and "Next" is clicked, so the real UI path runs.
        Rows are written with `simulated=True`. Examples: PESQ `worst=1.0, best=4.5`;
        mel distance `worst=<large>, best=0.0`. Must start before any trial was submitted.
        """
        if self.finished or self.current_trial != 0:
            raise ValueError("score_with must run on a fresh test (this session already has submitted trials)")
        if fn is None:
            fn = lambda est, ref, sample_rate: si_sdr(torch.from_numpy(est), torch.from_numpy(ref))
        self._simulated = self._last_simulated = True
        n_rows = 0
        try:
            while not self.finished:
                trial = self.trials[self.current_trial]
                for label, name in zip(self.labels(), trial["order"]):
                    value = float(fn(trial["audio"][name], trial["reference"], self.sample_rate))
                    self.sliders[label].value = metric_to_score(value, worst, best)
                    self.played.add(label)  # a script "listens" to everything it scores
                    self.touched.add(label)
                n_rows += len(trial["order"])
                self.next_button.click()
        finally:
            self._simulated = False
        return n_rows


def _read_rows(csv_path) -> list[dict]:
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"csv_path {os.fspath(csv_path)!r} lacks columns {sorted(missing)}")
        return list(reader)


def post_screening(csv_path, simulated: bool | None = False, threshold: float = SCREEN_SCORE,
                   max_fraction: float = SCREEN_FRACTION) -> dict[str, dict]:
    """ITU-R BS.1534-3 post-screening: per listener, the trials (session x trial) in which the hidden reference
    scored below `threshold`; a listener is flagged when that happens in more than `max_fraction` of their trials.
    `simulated`: which rows to screen (False: human rows, the default; True: scripted; None: all).
    Returns `{listener: {"trials", "below", "fraction", "flagged"}}`."""
    per_listener: dict[str, dict[tuple, float]] = {}
    for row in _read_rows(csv_path):
        sim = row["simulated"].strip().lower() == "true"
        if row["system"] != HIDDEN_REFERENCE or (simulated is not None and sim != simulated):
            continue
        per_listener.setdefault(row["listener"], {})[(row["session_id"], row["trial"])] = float(row["score"])
    result = {}
    for listener, scores in per_listener.items():
        below = sum(score < threshold for score in scores.values())
        fraction = below / len(scores)
        result[listener] = {"trials": len(scores), "below": below, "fraction": fraction,
                            "flagged": fraction > max_fraction}
    return result


def summary_warnings(summary: dict[str, dict], screening: dict[str, dict] | None = None) -> list[str]:
    """Sentences a reader must see next to a MUSHRA summary: a hidden reference that does not score near 100,
    an anchor rated above the systems, listeners flagged by `post_screening`."""
    notes = []
    hidden = summary.get(HIDDEN_REFERENCE)
    if hidden is not None and hidden["mean"] < SCREEN_SCORE:
        notes.append(f"The hidden reference averages {hidden['mean']:.0f} (< {SCREEN_SCORE}): the listener did not "
                     "recognise the original, so these scores are not reliable.")
    for listener, screen in (screening or {}).items():
        if screen["flagged"]:
            notes.append(f"Listener {listener!r} rated the hidden reference below {SCREEN_SCORE} in {screen['below']} of "
                         f"{screen['trials']} trials ({100 * screen['fraction']:.0f} % > {100 * SCREEN_FRACTION:.0f} %): "
                         "post-screening (BS.1534) excludes them.")
    return notes


def summarize(csv_path, simulated: bool | None = None, confidence: float = 0.95,
              session_id: str | None = None, exclude_listeners=()) -> dict[str, dict]:
    """Per-system mean score and 95% confidence interval from a MUSHRA results CSV.

    The interval is the Student-t one over all rows of a system (listeners x trials):
    `mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n)`, s the sample standard deviation (ddof=1);
    with n = 1 the half-width is NaN.

    Args:
        simulated: keep only scripted-listener rows (True), only human rows (False), or all rows
            (None; warns when both kinds are present, since mixing them is meaningless).
        session_id: keep only the rows of this session (e.g. `MushraTest.session_id`); None = all sessions.
        exclude_listeners: listeners left out (e.g. those `post_screening` flags).
    Returns:
        `{system: {"mean", "ci95" (half-width), "low", "high", "std", "n"}}`, best mean first.
    """
    rows = _read_rows(csv_path)
    if session_id is not None:
        rows = [r for r in rows if r["session_id"] == session_id]
    rows = [r for r in rows if r["listener"] not in set(exclude_listeners)]
    is_sim = [r["simulated"].strip().lower() == "true" for r in rows]
    if simulated is None and any(is_sim) and not all(is_sim):
        warnings.warn("summarize: the CSV mixes human and simulated rows; pass simulated=False or True", RuntimeWarning, stacklevel=2)
    scores: dict[str, list[float]] = {}
    for row, sim in zip(rows, is_sim):
        if simulated is None or sim == simulated:
            scores.setdefault(row["system"], []).append(float(row["score"]))
    summary = {}
    for system, values in scores.items():
        x = np.asarray(values, dtype=np.float64)
        n, mean = x.size, float(x.mean())
        std = float(x.std(ddof=1)) if n > 1 else math.nan
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
        summary[system] = {"mean": mean, "ci95": half, "low": mean - half, "high": mean + half, "std": std, "n": n}
    return dict(sorted(summary.items(), key=lambda item: -item[1]["mean"]))


def display_name(system: str) -> str:
    """A readable label for a system name in figures and tables."""
    return {HIDDEN_REFERENCE: "hidden reference"}.get(system, system.replace("_", " "))


def _system_colour(system: str, index: int):
    if system == HIDDEN_REFERENCE:
        return "0.55"
    if "low-pass" in system or "anchor" in system:
        return "0.3"
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # no grey: that is the references'
    return palette[index % len(palette)]


def plot_mushra(summary: dict[str, dict], ax=None, simulated: bool = False):
    """Bar chart of MUSHRA means with 95% CI error bars on the 0-100 scale, one colour per system, the intervals
    clipped to the scale. Returns the axes.
    `simulated=True` puts "SIMULATED listener" in the title: those are metric scores, not listening."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(summary) + 2), 3.5))
    systems = list(summary)
    means = np.array([summary[s]["mean"] for s in systems])
    half = np.array([0.0 if math.isnan(summary[s]["ci95"]) else summary[s]["ci95"] for s in systems])
    low, high = np.clip(means - half, 0, 100), np.clip(means + half, 0, 100)  # inside the axes
    colours = [_system_colour(s, i) for i, s in enumerate(systems)]
    x = np.arange(len(systems))
    ax.bar(x, means, color=colours, edgecolor="black", linewidth=0.5)
    ax.errorbar(x, means, yerr=[means - low, high - means], fmt="none", ecolor="black", capsize=4, lw=1)
    ax.set_xticks(x)
    ax.set_xticklabels([display_name(s) for s in systems], rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("score (0-100, higher is better)")
    for edge, word in zip((20, 40, 60, 80, 100), ("bad", "poor", "fair", "good", "excellent")):  # BS.1534 scale
        ax.axhline(edge, color="0.85", lw=0.8, zorder=0)
        ax.text(1.01, edge - 10, word, transform=ax.get_yaxis_transform(), fontsize=7, color="0.5", va="center")
    title = "MUSHRA: mean and 95% CI"
    if simulated:
        title = "SIMULATED listener (objective metric, not a listening test)\n" + title
    ax.set_title(title)
    return ax
