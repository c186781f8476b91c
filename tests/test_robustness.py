"""Nothing lost, nothing silent: bad data, bad settings, kills and bad codes (issue 13). Each test fails on the
code before its fix."""
import math
import os
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from lib.build import build_codec
from lib.config import ConfigError, load_config


# ----------------------------------------------------------------------------- 10. settings


@pytest.mark.parametrize("override, key", [
    ("train.grad_clip=-1", "train.grad_clip"), ("train.grad_clip=.nan", "train.grad_clip"),
    ("data.valid_clips=0", "data.valid_clips"), ("data.batch_size=0", "data.batch_size"),
    ("data.valid_seconds=0", "data.valid_seconds"), ("train.betas=[0.5]", "train.betas"),
    ("train.lr=-1", "train.lr"), ("train.disc_lr=0", "train.disc_lr"), ("train.lr=.inf", "train.lr"),
    ("train.steps.x=1", "train.steps"), ("train.max_bad_steps=0", "train.max_bad_steps"),
])
def test_bad_settings_are_config_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("tiny", [override])


# ----------------------------------------------------------------------------- 11. codec API


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return build_codec(load_config("tiny")).eval()


def test_non_finite_audio_is_refused_by_encode_and_eval_forward(codec):
    x = torch.randn(1, 1, 2000) * 0.1
    x[0, 0, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        codec.encode(x)
    with pytest.raises(ValueError, match="NaN or inf"):
        codec(x)
    with pytest.raises(ValueError, match="NaN or inf"):
        codec.stream_encode(x)
    codec.reset_stream()


def test_codes_are_checked_and_any_integer_dtype_decodes(codec):
    codes = codec.encode(torch.randn(1, 1, 3200) * 0.1)
    ref = codec.decode(codes)
    for dtype in (torch.uint8, torch.int16, torch.int32):
        assert torch.equal(codec.decode(codes.to(dtype)), ref)
    negative = codes.clone()
    negative[:, 0, 2] = -5  # one code below 0 on level 0 (-1 is "level off"; -5 is nothing)
    with pytest.raises(ValueError, match=r"level 0 holds codes in \[-5, "):
        codec.decode(negative)
    with pytest.raises(ValueError, match="must be in"):
        codec.decode(codes + 64)
    off = codes.clone()
    off[:, 1:] = -1  # the documented "level off"
    codec.decode(off)
    with pytest.raises(ValueError, match="length"):
        codec.decode(codes, length=-5)
    with pytest.raises(ValueError, match="integer"):
        codec.decode(codes.float())


def test_other_float_dtypes_are_cast_and_a_float64_codec_quantizes(codec):
    x = torch.randn(1, 1, 3200) * 0.1
    ref = codec.encode(x)
    assert torch.equal(codec.encode(x.double()), ref)
    assert codec.encode(x.half()).shape == ref.shape
    double = build_codec(load_config("tiny")).double().eval()
    assert double.encode(x.double()).shape == ref.shape


# ----------------------------------------------------------------------------- 13. long inputs, stream flush


def test_stream_encode_final_pads_the_last_partial_frame_like_encode(codec):
    x = torch.randn(1, 1, 24123) * 0.1
    codec.reset_stream()
    chunks = [codec.stream_encode(x[..., i:i + 1000], final=i + 1000 >= x.shape[-1])
              for i in range(0, x.shape[-1], 1000)]
    codec.reset_stream()
    streamed = torch.cat(chunks, dim=-1)
    assert streamed.shape[-1] == 76  # 75 before: the last 123 samples never made a frame
    assert torch.equal(streamed, codec.encode(x))


def test_long_inputs_go_through_the_streaming_path_and_leave_a_stream_alone(codec, monkeypatch):
    x = torch.randn(1, 1, 24123) * 0.1
    with torch.no_grad():
        codes, recon = codec.encode(x), codec.decode(codec.encode(x))
        codec.reset_stream()
        first = codec.stream_encode(x[..., :5000])  # a stream in progress
        monkeypatch.setattr(codec, "max_offline_frames", 10)
        monkeypatch.setattr(codec, "stream_chunk_frames", 7)
        calls = []
        original = type(codec).stream_encode

        def spy(self, *a, **k):
            calls.append(1)
            return original(self, *a, **k)

        monkeypatch.setattr(type(codec), "stream_encode", spy)
        assert torch.equal(codec.encode(x), codes)
        assert len(calls) == 11  # ceil(76 / 7) chunks, on a copy
        assert torch.allclose(codec.decode(codes), recon, atol=1e-5)
        rest = original(codec, x[..., 5000:], final=True)  # the caller's stream went on undisturbed
    codec.reset_stream()
    assert torch.equal(torch.cat([first, rest], -1), codes)


# ----------------------------------------------------------------------------- 3, 4, 5. bad files


from lib.data.audio import OUT_OF_RANGE, AudioError, check_audio  # noqa: E402
from lib.data.datasets import (AudioFolder, SkippedFileWarning, StepBatches, build_manifest,  # noqa: E402
                               convert_folder, held_out_clips, split_of)


def _tone(path, seconds=1.0, sr=24000, lead_silence=0.0, dtype="PCM_16", scale=0.5):
    t = np.arange(int(seconds * sr)) / sr
    x = scale * np.sin(2 * np.pi * 220 * t) * (t >= lead_silence)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, subtype=dtype)
    return path


