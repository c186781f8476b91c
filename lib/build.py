"""Turn a :class:`lib.config.Config` into modules: the codec and its discriminators.

Kept apart from the modules themselves so that each class takes plain constructor arguments (usable without a
config) and this file is the one place that knows how config keys map onto them.
"""
from __future__ import annotations

from torch import nn

from lib.config import Config, ModelConfig


def build_quantizer(m: ModelConfig):
    """The residual VQ described by ``m.quantizer`` (SOM codebooks when ``som`` is on)."""
    from lib.model.quantize import ResidualVQ
    from lib.model.som import SOMGrid

    q = m.quantizer
    som = None
    if q.som:
        som = SOMGrid(q.codebook_size, shape=tuple(q.som_shape) if q.som_shape else None,
                      neighbourhood=q.som_neighbourhood, sigma_start=q.som_sigma_start,
                      sigma_end=q.som_sigma_end, anneal_steps=q.som_anneal_steps, schedule=q.som_schedule)
    return ResidualVQ(m.dim, q.n_q, q.codebook_size, quantizer_dropout=q.quantizer_dropout,
                      codebook_dim=q.codebook_dim, decay=q.decay, kmeans_init=q.kmeans_init,
                      kmeans_iters=q.kmeans_iters, dead_code_threshold=q.dead_code_threshold,
                      cosine=q.cosine, som=som)


def build_codec(cfg: Config) -> nn.Module:
    """The :class:`lib.model.codec.Codec` described by ``cfg.model`` at ``cfg.data.sample_rate``."""
    from lib.model.codec import Codec, SEANetDecoder, SEANetEncoder

    m = cfg.model
    common = dict(channels=m.channels, dim=m.dim, n_filters=m.n_filters, ratios=tuple(m.ratios),
                  dilations=tuple(m.dilations), kernel_size=m.kernel_size,
                  residual_kernel_size=m.residual_kernel_size, last_kernel_size=m.last_kernel_size,
                  activation=m.activation, block=m.block, compress=m.compress)
    encoder = SEANetEncoder(**common)
    decoder = SEANetDecoder(**common, upsampler=m.upsampler)
    bottleneck = None
    if m.bottleneck == "energy":
        from lib.model.energy import EnergyTransformer

        e = m.energy
        bottleneck = EnergyTransformer(m.dim, n_heads=e.n_heads, head_dim=e.head_dim,
                                       hopfield_hidden=e.hopfield_hidden, n_steps=e.n_steps,
                                       step_size=e.step_size, causal=e.causal, hopfield=e.hopfield)
    return Codec(encoder, build_quantizer(m), decoder, cfg.data.sample_rate, bottleneck=bottleneck,
                 continuous=m.continuous, frame_lookahead=m.frame_lookahead)


def build_discriminators(cfg: Config) -> nn.ModuleDict:
    """One entry per name in ``cfg.train.discriminators`` (``stft``, ``waveform``, ``period``)."""
    from lib.model.discriminators import (MultiPeriodDiscriminator, MultiScaleSTFTDiscriminator,
                                 MultiScaleWaveformDiscriminator)

    t = cfg.train
    makers = {
        "stft": lambda: MultiScaleSTFTDiscriminator(n_ffts=tuple(t.stft_n_ffts), channels=t.disc_channels),
        "waveform": lambda: MultiScaleWaveformDiscriminator(channels=t.disc_channels,
                                                            max_channels=t.disc_max_channels),
        "period": lambda: MultiPeriodDiscriminator(channels=t.disc_channels, max_channels=t.disc_max_channels),
    }
    return nn.ModuleDict({name: makers[name]() for name in t.discriminators})
