"""Optional TensorBoard logging for the trainer: ``train.tensorboard`` (null = on when the package is installed).

Event files go to ``run_dir/tensorboard``. What is written (tag: content):

* ``train/<loss>`` every ``log_every`` steps: the averaged losses of ``log.jsonl``; ``lr/generator``,
  ``lr/discriminator``: the optimizers' learning rates;
* ``val/mel_distance``, ``val/si_sdr`` every validation, and ``codebook/usage_<l>``, ``codebook/perplexity_<l>``
  per quantizer level (held out); ``codebook/replaced_<l>``: codes moved by dead-code replacement per training step;
* ``clip<i>/reconstruction`` (audio) and ``clip<i>/spectrogram`` (image: the held-out clip above its
  reconstruction, log-magnitude) for the first two held-out clips every validation; ``clip<i>/original`` once.

View it with ``.venv/bin/tensorboard --logdir runs`` or, inside JupyterLab, in a notebook cell:
``%load_ext tensorboard`` then ``%tensorboard --logdir runs``. A resumed run purges the events logged after its
checkpoint, like ``log.jsonl``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = ["tensorboard_available", "open_tensorboard", "TensorBoardLog", "spectrogram_image", "N_CLIPS"]

N_CLIPS = 2  # held-out clips whose audio and spectrogram are logged
_NOT_SCALARS = {"kind", "step", "time"}


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def open_tensorboard(setting: bool | None, run_dir: str | Path, sample_rate: int,
                     step: int = 0) -> "TensorBoardLog | None":
    """The logger ``setting`` asks for (None = when installed, True = required, False = none), writing to
    ``run_dir/tensorboard``; a run resumed at ``step`` purges the events logged after it, as the trainer's log."""
    if setting is False or (setting is None and not tensorboard_available()):
        return None
    if not tensorboard_available():
        raise ValueError("train.tensorboard=true but the tensorboard package is not installed "
                         "(pip install tensorboard, or set train.tensorboard to null or false)")
    return TensorBoardLog(Path(run_dir) / "tensorboard", sample_rate, purge_step=step + 1 if step else None)


def spectrogram_image(clips: list[torch.Tensor], n_fft: int = 512, floor_db: float = -80.0) -> np.ndarray:
    """Log-magnitude spectrograms of ``clips`` (``[C, T]`` each, channels averaged) stacked top to bottom, low
    frequencies at the bottom of each, as an RGB ``uint8`` image ``[H, W, 3]`` (magma colours)."""
    from matplotlib import colormaps

    rows = []
    for wav in clips:
        x = wav.detach().float().cpu().reshape(-1, wav.shape[-1]).mean(0)
        spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
        db = 20 * torch.log10(spec.abs().clamp_min(1e-5))
        db = (db - db.max()).clamp_min(floor_db) / -floor_db + 1.0  # [0, 1], 1 = loudest
        rows.append(db.flip(0).numpy())
        rows.append(np.ones((2, db.shape[1])))  # a white line between the clips
    image = colormaps["magma"](np.concatenate(rows[:-1], axis=0))[..., :3]
    return (image * 255).astype(np.uint8)


class TensorBoardLog:
    """A ``SummaryWriter`` fed with the trainer's log records and held-out clips."""

    def __init__(self, log_dir: str | Path, sample_rate: int, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step or None)
        self.sample_rate = int(sample_rate)
        self._originals_logged = False

    def write(self, rec: dict, optimizers: tuple, clips: list[torch.Tensor],
              reconstruct: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """One trainer log record: its scalars, plus the learning rates of the (generator, discriminator)
        optimizers for a train record, or for a validation record the first held-out ``clips`` ``[1, C, T]`` and
        ``reconstruct(clip)`` of each (then the events are flushed to disk)."""
        if rec.get("kind") != "val":
            names = ("generator", "discriminator")
            self.record(rec, {n: opt.param_groups[0]["lr"] for n, opt in zip(names, optimizers) if opt is not None})
            return
        self.record(rec)
        originals = [w[0] for w in clips[:N_CLIPS]]
        self.clips(int(rec["step"]), originals, [reconstruct(w)[0] for w in clips[:N_CLIPS]])
        self.flush()

    def record(self, rec: dict, lrs: dict[str, float] | None = None) -> None:
        """One record of ``log.jsonl`` (``kind`` train or val) as scalars at its step."""
        step, kind = int(rec["step"]), rec.get("kind", "train")
        for key, value in rec.items():
            if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key.startswith(("usage_", "perplexity_", "replaced_")):  # held-out usage; codes replaced per step
                group = "codebook"
            else:
                group = "val" if kind == "val" else "train"
            self.writer.add_scalar(f"{group}/{key}", float(value), step)
        for name, lr in (lrs or {}).items():
            self.writer.add_scalar(f"lr/{name}", float(lr), step)

    def clips(self, step: int, originals: list[torch.Tensor], recons: list[torch.Tensor]) -> None:
        """Audio and spectrograms of held-out clips ``[C, T]`` and their reconstructions."""
        for i, (x, y) in enumerate(zip(originals[:N_CLIPS], recons[:N_CLIPS])):
            if not self._originals_logged:
                self.writer.add_audio(f"clip{i}/original", _mono(x), step, sample_rate=self.sample_rate)
            self.writer.add_audio(f"clip{i}/reconstruction", _mono(y), step, sample_rate=self.sample_rate)
            self.writer.add_image(f"clip{i}/spectrogram", spectrogram_image([x, y]), step, dataformats="HWC")
        self._originals_logged = True

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _mono(wav: torch.Tensor) -> torch.Tensor:
    return wav.detach().float().cpu().reshape(-1, wav.shape[-1]).mean(0).clamp(-1, 1)