def test_dangling_and_looping_symlinks_are_skipped_not_a_crash(tmp_path):
    _tone(tmp_path / "good.wav")
    os.symlink(tmp_path / "gone.wav", tmp_path / "dangling.wav")
    os.symlink(tmp_path / "loop.wav", tmp_path / "loop.wav")
    with pytest.warns(SkippedFileWarning) as seen:
        entries = build_manifest(tmp_path, progress=False)
    status = {e.path: e.status for e in entries}
    assert status == {"dangling.wav": "missing", "good.wav": "ok", "loop.wav": "missing"}
    assert sum("dangling.wav" in str(w.message) for w in seen) == 1


def test_absurd_peaks_are_a_bad_file_reason(tmp_path):
    x = np.full(2400, 0.1, dtype=np.float32)
    x[100] = 1e30
    (tmp_path / "src").mkdir()
    sf.write(tmp_path / "src" / "huge.wav", x, 24000, subtype="FLOAT")
    _tone(tmp_path / "src" / "ok.wav")
    with pytest.raises(AudioError) as err:
        check_audio(tmp_path / "src" / "huge.wav")
    assert err.value.reason == OUT_OF_RANGE and "huge.wav" in str(err.value)
    with pytest.warns(SkippedFileWarning, match="huge.wav"):
        report = convert_folder(tmp_path / "src", tmp_path / "dst", progress=False)
    assert report["skipped"] == {"huge.wav": OUT_OF_RANGE} and report["rescaled"] == []


