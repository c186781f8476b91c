"""What stopped the default codec learning (issue: a codec worth listening to), each pinned by a test that fails
without its fix: SOM annealing that ends inside the run, k-means on enough frames, levels initialised in turn on
their own residuals, validation only on initialised codebooks, a quantizer-dropout probability, a learning-rate
schedule with weight decay in the config, and an objective that fixes the waveform."""
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from lib.analysis.metrics import si_sdr
from lib.build import build_codec
from lib.config import ConfigError, load_config
from lib.data.corpus import build_default_corpus
from lib.model.quantize import ResidualVQ, VectorQuantizer
from lib.training.objectives import StepContext
from lib.training.runtime import lr_factor
from lib.training.trainer import Trainer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_default_corpus(out, minutes=0.3, sources="synthetic", progress=False)
    return out


def test_som_neighbourhood_reaches_its_final_width_within_the_run():
    """Annealing counts quantizer updates, which start after the warm-up: 1500 updates would end after a
    1200-step run with a 200-step warm-up; the schedule must fit the 1000 updates the run has (it anneals over
    the first half of them and leaves the rest to refine at the final width)."""
    cfg = load_config("cpu_seanet", ["train.steps=1200", "train.quantizer_warmup_steps=200",
                                     "model.quantizer.som_anneal_steps=1500"])
    som = build_codec(cfg).quantizer.levels[0].som
    assert som.sigma_at(1000) == cfg.model.quantizer.som_sigma_end
    assert som.sigma_at(0) > som.sigma_at(250) > som.sigma_at(500) == som.sigma_at(1000)


def test_kmeans_initialises_on_pooled_frames_not_one_small_batch():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 64, kmeans_frames_per_code=2.0).train()
    batches = [torch.randn(1, 4, 40) for _ in range(4)]
    for x in batches[:3]:  # 120 frames < 2 * 64: still pooling, the level is off
        q, codes, loss, _ = vq.quantize_level(x, None)
        assert not vq.ready and bool((codes == -1).all()) and float(q.abs().sum()) == 0 and float(loss) == 0
    vq.quantize_level(batches[3], None)
    assert vq.ready
    # k-means on all 160 pooled frames gives more distinct codes than one 40-frame batch could
    assert len(torch.unique(vq.embed, dim=0)) > 40


def test_levels_initialise_in_turn_on_their_own_residuals():
    torch.manual_seed(0)
    rvq = ResidualVQ(4, n_q=2, codebook_size=16, quantizer_dropout=False, kmeans_frames_per_code=1.0).train()
    out = rvq(torch.randn(1, 4, 10))  # level 0 pools 10 of its 16 frames
    assert not rvq.levels[0].ready and bool((out.codes == -1).all())
    rvq(torch.randn(1, 4, 10))  # level 0 initialises; level 1 starts pooling level 0's residuals
    assert rvq.levels[0].ready and not rvq.levels[1].ready
    rvq(torch.randn(1, 4, 10))
    assert rvq.ready
    # level 1 was fitted to residuals, which are smaller than the signal level 0 was fitted to
    assert rvq.levels[1].embed.norm(dim=1).mean() < 0.8 * rvq.levels[0].embed.norm(dim=1).mean()


def test_validation_waits_for_initialised_codebooks(corpus, tmp_path):
    cfg = load_config("tiny", ["data.batch_size=2", "train.quantizer_warmup_steps=0", "data.valid_clips=1",
                               "data.valid_seconds=0.5", "train.discriminators=[]"])
    tr = Trainer(cfg, corpus, tmp_path, progress=False)
    tr.train_step(tr.batches[0])  # 38 frames for 64 codes: level 0 still pools
    assert tr.validate()["quantized"] is False
    for s in range(1, 12):
        tr.train_step(tr.batches[s])
    assert tr.codec.quantizer.ready and tr.validate()["quantized"] is True


@pytest.mark.parametrize("threshold, replaced", [(0.0, 0), (1e6, 64)])
def test_training_log_counts_the_codes_replaced_per_level(corpus, tmp_path, threshold, replaced):
    """A threshold at or above every code's EMA count replaces the whole codebook each step (the churn a threshold
    near the mean count per batch causes); 0 replaces nothing. The log says which."""
    cfg = load_config("tiny", ["data.batch_size=2", "train.quantizer_warmup_steps=0", "train.discriminators=[]",
                               "model.quantizer.kmeans_frames_per_code=0",
                               f"model.quantizer.dead_code_threshold={threshold}"])
    tr = Trainer(cfg, corpus, tmp_path, progress=False)
    assert tr.codec.quantizer.codebook_size == 64
    logs = [tr.train_step(tr.batches[s]).losses for s in range(3)]
    n_q = cfg.model.quantizer.n_q
    assert all(log["replaced_0"] == replaced for log in logs[1:])
    assert {f"replaced_{level}" for level in range(n_q)} <= set(logs[-1])


