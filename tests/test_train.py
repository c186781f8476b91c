"""The trainer: gradient isolation of the discriminators, NaN guard, exact resume, discriminator choice, DDP,
and a short run that actually learns."""
import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from lib.config import load_config
from lib.data.corpus import build_default_corpus
from lib.training.adversarial import hinge_d_loss
from lib.training.cli import main
from lib.training.trainer import Trainer, TrainingDiverged, read_log

FAST = ["data.batch_size=2", "model.quantizer.n_q=2", "train.stft_n_ffts=[256, 128]", "train.log_every=1",
        "train.val_every=1000", "train.ckpt_every=1000", "data.valid_clips=1", "data.valid_seconds=0.5",
        "train.quantizer_warmup_steps=0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_default_corpus(out, minutes=0.4, sources="synthetic", progress=False)
    return out


def _trainer(corpus, run_dir, overrides=(), **kw):
    cfg = load_config("tiny", FAST + list(overrides))
    return Trainer(cfg, corpus, run_dir, progress=False, **kw)


def test_generator_gradients_never_reach_the_discriminators(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path, ["train.adv_warmup_steps=0", "train.discriminators=[stft, waveform, period]",
                                     "train.grad_clip=null", "train.one_disc_at_a_time=false"])
    seen = {}
    original = tr.discriminator_losses

    def checked(wav, recon):
        # Called right after the generator's backward + step: no discriminator may hold a gradient.
        seen["leaked"] = [n for n, p in tr.discs.named_parameters() if p.grad is not None]
        seen["wav"], seen["recon"] = wav, recon.detach().clone()
        return original(wav, recon)

    step = tr.opt_d.step

    def d_step(*a, **k):
        # The gradients the discriminator optimizer applies are exactly those of the discriminator loss alone.
        params = [p for p in tr.discs.parameters()]
        expected = 0
        for name, disc in tr.discs.items():
            real, _ = disc(seen["wav"])
            fake, _ = disc(seen["recon"])
            expected = expected + hinge_d_loss(real, fake)
        grads = torch.autograd.grad(expected, params, allow_unused=True)
        seen["max_diff"] = max(float((g - p.grad).abs().max()) for g, p in zip(grads, params) if g is not None)
        return step(*a, **k)

    tr.discriminator_losses = checked
    tr.opt_d.step = d_step
    res = tr.train_step(tr.batches[0])
    assert not res.skipped and "adversarial" in res.losses
    assert seen["leaked"] == []
    assert seen["max_diff"] < 1e-6


def test_nan_guard_skips_restores_and_stops(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path, ["train.max_bad_steps=3"])
    tr.train_step(tr.batches[0])  # k-means init happens on a clean batch
    codebooks = tr.codec.quantizer.codebooks.clone()
    weights = [p.detach().clone() for p in tr.codec.parameters()]
    bad = tr.batches[1].clone()
    bad[0, 0, 100] = float("nan")
    for i in range(2):
        res = tr.train_step(bad)
        assert res.skipped and tr.skipped == i + 1 and tr.step == 1
    assert torch.equal(tr.codec.quantizer.codebooks, codebooks)  # EMA updates from the bad batch undone
    assert all(torch.equal(a, b) for a, b in zip(weights, tr.codec.parameters()))
    with pytest.raises(TrainingDiverged, match="3 non-finite steps in a row"):
        tr.train_step(bad)
    tr.bad_in_row = 0
    assert not tr.train_step(tr.batches[2]).skipped and tr.bad_in_row == 0  # a good step resets the count


def _losses(run_dir):
    return {r["step"]: {k: v for k, v in r.items() if k != "time"} for r in read_log(run_dir / "log.jsonl")
            if r["kind"] == "train"}


def test_resume_continues_exactly(corpus, tmp_path):
    over = ["train.adv_warmup_steps=2", "train.one_disc_at_a_time=true", "train.disc_choice=loss_weighted",
            "train.ema_decay=0.9", "model.quantizer.som=true", "train.ckpt_every=3"]
    straight = _trainer(corpus, tmp_path / "a", over)
    straight.fit(6)
    first = _trainer(corpus, tmp_path / "b", over)
    first.fit(3)
    # A crash after step 3's checkpoint: a later log line exists but the weights are lost.
    with open(tmp_path / "b" / "log.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 4, "mel": -1.0}) + "\n")
    del first
    resumed = _trainer(corpus, tmp_path / "b", over)
    assert resumed.step == 3
    resumed.fit(6)
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for s in range(4, 7):
        assert a[s] == b[s], f"step {s} differs after resume"
    for pa, pb in zip(straight.codec.parameters(), resumed.codec.parameters()):
        assert torch.equal(pa, pb)


def test_loss_weighted_choice_follows_the_weights(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path, ["train.one_disc_at_a_time=true", "train.disc_choice=loss_weighted"])
    tr.disc_loss_ema = {"stft": 3.0, "waveform": 1.0}
    picks = []
    for s in range(2000):
        tr.step = s
        tr.choose_discriminators()
        picks += tr.active
    assert abs(picks.count("stft") / len(picks) - 0.75) < 0.04
    uniform = _trainer(corpus, tmp_path / "u", ["train.one_disc_at_a_time=true", "train.disc_choice=uniform"])
    uniform.disc_loss_ema = {"stft": 3.0, "waveform": 1.0}
    picks = []
    for s in range(2000):
        uniform.step = s
        uniform.choose_discriminators()
        picks += uniform.active
    assert abs(picks.count("stft") / len(picks) - 0.5) < 0.04


def test_window_and_tied_bitrate(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path, ["train.one_disc_at_a_time=true", "train.disc_window=4",
                                     "train.tie_bitrate=true", "model.quantizer.n_q=4", "train.adv_warmup_steps=0"])
    seen = []
    for s in range(12):
        tr.step = s
        tr.choose_discriminators()
        seen.append((tr.active[0], tr.tied_n_q))
    for w in range(3):  # constant within a window of 4 steps
        assert len(set(seen[4 * w: 4 * w + 4])) == 1
    assert {name: n for name, n in seen} == {name: n for name, n in
                                             [("stft", 2), ("waveform", 4)] if name in {s[0] for s in seen}}
    tr.step = 0
    tr.choose_discriminators()
    res = tr.train_step(tr.batches[0])
    assert res.losses["n_q"] == tr.tied_n_q


def test_quantizer_warmup_bypasses_then_initialises_the_codebooks(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path, ["train.quantizer_warmup_steps=2"])
    levels = tr.codec.quantizer.levels
    for s in range(2):
        res = tr.train_step(tr.batches[s])
        assert res.losses["n_q"] == 0 and res.losses["commitment"] == 0
        assert not any(bool(level.initted) for level in levels)
    # Two crops of 19 frames: k-means pools a second batch to have its 64 frames (one per code) ...
    res = tr.train_step(tr.batches[2])
    assert res.losses["n_q"] >= 1 and not bool(levels[0].initted)
    tr.train_step(tr.batches[3])
    # ... and the next level then pools its own residuals.
    assert bool(levels[0].initted) and not bool(levels[1].initted)


def test_balancer_and_stft_loss_train(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path, ["loss.balancer=true", "loss.stft=1.0", "train.adv_warmup_steps=0"])
    before = [p.detach().clone() for p in tr.codec.parameters()]
    res = tr.train_step(tr.batches[0])
    assert not res.skipped and {"stft", "adversarial", "feature"} <= set(res.losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.codec.parameters()))


def test_short_run_lowers_validation_mel_distance(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path, ["train.discriminators=[]", "data.valid_clips=2", "data.valid_seconds=1.0"])
    start = tr.validate()["mel_distance"]
    tr.fit(80)  # the look-ahead decoder starts slower: 0.86x after 60 steps, 0.78x after 80 (causal: 0.83x, 0.76x)
    end = tr.validate()["mel_distance"]
    assert end < 0.85 * start, (start, end)


def test_script_entry_writes_checkpoint_log_and_config(corpus, tmp_path):
    run = tmp_path / "cli"
    assert main(["--preset", "tiny", "--data", str(corpus), "--run-dir", str(run), "--steps", "2", "--minutes", "60",
                 "--set", "train.val_every=2", "data.batch_size=2"]) == 0
    assert (run / "checkpoint.pt").is_file() and (run / "config.yaml").is_file()
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (train["steps"], train["minutes"]) == (2, 60.0)
    kinds = [r["kind"] for r in read_log(run / "log.jsonl")]
    assert "val" in kinds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, corpus: str, out: str, extra: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), WORKBOOK_DIST_TIMEOUT="60")
    torch.set_num_threads(1)
    cfg = load_config("tiny", FAST + ["train.adv_warmup_steps=1", "model.quantizer.som=true"] + extra)
    tr = Trainer(cfg, corpus, os.path.join(out, "run"), resume=False, progress=False, device="cpu")
    tr.fit(3 if not extra else 50)
    torch.save({"codebooks": tr.codec.quantizer.codebooks, "params": [p.detach() for p in tr.codec.parameters()],
                "batch": tr.batches[0], "step": tr.step}, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


# With a time budget (1.5 s) each rank's own clock would give it its own learning rate and its own last step
# (a rank waiting for a peer that stopped hangs): rank 0's clock must decide for both.
@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["train.minutes=0.025", "train.lr_warmup_steps=0"]], ids=["steps", "clock"])
def test_two_process_gloo_ddp_keeps_codebooks_identical(corpus, tmp_path, extra):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(corpus), str(tmp_path), extra), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert not torch.equal(r0["batch"], r1["batch"])  # each rank trains on its own data
    assert torch.equal(r0["codebooks"], r1["codebooks"])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(r0["params"], r1["params"]))
    assert r0["step"] == r1["step"] and (r0["step"] == 3 if not extra else 1 < r0["step"] < 50)


