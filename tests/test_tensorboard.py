"""TensorBoard logging in the trainer: the event files hold losses, learning rates, validation metrics,
codebook usage, spectrogram images and audio, and tensorboard's own reader reads them back."""
import pytest

pytest.importorskip("tensorboard")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from lib.config import load_config  # noqa: E402
from lib.data.corpus import build_default_corpus  # noqa: E402
from lib.training import tensorboard as tb  # noqa: E402
from lib.training.trainer import Trainer, read_log  # noqa: E402

FAST = ["data.batch_size=2", "model.quantizer.n_q=2", "train.stft_n_ffts=[256, 128]", "train.log_every=1",
        "train.val_every=2", "train.ckpt_every=2", "data.valid_clips=2", "data.valid_seconds=0.5",
        "train.quantizer_warmup_steps=0", "train.steps=4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_default_corpus(out, minutes=0.4, sources="synthetic", progress=False)
    return out


def _events(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "audio": 0})
    acc.Reload()
    return acc


def test_events_are_written_and_read_back(corpus, tmp_path):
    tr = Trainer(load_config("tiny", FAST), corpus, tmp_path, resume=False, progress=False, device="cpu")
    assert tr.tensorboard is not None  # on by default when the package is installed
    tr.fit()
    acc = _events(tmp_path)
    tags = acc.Tags()
    for tag in ("train/mel", "train/commitment", "lr/generator", "lr/discriminator", "val/mel_distance",
                "val/si_sdr", "codebook/usage_0", "codebook/usage_1", "codebook/perplexity_1", "codebook/replaced_0"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert [e.step for e in acc.Scalars("train/mel")] == [1, 2, 3, 4]
    assert [e.step for e in acc.Scalars("val/si_sdr")] == [2, 4]
    # logged at step 1, after the first update, which ran at the first rate of the warm-up schedule
    assert acc.Scalars("lr/generator")[0].value == pytest.approx(tr.cfg.train.lr * tr.lr_factor(0))
    val = [e.value for e in acc.Scalars("val/mel_distance")]
    logged = [r["mel_distance"] for r in read_log(tmp_path / "log.jsonl") if r["kind"] == "val"]
    np.testing.assert_allclose(val, logged, rtol=1e-6)
    assert sorted(tags["images"]) == ["clip0/spectrogram", "clip1/spectrogram"]
    assert [e.step for e in acc.Images("clip0/spectrogram")] == [2, 4]
    assert {"clip0/original", "clip0/reconstruction", "clip1/original", "clip1/reconstruction"} <= set(tags["audio"])
    audio = acc.Audio("clip1/reconstruction")
    assert [e.step for e in audio] == [2, 4] and audio[0].sample_rate == 24000
    assert len(acc.Audio("clip0/original")) == 1


def test_resume_purges_events_after_the_checkpoint(corpus, tmp_path):
    cfg = load_config("tiny", FAST)
    Trainer(cfg, corpus, tmp_path, resume=False, progress=False, device="cpu").fit(steps=3)  # checkpoint at 2
    Trainer(cfg, corpus, tmp_path, progress=False, device="cpu").fit()
    steps = [e.step for e in _events(tmp_path).Scalars("train/mel")]
    assert steps == [1, 2, 3, 4]  # step 3 of the first run is gone, not doubled


def test_close_flushes_and_closes_the_event_file(corpus, tmp_path):
    tr = Trainer(load_config("tiny", FAST + ["train.val_every=100"]), corpus, tmp_path, resume=False,
                 progress=False, device="cpu")
    tr.fit(steps=3)  # three train records, no validation
    writer = tr.tensorboard.writer
    assert writer.all_writers is not None  # still open
    tr.close()
    assert tr.tensorboard is None and writer.all_writers is None  # SummaryWriter.close() drops its file writers
    assert [e.step for e in _events(tmp_path).Scalars("train/mel")] == [1, 2, 3]
    tr.close()  # a second close is harmless


def test_off_and_required(corpus, tmp_path, monkeypatch):
    tr = Trainer(load_config("tiny", FAST + ["train.tensorboard=false"]), corpus, tmp_path, resume=False,
                 progress=False, device="cpu")
    tr.fit(steps=2)
    assert tr.tensorboard is None and not (tmp_path / "tensorboard").exists()
    monkeypatch.setattr(tb, "tensorboard_available", lambda: False)
    assert tb.open_tensorboard(None, tmp_path / "x", 24000) is None
    with pytest.raises(ValueError, match="tensorboard package is not installed"):
        tb.open_tensorboard(True, tmp_path / "x", 24000)


def test_spectrogram_image_stacks_clips():
    x = torch.sin(torch.arange(4800) * 0.3).unsqueeze(0)
    image = tb.spectrogram_image([x, 0.5 * x])
    assert image.dtype == np.uint8 and image.shape == (2 * 257 + 2, 4800 // 128 + 1, 3)
    assert image[:257].std() > 0  # not a blank picture
