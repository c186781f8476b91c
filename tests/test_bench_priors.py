"""bench/priors.py end to end on a tiny codec: every table written, the figure drawn, continuations saved."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import priors  # noqa: E402

from lib.config import load_config  # noqa: E402
from lib.data.corpus import build_default_corpus  # noqa: E402
from lib.training.trainer import Trainer  # noqa: E402


def test_the_experiment_runs_and_writes_every_table(tmp_path, monkeypatch):
    data = tmp_path / "data"
    build_default_corpus(data, minutes=2.0, sources="synthetic", progress=False)  # one clip in the test split
    cfg = load_config("tiny", ["train.steps=3", "train.quantizer_warmup_steps=1", "model.quantizer.som=true",
                               "data.valid_clips=1"])
    Trainer(cfg, data, tmp_path / "codec", resume=False, progress=False, device="cpu").fit()
    written = {}
    monkeypatch.setattr(priors, "write_csv", lambda rows, name: written.__setitem__(name, list(rows)))
    monkeypatch.setattr(priors, "REPO", tmp_path)
    (tmp_path / "figures").mkdir()
    monkeypatch.setattr(priors, "PRIOR", {"d_model": 16, "n_layers": 1, "n_heads": 2, "context": 16})
    monkeypatch.setattr(priors, "SHARES", (0.1,))
    monkeypatch.setattr(priors, "BIT_ERROR_RATES", (0.01,))
    assert priors.main(["--codec", f"som={tmp_path / 'codec' / 'checkpoint.pt'}", "--data", str(data),
                        "--split", "test", "--group", "speech", "--embeddings", "learned", "som_grid",
                        "--steps", "3", "--damage-clips", "1", "--threads", "1"]) == 0
    assert [r["embedding"] for r in written["priors"]] == ["learned", "som_grid"]
    assert all(0 < r["bits_per_code"] < 10 for r in written["priors"])  # 6 bits packed (64 codes)
    assert {r["damage"] for r in written["priors_damage"]} == {*priors.REPLACEMENTS, "bit errors"}
    assert {r["how"] for r in written["priors_context"]} == set(priors.REPLACEMENTS)
    assert all(r["codec"] == "som" and "dnsmos_ovrl" in r for r in written["priors_continuations"])
    assert (tmp_path / "figures" / "bench_priors.png").stat().st_size > 10000
    assert (tmp_path / "codec" / "prior-learned.pt").is_file() and (tmp_path / "codec" / "prior-som_grid.pt").is_file()