def test_quantizer_dropout_is_a_probability():
    torch.manual_seed(0)
    rvq = ResidualVQ(4, n_q=8, codebook_size=4, quantizer_dropout=0.5, kmeans_init=False).train()
    out = rvq(torch.randn(4000, 4, 1))
    assert float((out.n_q == 8).float().mean()) == pytest.approx(0.5 + 0.5 / 8, abs=0.03)
    cfg = load_config("tiny", ["model.quantizer.quantizer_dropout=0.5"])
    assert build_codec(cfg).quantizer.quantizer_dropout == 0.5
    assert load_config("tiny", ["model.quantizer.quantizer_dropout=true"]).model.quantizer.quantizer_dropout is True


def test_learning_rate_schedule_and_weight_decay_come_from_the_config(corpus, tmp_path):
    cfg = load_config("tiny", ["train.lr=0.01", "train.lr_schedule=cosine", "train.lr_warmup_steps=10",
                               "train.lr_min_ratio=0.1", "train.steps=110", "train.weight_decay=0.0",
                               "train.discriminators=[]", "data.batch_size=2"])
    tr = Trainer(cfg, corpus, tmp_path, progress=False)
    assert tr.lr_factor(0) == pytest.approx(0.1) and tr.lr_factor(9) == pytest.approx(1.0)
    assert tr.lr_factor(60) == pytest.approx(0.55) and tr.lr_factor(110) == pytest.approx(0.1)
    tr.train_step(tr.batches[0])
    assert tr.opt_g.param_groups[0]["lr"] == pytest.approx(0.001)
    assert tr.opt_g.param_groups[0]["weight_decay"] == 0.0


def test_a_time_budget_decays_the_learning_rate_on_the_clock():
    """``train.minutes``: the cosine follows whichever of steps and training time is further along."""
    cfg = load_config("tiny", ["train.lr_schedule=cosine", "train.lr_warmup_steps=10", "train.lr_min_ratio=0.1",
                               "train.steps=110", "train.minutes=2"])
    t = cfg.train
    assert lr_factor(t, 60, seconds=0.0) == pytest.approx(0.55)  # half the steps, no time spent: the steps lead
    assert lr_factor(t, 10, seconds=60.0) == pytest.approx(0.55)  # half the time at the first step after warm-up
    assert lr_factor(t, 60, seconds=90.0) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(0.75 * math.pi)))
    assert lr_factor(t, 20, seconds=500.0) == pytest.approx(0.1)  # past the budget: the floor
    assert lr_factor(t, 5, seconds=500.0) == pytest.approx(0.6)  # the warm-up counts steps
    t.minutes = None
    assert lr_factor(t, 10, seconds=1e6) == pytest.approx(1.0)  # no budget: the clock is ignored


def test_a_time_budget_ends_the_run_decayed_checkpointed_and_validated(corpus, tmp_path, monkeypatch):
    """Every step takes one second on a fake clock; a 5-second budget ends a 100-step run after step 5, with its
    checkpoint and validation, and the clock carries over a resume (which then has nothing left to do)."""
    import lib.training.trainer as trainer_module

    ticks = iter(range(10**6))  # train_step reads the clock twice: each step lasts exactly one second
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks)),
                                                                time=time.time))
    over = ["train.steps=100", "train.minutes=0.08333333", "train.lr_schedule=cosine", "train.lr_warmup_steps=0",
            "train.log_every=2", "train.val_every=50", "train.ckpt_every=50", "train.discriminators=[]",
            "data.batch_size=2", "train.quantizer_warmup_steps=0"]
    tr = Trainer(load_config("tiny", over), corpus, tmp_path, progress=False)
    records = tr.fit()
    assert tr.step == 5 and tr.train_seconds == pytest.approx(5.0) and tr.out_of_time
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 5]
    assert [r["step"] for r in records if r["kind"] == "val"] == [5]
    assert tr.lr_factor() == pytest.approx(tr.cfg.train.lr_min_ratio)  # decayed at the end of the budget
    again = Trainer(load_config("tiny", over), corpus, tmp_path, progress=False)  # resumes the checkpoint
    assert again.step == 5 and again.train_seconds == pytest.approx(5.0)
    assert again.fit() == [] and again.step == 5
    longer = Trainer(load_config("tiny", over[:1] + ["train.minutes=0.125"] + over[2:]), corpus, tmp_path,
                     progress=False)  # a larger budget on resume: the run goes on to 7.5 s of training
    longer.fit()
    assert longer.step == 8


def test_the_last_fraction_of_a_run_trains_the_decoder_alone(corpus, tmp_path):
    """``train.decoder_only_fraction=0.5`` of 24 steps: the first 12 move the encoder and the codebooks; from step
    12 on they stay as they are, the decoder still moves, and its input is every level's code (no dropout)."""
    over = ["train.steps=24", "train.decoder_only_fraction=0.5", "train.quantizer_warmup_steps=0",
            "train.discriminators=[]", "data.batch_size=2", "model.quantizer.quantizer_dropout=0.5",
            "model.quantizer.beam_width=2"]
    tr = Trainer(load_config("tiny", over), corpus, tmp_path, progress=False)

    def moved(module, step):  # whether a train step changes any of the module's weights or buffers
        before = [v.detach().clone() for v in module.state_dict().values()]
        result = tr.train_step(tr.batches[step])
        return any(not torch.equal(a, b) for a, b in zip(before, module.state_dict().values())), result

    for step in range(11):
        tr.train_step(tr.batches[step])
    assert tr.codec.quantizer.ready
    assert moved(tr.codec.encoder, 11)[0] and tr.step == 12
    for module in (tr.codec.encoder, tr.codec.quantizer):
        changed, result = moved(module, tr.step)
        assert not changed and result.losses["n_q"] == 4
    assert moved(tr.codec.decoder, tr.step)[0]
    assert not any(p.requires_grad for p in tr.codec.encoder.parameters())
    assert all(p.requires_grad for p in tr.codec.decoder.parameters())
    with pytest.raises(ConfigError, match="train.decoder_only_fraction"):
        load_config("tiny", ["train.decoder_only_fraction=1"])


