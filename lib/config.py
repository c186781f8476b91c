"""Typed configuration: dataclasses loaded from YAML presets with overrides, validated with clear errors.

A preset lives in ``lib/presets/<name>.yml``; it may name a ``base`` preset it extends. Overrides are either a
nested dict or dotted strings (``"model.quantizer.n_q=4"``), so a notebook's parameters cell and the command line
share one mechanism. Unknown keys and inconsistent values raise ``ConfigError`` naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lib.model.som import NEIGHBOURHOODS, SCHEDULES

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the key."""


@dataclass
class DataConfig:
    sample_rate: int = 24000
    channels: int = 1
    segment_seconds: float = 1.0  # training crop length
    batch_size: int = 8
    num_workers: int = 0
    valid_clips: int = 8  # held-out clips used for validation metrics
    valid_seconds: float = 4.0  # validation clips are cut to at most this length
    corpus_minutes: float = 30.0  # embedded default corpus (data/default); docs/results.md "A larger default corpus"


@dataclass
class QuantizerConfig:
    kind: str = "rvq"  # a name in lib.model.registries.QUANTIZERS
    n_q: int = 8
    codebook_size: int = 1024
    codebook_dim: int | None = None  # < model.dim gives factorised low-dimensional codes
    decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: float = 2.0
    cosine: bool = False
    normalized_search: bool = False  # nearest code by cosine, values keep their magnitude (DAC's lookup)
    code_gradient: bool = False  # straight-through in code space: the in-projection learns from the reconstruction
    beam_width: int = 1  # residual search: 1 = greedy, more = keep that many partial sums per frame (kind rvq)
    beam_in_training: bool = True  # false: training searches greedily, evaluation and encoding with the beam
    rotation_trick: bool = False  # kind rvq: the encoder's gradient turned by the rotation from x to its code
    # Fraction of batch items that draw their own number of levels in [1, n_q] (true = all, false = none);
    # the other items use every level, so the decoder keeps seeing the full bitrate (DAC uses 0.5).
    quantizer_dropout: float | bool = 1.0
    # k-means pools training latents until it holds this many frames per code (a batch of 1 s crops holds ~600
    # frames for 1024 codes); levels initialise in turn, each on its own residuals. 0 = the first batch alone.
    kmeans_frames_per_code: float = 1.0
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # kind fsq: values per dimension
    # Self-organising-map codebooks (Kohonen learning rule); off = plain EMA codebooks.
    som: bool = False
    som_shape: list[int] | None = None  # [rows, cols]; None = near-square
    som_neighbourhood: str = "gaussian"  # or "box"
    som_sigma_start: float | None = None  # None = max(rows, cols) / 4
    som_sigma_end: float = 0.0
    som_anneal_steps: int = 2000
    som_schedule: str = "exp"  # or "linear"


@dataclass
class EnergyConfig:
    n_heads: int = 4
    head_dim: int = 32
    hopfield_hidden: int | None = None
    n_steps: int = 4
    step_size: float = 0.1
    causal: bool = True
    hopfield: str = "relu"  # or "softmax"


@dataclass
class SpectralConfig:
    """The frame-rate STFT encoder and iSTFT decoder (``model.encoder: stft``, ``model.decoder: istft``)."""
    n_fft: int | None = None  # None = 2 * hop (algorithmic latency 2 * hop); must be hop * 2^k
    hidden: int = 256  # ConvNeXt width
    encoder_blocks: int = 4
    decoder_blocks: int = 6
    kernel_size: int = 7  # causal depthwise kernel, in frames
    mlp_ratio: float = 3.0
    head: str = "complex"  # iSTFT head: "complex" (real, imaginary), "polar" (log magnitude, phase) or "compressed"


@dataclass
class ModelConfig:
    channels: int = 1
    dim: int = 128
    n_filters: int = 32
    ratios: list[int] = field(default_factory=lambda: [2, 4, 5, 8])  # encoder order; decoder reverses
    hop_length: int | None = None  # optional check: must equal prod(ratios)
    dilations: list[int] = field(default_factory=lambda: [1, 3, 9])
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 7
    activation: str = "elu"
    compress: int = 2
    # Names in the registries of lib.model.registries (config.validate lists the valid ones).
    encoder: str = "seanet"  # "seanet" (strided convolutions) or "stft" (causal STFT + frame-rate ConvNeXt)
    decoder: str = "seanet"  # "seanet" (the encoder's mirror) or "istft" (frame-rate ConvNeXt + inverse STFT)
    block: str = "conv"  # "conv" (dilated residual units) or "multires" (MultiresConv blocks)
    upsampler: str = "transposed"  # "transposed" or "wavelet"
    bottleneck: str = "none"  # "none" or "energy" (energy transformer before the quantizer)
    continuous: bool = False  # True skips quantisation: NOT a codec, for comparison only
    # Each frame sees its own hop of samples (one frame of latency, as EnCodec/SoundStream). Off, the layers are
    # causal down to the sample and the decoder must predict up to hop-1 samples ahead: a much worse codec.
    frame_lookahead: bool = True
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)


