"""Tests for lib.analysis.evaluation: clip selection, the bitrate ladder, the metrics table, the rate-distortion figure."""
import csv
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import soundfile as sf
import torch

import lib.analysis.evaluation
from lib.build import build_codec
from lib.config import load_config
from lib.data.datasets import ClipSet, held_out_clips, split_of
from lib.analysis.evaluation import (
    ANCHOR,
    METRICS,
    REFERENCE,
    TABLE_COLUMNS,
    Ladder,
    bitrate_ladder,
    default_n_qs,
    evaluation_clips,
    metrics_table,
    summary_rows,
    summary_table,
    write_csv,
)
from lib.analysis.rate_distortion import METRIC_TITLES, rate_distortion_comment, rate_distortion_figure
from lib.analysis.mushra import HIDDEN_REFERENCE, MushraTest, mushra_trials, scripted_listener

SR = 24000  # the tiny preset's rate


def _tone_clip(seconds: float, f0: float, seed: int) -> torch.Tensor:
    """`[1, T]`: a harmonic tone with a little noise, different per seed."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    wav = sum(0.2 / k * torch.sin(2 * math.pi * f0 * k * t) for k in range(1, 6)) + 0.01 * torch.randn(t.shape, generator=g)
    return wav[None].float()


@pytest.fixture(scope="module")
def codec():
    cfg = load_config("tiny")  # n_q = 4, 64 codes, 75 frames/s: 450 bit/s per level
    return build_codec(cfg).eval()


@pytest.fixture(scope="module")
def ladder(codec):
    clips = {"low": _tone_clip(0.6, 150.0, 0), "high": _tone_clip(0.5, 440.0, 1)}
    return bitrate_ladder(codec, clips, n_qs=[1, 2, 4], opus_kbps=(6.0, 12.0))


def test_default_n_qs():
    assert default_n_qs(8) == [1, 2, 4, 8]
    assert default_n_qs(6) == [1, 2, 4, 6]
    assert default_n_qs(1) == [1]
    with pytest.raises(ValueError, match="n_q"):
        default_n_qs(0)


def test_ladder_systems_shapes_and_codec_bitrates(ladder):
    codec_systems = ["codec 0.45 kbps", "codec 0.9 kbps", "codec 1.8 kbps"]
    assert ladder.systems == [*codec_systems, ANCHOR, "mu-law 8-bit", "opus 6 kbps", "opus 12 kbps", "vorbis q-0.1"]
    assert list(ladder) == ["low", "high"]
    for clip, systems in ladder.items():
        assert list(systems)[0] == REFERENCE
        length = systems[REFERENCE].shape[-1]
        assert all(wav.shape == (1, length) and wav.dtype == torch.float32 for wav in systems.values())
        # n_q * log2(64) * 24000 / 320, by hand: 450, 900, 1800 bit/s, rising with n_q
        assert [ladder.bitrates[(clip, s)] for s in codec_systems] == [450.0, 900.0, 1800.0]
        assert [ladder.n_q[s] for s in codec_systems] == [1, 2, 4]
        assert ladder.bitrates[(clip, "mu-law 8-bit")] == 8 * SR
        assert ladder.bitrates[(clip, ANCHOR)] is None
        # Opus and Vorbis are measured per clip: near the asked rate, and more bits for a higher target.
        opus6, opus12 = ladder.bitrates[(clip, "opus 6 kbps")], ladder.bitrates[(clip, "opus 12 kbps")]
        assert 3000 < opus6 < opus12 < 20000
        assert ladder.bitrates[(clip, "vorbis q-0.1")] > opus6
    assert ladder.skipped == {}
    assert {ladder.family[s] for s in ladder.systems} == {"codec", "anchor", "mulaw", "opus", "vorbis"}


def test_ladder_codec_output_is_the_codec_reconstruction(codec, ladder):
    reference = ladder["low"][REFERENCE]
    with torch.inference_mode():
        expected = codec(reference[None], n_q=2).recon[0]
    torch.testing.assert_close(ladder["low"]["codec 0.9 kbps"], expected)


def test_ladder_rejects_bad_arguments(codec):
    clips = {"x": _tone_clip(0.2, 200.0, 0)}
    with pytest.raises(ValueError, match="n_qs"):
        bitrate_ladder(codec, clips, n_qs=[1, 5])
    with pytest.raises(ValueError, match="clips"):
        bitrate_ladder(codec, {})
    with pytest.raises(ValueError, match="mono"):
        bitrate_ladder(codec, {"stereo": torch.zeros(2, 100)}, n_qs=[1])


def test_ladder_reports_an_unavailable_codec(codec, monkeypatch):
    real = lib.analysis.evaluation.codec_roundtrip

    calls = {"VORBIS": 0}

    def no_vorbis(wav, sample_rate, fmt, subtype, level):
        if subtype == "VORBIS":
            calls["VORBIS"] += 1
            if calls["VORBIS"] == 2:  # works on the first clip, fails on the second
                raise ValueError("fmt/subtype OGG/VORBIS is not supported")
        return real(wav, sample_rate, fmt, subtype, level)

    monkeypatch.setattr(lib.analysis.evaluation, "codec_roundtrip", no_vorbis)
    with pytest.warns(RuntimeWarning, match="vorbis"):
        ladder = bitrate_ladder(codec, {"a": _tone_clip(0.3, 200.0, 0), "b": _tone_clip(0.3, 300.0, 1)},
                                n_qs=[1], opus_kbps=(6.0,))
    assert "VORBIS" in ladder.skipped["vorbis q-0.1"]
    assert "vorbis q-0.1" not in ladder.systems and "opus 6 kbps" in ladder.systems
    assert all("vorbis q-0.1" not in systems for systems in ladder.values())  # removed from the first clip too
    assert not any(system == "vorbis q-0.1" for _, system in ladder.bitrates)
    assert len(metrics_table(ladder, SR, perceptual=False)) == 2 * len(ladder.systems)


def test_metrics_table_one_row_per_clip_and_system(ladder):
    rows = metrics_table(ladder, SR, perceptual=False)
    pairs = [(r["clip"], r["system"]) for r in rows]
    assert len(pairs) == len(set(pairs)) == len(ladder) * len(ladder.systems)
    assert set(pairs) == {(c, s) for c in ladder for s in ladder.systems}
    assert all(tuple(r) == TABLE_COLUMNS for r in rows)
    assert all(math.isnan(r["pesq_wb"]) and math.isnan(r["stoi"]) for r in rows)
    assert all(math.isfinite(r["si_sdr"]) and r["mel_distance"] >= 0 for r in rows)
    # mu-law keeps the waveform (SI-SDR ~ 38 dB on these tones) far better than an untrained codec
    by = {(r["clip"], r["system"]): r for r in rows}
    assert by[("low", "mu-law 8-bit")]["si_sdr"] > 25 > by[("low", "codec 1.8 kbps")]["si_sdr"]
    with pytest.raises(ValueError, match="sample_rate"):
        metrics_table(ladder, 16000)


def test_metrics_table_hand_values():
    """A copy and a half-level copy: SI-SDR hits its 100 dB cap for both (scale-invariant); the STFT distance
    is 0 for the copy and ln 2 for the half-level copy; PESQ of a copy is the 4.64 ceiling."""
    reference = _tone_clip(1.0, 200.0, 3)
    ladder = Ladder(SR)
    ladder.setdefault("tone", {})[REFERENCE] = reference
    ladder.add("tone", "copy", reference.clone(), "test", 1000.0)
    ladder.add("tone", "half", 0.5 * reference, "test", 2000.0)
    rows = {r["system"]: r for r in metrics_table(ladder, SR, perceptual=True)}
    assert rows["copy"]["si_sdr"] == rows["half"]["si_sdr"] == 100.0
    assert rows["copy"]["stft_distance"] == pytest.approx(0.0, abs=1e-9)
    assert rows["half"]["stft_distance"] == pytest.approx(math.log(2.0), rel=1e-3)
    assert rows["copy"]["mel_distance"] == pytest.approx(0.0, abs=1e-6)
    assert rows["copy"]["pesq_wb"] == pytest.approx(4.64, abs=0.01)
    assert rows["copy"]["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert (rows["copy"]["bitrate"], rows["half"]["bitrate"]) == (1000.0, 2000.0)


def test_write_csv_round_trip(ladder, tmp_path):
    rows = metrics_table(ladder, SR, perceptual=False)
    path = write_csv(rows, tmp_path / "sub" / "metrics.csv")
    with open(path, newline="") as f:
        back = list(csv.DictReader(f))
    assert tuple(back[0]) == TABLE_COLUMNS and len(back) == len(rows)
    anchor = next(r for r in back if r["system"] == ANCHOR)
    assert anchor["bitrate"] == "" and anchor["n_q"] == ""
    assert float(back[0]["si_sdr"]) == pytest.approx(rows[0]["si_sdr"])
    with pytest.raises(ValueError, match="empty"):
        write_csv([], tmp_path / "x.csv")


def test_summary_table_means_over_clips(ladder):
    rows = metrics_table(ladder, SR, perceptual=False)
    text = summary_table(rows)
    line = next(l for l in text.splitlines() if "mu-law 8-bit" in l)
    mean_si_sdr = np.mean([r["si_sdr"] for r in rows if r["system"] == "mu-law 8-bit"])
    assert line.split()[:2] == ["unlabelled", "(2)"]  # a plain dict of clips carries no kinds
    assert line.split()[4] == "192.00" and float(line.split()[5]) == pytest.approx(mean_si_sdr, abs=1e-3)


@pytest.fixture(scope="module")
def kinds_ladder(codec):
    """Two speech clips (one of them 0.18 s, too short for PESQ and STOI) and a music clip."""
    clips = ClipSet({"talk": "speech", "blip": "speech", "song": "music"})
    clips.update(talk=_tone_clip(1.0, 150.0, 0), blip=_tone_clip(0.18, 300.0, 1), song=_tone_clip(0.6, 440.0, 2))
    return bitrate_ladder(codec, clips, n_qs=[1, 4], opus_kbps=(6.0,), vorbis=False)


def test_clips_are_reported_by_kind_and_short_clips_say_why(kinds_ladder):
    rows = metrics_table(kinds_ladder, SR)  # a 0.18 s clip: NaN with a reason, not the crash of a PESQ call
    by = {(r["clip"], r["system"]): r for r in rows}
    assert by[("blip", "codec 1.8 kbps")]["kind"] == "speech"
    assert by[("blip", "codec 1.8 kbps")]["seconds"] == pytest.approx(0.18)
    assert math.isnan(by[("blip", "codec 1.8 kbps")]["pesq_wb"]) and math.isnan(by[("blip", ANCHOR)]["stoi"])
    assert math.isfinite(by[("talk", "codec 1.8 kbps")]["stoi"])
    assert math.isnan(by[("song", "mu-law 8-bit")]["pesq_wb"])  # a speech metric, not computed on music
    summary = {(r["clips"], r["system"]): r for r in summary_rows(rows)}
    assert list(dict.fromkeys(r["clips"] for r in summary_rows(rows))) == ["speech (2)", "other sounds (1)"]
    assert summary[("other sounds (1)", "mu-law 8-bit")]["pesq_wb"] == "n/a (not speech)"
    talk = by[("talk", "mu-law 8-bit")]
    assert summary[("speech (2)", "mu-law 8-bit")]["stoi"] == pytest.approx(talk["stoi"])  # the blip's NaN left out
    assert summary[("speech (2)", "mu-law 8-bit")]["si_sdr"] == pytest.approx(
        np.mean([by[(c, "mu-law 8-bit")]["si_sdr"] for c in ("talk", "blip")]))
    only_blip = [r for r in rows if r["clip"] == "blip"]
    assert {r["pesq_wb"] for r in summary_rows(only_blip)} == {"n/a (0.18 s < 0.25 s)"}
    assert {r["stoi"] for r in summary_rows(only_blip)} == {"n/a (0.18 s < 0.41 s)"}
    comment = rate_distortion_comment(rows)
    assert comment.startswith("Speech (2 clips): ") and "Other sounds (1 clips): " in comment


def test_rate_distortion_figure(ladder):
    rows = metrics_table(ladder, SR, perceptual=False)
    fig = rate_distortion_figure(rows)
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == [METRIC_TITLES[m] for m in METRICS]
    for ax in panels[:3]:
        assert ax.get_xscale() == "log" and "kb/s" in ax.get_xlabel() and "better" in ax.get_ylabel()
    for ax in panels[3:]:  # perceptual=False: PESQ and STOI are NaN, said so rather than plotted
        assert [t.get_text() for t in ax.texts] == ["not computed"] and not ax.get_lines()
    ax = panels[0]  # SI-SDR
    by_colour = {}
    for line in ax.get_lines():
        by_colour.setdefault(matplotlib.colors.to_hex(line.get_color()), []).append(line)
    (codec,) = by_colour[matplotlib.colors.to_hex("tab:blue")]
    assert list(codec.get_xdata()) == [0.45, 0.9, 1.8]  # kb/s, rising with n_q
    means = [np.mean([r["si_sdr"] for r in rows if r["n_q"] == n]) for n in (1, 2, 4)]
    np.testing.assert_allclose(codec.get_ydata(), means)
    (mulaw,) = by_colour[matplotlib.colors.to_hex("tab:purple")]
    assert mulaw.get_linestyle() == "None" and list(mulaw.get_xdata()) == [192.0]  # a marker, not a line
    (anchor,) = by_colour[matplotlib.colors.to_hex("0.4")]
    assert list(anchor.get_ydata()) == [pytest.approx(np.mean([r["si_sdr"] for r in rows if r["system"] == ANCHOR]))] * 2
    legend_texts = [t.get_text() for legend in fig.axes[len(METRICS)].get_children()
                    if isinstance(legend, matplotlib.legend.Legend) for t in legend.get_texts()]
    assert "codec (labels: n_q)" in legend_texts and f"{ANCHOR} (anchor, no bitrate)" in legend_texts
    assert "unlabelled (2)" in legend_texts
    # Non-blank: rendered pixels vary, and the codec line's colour is in the picture.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    plt.close(fig)
    image = plt.imread(io.BytesIO(buffer.getvalue()))[..., :3]
    assert image.std() > 0.05
    blue = np.array(matplotlib.colors.to_rgb("tab:blue"))
    assert (np.abs(image - blue).sum(-1) < 0.05).sum() > 50
    with pytest.raises(ValueError, match="empty"):
        rate_distortion_figure([])


def test_rate_distortion_figure_draws_each_kind_apart(kinds_ladder):
    rows = metrics_table(kinds_ladder, SR)
    fig = rate_distortion_figure(rows)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.axison}
    blue = matplotlib.colors.to_hex("tab:blue")

    def codec_lines(title):
        return [line for line in panels[title].get_lines() if matplotlib.colors.to_hex(line.get_color()) == blue]

    assert [line.get_linestyle() for line in codec_lines("SI-SDR")] == ["-", ":"]  # speech, other sounds
    assert [line.get_linestyle() for line in codec_lines(METRIC_TITLES["stoi"])] == ["-"]  # speech only
    plt.close(fig)


def test_mushra_trials_and_scripted_listener(ladder, tmp_path):
    trials = mushra_trials(ladder, ["codec 0.45 kbps", ANCHOR])
    assert [t["name"] for t in trials] == ["low", "high"]
    assert all(list(t["systems"]) == ["codec 0.45 kbps", ANCHOR] for t in trials)
    assert trials[0]["reference"] is ladder["low"][REFERENCE]
    assert len(mushra_trials(ladder)[0]["systems"]) == len(ladder.systems)
    with pytest.raises(ValueError, match="not in the ladder"):
        mushra_trials(ladder, ["opus 3 kbps"])
    assert [t["name"] for t in mushra_trials(ladder, clips=["high"])] == ["high"]
    with pytest.raises(ValueError, match=r"clips \['mid'\] are not in the ladder"):
        mushra_trials(ladder, clips=["mid"])
    test = MushraTest(trials, SR, tmp_path / "m.csv", "robot", anchor_name=ANCHOR, seed=0)
    test.score_with(*scripted_listener("mel_distance"))
    with open(tmp_path / "m.csv", newline="") as f:
        scores = {(r["trial"], r["system"]): int(r["score"]) for r in csv.DictReader(f)}
    assert len(scores) == 2 * 3  # codec, anchor, hidden reference per trial: no extra anchor added
    assert scores[("low", HIDDEN_REFERENCE)] == scores[("high", HIDDEN_REFERENCE)] == 100  # mel distance 0
    with pytest.raises(ValueError, match="scripted listener"):
        scripted_listener("loudness")


def _write(path, wav: torch.Tensor, sample_rate: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav[0].numpy(), sample_rate)


def test_evaluation_clips_from_a_folder(tmp_path):
    folder = tmp_path / "mine"
    _write(folder / "a.wav", _tone_clip(2.0, 200.0, 0))
    _write(folder / "b" / "c.flac", _tone_clip(0.5, 300.0, 1)[:, ::3], 8000)  # 0.5 s at 8 kHz, resampled on load
    (folder / "broken.wav").write_bytes(b"not audio")
    _write(folder / "d.wav", _tone_clip(1.0, 400.0, 2))
    with pytest.warns(RuntimeWarning, match="broken.wav"):
        clips = evaluation_clips(tmp_path, SR, n_clips=3, clip_seconds=1.0, clips_folder=folder)
    assert list(clips) == ["a", "b/c", "d"]
    assert clips["a"].shape == (1, SR)  # cut to clip_seconds
    assert clips["b/c"].shape == (1, SR // 2)  # shorter clips stay whole
    assert list(evaluation_clips(tmp_path, SR, n_clips=1, clip_seconds=None, clips_folder=folder)) == ["a"]
    with pytest.warns(RuntimeWarning, match="broken.wav"):
        labelled = evaluation_clips(tmp_path, SR, n_clips=3, clips_folder=folder, kinds={"b/*": "music", "*": "speech"})
    assert labelled.kinds == {"a": "speech", "b/c": "music", "d": "speech"}
    with pytest.raises(ValueError, match="no readable audio"):
        (tmp_path / "empty").mkdir()
        evaluation_clips(tmp_path, SR, clips_folder=tmp_path / "empty")


def test_evaluation_clips_are_the_held_out_clips(tmp_path):
    # File names chosen by their (hash-based) split: two valid clips, one test clip, the rest train.
    names = [f"speech/clip{i:03d}.wav" for i in range(400)]
    by_split = {s: [n for n in names if split_of(n) == s] for s in ("train", "valid", "test")}
    chosen = by_split["valid"][:2] + by_split["test"][:1] + by_split["train"][:3]
    for i, name in enumerate(chosen):
        _write(tmp_path / name, _tone_clip(1.5, 200.0 + 50 * i, i))
    clips = evaluation_clips(tmp_path, SR, n_clips=4, clip_seconds=1.0)
    assert clips.keys() == held_out_clips(tmp_path, SR, 4, 1.0).keys()  # the trainer's validation set
    assert set(clips) == {n[: -len(".wav")] for n in chosen[:2]}  # the valid split; never train while it has clips
    assert all(wav.shape == (1, SR) for wav in clips.values())
    assert set(evaluation_clips(tmp_path, SR, n_clips=1)) == {sorted(chosen[:2])[0][: -len(".wav")]}


def test_summarize_keeps_one_session(ladder, tmp_path):
    """The notebook's headless summary: only this run's scripted rows, although the CSV holds earlier runs."""
    from lib.analysis.mushra import summarize

    path = tmp_path / "m.csv"
    trials = mushra_trials(ladder, ["codec 0.45 kbps", ANCHOR])
    first = MushraTest(trials, SR, path, "robot", anchor_name=ANCHOR, seed=0)
    first.score_with(*scripted_listener("mel_distance"))
    second = MushraTest(trials, SR, path, "robot", anchor_name=ANCHOR, seed=1)
    second.score_with(*scripted_listener("si_sdr"))
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["session_id"] == second.session_id]
    expected = np.mean([int(r["score"]) for r in rows if r["system"] == "codec 0.45 kbps"])
    summary = summarize(path, simulated=True, session_id=second.session_id)
    assert summary["codec 0.45 kbps"]["n"] == 2 and summary["codec 0.45 kbps"]["mean"] == expected
    assert summarize(path, simulated=True)["codec 0.45 kbps"]["n"] == 4
    assert summarize(path, session_id="nobody") == {}


def test_opus_runs_as_users_run_it_or_says_why_not(codec, monkeypatch):
    import lib.analysis.evaluation as evaluation

    clips = {"x": _tone_clip(1.0, 200.0, 0)}
    if evaluation.opus_tools_unavailable() is None:
        ladder = bitrate_ladder(codec, clips, n_qs=[1], opus_kbps=(6.0,), vorbis=False)
        expected, bits = evaluation.opus_tools_roundtrip(clips["x"], SR, 6.0)  # deterministic
        torch.testing.assert_close(ladder["x"]["opus 6 kbps"], expected)
        assert ladder.bitrates[("x", "opus 6 kbps")] == bits and "opusenc" not in ladder.skipped
    monkeypatch.setattr(evaluation, "opus_tools_unavailable", lambda: "opusenc and opusdec not found on PATH")
    ladder = bitrate_ladder(codec, clips, n_qs=[1], opus_kbps=(6.0,), vorbis=False)
    assert "opus 6 kbps" in ladder.systems  # through libsndfile instead, and said so
    assert ladder.skipped["opusenc"].startswith("opusenc and opusdec not found on PATH; Opus runs through libsndfile")


@pytest.mark.skipif(lib.analysis.evaluation.dnsmos_unavailable() is not None, reason="DNSMOS packages not installed")
def test_speech_gets_dnsmos_and_its_original_the_ceiling_row(codec, human_speech):
    import torchaudio

    talk = torchaudio.functional.resample(human_speech[:32000], 16000, SR)[None].float()  # 2 s of a human voice
    clips = ClipSet({"talk": "speech", "song": "music"})
    clips.update(talk=talk, song=_tone_clip(1.5, 300.0, 1))
    rows = metrics_table(bitrate_ladder(codec, clips, n_qs=[4], opus_kbps=(), vorbis=False, mulaw=False), SR)
    by = {(r["clip"], r["system"]): r for r in rows}
    original = by[("talk", REFERENCE)]
    assert original["family"] == "reference" and math.isnan(original["si_sdr"]) and math.isnan(original["pesq_wb"])
    assert 1.0 <= original["dnsmos_ovrl"] <= 5.0 and 1.0 <= original["dnsmos_p808"] <= 5.0
    codec_row = by[("talk", "codec 1.8 kbps")]  # an untrained codec: perceived as far worse than the recording
    assert codec_row["dnsmos_p808"] < original["dnsmos_p808"] - 0.5
    assert ("song", REFERENCE) not in by and math.isnan(by[("song", "codec 1.8 kbps")]["dnsmos_ovrl"])
    summary = {(r["clips"], r["system"]): r for r in summary_rows(rows)}
    assert summary[("speech (1)", REFERENCE)]["si_sdr"] == "-"
    assert summary[("other sounds (1)", "codec 1.8 kbps")]["dnsmos_ovrl"] == "n/a (not speech)"
