"""The configuration's schema: one typed dataclass per section (data, model, loss, train), with defaults and a
comment per knob; `ConfigError` names the key a wrong value sits at. Loading and checks: :mod:`lib.config`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


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
    # share of those minutes given to recorded human speech (the asterisk voice prompts; their held-out speakers'
    # prompts come on top, for the valid and test splits)
    corpus_real_speech_share: float = 0.0


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
    decoder_lookahead: int = 0  # latent frames after f that frame f's spectrum sees (each adds a hop of latency)
    decoder_subframes: int = 1  # spectra per latent frame, synthesised at hop / s with n_fft / s windows
    envelope_band_hz: list[float] = field(default_factory=list)  # band edges of a gain envelope within each frame
    envelope_steps: int = 4  # the envelope's gains per band and frame, interpolated across the frame's window


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
    envelope_correlation: float = 0.0  # 1 - correlation of band envelopes over 384 ms (a STOI proxy)
    adversarial: float = 3.0
    feature: float = 3.0
    commitment: float = 1.0
    repulsion: float = 0.0  # discriminator-side repulsion term (lib.training.adversarial.repulsion_loss); 0 = off
    downsampled: float = 0.0  # downsampled-signal objective on decoder stages; 0 = off
    adversarial_kind: str = "hinge"  # or "lsgan"
    balancer: bool = False  # EnCodec-style gradient balancer instead of fixed weights
    # The balancer measures each term's gradient norm on every n-th step only; the steps between backpropagate
    # the weighted sum at the standing norms in one pass (lib.training.balancer.Balancer, norm_every)
    balancer_norm_every: int = 1
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
    # The derivative term from this frequency up (Hz), so that below phase_max_hz both the phase and its
    # differences are held; null = from phase_max_hz (the bins the complex term leaves).
    phase_derivative_min_hz: float | None = None
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
    disc_every: int = 1  # after it, one adversarial step (generator terms and discriminator update) every k steps
    disc_crop_seconds: float | None = None  # the discriminators see this long a random crop of each item (None: all)
    # Steps during which latents bypass the quantizer: a random encoder's output is nearly constant, and codebooks
    # k-means-initialised on it collapse to a handful of codes.
    quantizer_warmup_steps: int = 0
    # A checkpoint whose codec (weights, codebooks, and its weight EMA) starts this run, with a fresh optimizer and
    # schedule: fine-tuning on your own data, or an adversarial phase after a reconstruction-only run. Trained
    # codebooks need no quantizer warm-up, so none is done.
    init_from: str | None = None
    weight_decay: float = 0.01  # AdamW's decoupled weight decay (generator and discriminators)
    lr_schedule: str = "constant"  # "constant", or "cosine" decay to lr * lr_min_ratio at train.steps
    lr_warmup_steps: int = 0  # linear warm-up from 0 before the schedule
    lr_min_ratio: float = 0.1
    decoder_only_fraction: float = 0.0  # last share of the run: the decoder alone on frozen codes; 0 = off
    grad_clip: float | None = 10.0
    max_bad_steps: int = 10  # stop after this many non-finite steps in a row
    ema_decay: float | None = None  # generator weight EMA; None = off
    precision: str = "fp32"  # "fp32", "bf16" (autocast: the codec's forward; GPU or CPU), "fp16" (GPU only) or
    # "auto" (bf16 where the device has bf16 instructions, else fp32)
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
