"""bench/paired.py: paired differences of two systems on the same clips, against a hand computation."""
import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import paired  # noqa: E402

BASE = [3.0, 2.5, 2.0, 2.8, 2.2]
OTHER = [3.1, 2.7, 2.0, 2.9, 2.4]  # differences 0.1, 0.2, 0.0, 0.1, 0.2


def write_clips(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def clip_rows() -> list[dict]:
    rows = []
    for system, values in (("a.pt", BASE), ("b.pt", OTHER)):
        for i, v in enumerate(values):
            rows.append({"system": system, "split": "valid", "n_q": 8, "clip": f"speech/{i}", "kind": "speech",
                         "pesq_wb": v, "stoi": 0.8, "dnsmos_ovrl": ""})  # DNSMOS not scored: left out
        rows.append({"system": system, "split": "valid", "n_q": 4, "clip": "speech/0", "kind": "speech",
                     "pesq_wb": 1.0, "stoi": 0.7, "dnsmos_ovrl": ""})
    return rows


def test_paired_difference_matches_a_hand_computation(tmp_path):
    rows = paired.compare(paired.read_clip_scores(write_clips(tmp_path / "x_clips.csv", clip_rows())), 8, "speech")
    assert [(r["system"], r["metric"]) for r in rows] == [("b.pt", "pesq_wb"), ("b.pt", "stoi")]
    pesq = rows[0]
    d = [0.1, 0.2, 0.0, 0.1, 0.2]
    mean, sd = sum(d) / 5, math.sqrt(sum((x - 0.12) ** 2 for x in d) / 4)
    assert pesq["clips"] == 5 and pesq["base"] == pytest.approx(2.5) and pesq["mean"] == pytest.approx(2.62)
    assert pesq["difference"] == pytest.approx(mean) and pesq["standard_error"] == pytest.approx(sd / math.sqrt(5))
    assert pesq["t"] == pytest.approx(mean / (sd / math.sqrt(5)))
    assert rows[1]["difference"] == pytest.approx(0.0) and math.isnan(rows[1]["t"])  # no spread: no ratio


def test_clips_only_one_system_scored_are_left_out():
    rows = [{"system": s, "clip": c, "pesq_wb": v} for s, c, v in
            (("a", "x", 1.0), ("a", "y", 2.0), ("a", "z", 3.0), ("b", "x", 1.5), ("b", "y", 2.1), ("b", "z", np.nan))]
    out = paired.paired_difference(rows, "a", "b", "pesq_wb")
    assert out["clips"] == 2 and out["difference"] == pytest.approx(0.3)
    assert out["standard_error"] == pytest.approx(np.std([0.5, 0.1], ddof=1) / math.sqrt(2))


def test_bad_input_is_named(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nope_clips.csv"):
        paired.read_clip_scores(tmp_path / "nope_clips.csv")
    means = write_clips(tmp_path / "means.csv", [{"system": "a", "n_q": 8, "kind": "speech", "pesq_wb": 2.0}])
    with pytest.raises(ValueError, match="not a per-clip score file.*clip"):
        paired.read_clip_scores(means)
    rows = paired.read_clip_scores(write_clips(tmp_path / "x_clips.csv", clip_rows()))
    with pytest.raises(ValueError, match=r"n_q 2 .*\(4, 'speech'\), \(8, 'speech'\)"):
        paired.compare(rows, 2, "speech")
    with pytest.raises(ValueError, match="--base 'c.pt'"):
        paired.compare(rows, 8, "speech", base="c.pt")
    with pytest.raises(SystemExit):
        paired.main([str(tmp_path / "x_clips.csv"), "--kind", "music"])
    assert "no clip scored at n_q 8 of kind 'music'" in capsys.readouterr().err