def _replace_keeping_size_and_mtime(path, data: bytes):
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_files_broken_after_the_manifest_are_skipped_for_the_rest_of_the_run(tmp_path):
    for i in range(4):
        _tone(tmp_path / f"c{i}.wav", dtype="FLOAT")
    entries = build_manifest(tmp_path, fractions=(1.0, 0.0, 0.0), progress=False)
    assert all(e.ok for e in entries)
    raw = (tmp_path / "c1.wav").read_bytes()  # float samples -> NaN, same size and mtime
    header = len(raw) - 24000 * 4
    _replace_keeping_size_and_mtime(tmp_path / "c1.wav", raw[:header] + np.full(24000, np.nan, "<f4").tobytes())
    _replace_keeping_size_and_mtime(tmp_path / "c2.wav", b"\0" * len(raw))  # garbage
    clips = AudioFolder(tmp_path, "train", cache=False)
    assert len(clips) == 4  # the manifest still says ok
    batches = StepBatches(clips, 4, 2400, seed=0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = [batches[s] for s in range(6)]
    assert all(torch.isfinite(b).all() for b in out)
    named = [str(w.message) for w in seen if issubclass(w.category, SkippedFileWarning)]
    assert sum("c1.wav" in m for m in named) == 1 and sum("c2.wav" in m for m in named) == 1
    assert any("nan_or_inf" in m or "NaN" in m for m in named if "c1.wav" in m)
    # the same step gives the same batch again
    assert torch.equal(batches[5], out[5])


def test_a_resumed_run_draws_the_batches_of_a_run_that_met_a_broken_clip(tmp_path):
    """A fresh sampler (a resumed run, or a DataLoader worker) has not met the broken clip yet; its batch for a step
    must still be the one the first run drew after leaving the clip out, whether or not it draws that clip."""
    for i in range(8):
        _tone(tmp_path / f"c{i}.wav", dtype="FLOAT", scale=0.1 * (i + 1))  # tell the clips apart in a batch
    build_manifest(tmp_path, fractions=(1.0, 0.0, 0.0), progress=False)
    raw = (tmp_path / "c3.wav").read_bytes()
    _replace_keeping_size_and_mtime(tmp_path / "c3.wav", b"\0" * len(raw))
    clips = AudioFolder(tmp_path, "train", cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)
        first = StepBatches(clips, 4, 2400, seed=0)
        out = [first[s] for s in range(12)]
        assert first.dropped == {3}
        for s in range(12):
            assert torch.equal(StepBatches(clips, 4, 2400, seed=0)[s], out[s]), s


def _named(stem: str, split: str) -> str:
    """`stem_<i>.wav` for the first i whose hash puts it in `split`."""
    return next(f"{stem}_{i}.wav" for i in range(1000) if split_of(f"{stem}_{i}.wav") == split)


def test_held_out_clips_judge_a_clip_where_it_sounds_and_skip_only_silence(tmp_path):
    a, b, c = _named("a_silent_start", "valid"), _named("b_good", "valid"), _named("c_dc", "valid")
    _tone(tmp_path / a, seconds=6, lead_silence=4.5)
    _tone(tmp_path / b, seconds=2)
    sf.write(tmp_path / c, np.full(48000, 0.25, dtype=np.float32), 24000)  # DC
    with pytest.warns(SkippedFileWarning) as seen:
        clips = held_out_clips(tmp_path, 24000, n=3, seconds=4.0)
    assert list(clips) == [a[:-4], b[:-4]]
    assert clips[a[:-4]].shape == (1, 96000)
    whole, _ = sf.read(tmp_path / a, dtype="float32")  # the window holds the 1.5 s of tone, not 4 s of silence
    assert float(clips[a[:-4]].pow(2).sum()) >= 0.99 * float((whole ** 2).sum())
    assert [str(w.message) for w in seen] == [f"skipping held-out clip '{tmp_path / c}': silent or constant "
                                              f"throughout"]


def test_held_out_clips_say_what_was_wrong_when_none_is_usable(tmp_path):
    gone, dc = _named("gone", "train"), _named("dc", "valid")
    _tone(tmp_path / gone, seconds=1)
    sf.write(tmp_path / dc, np.full(24000, 0.25, dtype=np.float32), 24000)
    build_manifest(tmp_path, progress=False)
    (tmp_path / gone).unlink()  # gone since the manifest was built: "no longer loads"
    (tmp_path / "manifest.csv").touch()
    with pytest.warns(SkippedFileWarning), pytest.raises(ValueError) as err:
        held_out_clips(tmp_path, 24000, n=2, seconds=1.0, split=None)
    text = str(err.value)
    assert "valid: all 1 clips skipped (1 silent or constant)" in text
    assert "test: no usable files" in text


# ----------------------------------------------------------------------------- training: 1, 2, 6, 7, 8, 9, 12


from lib.data.corpus import build_default_corpus  # noqa: E402
from lib.training.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from lib.training.checks import OutputFolderError  # noqa: E402
from lib.training.cli import main  # noqa: E402
from lib.training.trainer import Trainer, read_log  # noqa: E402

FAST = ["data.batch_size=2", "model.quantizer.n_q=2", "train.stft_n_ffts=[256, 128]", "data.valid_clips=1",
        "data.valid_seconds=0.5", "train.quantizer_warmup_steps=0", "train.lr_warmup_steps=0",
        "train.adv_warmup_steps=2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_default_corpus(out, minutes=0.3, sources="synthetic", progress=False)
    return out


def _trainer(corpus, run_dir, overrides=(), **kw):
    return Trainer(load_config("tiny", FAST + list(overrides)), corpus, run_dir, progress=False, device="cpu", **kw)


def _records(run_dir):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_log(run_dir / "log.jsonl")]


def test_silent_held_out_opening_neither_crashes_nor_delays_the_checkpoint(tmp_path):
    _tone(tmp_path / "data" / "a.wav", seconds=3)
    _tone(tmp_path / "data" / "b.wav", seconds=3, lead_silence=2.0)  # silent in the first valid_seconds
    build_manifest(tmp_path / "data", fractions=(0.5, 0.5, 0.0), progress=False)
    cfg = ["data.valid_seconds=1.0", "data.valid_clips=4", "train.val_every=2", "train.ckpt_every=2",
           "train.log_every=1", "train.discriminators=[]"]
    tr = _trainer(tmp_path / "data", tmp_path / "run", cfg)
    assert all(float(wav.abs().amax()) > 0.1 for wav in tr.valid)  # each judged where it sounds
    tr.validate = lambda: (_ for _ in ()).throw(ValueError("a metric broke"))  # any metric failure
    with pytest.warns(UserWarning, match="a metric broke"):
        tr.fit(2)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2
    assert [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "val"][0]["error"]


def test_skipped_steps_do_not_cut_the_run_short(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path, ["train.log_every=3", "train.ckpt_every=3", "train.val_every=100"])
    original, calls = tr.generator_losses, []

    def sometimes_nan(wav, adversarial):
        calls.append(1)
        out, losses = original(wav, adversarial)
        if len(calls) in (2, 3, 5):
            losses["mel"] = losses["mel"] * float("nan")
        return out, losses

    tr.generator_losses = sometimes_nan
    tr.fit(6)
    assert tr.step == 6 and tr.skipped == 3 and len(calls) == 9
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 6
    steps = [r["step"] for r in read_log(tmp_path / "log.jsonl") if r["kind"] == "train"]
    assert steps == [3, 6]  # no record logged twice for a step that did not advance


def test_fresh_moves_the_old_run_aside_and_the_previous_checkpoint_is_kept(corpus, tmp_path):
    run = tmp_path / "run"
    args = ["--preset", "tiny", "--data", str(corpus), "--run-dir", str(run), "--steps", "2",
            "--set", *FAST, "train.ckpt_every=1", "train.log_every=1", "train.val_every=100"]
    assert main(args) == 0
    assert load_checkpoint(run / "checkpoint.prev.pt")["step"] == 1
    old_log = (run / "log.jsonl").read_text()
    with pytest.warns(UserWarning, match="moved to"):
        assert main(args + ["--fresh"]) == 0
    assert (tmp_path / "run.old1" / "log.jsonl").read_text() == old_log
    assert len(read_log(run / "log.jsonl")) == len(old_log.splitlines())  # not appended to


def test_corrupted_latest_checkpoint_resumes_from_the_previous_one(corpus, tmp_path):
    over = ["train.ckpt_every=2", "train.log_every=1", "train.val_every=100"]
    straight = _trainer(corpus, tmp_path / "a", over)
    straight.fit(6)
    first = _trainer(corpus, tmp_path / "b", over)
    first.fit(4)
    ckpt = tmp_path / "b" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # damaged outside the atomic write
    with pytest.warns(UserWarning, match="previous checkpoint"):
        resumed = _trainer(corpus, tmp_path / "b", over)
    assert resumed.step == 2
    resumed.fit(6)
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(straight.codec.parameters(), resumed.codec.parameters()))