def test_init_from_starts_a_fresh_run_from_a_trained_codec(corpus, tmp_path):
    first = _trainer(corpus, tmp_path / "first", ["train.quantizer_warmup_steps=2"])
    first.fit(6)
    trained = {k: v.clone() for k, v in first.codec.state_dict().items()}
    fine = _trainer(corpus, tmp_path / "fine", [f"train.init_from={tmp_path / 'first' / 'checkpoint.pt'}",
                                                "train.quantizer_warmup_steps=100", "train.lr=1e-3"])
    assert fine.step == 0 and fine.init_step == 6 and fine.opt_g.state == {}  # a fresh optimizer and schedule
    state = fine.codec.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())  # weights and codebooks (buffers) alike
    assert fine.validate()["mel_distance"] == pytest.approx(first.validate()["mel_distance"], rel=1e-6)
    result = fine.train_step(fine.batches[0])
    assert not result.skipped and result.losses["commitment"] > 0  # no warm-up: the trained codebooks quantize
    with pytest.raises(Exception, match="init_from .*checkpoint.pt: its codec does not fit"):
        _trainer(corpus, tmp_path / "other", [f"train.init_from={tmp_path / 'first' / 'checkpoint.pt'}",
                                              "model.quantizer.n_q=3"])


def test_cli_init_from_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--init-from", str(tmp_path / "nope.pt")])
    assert "--init-from: no such checkpoint" in capsys.readouterr().err