@dataclass
class LossConfig:
    # One weight per generator loss term of lib.training.objectives.LOSS_TERMS, named like the term.
    mel: float = 15.0
    stft: float = 0.0
    l1: float = 0.1
    waveform_mse: float = 0.0  # squared waveform error: pins phase and polarity, which the mel loss cannot see
    complex_stft: float = 0.0  # multi-resolution loss on power-compressed complex spectra (magnitude and phase)
    adversarial: float = 3.0
    feature: float = 3.0
    commitment: float = 1.0
    repulsion: float = 0.0  # discriminator-side repulsion term (lib.training.losses.repulsion_loss); 0 = off
    downsampled: float = 0.0  # downsampled-signal objective on decoder stages; 0 = off
    adversarial_kind: str = "hinge"  # or "lsgan"
    balancer: bool = False  # EnCodec-style gradient balancer instead of fixed weights
    mel_windows: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048])
    mel_log_distance: str = "l1"  # distance on log-mel: "l1" (robust, DAC-like) or "l2" (SoundStream's MSE)
    # Weight of each window's log-mel term: null = SoundStream's sqrt(window / 2) (the 2048 window 8x the 32 one);
    # a number weighs every window the same (DAC).
    mel_log_weight: float | None = None
    # The phase-aware terms (waveform_mse, complex_stft) see only frequencies up to this (Hz); above it only the
    # magnitude terms hold the output to the target. null = the whole band.
    phase_max_hz: float | None = None
    # The waveform MSE alone sees only frequencies up to this (Hz); null = phase_max_hz. Above it the phase is left
    # to the complex-STFT term, whose magnitude part, unlike the MSE, does not favour silence where the phase is
    # unpredictable.
    waveform_mse_max_hz: float | None = None
    # Above phase_max_hz the complex-STFT term holds the phase's frame-to-frame and bin-to-bin differences at this
    # weight (relative to its other parts) instead of leaving the phase free; 0 = off.
    phase_derivative: float = 0.0
    # Hop of the mel and complex-STFT losses as a fraction of each window: 0.25 (75 % overlap, SoundStream's and
    # DAC's). 0.5 halves the frames, but the squared Hann windows, which weigh a squared error, then swing 2:1 within
    # each hop (at 0.25 and 1/3 they sum to a constant); docs/results.md "The spectral losses' hop".
    stft_hop_fraction: float = 0.25


@dataclass
class TrainConfig:
    steps: int = 2000
    # A budget of training time (the steps' own, validation and checkpoints excluded): the run ends at train.steps
    # or after this many minutes, whichever comes first, and the cosine decay follows whichever is further along,
    # so that a slower machine still ends its run decayed. null = steps only (the run is then reproducible exactly).
    minutes: float | None = None
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    disc_lr: float = 3e-4
    discriminators: list[str] = field(default_factory=lambda: ["stft", "waveform"])
    disc_channels: int = 32
    disc_max_channels: int = 1024  # cap of the channel doubling in the waveform and period discriminators
    stft_n_ffts: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128])
    one_disc_at_a_time: bool = False
    disc_choice: str = "uniform"  # or "loss_weighted"
    disc_window: int = 1  # steps between draws of the active discriminator
    tie_bitrate: bool = False  # the drawn discriminator also fixes n_q for the window
    adv_warmup_steps: int = 0  # reconstruction-only steps before the GAN starts
    # Steps during which latents bypass the quantizer: a random encoder's output is nearly constant, and codebooks
    # k-means-initialised on it collapse to a handful of codes.
    quantizer_warmup_steps: int = 0
    weight_decay: float = 0.01  # AdamW's decoupled weight decay (generator and discriminators)
    lr_schedule: str = "constant"  # "constant", or "cosine" decay to lr * lr_min_ratio at train.steps
    lr_warmup_steps: int = 0  # linear warm-up from 0 before the schedule
    lr_min_ratio: float = 0.1
    decoder_only_fraction: float = 0.0  # last share of the run: the decoder alone on frozen codes; 0 = off
    grad_clip: float | None = 10.0
    max_bad_steps: int = 10  # stop after this many non-finite steps in a row
    ema_decay: float | None = None  # generator weight EMA; None = off
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" (autocast, GPU only)
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    val_every: int = 200
    ckpt_every: int = 500
    tensorboard: bool | None = None  # event files in run_dir/tensorboard; null = when the package is installed


