"""Atomic, safe checkpoints: round trip, RNG states, config mismatch, malicious pickles refused."""
import os
import pickle
import random

import numpy as np
import pytest
import torch

from lib.training.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_round_trip_gives_bit_identical_outputs(tmp_path):
    m = _model()
    opt = torch.optim.Adam(m.parameters())
    m(torch.randn(3, 4)).sum().backward()
    opt.step()
    cfg = {"model": {"dim": 4}, "data": {"sample_rate": 24000, "channels": 1}}
    path = save_checkpoint(tmp_path / "ck.pt", config=cfg, step=5, model={"m": m.state_dict()},
                           optimizers={"g": opt.state_dict()})
    state = load_checkpoint(path, expected_config=cfg)
    m2 = _model()
    m2.load_state_dict(state["model"]["m"])
    x = torch.randn(5, 4)
    assert torch.equal(m(x), m2(x))
    assert state["step"] == 5
    opt2 = torch.optim.Adam(m2.parameters())
    opt2.load_state_dict(state["optimizers"]["g"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # no temp file left behind


def test_rng_states_restore_exactly():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_config_mismatch_is_a_clear_error(tmp_path):
    cfg = {"model": {"dim": 4, "ratios": [2, 4]}, "data": {"sample_rate": 24000, "channels": 1}}
    save_checkpoint(tmp_path / "ck.pt", config=cfg, step=0, model={})
    other = {"model": {"dim": 8, "ratios": [2, 4]}, "data": {"sample_rate": 24000, "channels": 1}}
    with pytest.raises(CheckpointError, match=r"model\.dim: checkpoint=4 config=8"):
        load_checkpoint(tmp_path / "ck.pt", expected_config=other)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    save_checkpoint(tmp_path / "ck.pt", config={}, step=0, model={})
    data = (tmp_path / "ck.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read|refusing"):
        load_checkpoint(tmp_path / "cut.pt")


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, config={"v": 1}, step=1, model={})

    def boom(*a, **k):
        raise KeyboardInterrupt("crash mid-write")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, config={"v": 2}, step=2, model={})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_load_codec_accepts_latest_of_a_run_dir(tmp_path):
    from lib.build import build_codec
    from lib.config import load_config
    from lib.training.checkpoint import load_codec

    cfg = load_config("tiny")
    codec = build_codec(cfg).eval()
    save_checkpoint(tmp_path / "checkpoint.pt", config=cfg.to_dict(), step=3, model={"codec": codec.state_dict()})
    loaded, loaded_cfg = load_codec("latest", run_dir=tmp_path)
    assert loaded_cfg.to_dict() == cfg.to_dict() and not loaded.training
    wav = torch.randn(1, 1, 4000)
    with torch.no_grad():
        assert torch.equal(loaded(wav).recon, codec(wav).recon)
    with pytest.raises(CheckpointError, match="not found"):
        load_codec("latest", run_dir=tmp_path / "elsewhere")


def test_a_checkpoint_from_before_a_new_config_key_still_matches(tmp_path):
    from lib.config import load_config

    cfg = load_config("cpu_seanet").to_dict()  # its decoder is the default one
    old = {**cfg, "model": {k: v for k, v in cfg["model"].items() if k != "decoder"}}
    save_checkpoint(tmp_path / "c.pt", config=old, step=1, model={})
    assert load_checkpoint(tmp_path / "c.pt", expected_config=cfg)["step"] == 1
