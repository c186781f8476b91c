"""The quality race (bench/quality.py): per-level code statistics, and evaluation that survives a diverged codec."""
import math
import sys
from pathlib import Path
from argparse import Namespace
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quality  # noqa: E402
from quality import evaluate, level_usage  # noqa: E402

from lib.analysis.metrics import dnsmos_unavailable, stoi  # noqa: E402
from lib.build import build_codec  # noqa: E402
from lib.config import load_config  # noqa: E402
from lib.data.corpus import build_default_corpus  # noqa: E402
from lib.training.checkpoint import load_codec  # noqa: E402

FSQ = ["model.quantizer.kind=fsq", "model.quantizer.som=false", "model.quantizer.n_q=2",
       "model.quantizer.fsq_levels=[4, 3]"]


def _with_codes(codec, codes):
    """The codec, its encoder replaced by one returning ``codes [1, n_q, F]`` for any clip."""
    codec.encode = lambda wav: codes
    return codec


def test_level_usage_counts_codes_and_fsq_levels_per_dimension():
    codec = build_codec(load_config("tiny", FSQ))
    every = torch.arange(12)  # all 4 x 3 codes
    only_zero = torch.zeros(12, dtype=torch.long)
    clips = [("a", "speech", torch.zeros(1, 1, 320))] * 2
    rows = level_usage(_with_codes(codec, torch.stack([every, only_zero])[None]), clips)
    assert [r["frames"] for r in rows] == [24, 24]
    assert rows[0]["codes_used"] == 12 and rows[0]["usage"] == 1.0
    assert rows[0]["perplexity"] == pytest.approx(12.0)
    assert rows[0]["scalar_usage"] == 1.0
    # one code: one of 4 levels in the first dimension, one of 3 in the second
    assert rows[1]["codes_used"] == 1 and rows[1]["perplexity"] == pytest.approx(1.0)
    assert rows[1]["scalar_usage"] == pytest.approx((1 / 4 + 1 / 3) / 2)


def test_level_usage_of_a_residual_vq_has_no_scalar_usage():
    codec = build_codec(load_config("tiny"))
    k = codec.quantizer.codebook_size
    codes = torch.stack([torch.arange(k) % 8 for _ in range(codec.quantizer.n_q)])[None]
    rows = level_usage(_with_codes(codec, codes), [("a", "other", torch.zeros(1, 1, 320))])
    assert len(rows) == codec.quantizer.n_q
    assert all(r["codes_used"] == 8 and r["perplexity"] == pytest.approx(8.0) for r in rows)
    assert all("scalar_usage" not in r for r in rows)


class _Echo:
    """A stand-in codec: returns its input, or NaN samples once ``broken``."""

    broken = False

    def __call__(self, wav, n_q=None, bypass_quantizer=False):
        return SimpleNamespace(recon=torch.full_like(wav, math.nan) if self.broken else wav.clone())

    def eval(self):
        return self

    def train(self):
        return self

    def bitrate(self, n_q):
        return 750.0 * n_q


def test_evaluate_gives_nan_rows_for_a_diverged_codec_instead_of_raising():
    t = torch.arange(24000) / 24000
    clips = [("speech/a", "speech", (0.3 * torch.sin(2 * math.pi * 220 * t)).view(1, 1, -1))]
    codec = _Echo()
    good = evaluate(codec, clips, 24000, [1, 2], pesq=False)
    assert [r["n_q"] for r in good] == [1, 2] and good[1]["kbps"] == 1.5
    assert good[0]["si_sdr"] >= 99 and good[0]["mel_distance"] == pytest.approx(0.0, abs=1e-6)
    codec.broken = True
    bad = evaluate(codec, clips, 24000, [1, 2], pesq=False)
    assert set(bad[0]) == set(good[0])  # the same columns, so the CSV keeps its shape
    assert all(math.isnan(r[k]) for r in bad for k in ("si_sdr", "mel_distance", "stoi", "pesq_wb"))


