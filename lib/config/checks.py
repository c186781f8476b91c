"""Checks of a loaded configuration: numbers in range, choices the registries know, fields that must agree
(strides and hop, SOM grid and codebook size, ...). `validate` raises `ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import math

from lib.config.schema import Config, ConfigError
from lib.model.som import NEIGHBOURHOODS, SCHEDULES


def _registries() -> dict:
    """The registries whose names are valid config choices (imported here: the model and loss modules register
    their kinds on import, and none of them imports this module)."""
    import lib.model  # noqa: F401  (registers every built-in model kind)
    from lib.model import registries as r
    from lib.training.objectives import ADVERSARIAL_LOSSES, LOSS_TERMS

    return {"quantizers": r.QUANTIZERS, "encoders": r.ENCODERS, "decoders": r.DECODERS, "blocks": r.BLOCKS,
            "upsamplers": r.UPSAMPLERS, "bottlenecks": r.BOTTLENECKS, "activations": r.ACTIVATIONS,
            "discriminators": r.DISCRIMINATORS,
            "adversarial": ADVERSARIAL_LOSSES, "loss_terms": LOSS_TERMS}


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def _check_ranges(cfg: Config) -> None:
    """Numbers that must be positive (or in a range): a wrong sign or a zero fails here, naming the key,
    rather than deep in the code or silently (a negative ``train.grad_clip`` would flip the gradients)."""
    d, t = cfg.data, cfg.train
    for key, value, ok, want in [
        ("data.batch_size", d.batch_size, d.batch_size >= 1, ">= 1"),
        ("data.num_workers", d.num_workers, d.num_workers >= 0, ">= 0"),
        ("data.segment_seconds", d.segment_seconds, d.segment_seconds > 0, "> 0"),
        ("data.valid_clips", d.valid_clips, d.valid_clips >= 1, ">= 1"),
        ("data.valid_seconds", d.valid_seconds, d.valid_seconds > 0, "> 0"),
        ("data.corpus_real_speech_share", d.corpus_real_speech_share, 0 <= d.corpus_real_speech_share <= 1,
         "in [0, 1]"),
        ("train.lr", t.lr, t.lr > 0, "> 0"),
        ("train.disc_lr", t.disc_lr, t.disc_lr > 0, "> 0"),
        ("train.betas", t.betas, len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "two numbers in [0, 1)"),
        ("train.grad_clip", t.grad_clip, t.grad_clip is None or t.grad_clip > 0, "> 0 or null (no clipping)"),
        ("train.max_bad_steps", t.max_bad_steps, t.max_bad_steps >= 1, ">= 1"),
        ("train.disc_window", t.disc_window, t.disc_window >= 1, ">= 1"),
        ("train.quantizer_warmup_steps", t.quantizer_warmup_steps, t.quantizer_warmup_steps >= 0, ">= 0"),
        ("train.adv_warmup_steps", t.adv_warmup_steps, t.adv_warmup_steps >= 0, ">= 0"),
        ("train.disc_every", t.disc_every, t.disc_every >= 1, ">= 1"),
        ("train.disc_crop_seconds", t.disc_crop_seconds, t.disc_crop_seconds is None or t.disc_crop_seconds > 0,
         "> 0 or null (whole crops)"),
        ("train.minutes", t.minutes, t.minutes is None or t.minutes > 0, "> 0 or null (steps only)"),
        ("train.decoder_only_fraction", t.decoder_only_fraction, 0 <= t.decoder_only_fraction < 1, "in [0, 1)"),
    ]:
        if not ok:
            raise ConfigError(f"{key}: must be {want}, got {value!r}")
    # A negative weight would silently drop a term, or turn an always-computed one (mel, commitment) into a reward.
    for field_ in dataclasses.fields(cfg.loss):
        value = getattr(cfg.loss, field_.name)
        if isinstance(value, float) and value < 0 and not field_.name.endswith("_hz"):  # band limits: validate()
            raise ConfigError(f"loss.{field_.name}: must be >= 0 (a weight), got {value!r}")


def validate(cfg: Config) -> None:
    """Cross-field checks; raise ConfigError naming the offending key."""
    m, q, t, d, lo = cfg.model, cfg.model.quantizer, cfg.train, cfg.data, cfg.loss
    if not m.ratios or any(r < 1 for r in m.ratios):
        raise ConfigError(f"model.ratios: must be positive integers, got {m.ratios}")
    hop = math.prod(m.ratios)
    if m.hop_length is not None and m.hop_length != hop:
        raise ConfigError(f"model.hop_length={m.hop_length} but model.ratios {m.ratios} multiply to {hop}")
    if d.sample_rate <= 0:
        raise ConfigError(f"data.sample_rate must be positive, got {d.sample_rate}")
    _check_ranges(cfg)
    if d.segment_seconds * d.sample_rate < hop:
        raise ConfigError(f"data.segment_seconds={d.segment_seconds} is shorter than one frame ({hop} samples)")
    if m.channels != d.channels:
        raise ConfigError(f"model.channels={m.channels} differs from data.channels={d.channels}")
    reg = _registries()
    for key, value, allowed in [
        ("model.quantizer.kind", q.kind, reg["quantizers"].names()),
        ("model.encoder", m.encoder, reg["encoders"].names()),
        ("model.decoder", m.decoder, reg["decoders"].names()),
        ("model.block", m.block, reg["blocks"].names()),
        ("model.upsampler", m.upsampler, reg["upsamplers"].names()),
        ("model.bottleneck", m.bottleneck, ("none", *reg["bottlenecks"].names())),
        ("model.activation", m.activation, reg["activations"].names()),
        ("model.energy.hopfield", m.energy.hopfield, ("relu", "softmax")),
        ("model.quantizer.som_neighbourhood", q.som_neighbourhood, NEIGHBOURHOODS),
        ("model.quantizer.som_schedule", q.som_schedule, SCHEDULES),
        ("loss.adversarial_kind", lo.adversarial_kind, reg["adversarial"].names()),
        ("loss.mel_log_distance", lo.mel_log_distance, ("l1", "l2")),
        ("train.disc_choice", t.disc_choice, ("uniform", "loss_weighted")),
        ("train.precision", t.precision, ("auto", "fp32", "bf16", "fp16")),
        ("train.lr_schedule", t.lr_schedule, ("constant", "cosine")),
    ]:
        _choice(key, value, allowed)
    for name in t.discriminators:
        _choice("train.discriminators", name, reg["discriminators"].names())
    if q.kind == "fsq":
        if not q.fsq_levels or min(q.fsq_levels) < 2:
            raise ConfigError(f"model.quantizer.fsq_levels must be integers >= 2, got {q.fsq_levels}")
        if q.som:
            raise ConfigError("model.quantizer.kind=fsq has no codebook to organise: set model.quantizer.som=false")
        q.codebook_size = math.prod(q.fsq_levels)  # implied by the levels; kept in sync for the bitrate arithmetic
    if not 0.0 <= float(q.quantizer_dropout) <= 1.0:
        raise ConfigError(f"model.quantizer.quantizer_dropout must be in [0, 1] (or true/false), "
                          f"got {q.quantizer_dropout}")
    if q.kmeans_frames_per_code < 0:
        raise ConfigError(f"model.quantizer.kmeans_frames_per_code must be >= 0, got {q.kmeans_frames_per_code}")
    if m.encoder == "stft" or m.decoder == "istft":
        n_fft = m.spectral.n_fft or 2 * hop
        if n_fft < 2 * hop or n_fft % hop or (n_fft // hop) & (n_fft // hop - 1):
            raise ConfigError(f"model.spectral.n_fft={n_fft} must be the hop ({hop}) times 2, 4, 8, ...")
        from lib.model.spectral import HEADS
        if m.spectral.head not in HEADS:
            raise ConfigError(f"model.spectral.head={m.spectral.head!r}: expected one of {list(HEADS)}")
        look = m.spectral.decoder_lookahead
        if not isinstance(look, int) or isinstance(look, bool) or look < 0:
            raise ConfigError(f"model.spectral.decoder_lookahead={look!r}: expected a whole number of frames >= 0")
        sub = m.spectral.decoder_subframes
        if not isinstance(sub, int) or isinstance(sub, bool) or sub < 1 or hop % sub or n_fft % sub:
            raise ConfigError(f"model.spectral.decoder_subframes={sub!r}: expected a whole number >= 1 that divides "
                              f"the hop ({hop}) and n_fft ({n_fft})")
        edges, nyquist = m.spectral.envelope_band_hz, cfg.data.sample_rate / 2
        if edges and (sub != 1 or list(edges) != sorted(edges) or not all(0 < e < nyquist for e in edges)):
            raise ConfigError(f"model.spectral.envelope_band_hz={edges!r}: expected rising band edges between 0 and "
                              f"{nyquist:g} Hz, with decoder_subframes 1 (got {sub})")
        if edges and (not isinstance(m.spectral.envelope_steps, int) or m.spectral.envelope_steps < 2):
            raise ConfigError(f"model.spectral.envelope_steps={m.spectral.envelope_steps!r}: expected a whole "
                              f"number >= 2")
    if t.weight_decay < 0 or t.lr_warmup_steps < 0 or not 0.0 <= t.lr_min_ratio <= 1.0:
        raise ConfigError(f"train.weight_decay and train.lr_warmup_steps must be >= 0 and train.lr_min_ratio in "
                          f"[0, 1], got {t.weight_decay}, {t.lr_warmup_steps}, {t.lr_min_ratio}")
    if q.n_q < 1 or q.codebook_size < 2:
        raise ConfigError(f"model.quantizer: need n_q >= 1 and codebook_size >= 2, got {q.n_q}, {q.codebook_size}")
    if q.codebook_dim is not None and not 0 < q.codebook_dim <= m.dim:
        raise ConfigError(f"model.quantizer.codebook_dim={q.codebook_dim} must be in 1..model.dim={m.dim}")
    if q.code_gradient and (q.codebook_dim is None or q.codebook_dim == m.dim):
        raise ConfigError(f"model.quantizer.code_gradient needs codebook_dim < model.dim={m.dim}, "
                          f"got codebook_dim={q.codebook_dim}")
    if isinstance(q.beam_width, bool) or not isinstance(q.beam_width, int) or q.beam_width < 1:
        raise ConfigError(f"model.quantizer.beam_width must be an integer >= 1, got {q.beam_width!r}")
    if q.kind == "rvq" and q.beam_width > 1 and (q.codebook_dim not in (None, m.dim) or q.cosine
                                                 or q.normalized_search):
        raise ConfigError(f"model.quantizer.beam_width={q.beam_width} needs Euclidean codes in the latent space (no "
                          "codebook_dim, cosine or normalized_search): set model.quantizer.beam_width=1 with them")
    if q.rotation_trick and (q.kind != "rvq" or q.code_gradient):
        raise ConfigError(f"model.quantizer.rotation_trick needs kind rvq without code_gradient (it replaces the "
                          f"straight-through estimator on the levels' sum), got kind={q.kind!r}, "
                          f"code_gradient={q.code_gradient}")
    if q.som and q.som_shape is not None:
        if len(q.som_shape) != 2 or math.prod(q.som_shape) != q.codebook_size:
            raise ConfigError(f"model.quantizer.som_shape={q.som_shape} does not hold "
                              f"codebook_size={q.codebook_size} codes (rows x cols must equal it)")
    if not 0.0 < q.decay < 1.0:
        raise ConfigError(f"model.quantizer.decay must be in (0, 1), got {q.decay}")
    if m.continuous and q.som:
        raise ConfigError("model.continuous=true has no quantizer, so model.quantizer.som must be false")
    if t.steps < 0 or t.val_every < 1 or t.ckpt_every < 1 or t.log_every < 1:
        raise ConfigError("train.steps must be >= 0 and train.val_every/ckpt_every/log_every >= 1")
    for key in ("phase_max_hz", "waveform_mse_max_hz"):
        hz = getattr(lo, key)
        if hz is not None and not 0.0 < hz <= d.sample_rate / 2:
            raise ConfigError(f"loss.{key} must be null or in (0, data.sample_rate / 2 = {d.sample_rate / 2:g}] "
                              f"Hz, got {hz}")
    if not 0.0 < lo.stft_hop_fraction <= 0.5:
        raise ConfigError(f"loss.stft_hop_fraction must be in (0, 0.5], got {lo.stft_hop_fraction}")
    if lo.phase_derivative < 0.0:
        raise ConfigError(f"loss.phase_derivative must be >= 0, got {lo.phase_derivative}")
    hz = lo.phase_derivative_min_hz
    if hz is not None and not 0.0 <= hz <= d.sample_rate / 2:
        raise ConfigError(f"loss.phase_derivative_min_hz must be null or in [0, data.sample_rate / 2 = "
                          f"{d.sample_rate / 2:g}] Hz, got {hz}")
    if lo.balancer_norm_every < 1:
        raise ConfigError(f"loss.balancer_norm_every must be >= 1, got {lo.balancer_norm_every}")
    if lo.mel_log_weight is not None and not lo.mel_log_weight > 0.0:
        raise ConfigError(f"loss.mel_log_weight must be null or > 0, got {lo.mel_log_weight}")
    if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in (0, 1) or null, got {t.ema_decay}")
    terms = reg["loss_terms"]
    missing = [name for name in terms if not hasattr(lo, name)]
    if missing:
        raise ConfigError(f"loss terms {missing} are registered but LossConfig has no weight field for them")
    if lo.balancer and all(getattr(lo, name) == 0 for name in terms if terms.get(name).on_output):
        raise ConfigError("loss.balancer=true but every loss weight on the reconstruction is 0")
