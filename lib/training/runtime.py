"""Process-level helpers of a training run: device choice, seeding, joining a torchrun process group, mixed
precision, freezing a module for a step, the generator weight EMA, the learning-rate schedule, the last phase that
trains the decoder alone."""
from __future__ import annotations

import contextlib
import datetime
import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- trainer


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX, Linux flags): without them bf16 autocast
    on the CPU is emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(device: torch.device, precision: str) -> str:
    """``train.precision`` as run: "auto" is bf16 on a CUDA device that supports it or a CPU with bf16
    instructions (``cpu_has_bf16``), fp32 elsewhere; the other values are returned as given."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The forward pass's mixed precision: bf16 autocast on CUDA or CPU (where the CPU has bf16 instructions,
    AVX512-BF16 or AMX, its matrix products run about twice as fast), fp16 on CUDA only; nothing at fp32.
    ``precision`` as resolved by ``resolve_precision``."""
    if precision == "fp32" or (device.type != "cuda" and precision != "bf16"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Temporarily set ``requires_grad=False`` on every parameter of ``module``."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def init_distributed(device: str) -> tuple[int, int]:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        # A hung peer should fail the run in minutes, not the default half hour.
        timeout = datetime.timedelta(seconds=int(os.environ.get("WORKBOOK_DIST_TIMEOUT", 600)))
        dist.init_process_group(backend, timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def lr_factor(t, step: int, seconds: float = 0.0) -> float:
    """Learning-rate multiplier at ``step`` for the train config ``t``, after ``seconds`` of training: a linear
    warm-up over ``t.lr_warmup_steps``, then constant or a cosine decay to ``t.lr_min_ratio`` at ``t.steps`` or,
    with a time budget (``t.minutes``), at whichever of the two the run reaches first."""
    if step < t.lr_warmup_steps:
        return (step + 1) / t.lr_warmup_steps
    if t.lr_schedule == "constant":
        return 1.0
    progress = (step - t.lr_warmup_steps) / max(1, t.steps - t.lr_warmup_steps)
    if t.minutes:
        progress = max(progress, seconds / (60 * t.minutes))
    progress = min(1.0, progress)
    return t.lr_min_ratio + (1 - t.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def run_progress(t, step: int, seconds: float = 0.0) -> float:
    """How far along the run is, in [0, 1]: ``step / t.steps`` or, with a time budget, the share of ``t.minutes``
    spent when that is further along."""
    progress = step / max(1, t.steps)
    if t.minutes:
        progress = max(progress, seconds / (60 * t.minutes))
    return min(1.0, progress)


def adversarial_step(t, step: int, n_discriminators: int) -> bool:
    """Whether ``step`` trains adversarially: discriminators configured, the ``t.adv_warmup_steps`` reconstruction-
    only steps over, and one step in every ``t.disc_every`` (the generator's adversarial terms and the
    discriminators' own step both)."""
    return n_discriminators > 0 and step >= t.adv_warmup_steps and (step - t.adv_warmup_steps) % t.disc_every == 0


def adversarial_crop(wav: torch.Tensor, recon: torch.Tensor, t, sample_rate: int, step: int):
    """The discriminators' view of a step: `(wav, recon)` `[B, C, T]` cut to the same random ``t.disc_crop_seconds``
    per item (their cost scales with the length), drawn from (seed, step) so that a resumed run draws the same;
    unchanged when ``t.disc_crop_seconds`` is None or not shorter than the batch."""
    length = wav.shape[-1] if t.disc_crop_seconds is None else int(t.disc_crop_seconds * sample_rate)
    if length >= wav.shape[-1]:
        return wav, recon
    g = torch.Generator().manual_seed(t.seed * 1_000_003 + step)
    starts = torch.randint(0, wav.shape[-1] - length + 1, (wav.shape[0],), generator=g).tolist()
    return tuple(torch.stack([x[i, :, s:s + length] for i, s in enumerate(starts)]) for x in (wav, recon))


def quantizer_warm_up(t, step: int) -> bool:
    """Whether latents bypass the quantizer at ``step``: the first ``t.quantizer_warmup_steps`` steps of a run
    from scratch; never in a run that starts from a trained codec (``t.init_from``)."""
    return step < t.quantizer_warmup_steps and not t.init_from


def decoder_phase(t, step: int, seconds: float, codec: nn.Module) -> bool:
    """Whether a step at ``step`` after ``seconds`` of training is in the last ``t.decoder_only_fraction`` of the
    run, where the decoder trains alone; never before every codebook is initialised."""
    fraction = t.decoder_only_fraction
    if fraction == 0 or run_progress(t, step, seconds) < 1 - fraction:
        return False
    return getattr(getattr(codec, "quantizer", None), "ready", True)


def freeze_all_but_decoder(codec: nn.Module) -> None:
    """Every part of ``codec`` but its ``decoder`` in eval mode and without gradients: the codes are then searched
    as when encoding (the beam, all levels), the codebooks stop moving and the optimizer steps the decoder alone.
    Call after ``codec.train()``. One-way, as the phase lasts to the end of the run (a resumed run rebuilds the
    codec and decides again)."""
    for name, child in codec.named_children():
        if name != "decoder":
            child.eval().requires_grad_(False)


def rank0_value(value: float, world: int, device: torch.device) -> float:
    """``value`` as rank 0 holds it: decisions taken on a clock (``train.minutes``) must agree across ranks."""
    if world == 1:
        return value
    x = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(x, 0)
    return float(x)


def adamw(params, lr: float, t, device: torch.device) -> torch.optim.AdamW:
    """AdamW with ``t.betas`` and ``t.weight_decay``, fused where the device has the fused kernel: one kernel over
    all parameters took a third of the per-tensor loop's time on a cpu step (8 against 24 ms for the codec's 102
    tensors), the same update up to rounding."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                             fused=device.type in ("cpu", "cuda"))


def configure_optimizers(pairs, t, factor: float) -> None:
    """Set ``base_lr * factor``, ``t.betas`` and ``t.weight_decay`` on every group of each ``(optimizer, base_lr)``
    (an optimizer may be None)."""
    for opt, base in pairs:
        for group in (opt.param_groups if opt is not None else []):
            group["lr"], group["betas"], group["weight_decay"] = base * factor, tuple(t.betas), t.weight_decay


def kmeans_pools(module: nn.Module) -> dict[str, torch.Tensor]:
    """The frames each codebook level still pools for its k-means init (held in memory, outside the state_dict):
    a checkpoint carries them, or a run resumed while a level pools would initialise it on other frames."""
    return {name: torch.cat(m._pool) for name, m in module.named_modules() if getattr(m, "_pool", None)}


def restore_kmeans_pools(module: nn.Module, pools: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`kmeans_pools` (levels absent from ``pools`` start with an empty pool)."""
    for name, m in module.named_modules():
        if isinstance(getattr(m, "_pool", None), list):
            m._pool = [pools[name]] if name in pools else []