def test_adversarial_steps_every_k_and_discriminators_on_crops(corpus, tmp_path):
    from types import SimpleNamespace

    from lib.training.runtime import adversarial_crop, adversarial_step

    t = SimpleNamespace(adv_warmup_steps=2, disc_every=3, disc_crop_seconds=0.25, seed=0)
    assert [adversarial_step(t, s, 1) for s in range(9)] == [False, False, True, False, False, True, False, False,
                                                             True]
    assert not any(adversarial_step(t, s, 0) for s in range(9))  # no discriminator, no adversarial step
    wav = torch.randn(4, 1, 8000)
    real, fake = adversarial_crop(wav, 2 * wav, t, 8000, step=5)
    assert real.shape == fake.shape == (4, 1, 2000) and torch.equal(fake, 2 * real)  # the same crop of both
    starts = [int(torch.nonzero(wav[i, 0] == real[i, 0, 0])[0]) for i in range(4)]
    assert len(set(starts)) > 1  # per item
    assert torch.equal(adversarial_crop(wav, wav, t, 8000, step=5)[0], real)  # a function of (seed, step)
    assert not torch.equal(adversarial_crop(wav, wav, t, 8000, step=6)[0], real)
    whole = SimpleNamespace(**{**vars(t), "disc_crop_seconds": None})
    assert adversarial_crop(wav, wav, whole, 8000, step=5)[0] is wav

    tr = _trainer(corpus, tmp_path, ["train.discriminators=[stft]", "train.adv_warmup_steps=1", "train.disc_every=2",
                                     "train.disc_crop_seconds=0.1"])
    seen = []
    original = tr.discs["stft"].forward
    tr.discs["stft"].forward = lambda x: seen.append(x.shape[-1]) or original(x)
    results = [tr.train_step(tr.batches[s]) for s in range(5)]
    assert ["adversarial" in r.losses for r in results] == [False, True, False, True, False]
    assert set(seen) == {int(0.1 * tr.cfg.data.sample_rate)}  # only crops reach the discriminator


def test_bf16_on_the_cpu_keeps_codes_and_losses_in_full_precision(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path, ["train.precision=bf16", "train.quantizer_warmup_steps=0"], device="cpu")
    codec, wav = tr.codec.eval(), tr.batches[0]
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = codec(wav, n_q=2)
        expected = codec.quantizer(out.latents.float(), n_q=2).codes  # the same latents, searched in fp32
    assert out.latents.dtype == torch.bfloat16  # the encoder ran in bf16 ...
    assert torch.equal(out.codes, expected)  # ... and the code search as in fp32 (autocast leaves it alone)
    codec.train()
    first = tr.validate()["mel_distance"]
    results = [tr.train_step(tr.batches[s]) for s in range(15)]
    assert not any(r.skipped for r in results)
    assert all(isinstance(v, float) and math.isfinite(v) for r in results for v in r.losses.values())
    assert tr.validate()["mel_distance"] < first  # it learns


def test_precision_auto_is_bf16_only_where_the_cpu_has_bf16_instructions(monkeypatch, corpus, tmp_path):
    from lib.training import runtime
    cpu = torch.device("cpu")
    for has, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(runtime, "cpu_has_bf16", lambda has=has: has)
        assert runtime.resolve_precision(cpu, "auto") == expected
        assert runtime.resolve_precision(cpu, "fp32") == "fp32"  # an explicit choice is kept
        assert runtime.resolve_precision(cpu, "bf16") == "bf16"
    tr = _trainer(corpus, tmp_path, ["train.precision=auto"], device="cpu")
    assert tr.precision == "fp32"  # the trainer runs what resolve_precision says (the last patch: no bf16)