def test_logs_after_kills_partial_lines_and_stale_temp_files(corpus, tmp_path):
    over = ["train.ckpt_every=4", "train.log_every=3", "train.val_every=100"]
    straight = _trainer(corpus, tmp_path / "a", over)
    straight.fit(8)
    run = tmp_path / "b"
    run.mkdir()
    (run / "log.jsonl").write_text('{"kind": "train", "step": 3, "mel": 9}\n')  # a run killed before a checkpoint
    (run / ".checkpoint.pt.abc.tmp").write_bytes(b"")
    (run / ".log.jsonl.xyz.tmp").write_text("")  # a run killed while cutting its log back
    doomed = _trainer(corpus, run, over)
    step = doomed.train_step

    def killed_after_step_5(wav):
        if doomed.step == 5:
            raise KeyboardInterrupt
        return step(wav)

    doomed.train_step = killed_after_step_5
    with pytest.raises(KeyboardInterrupt):
        doomed.fit(8)  # checkpoint at 4, record at 3, killed after step 5
    with open(run / "log.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 6, "me')  # partial last line
    resumed = _trainer(corpus, run, over)
    assert resumed.step == 4 and not list(run.glob(".*.tmp"))
    resumed.fit(8)
    # ckpt_every (4) is no multiple of log_every (3): the record at 6 still averages steps 4..6
    assert _records(tmp_path / "a") == _records(run)


def test_output_folders_are_checked_before_the_run(corpus, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputFolderError, match="afile"):
        _trainer(corpus, tmp_path / "run", outputs=[tmp_path / "afile" / "figures"])


def test_resume_applies_new_rates_and_starts_a_new_ema_from_the_weights(corpus, tmp_path):
    _trainer(corpus, tmp_path, ["train.ckpt_every=2", "train.lr_schedule=constant"]).fit(2)
    with pytest.warns(UserWarning, match="EMA"):
        tr = _trainer(corpus, tmp_path, ["train.lr=0.0005", "train.disc_lr=0.0001", "train.betas=[0.8, 0.95]",
                                         "train.ema_decay=0.9", "train.lr_schedule=constant"])
    assert all(torch.equal(p, q) for p, q in zip(tr.ema.parameters(), tr.codec.parameters()))
    tr.fit(3)
    assert tr.opt_g.param_groups[0]["lr"] == 0.0005 and tr.opt_d.param_groups[0]["lr"] == 0.0001
    assert tr.opt_g.param_groups[0]["betas"] == (0.8, 0.95)


def test_resume_follows_a_new_beam_width_but_not_a_new_codebook(corpus, tmp_path):
    # a run trained greedily continues under a preset that searches with a beam (or trains with one)
    _trainer(corpus, tmp_path, ["train.ckpt_every=2", "model.quantizer.beam_width=1"]).fit(2)
    tr = _trainer(corpus, tmp_path, ["model.quantizer.beam_width=4", "model.quantizer.beam_in_training=true"])
    assert tr.step == 2 and tr.codec.quantizer.beam_width == 4 and tr.codec.quantizer.beam_in_training
    tr.fit(3)
    assert tr.step == 3
    with pytest.raises(CheckpointError, match=r"model\.quantizer\.codebook_size: checkpoint=\d+ config=7"):
        _trainer(corpus, tmp_path, ["model.quantizer.codebook_size=7"])


def test_unreadable_checkpoints_and_other_discriminators_are_named(corpus, tmp_path):
    for name, data in (("empty.pt", b""), ("cut.pt", None)):
        if data is None:
            _trainer(corpus, tmp_path / "r", ["train.ckpt_every=1"]).fit(1)
            data = (tmp_path / "r" / "checkpoint.pt").read_bytes()[:5000]
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{name} \(\d+ bytes\): \S+"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match=r"train\.discriminators"):
        _trainer(corpus, tmp_path / "r", ["train.discriminators=[stft]"])


def test_a_folder_whose_clips_open_with_silence_trains_and_validates(tmp_path):
    for i in range(12):  # podcasts and audiobooks: 1.5 s of silence, then the sound
        _tone(tmp_path / "data" / f"episode{i:02d}.wav", seconds=4.0, lead_silence=1.5)
    build_manifest(tmp_path / "data", fractions=(0.5, 0.5, 0.0), progress=False)
    tr = _trainer(tmp_path / "data", tmp_path / "run")
    assert len(tr.valid) == 1 and tr.valid[0].abs().amax(-1).min() > 0.1  # its window holds the tone
    tr.fit(2)
    metrics = tr.validate()
    assert math.isfinite(metrics["si_sdr"]) and math.isfinite(metrics["mel_distance"])