def test_band_diagnostics_of_a_perfect_and_a_low_passing_codec():
    t = torch.arange(24000) / 24000
    wav = 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.1 * torch.sin(2 * math.pi * 3300 * t)
    clips = [("speech/a", "speech", wav.view(1, 1, -1))]
    levels, swaps = quality.band_diagnostics(_Echo(), clips, 24000, pesq=False)
    assert [r["kind"] for r in levels] == ["speech"] and abs(levels[0]["0-500 Hz"]) < 1e-6
    assert all(r["stoi"] > 0.99 for r in swaps)  # the codec's own spectrum is the input's: every hybrid is clean

    class LowPass(_Echo):  # keeps only the 220 Hz tone
        def __call__(self, wav, **kw):
            return SimpleNamespace(recon=0.3 * torch.sin(2 * math.pi * 220 * t).view(1, 1, -1))

    levels, swaps = quality.band_diagnostics(LowPass(), clips, 24000, pesq=False)
    assert levels[0]["2000-4000 Hz"] < -60  # the band it leaves out (float32 leakage of the 220 Hz tone)
    by = {(r["band"], r["codec gives"]): r["stoi"] for r in swaps}
    assert by[(">2000 Hz", "both")] < 0.9 < by[("0-500 Hz", "both")]  # the loss sits above 2 kHz
    assert by[(">2000 Hz", "magnitude")] == pytest.approx(by[(">2000 Hz", "both")], abs=0.01)  # ~nothing, any phase
    assert by[(quality.ENVELOPE_SWAP_BAND, "fine structure")] < 0.9  # no detail up there for levels to restore

    class Pumping(_Echo):  # the input's own detail, its level 20 dB down every other 50 ms: a wrong envelope
        def __call__(self, wav, **kw):
            return SimpleNamespace(recon=wav * (1 - 0.9 * ((t * 20).floor() % 2)))

    noise = 0.1 * torch.randn(24000, generator=torch.Generator().manual_seed(0))
    _, swaps = quality.band_diagnostics(Pumping(), [("speech/n", "speech", noise.view(1, 1, -1))], 24000, pesq=False)
    by = {(r["band"], r["codec gives"]): r["stoi"] for r in swaps}
    pumped = stoi(Pumping()(noise).recon, noise, 24000)  # 0.39
    assert by[(quality.ENVELOPE_SWAP_BAND, "fine structure")] > max(0.85, pumped + 0.4)  # the levels restore it