@dataclass
class Config:
    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def hop_length(self) -> int:
        return math.prod(self.model.ratios)

    @property
    def frame_rate(self) -> float:
        return self.data.sample_rate / self.hop_length

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second at ``n_q`` quantizers (default: all)."""
        q = self.model.quantizer
        return (n_q or q.n_q) * math.log2(q.codebook_size) * self.frame_rate

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- loading


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yml"))


def _read_preset(name_or_path: str | Path, seen: tuple = ()) -> dict:
    path = Path(name_or_path)
    if path.suffix not in (".yml", ".yaml"):
        path = PRESET_DIR / f"{name_or_path}.yml"
    if not path.is_file():
        raise ConfigError(f"preset {str(name_or_path)!r} not found (known presets: {', '.join(list_presets())})")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if base in seen:
        raise ConfigError(f"{path}: circular 'base' chain {seen + (base,)}")
    return _merge(_read_preset(base, seen + (base,)), raw)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: dict | list[str] | None) -> dict:
    """Turn ``["model.dim=64", ...]`` (values parsed as YAML) or a nested/dotted dict into a nested dict."""
    if not overrides:
        return {}
    items = overrides.items() if isinstance(overrides, dict) else []
    if not isinstance(overrides, dict):
        pairs = []
        for s in overrides:
            if "=" not in s:
                raise ConfigError(f"override {s!r} must look like key.path=value")
            k, v = s.split("=", 1)
            pairs.append((k.strip(), yaml.safe_load(v)))
        items = pairs
    nested: dict = {}
    for key, value in items:
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = _merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return nested


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # the first type that accepts the value; the last one's error otherwise
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        return _coerce(value, inner[-1], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, raw: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = prefix or "config"
        raise ConfigError(f"unknown key(s) {', '.join(prefix + '.' + u if prefix else u for u in unknown)} "
                          f"(valid keys in {where}: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    return cls(**kwargs)


def config_from_dict(raw: dict) -> Config:
    cfg = _build(Config, raw)
    validate(cfg)
    return cfg


def load_config(preset: str | Path = "cpu", overrides: dict | list[str] | None = None) -> Config:
    """Load a preset (name in lib/presets or a YAML path) and apply overrides; validated."""
    raw = _merge(_read_preset(preset), parse_overrides(overrides))
    raw.setdefault("name", Path(str(preset)).stem)
    return config_from_dict(raw)


def _registries() -> dict:
    """The registries whose names are valid config choices (imported here: the model and loss modules register
    their kinds on import, and none of them imports this module)."""
    import lib.model  # noqa: F401  (registers every built-in model kind)
    from lib.model import registries as r
    from lib.training.objectives import ADVERSARIAL_LOSSES, LOSS_TERMS

    return {"quantizers": r.QUANTIZERS, "encoders": r.ENCODERS, "decoders": r.DECODERS, "blocks": r.BLOCKS, "upsamplers": r.UPSAMPLERS,
            "bottlenecks": r.BOTTLENECKS, "activations": r.ACTIVATIONS, "discriminators": r.DISCRIMINATORS,
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
        ("train.lr", t.lr, t.lr > 0, "> 0"),
        ("train.disc_lr", t.disc_lr, t.disc_lr > 0, "> 0"),
        ("train.betas", t.betas, len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "two numbers in [0, 1)"),
        ("train.grad_clip", t.grad_clip, t.grad_clip is None or t.grad_clip > 0, "> 0 or null (no clipping)"),
        ("train.max_bad_steps", t.max_bad_steps, t.max_bad_steps >= 1, ">= 1"),
        ("train.disc_window", t.disc_window, t.disc_window >= 1, ">= 1"),
        ("train.quantizer_warmup_steps", t.quantizer_warmup_steps, t.quantizer_warmup_steps >= 0, ">= 0"),
        ("train.adv_warmup_steps", t.adv_warmup_steps, t.adv_warmup_steps >= 0, ">= 0"),
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
        ("train.precision", t.precision, ("fp32", "bf16", "fp16")),
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