def _harmonic_folder(root):
    root.mkdir(parents=True, exist_ok=True)
    rng, sr = np.random.default_rng(0), 24000
    t = np.arange(int(1.5 * sr)) / sr
    for i in range(12):
        f0 = rng.uniform(110, 330)
        x = sum((0.5 / k) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 8))
        sf.write(root / f"tone_{i:02d}.wav", (0.3 * x / np.abs(x).max()).astype(np.float32), sr)
    return root


@pytest.mark.parametrize("objective, bound", [("waveform", -15.0), ("mel_l1", -30.0)])
def test_waveform_objective_reconstructs_a_harmonic_signal(objective, bound, tmp_path):
    """150 steps of a small spectral codec on harmonic tones: with the waveform MSE and the phase-aware complex STFT
    term (balanced against mel) the held-out SI-SDR passes -15 dB (about -10 measured); the former mel + L1
    objective stays below -30 dB (about -50: the right spectrum with an unrelated phase)."""
    torch.manual_seed(0)
    base = ["model.encoder=stft", "model.decoder=istft", "model.spectral.hidden=64", "model.spectral.encoder_blocks=1",
            "model.spectral.decoder_blocks=2", "model.quantizer.kind=fsq", "model.quantizer.som=false",
            "model.quantizer.n_q=2", "train.discriminators=[]", "data.batch_size=4", "data.segment_seconds=0.5",
            "train.quantizer_warmup_steps=0", "train.steps=150", "train.lr=0.002", "train.weight_decay=0"]
    losses = {"waveform": ["loss.l1=0", "loss.mel=1", "loss.waveform_mse=2", "loss.complex_stft=2", "loss.balancer=true",
                           "loss.phase_max_hz=null"],  # the phase held at every frequency
              "mel_l1": ["loss.mel=1", "loss.l1=1", "loss.waveform_mse=0", "loss.complex_stft=0",
                         "loss.balancer=false"]}[objective]
    tr = Trainer(load_config("tiny", base + losses), _harmonic_folder(tmp_path / "tones"), tmp_path / "run",
                 progress=False)
    for s in range(150):
        tr.train_step(tr.batches[s])
    tr.codec.eval()
    with torch.no_grad():
        sdr = float(np.mean([float(si_sdr(tr.codec(w).recon, w).mean()) for w in tr.valid]))
    assert (sdr > bound) if objective == "waveform" else (sdr < bound), sdr
    assert math.isfinite(sdr)


def test_reconstruction_losses_leave_out_the_unfinished_overlap_add_tail(corpus, tmp_path, monkeypatch):
    """The iSTFT decoder cannot finish its last n_fft - hop samples of a crop (the next frame's overlap-add is
    missing), nor, looking one frame ahead as the default does, its last frame (its latents past the end are zeros):
    the reconstruction terms must not hold it to them, so changing only those samples leaves every reconstruction
    loss unchanged, while changing one sample before them moves it."""
    cfg = load_config("tiny", ["data.batch_size=2", "train.discriminators=[]", "loss.waveform_mse=1",
                               "loss.complex_stft=1", "loss.l1=1"])
    tr = Trainer(cfg, corpus, tmp_path, progress=False)
    tail = tr.codec.unfinished_tail
    dec, hop = tr.codec.decoder, tr.codec.hop_length
    assert dec.lookahead == 1
    assert tail == dec.n_fft - hop + hop > 0
    wav = tr.batches[0]
    seen = []
    original = StepContext.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self)

    monkeypatch.setattr(StepContext, "__init__", spy)
    tr.generator_losses(wav, adversarial=False)
    ctx = seen[-1]
    assert ctx.tail == tail and ctx.recon.shape[-1] == wav.shape[-1] - tail
    terms = {k: v for k, v in tr.loss_terms.items() if k in ("mel", "l1", "waveform_mse", "complex_stft")}
    base = {k: float(t(ctx)) for k, t in terms.items()}
    recon = ctx.out.recon.detach().clone()
    recon[..., -tail:] += 0.5
    ctx.out.recon = recon
    assert {k: float(t(ctx)) for k, t in terms.items()} == pytest.approx(base, rel=1e-6)
    recon[..., -tail - 1] += 0.5
    moved = {k: float(t(ctx)) for k, t in terms.items()}
    assert all(moved[k] != pytest.approx(base[k], rel=1e-6) for k in ("l1", "waveform_mse"))