def test_a_step_budget_race_evaluates_at_each_mark_and_leaves_no_run_folder(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    build_default_corpus(corpus, minutes=0.4, sources="synthetic", progress=False)
    written, made = {}, []
    monkeypatch.setattr(quality, "write_csv", lambda rows, name: written.__setitem__(name, list(rows)))
    mkdtemp = quality.tempfile.mkdtemp
    monkeypatch.setattr(quality.tempfile, "mkdtemp", lambda **kw: made.append(mkdtemp(**kw)) or made[-1])
    args = Namespace(systems=["tiny"], data=str(corpus), split="valid", also_split="test", steps=2, eval_steps=[1, 2],
                     device="cpu", ceiling=True, no_pesq=True, no_dnsmos=True, out="race",
                     set=["data.batch_size=2", "model.quantizer.n_q=2", "train.quantizer_warmup_steps=0",
                          "train.stft_n_ffts=[256]"])
    clips = [("speech/a", "speech", torch.randn(1, 1, 12000) * 0.1), ("other/b", "other", torch.randn(1, 1, 12000))]
    extra = [("speech/c", "speech", torch.randn(1, 1, 12000) * 0.1)]
    every = quality.race(args, clips, extra)
    rows = [r for r in every if r["split"] == "valid"]
    # the other split, scored at the same marks: its rows apart, its numbers its own clip's
    other = [r for r in every if r["split"] == "test"]
    assert [(r["step"], r["n_q"], r["kind"]) for r in other] == [(s, q, "speech") for s in (1, 2) for q in (1, 2, 0)]
    speech = [r for r in rows if r["kind"] == "speech"]
    assert all(o["mel_distance"] != r["mel_distance"] for o, r in zip(other, speech))
    # one row per (mark, n_q in 1, 2, 0, kind): the ladder plus the unquantized ceiling, speech and other apart
    assert sorted({(r["step"], r["n_q"]) for r in rows}) == [(s, q) for s in (1, 2) for q in (0, 1, 2)]
    assert len(rows) == 2 * 3 * 2 and {r["kind"] for r in rows} == {"speech", "other"}
    assert all(math.isfinite(r["mel_distance"]) and math.isnan(r["pesq_wb"]) for r in rows)
    assert written["race"] == every  # the table is rewritten after each evaluation: nothing lost if cut short
    assert [r["level"] for r in written["race_levels"]] == [0, 1]
    bands = written["race_bands"]  # one row per kind, a level in dB per band, after the last evaluation
    assert [(r["kind"], r["clips"], r["step"]) for r in bands] == [("speech", 1, 2), ("other", 1, 2)]
    assert all(math.isfinite(r[">8000 Hz"]) for r in bands) and len(bands[0]) == 4 + 6
    swaps = written["race_swaps"]  # speech only: 3 bands x (magnitude, phase, both), then the envelope swap
    assert [(r["band"], r["codec gives"]) for r in swaps] == [
        (b, p) for b in ("0-500 Hz", "500-2000 Hz", ">2000 Hz") for p in ("magnitude", "phase", "both")] + [
        (quality.ENVELOPE_SWAP_BAND, "fine structure")]
    assert all(r["clips"] == 1 and math.isnan(r["pesq_wb"]) and 0 <= r["stoi"] <= 1 for r in swaps)
    assert len(made) == 1 and not Path(made[0]).exists()  # the trainer's folder is removed at the end


def test_a_race_with_keep_saves_a_checkpoint_per_mark_that_scores_like_the_race(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    build_default_corpus(corpus, minutes=0.4, sources="synthetic", progress=False)
    monkeypatch.setattr(quality, "write_csv", lambda rows, name: None)
    args = Namespace(systems=["tiny"], data=str(corpus), split="valid", also_split=None, steps=3, eval_steps=[1, 3],
                     device="cpu", ceiling=False, no_pesq=True, no_dnsmos=True, out="race", keep=str(tmp_path / "kept"),
                     set=["data.batch_size=2", "model.quantizer.n_q=2", "train.quantizer_warmup_steps=0",
                          "train.stft_n_ffts=[256]"])
    clips = [("speech/a", "speech", torch.randn(1, 1, 12000, generator=torch.Generator().manual_seed(1)) * 0.1)]
    rows = quality.race(args, clips)
    kept = tmp_path / "kept" / "tiny"
    assert sorted(p.name for p in kept.glob("step*.pt")) == ["step1.pt", "step3.pt"]
    codec, _ = load_codec(kept / "step3.pt")  # the codec the race scored at its last mark
    again = quality.evaluate(codec, clips, 24000, [1, 2], pesq=False)
    last = [r for r in rows if r["step"] == 3]
    assert [r["mel_distance"] for r in again] == pytest.approx([r["mel_distance"] for r in last], rel=1e-5)
    args.systems = ["tiny", "some/where/tiny.yml"]  # one folder for two systems: refused before any training
    with pytest.raises(ValueError, match="tiny.yml.*share a run folder"):
        quality.race(args, clips)


def test_a_system_named_by_a_yaml_path_is_labelled_by_its_file_name(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    build_default_corpus(corpus, minutes=0.4, sources="synthetic", progress=False)
    monkeypatch.setattr(quality, "write_csv", lambda rows, name: None)
    variant = tmp_path / "deep" / "folder" / "variant.yml"
    variant.parent.mkdir(parents=True)
    variant.write_text("base: tiny\nloss:\n  stft_hop_fraction: 0.5\n")
    args = Namespace(systems=[str(variant)], data=str(corpus), split="valid", also_split=None, steps=1,
                     eval_steps=[1], device="cpu", ceiling=False, no_pesq=True, no_dnsmos=True, out="race",
                     set=["data.batch_size=2", "model.quantizer.n_q=2", "train.quantizer_warmup_steps=0",
                          "train.stft_n_ffts=[256]"])
    clips = [("speech/a", "speech", torch.randn(1, 1, 12000) * 0.1)]
    rows = quality.race(args, clips)
    assert rows and {r["system"] for r in rows} == {"variant.yml"}  # no folder of this machine in the tables
    assert quality.system_label("default") == "default" and quality.system_label("a/b.yaml") == "b.yaml"


@pytest.mark.parametrize("minutes, steps, sets, budget, expected", [
    (120.0, None, [], None, ["train.steps=18000"]),  # --long: 4 x the 30-minute schedule
    (120.0, None, [], 30.0, ["train.steps=18000", "train.minutes=120.0"]),  # and the preset's time budget with it
    (30.0, None, [], None, []),  # the presets' own budget: their own schedule
    (30.0, None, [], 30.0, []),  # ... and their own time budget
    (10.0, None, [], None, []),  # shorter: checkpoints along the preset's run
    (120.0, None, ["train.steps = 20500"], None, []),  # named by --set: left to it
    (120.0, 600, [], None, ["train.steps=600", "train.minutes=null"]),  # a step budget, never cut by a clock
    (120.0, 600, [], 30.0, ["train.steps=600", "train.minutes=null"]),
])
def test_a_longer_time_budget_stretches_the_schedule(minutes, steps, sets, budget, expected):
    args = Namespace(minutes=minutes, steps=steps, set=sets)
    assert quality.schedule_overrides(args, Namespace(steps=4500, minutes=budget)) == expected


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="espeak-ng is not installed")
def test_extra_speech_is_new_deterministic_speech_the_race_can_score(tmp_path):
    import extra_speech
    from lib.data.espeak_text import ENGLISH_SENTENCES, OTHER_SENTENCES

    corpus_sentences = set(ENGLISH_SENTENCES) | {t for ts in OTHER_SENTENCES.values() for t in ts}
    assert not set(extra_speech.SENTENCES) & corpus_sentences  # sentences the corpus never speaks
    a = extra_speech.make_utterances(tmp_path / "a", n=2)
    b = extra_speech.make_utterances(tmp_path / "b", n=2)
    assert [p.name for p in a] == [p.name for p in b] and all(p.read_bytes() == q.read_bytes() for p, q in zip(a, b))
    clips = extra_speech.load_clips(tmp_path / "a", 24000, seconds=1.0)
    assert len(clips) == 2 and all(k == "speech" and w.shape == (1, 1, 24000) for _, k, w in clips)
    assert all(float(w.abs().max()) > 0.1 for _, _, w in clips)
    with pytest.raises(FileNotFoundError, match="no .wav files"):
        extra_speech.load_clips(tmp_path, 24000)


def test_extra_speech_scoring_without_a_clip_folder_is_a_clear_error(capsys):
    import extra_speech

    with pytest.raises(SystemExit):
        extra_speech.main(["some/checkpoint.pt"])
    assert "need --clips DIR" in capsys.readouterr().err


def test_score_mode_scores_saved_checkpoints_without_training(tmp_path, monkeypatch, capsys):
    from lib.training.checkpoint import save_checkpoint

    cfg = load_config("tiny", ["model.quantizer.n_q=2"])
    torch.manual_seed(0)
    codec = build_codec(cfg).eval()
    path = save_checkpoint(tmp_path / "a.pt", config=cfg.to_dict(), step=3, model={"codec": codec.state_dict()})
    clips = [("speech/a", "speech", torch.randn(1, 1, 12000) * 0.1), ("other/b", "other", torch.randn(1, 1, 12000))]
    asked, written = [], {}
    monkeypatch.setattr(quality, "held_out", lambda data, split, sr, seconds: asked.append((split, sr)) or clips)
    monkeypatch.setattr(quality, "write_csv", lambda rows, name: written.__setitem__(name, list(rows)))
    monkeypatch.setattr(quality, "set_threads", lambda n: None)
    monkeypatch.setattr(quality, "baselines", lambda clips, sr, pesq, dnsmos: [{"system": "opus 6 kbps"}])
    assert quality.main(["--score", str(path), str(path), "--split", "test", "--ceiling", "--no-pesq",
                         "--no-dnsmos"]) == 0
    assert asked == [("test", cfg.data.sample_rate)]  # the clips are read once for both checkpoints
    assert written["scores"][0] == {"system": "opus 6 kbps", "split": "test"}  # the baselines, scored once
    rows = written["scores"][1:]
    assert [(r["n_q"], r["kind"]) for r in rows[:6]] == [(q, k) for q in (1, 2, 0) for k in ("speech", "other")]
    assert len(rows) == 12 and {r["system"] for r in rows} == {str(path)} and {r["split"] for r in rows} == {"test"}
    direct = evaluate(codec, clips, cfg.data.sample_rate, [1, 2, 0], pesq=False)  # the saved weights, not new ones
    assert [r["mel_distance"] for r in rows[:6]] == pytest.approx([r["mel_distance"] for r in direct])
    assert [r["level"] for r in written["scores_levels"]] == [0, 1, 0, 1]
    # every clip's own scores too, for paired comparisons: their means are the rows'
    per_clip = written["scores_clips"]
    assert len(per_clip) == 2 * 3 * 2 and {r["clip"] for r in per_clip} == {"speech/a", "other/b"}
    mine = [r for r in per_clip if r["n_q"] == 1 and r["kind"] == "speech"]
    assert [r["mel_distance"] for r in mine] == pytest.approx([rows[0]["mel_distance"]] * 2)
    assert "| system | split |" in capsys.readouterr().out


def test_score_mode_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        quality.main(["--score", str(tmp_path / "nothing.pt")])
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "nothing.pt" in err


@pytest.mark.parametrize("out", ["bench/results/mine.csv", "mine.csv", "/tmp/mine"])
def test_out_is_a_name_not_a_path(tmp_path, capsys, out):
    with pytest.raises(SystemExit):  # refused before anything is scored, so no work is lost to a bad name
        quality.main(["--score", str(tmp_path / "nothing.pt"), "--out", out])
    err = capsys.readouterr().err
    assert "--out is a name, not a path" in err and repr(out) in err


@pytest.mark.skipif(quality.opus_tools_unavailable() is not None or dnsmos_unavailable() is not None,
                    reason="opus-tools or the DNSMOS packages are not installed")
def test_baselines_score_the_originals_and_opus_on_the_race_clips(human_speech):
    sample_rate = 16000  # the fixture's
    clip = human_speech[: 3 * sample_rate].float().view(1, 1, -1)
    clips = [("speech/a", "speech", clip), ("other/b", "other sounds", torch.randn(1, 1, clip.shape[-1]) * 0.1)]
    rows = quality.baselines(clips, sample_rate, pesq=True, dnsmos=True)
    by = {r["system"]: r for r in rows}
    assert list(by) == ["original", "opus 6 kbps", "opus 8 kbps"] and {r["kind"] for r in rows} == {"speech"}
    assert by["original"]["pesq_wb"] == pytest.approx(4.64, abs=0.01)  # the reference against itself
    assert 1.0 < by["opus 6 kbps"]["dnsmos_ovrl"] <= 5.0 and by["opus 6 kbps"]["pesq_wb"] < by["opus 8 kbps"]["pesq_wb"]
    assert 4.0 < by["opus 6 kbps"]["kbps"] < 8.0 and by["opus 6 kbps"]["kbps"] < by["opus 8 kbps"]["kbps"]



@pytest.mark.parametrize("n_q,ceiling,expected", [(8, False, [1, 2, 4, 8]), (6, False, [1, 2, 3, 4, 6]),
                                                  (4, True, [1, 2, 4, 0]), (1, False, [1]), (3, False, [1, 2, 3])])
def test_ladder_holds_the_full_bitrate_and_half_of_it(n_q, ceiling, expected):
    # powers of two up to n_q, plus n_q and n_q // 2 (where DNSMOS is scored), then the unquantized rung
    assert quality.ladder(n_q, ceiling) == expected


def test_race_figure_draws_each_system_at_its_own_full_bitrate():
    # a codec of 8 levels at 75 Hz and one of 6 levels at 100 Hz are both 6 kbps: each is drawn at its top rung
    rows = [dict(system=s, kind=k, minutes=m, n_q=n, kbps=n * 10 * rate / 1000, pesq_wb=1.0 + n / 10, stoi=0.5,
                 si_sdr=1.0, mel_distance=1.0)
            for s, top, rate in (("a", 8, 75), ("b", 6, 100)) for n in (top // 2, top)
            for k in ("speech", "synthetic speech") for m in (15.0, 15.01)]
    fig = quality.race_figure(rows)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert sorted(lines) == ["a, speech", "a, synthetic speech", "b, speech", "b, synthetic speech"]
    assert list(lines["a, speech"].get_ydata()) == [1.8, 1.8] and list(lines["b, speech"].get_ydata()) == [1.6, 1.6]
    assert "6 kbps" in fig._suptitle.get_text()
    assert fig.axes[0].xaxis.get_major_formatter().get_useOffset() is False
