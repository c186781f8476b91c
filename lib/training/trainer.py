"""The trainer: a codec, its discriminators, two optimizers and a loop you can read top to bottom.

Usable from a notebook (``Trainer(cfg, data_dir, run_dir).fit()``) and from a script::

    python -m lib.training --preset cpu --data data/default --run-dir runs/cpu
    torchrun --nproc_per_node 2 -m lib.training --preset cpu --data data/default --run-dir runs/ddp   # DDP

What a step does (``Trainer.train_step``):

1. the codec reconstructs a batch of crops (quantizer dropout picks the bitrate per item; in the quantizer warm-up
   the latents bypass it, so that k-means initialises the codebooks on informative latents, not a random encoder's
   near-constant output; in the last ``train.decoder_only_fraction`` of the run only the decoder trains);
2. the generator loss (reconstruction terms + commitment [+ adversarial + feature matching after the warm-up]) is
   backpropagated with the discriminators frozen (``lib.training.balancer`` may weigh the reconstruction terms);
3. the discriminators in play (all, or one drawn per window) take a step on their own loss, computed on the
   detached reconstruction.

Non-finite losses or gradients skip the step (codebook buffers restored) and are counted; too many in a row stop the
run with a message; a skipped step takes the next batch, and the run ends at ``train.steps`` all the same.
Checkpoints are atomic, keep the one before (``checkpoint.prev.pt``) and hold everything needed to continue exactly,
including the next log record's partial averages: an interrupted and resumed run writes the same records (all but
``time``) and ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

from lib.build import build_codec, build_discriminators
from lib.training.checkpoint import (CHECKPOINT_NAME, RESUME_FREE_KEYS, RESUME_KEYS, CheckpointReadError,
                                     init_codec_from, load_checkpoint, load_state, previous_path, rng_state,
                                     save_checkpoint, set_rng_state)
from lib.training.checks import check_writable
from lib.training.runlog import read_log, remove_stale_temp_files, set_aside, truncate_log
from lib.config import Config
from lib.data.datasets import JUDGE_SECONDS, AudioFolder, StepBatches, held_out_clips
from lib.training.balancer import Balancer
from lib.training.adversarial import repulsion_loss
from lib.training.objectives import ADVERSARIAL_LOSSES, StepContext, build_terms, loss_weights
from lib.training.runtime import (adamw, adversarial_crop, adversarial_step, autocast, configure_optimizers,
                                  decoder_phase, ema_update, freeze_all_but_decoder, frozen, init_distributed,
                                  kmeans_pools, lr_factor, pick_device, quantizer_warm_up, rank0_value,
                                  resolve_precision, restore_kmeans_pools, seed_everything)
from lib.training.tensorboard import open_tensorboard
from lib.training.validation import validation_metrics

__all__ = ["Trainer", "TrainingDiverged", "StepResult", "read_log"]


class TrainingDiverged(RuntimeError):
    """Raised after ``train.max_bad_steps`` non-finite steps in a row."""


@dataclass
class StepResult:
    step: int
    losses: dict[str, float]
    skipped: bool = False


class Trainer:
    """Trains ``build_codec(cfg)`` on ``data_dir`` and writes checkpoints and logs to ``run_dir``.

    ``resume``: ``True`` continues from ``run_dir/checkpoint.pt`` when it exists (from ``checkpoint.prev.pt`` when
    that one cannot be read), a path continues from that checkpoint, ``False`` starts fresh: a previous run in
    ``run_dir`` is first moved aside to ``<run_dir>.old<k>`` (with a warning), never overwritten or appended to.
    ``outputs``: other folders the caller will write to (figures), checked writable before anything starts, as
    ``run_dir`` is.
    """

    def __init__(self, cfg: Config, data_dir: str | Path, run_dir: str | Path, resume: bool | str | Path = True,
                 progress: bool = True, device: str | None = None, codec: nn.Module | None = None,
                 outputs: Sequence[str | Path] = ()):
        self.cfg, self.data_dir, self.run_dir, self.progress = cfg, Path(data_dir), Path(run_dir), progress
        t, lo = cfg.train, cfg.loss
        self.rank, self.world = init_distributed(cfg.train.device if device is None else device)
        if self.rank == 0:
            check_writable(self.run_dir, *outputs)
            remove_stale_temp_files(self.run_dir)
            moved = set_aside(self.run_dir) if resume is False else None
            if moved is not None:
                warnings.warn(f"starting afresh: the previous run in {self.run_dir} was moved to {moved}", stacklevel=2)
        self.device = pick_device(device or t.device)
        self.precision = resolve_precision(self.device, t.precision)  # "auto" made bf16 or fp32 for this device
        if lo.balancer and self.precision == "fp16":
            raise ValueError("loss.balancer with train.precision=fp16 is not supported (use bf16 or fp32)")
        seed_everything(t.seed)

        # The modules (``codec``, ``discs``) own the weights; the ``*_ddp`` views run the forward passes whose
        # gradients DDP must average (the same objects as the modules without DDP). ``codec`` replaces the configured
        # one (a peer architecture behind the Codec interface, as in the benchmarks); ``train.init_from`` fills it.
        self.codec = (build_codec(cfg) if codec is None else codec).to(self.device)
        self.init_step = init_codec_from(self.codec, t.init_from) if t.init_from else None  # (a resume overrides)
        self.discs = build_discriminators(cfg).to(self.device)
        self.codec_ddp: nn.Module = self.codec
        self.discs_ddp: nn.ModuleDict = self.discs
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Codebooks are buffers kept identical by the quantizer's own all-reduce; dropout leaves levels unused.
            self.codec_ddp = DDP(self.codec, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)
            self.discs_ddp = nn.ModuleDict({k: DDP(v, device_ids=ids) for k, v in self.discs.items()})
        self.opt_g = adamw(self.codec.parameters(), t.lr, t, self.device)
        self.opt_d = adamw(self.discs.parameters(), t.disc_lr, t, self.device) if len(self.discs) else None
        self.ema = copy.deepcopy(self.codec).eval().requires_grad_(False) if t.ema_decay else None
        self.scaler = torch.amp.GradScaler(enabled=self.device.type == "cuda" and self.precision == "fp16")
        sr = cfg.data.sample_rate
        # The generator objective: a table of weighted terms (lib.training.objectives).
        self.loss_weights = loss_weights(lo)
        self.loss_terms = build_terms(cfg).to(self.device)
        self.adversarial_loss = ADVERSARIAL_LOSSES.get(lo.adversarial_kind)
        on_output = {k: w for k, w in self.loss_weights.items() if w > 0 and self.loss_terms[k].on_output}
        self.balancer = Balancer(on_output, norm_every=lo.balancer_norm_every) if lo.balancer else None

        self.train_clips = AudioFolder(data_dir, split="train", sample_rate=sr)
        self.batches = StepBatches(self.train_clips, cfg.data.batch_size, int(cfg.data.segment_seconds * sr),
                                   t.seed, self.rank)
        # Held-out clips, half of them speech (first): the set notebooks 02-04 show (`held_out.kinds`: each one's kind).
        self.held_out = held_out_clips(data_dir, sr, cfg.data.valid_clips, cfg.data.valid_seconds,
                                       speech=(cfg.data.valid_clips + 1) // 2, min_seconds=JUDGE_SECONDS)
        self.valid = [wav.unsqueeze(0) for wav in self.held_out.values()]  # [1, C, T] each

        # State that a checkpoint must carry for an exact resume.
        self.step, self.bad_in_row, self.skipped = 0, 0, 0
        self.train_seconds = 0.0  # time spent in train_step: the clock of the time budget (train.minutes)
        self.disc_loss_ema = {name: 1.0 for name in self.discs}
        self.active: list[str] = list(self.discs)
        self.tied_n_q: int | None = None
        self.running: dict[str, list[float]] = {}  # losses of the steps since the last log record
        self._pending_validation = False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run_dir / "log.jsonl"
        if not (resume and self._resume(resume)) and self.rank == 0:
            truncate_log(self.log_path, 0)  # records of runs killed before their first checkpoint
        if self.rank == 0:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self.tensorboard = open_tensorboard(t.tensorboard, self.run_dir, sr, self.step) if self.rank == 0 else None

    # ------------------------------------------------------------------ one step

    def choose_discriminators(self) -> None:
        """Pick the discriminators in play for this step (all, or one drawn every ``disc_window`` steps)."""
        t = self.cfg.train
        names = list(self.discs)
        if not t.one_disc_at_a_time or len(names) <= 1:
            self.active = names
            return
        if self.step % t.disc_window:
            return
        if t.disc_choice == "loss_weighted":  # the discriminator losing most (highest loss) is drawn most often
            w = torch.tensor([self.disc_loss_ema[n] for n in names]).clamp_min(1e-3)
        else:
            w = torch.ones(len(names))
        i = int(torch.multinomial(w / w.sum(), 1))
        if self.world > 1:  # ranks see different losses: rank 0 decides, or DDP would wait on different modules
            choice = torch.tensor([i], device=self.device)
            dist.broadcast(choice, 0)
            i = int(choice)
        self.active = [names[i]]
        if t.tie_bitrate:  # discriminator i of N trains the codec at n_q = ceil(n_q_max * (i + 1) / N)
            n_q_max = self.cfg.model.quantizer.n_q
            self.tied_n_q = max(1, math.ceil(n_q_max * (i + 1) / len(names)))

    def generator_losses(self, wav: torch.Tensor, adversarial: bool):
        """Codec forward and every generator loss term in play; returns (codec output, {term: loss tensor})."""
        warming_up = quantizer_warm_up(self.cfg.train, self.step)
        terms = {name: term for name, term in self.loss_terms.items() if adversarial or not term.adversarial}
        out = self.codec_ddp(wav, n_q=self.tied_n_q, return_stages=any(t.needs_stages for t in terms.values()),
                             bypass_quantizer=warming_up)
        ctx = StepContext(wav, out, lambda: self._discriminate(wav, out.recon), tail=self.codec.unfinished_tail)
        with torch.autocast(self.device.type, enabled=False):  # the losses in fp32 whatever the forward's precision
            return out, {name: term(ctx) for name, term in terms.items()}

    def _discriminate(self, wav: torch.Tensor, recon: torch.Tensor) -> list[tuple]:
        """Per discriminator in play: (fake logits, fake features, real features) for the generator's losses."""
        wav, recon = adversarial_crop(wav, recon, self.cfg.train, self.cfg.data.sample_rate, self.step)
        outputs = []
        with frozen(self.discs):  # generator gradients must never reach discriminator parameters
            for name in self.active:
                disc = self.discs[name]
                fake_logits, fake_feats = disc(recon)
                with torch.no_grad():
                    _, real_feats = disc(wav)
                outputs.append((fake_logits, fake_feats, real_feats))
        return outputs

    def discriminator_losses(self, wav: torch.Tensor, recon: torch.Tensor) -> dict[str, torch.Tensor]:
        """One loss per active discriminator, on real audio and the detached reconstruction."""
        wav, recon = adversarial_crop(wav, recon, self.cfg.train, self.cfg.data.sample_rate, self.step)
        lo, out = self.cfg.loss, {}
        for name in self.active:
            real_logits, _ = self.discs_ddp[name](wav)
            fake_logits, _ = self.discs_ddp[name](recon.detach())
            loss = self.adversarial_loss.discriminator(real_logits, fake_logits)
            if lo.repulsion > 0:
                loss = loss + lo.repulsion * repulsion_loss(real_logits, fake_logits)
            out[name] = loss
        return out

    def train_step(self, wav: torch.Tensor) -> StepResult:
        """One generator step and (after the warm-up) one discriminator step on a batch ``[B, C, T]``, timed."""
        t0 = time.perf_counter()
        result = self._step(wav)
        self.train_seconds += time.perf_counter() - t0
        if self.cfg.train.minutes is not None:  # the clock decides the rate and the end: one clock for every rank
            self.train_seconds = rank0_value(self.train_seconds, self.world, self.device)
        return result

    @property
    def out_of_time(self) -> bool:  # whether the time budget (train.minutes) is spent
        return self.cfg.train.minutes is not None and self.train_seconds >= 60 * self.cfg.train.minutes

    def _step(self, wav: torch.Tensor) -> StepResult:
        t, wav = self.cfg.train, wav.to(self.device)
        self.choose_discriminators()
        adversarial = adversarial_step(t, self.step, len(self.discs))
        self.codec.train()
        if decoder_phase(t, self.step, self.train_seconds, self.codec):
            freeze_all_but_decoder(self.codec)
        self._set_lr()
        snapshot = {k: v.clone() for k, v in self.codec.quantizer.named_buffers()}

        # 1) generator
        with autocast(self.device, self.precision):
            out, losses = self.generator_losses(wav, adversarial)
        self.opt_g.zero_grad(set_to_none=True)
        finite = self._agree(all(bool(torch.isfinite(v).all()) for v in losses.values()))
        if finite:
            if self.balancer is not None:
                on_output = {k: v for k, v in losses.items() if k in self.balancer.weights}
                rest = sum(self.loss_weights[k] * v for k, v in losses.items() if not self.loss_terms[k].on_output)
                # FSQ has no commitment loss, the decoder-only phase none to train: a constant has no gradient.
                other = rest if torch.is_tensor(rest) and rest.requires_grad else None
                self.balancer.backward(on_output, out.recon, other=other)
            else:
                self.scaler.scale(self.weighted_sum(losses)).backward()
            finite = self._clip_and_check(self.codec, self.opt_g)
        if not finite:
            return self._skip(snapshot, losses)
        self.scaler.step(self.opt_g)

        # 2) discriminator(s), on their own loss only
        logs = {k: float(v.detach()) for k, v in losses.items()}
        if adversarial:
            d_losses = self.discriminator_losses(wav, out.recon)
            self.opt_d.zero_grad(set_to_none=True)
            d_total = torch.stack(list(d_losses.values())).sum()
            if self._agree(bool(torch.isfinite(d_total))):
                self.scaler.scale(d_total).backward()
                if self._clip_and_check(self.discs, self.opt_d):
                    self.scaler.step(self.opt_d)
            for name, v in d_losses.items():
                self.disc_loss_ema[name] = 0.9 * self.disc_loss_ema[name] + 0.1 * float(v.detach())
                logs[f"d_{name}"] = float(v.detach())
        self.scaler.update()
        if self.ema is not None:
            ema_update(self.ema, self.codec, self.cfg.train.ema_decay)
        self.bad_in_row = 0
        self.step += 1
        logs["n_q"] = float(out.n_q.float().mean()) if torch.is_tensor(out.n_q) else float(out.n_q)
        logs |= {f"replaced_{i}": float(s["dead_codes"]) for i, s in enumerate(out.stats) if "dead_codes" in s}  # churn
        return StepResult(self.step, logs)

    def lr_factor(self, step: int | None = None) -> float:  # at ``step`` (default: now) after the time so far
        return lr_factor(self.cfg.train, self.step if step is None else step, self.train_seconds)

    def _set_lr(self) -> None:
        """Apply the schedule and the configured rates, betas and weight decay (also after a resume that changed
        them: the optimizers' states come from the checkpoint, their settings from the configuration)."""
        t = self.cfg.train
        configure_optimizers(((self.opt_g, t.lr), (self.opt_d, t.disc_lr)), t, self.lr_factor())

    def _agree(self, ok: bool) -> bool:
        """True only when every rank says True, so that ranks never disagree on skipping a backward pass."""
        if self.world == 1:
            return ok
        flag = torch.tensor([float(ok)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def weighted_sum(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum(weight * loss)`` over the terms, in table order."""
        return sum(self.loss_weights[k] * v for k, v in losses.items())

    def _clip_and_check(self, module: nn.Module, opt: torch.optim.Optimizer) -> bool:
        self.scaler.unscale_(opt)
        params = [p for p in module.parameters() if p.grad is not None]
        clip = self.cfg.train.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, clip) if params else torch.tensor(0.0)
        return bool(torch.isfinite(norm))

    def _skip(self, snapshot: dict, losses: dict) -> StepResult:
        """Undo a non-finite step: no optimizer update, codebook buffers restored, counted."""
        self.opt_g.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in self.codec.quantizer.named_buffers():
                v.copy_(snapshot[k])
        self.scaler.update()
        self.skipped += 1
        self.bad_in_row += 1
        if self.bad_in_row >= self.cfg.train.max_bad_steps:
            raise TrainingDiverged(
                f"{self.bad_in_row} non-finite steps in a row at step {self.step} (last losses: "
                f"{ {k: float(v.detach()) for k, v in losses.items()} }). Lower train.lr, enable loss.balancer, "
                f"{'enable' if self.cfg.train.grad_clip is None else 'lower'} train.grad_clip, or check the data "
                f"for NaN/inf; the last good checkpoint is in {self.run_dir}.")
        return StepResult(self.step, {k: float(v.detach()) for k, v in losses.items()}, skipped=True)

    # ------------------------------------------------------------------ validation

    def validate(self, n_q: int | None = None) -> dict[str, float]:
        """Mel distance, SI-SDR and per-level codebook usage/perplexity on the held-out clips."""
        codec = self.ema if self.ema is not None else self.codec
        # Codebooks not initialised yet (warm-up, or levels still pooling frames for k-means): validate unquantized.
        warming_up = quantizer_warm_up(self.cfg.train, self.step) or not getattr(codec.quantizer, "ready", True)
        clips = [wav.to(self.device) for wav in self.valid]
        return validation_metrics(codec, clips, self.cfg.data.sample_rate, n_q, bypass_quantizer=warming_up)

    @torch.no_grad()
    def reconstruct(self, wav: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Reconstruction of ``wav`` ``[B, C, T]`` (or ``[C, T]``) by the current (EMA) codec, on the CPU."""
        codec = self.ema if self.ema is not None else self.codec
        codec.eval()
        x = wav if wav.dim() == 3 else wav.unsqueeze(0)
        return codec(x.to(self.device), n_q=n_q).recon.cpu().reshape(wav.shape)

    # ------------------------------------------------------------------ loop

    def fit(self, steps: int | None = None, callback: Callable[[dict], None] | None = None) -> list[dict]:
        """Train until ``steps`` (default ``train.steps``) or the time budget (``train.minutes``) ends; log, validate
        and checkpoint on schedule.

        ``callback`` receives every log record (dicts with ``kind`` = ``train`` or ``val``), e.g. to draw a live
        loss plot in a notebook. Returns the records of this call.
        """
        from lib.headless import progress_bar as tqdm

        t = self.cfg.train
        total = t.steps if steps is None else steps
        records: list[dict] = []
        if self._pending_validation:  # a run killed between its checkpoint and that step's validation
            self._pending_validation = False
            records.append(self._validate_and_log(callback))
        if self.step >= total or self.out_of_time:
            return records
        # Batch index = attempts so far (steps + skipped steps): a skipped step takes the next batch, never the
        # same bad one again. Own generator: creating a loader must not draw from the global RNG.
        loader = torch.utils.data.DataLoader(self.batches, batch_size=None,
                                             sampler=range(self.step + self.skipped, len(self.batches)),
                                             num_workers=self.cfg.data.num_workers, generator=torch.Generator())
        bar = tqdm(total=total, initial=self.step, disable=not self.progress or self.rank != 0,
                   desc="train", dynamic_ncols=True)
        t0 = time.time()
        for wav in loader:
            res = self.train_step(wav)
            if res.skipped:  # counted in the next record's "skipped"; the step is taken again on the next batch
                continue
            bar.update(1)
            for k, v in res.losses.items():
                self.running.setdefault(k, []).append(v)
            last = self.step >= total or self.out_of_time
            if self.step % t.log_every == 0 or last:
                rec = {"kind": "train", "step": self.step, "time": time.time() - t0, "skipped": self.skipped,
                       **{k: float(np.mean(v)) for k, v in self.running.items()}}
                self.running = {}
                records.append(self._log(rec, callback))
                bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("mel", "commitment", "adversarial") if k in rec})
            if self.step % t.ckpt_every == 0 or last:
                self.save()  # before the validation: a checkpoint never waits on a metric
            if self.step % t.val_every == 0 or last:
                records.append(self._validate_and_log(callback))
            if last:
                break
        bar.close()
        return records

    def close(self) -> None:
        """Flush and close the TensorBoard event file; the trainer holds no other open file between calls."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def _validate_and_log(self, callback: Callable[[dict], None] | None) -> dict:
        """Validate and log; RNG states untouched (so resumed runs match), and a failing metric is logged, not
        raised: the checkpoint is already written and the run goes on."""
        rng = rng_state()
        try:
            metrics = self.validate()
        except Exception as err:  # noqa: BLE001 - any metric failure; named in the log and a warning
            warnings.warn(f"validation at step {self.step} failed: {err}", stacklevel=2)
            metrics = {"error": f"{type(err).__name__}: {err}"}
        try:
            return self._log({"kind": "val", "step": self.step, **metrics}, callback)
        finally:
            set_rng_state(rng)

    def _log(self, rec: dict, callback: Callable[[dict], None] | None) -> dict:
        if self.rank == 0:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if self.tensorboard is not None:
                self.tensorboard.write(rec, (self.opt_g, self.opt_d), self.valid, self.reconstruct)
        if callback is not None:
            callback(rec)
        return rec

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict:
        extra = {"bad_in_row": self.bad_in_row, "skipped": self.skipped, "train_seconds": self.train_seconds,
                 "disc_loss_ema": self.disc_loss_ema,
                 "active": self.active, "tied_n_q": self.tied_n_q, "running": self.running,
                 "kmeans_pools": kmeans_pools(self.codec),
                 "balancer": self.balancer.state_dict() if self.balancer is not None else None,
                 "scaler": self.scaler.state_dict()}
        model = {"codec": self.codec.state_dict(), "discs": self.discs.state_dict()}
        if self.ema is not None:
            model["ema"] = self.ema.state_dict()
        optim = {"g": self.opt_g.state_dict()}
        if self.opt_d is not None:
            optim["d"] = self.opt_d.state_dict()
        return dict(config=self.cfg.to_dict(), step=self.step, model=model, optimizers=optim, extra=extra)

    def save(self, path: str | Path | None = None) -> Path | None:
        """Atomic checkpoint (rank 0 only); the one it replaces stays as ``checkpoint.prev.pt``."""
        if self.rank != 0:
            return None
        return save_checkpoint(path or self.run_dir / CHECKPOINT_NAME, keep_previous=True, **self.state())

    def _resume(self, resume: bool | str | Path) -> Path | None:
        """Load the checkpoint to resume from (the previous one when the latest cannot be read); its path or None."""
        path = self.run_dir / CHECKPOINT_NAME if resume is True else Path(resume)
        if not path.is_file():
            if resume is True:
                return None
            self.load(path)  # raises, naming the file
        try:
            self.load(path)
            return path
        except CheckpointReadError as err:
            prev = previous_path(path)
            if resume is not True or not prev.is_file():
                raise
            warnings.warn(f"{err}; resuming from the previous checkpoint {prev} (the damaged file is kept as "
                          f"{path.with_suffix('.broken')})", stacklevel=3)
            if self.rank == 0:
                path.replace(path.with_suffix(".broken"))
            self.load(prev)
            return prev

    def load(self, path: str | Path) -> None:
        """Continue from a checkpoint: weights, optimizers, counters and RNG states; log lines past it dropped.

        What the configuration changes takes effect: learning rates (set every step), betas and weight decay;
        an EMA turned on at resume starts from the checkpoint's weights. Changes the weights cannot follow
        (architecture, discriminators) are a ``CheckpointError`` naming the keys."""
        t = self.cfg.train
        state = load_checkpoint(path, expected_config=self.cfg.to_dict(), map_location=self.device,
                                compare_keys=RESUME_KEYS, free_keys=RESUME_FREE_KEYS)
        load_state(self.codec, state["model"]["codec"], "codec", path)
        load_state(self.discs, state["model"]["discs"], "discriminator", path)
        if self.ema is not None:
            if "ema" in state["model"]:
                load_state(self.ema, state["model"]["ema"], "EMA", path)
            else:
                self.ema.load_state_dict(self.codec.state_dict())
                warnings.warn(f"train.ema_decay is on but {path} has no EMA: it starts from the checkpoint's "
                              "weights", stacklevel=3)
        self.opt_g.load_state_dict(state["optimizers"]["g"])
        if self.opt_d is not None and "d" in state["optimizers"]:
            self.opt_d.load_state_dict(state["optimizers"]["d"])
        e = state["extra"]
        self.step, self.bad_in_row, self.skipped = state["step"], e["bad_in_row"], e["skipped"]
        self.train_seconds = float(e.get("train_seconds", 0.0))  # absent from checkpoints before the time budget
        self.disc_loss_ema, self.active, self.tied_n_q = dict(e["disc_loss_ema"]), list(e["active"]), e["tied_n_q"]
        self.running = {k: list(v) for k, v in e.get("running", {}).items()}
        restore_kmeans_pools(self.codec, e.get("kmeans_pools", {}))
        if self.balancer is not None and e.get("balancer"):
            self.balancer.load_state_dict(e["balancer"])
        self.scaler.load_state_dict(e["scaler"])
        set_rng_state(state["rng"])
        if self.rank == 0:
            truncate_log(self.log_path, self.step)
        validated = any(r["kind"] == "val" and r["step"] == self.step for r in read_log(self.log_path))
        last = self.step == t.steps or self.out_of_time
        self._pending_validation = (self.step % t.val_every == 0 or last) and not validated
