"""Comparing runs: two tiny runs overlaid, their final held-out metrics tabulated from their logs."""
import matplotlib.pyplot as plt
import pytest

from lib.analysis.runs import compare_runs, load_run, runs_table
from lib.config import load_config
from lib.data.corpus import build_default_corpus
from lib.training.trainer import Trainer, read_log

FAST = ["data.batch_size=2", "train.stft_n_ffts=[256, 128]", "train.log_every=1", "train.val_every=2",
        "train.ckpt_every=1000", "data.valid_clips=1", "data.valid_seconds=0.5", "train.quantizer_warmup_steps=0",
        "train.tensorboard=false"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    corpus = root / "corpus"
    build_default_corpus(corpus, minutes=0.4, sources="synthetic", progress=False)
    for name, extra, steps in (("base", ["model.quantizer.n_q=2"], 4), ("wide", ["model.quantizer.n_q=3"], 6)):
        cfg = load_config("tiny", FAST + extra + [f"train.steps={steps}"])
        Trainer(cfg, corpus, root / name / "run", resume=False, progress=False, device="cpu").fit()
    return root


def test_compare_two_runs(two_runs):
    dirs = [two_runs / "base" / "run", two_runs / "wide" / "run"]
    fig, rows = compare_runs(dirs)
    assert [r["run"] for r in rows] == ["base/run", "wide/run"]  # same folder names told apart by the parent
    assert [r["steps"] for r in rows] == [4, 6]
    assert [r["kbps"] for r in rows] == pytest.approx([0.9, 1.35])  # 2 and 3 levels x 6 bits x 75 Hz
    for row, d in zip(rows, dirs):
        val = [r for r in read_log(d / "log.jsonl") if r["kind"] == "val"]
        assert row["mel_distance"] == val[-1]["mel_distance"] and row["si_sdr"] == val[-1]["si_sdr"]
        assert row["best_mel_distance"] == min(r["mel_distance"] for r in val)
        levels = [k for k in val[-1] if k.startswith("usage_")]
        assert row["usage"] == pytest.approx(sum(val[-1][k] for k in levels) / len(levels))
    train_ax, mel_ax, sdr_ax = fig.axes
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 2]
    assert list(mel_ax.lines[1].get_xdata()) == [2, 4, 6]
    assert [t.get_text() for t in mel_ax.get_legend().get_texts()] == ["base/run", "wide/run"]
    text = runs_table(rows)
    assert "base/run" in text and "wide/run" in text and len(text.splitlines()) == 3
    plt.close(fig)


def test_labels_and_bad_folders(two_runs, tmp_path):
    _, rows = compare_runs([two_runs / "base" / "run"], labels=["A"])
    assert rows[0]["run"] == "A"
    with pytest.raises(ValueError, match="not a run folder"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="2 labels for 1 runs"):
        compare_runs([two_runs / "base" / "run"], labels=["A", "B"])
