"""Turn a :class:`lib.config.Config` into modules: the codec and its discriminators.

Every extensible part is looked up by its config string in its registry (:mod:`lib.model.registries`) and built
by that entry's ``from_config(cfg)``; each class also takes plain constructor arguments, usable without a config.
"""
from __future__ import annotations

from torch import nn

from lib.config import Config
from lib.model.codec import Codec
from lib.model.registries import BOTTLENECKS, DECODERS, DISCRIMINATORS, ENCODERS, QUANTIZERS


def build_quantizer(cfg: Config) -> nn.Module:
    """The ``model.quantizer.kind`` quantizer (a :class:`lib.model.codebook.Quantizer`)."""
    return QUANTIZERS.get(cfg.model.quantizer.kind).from_config(cfg)


def build_codec(cfg: Config) -> Codec:
    """The :class:`lib.model.codec.Codec` described by ``cfg.model`` at ``cfg.data.sample_rate``."""
    m = cfg.model
    encoder = ENCODERS.get(m.encoder).from_config(cfg)
    decoder = DECODERS.get(m.decoder).from_config(cfg)
    bottleneck = None if m.bottleneck == "none" else BOTTLENECKS.get(m.bottleneck).from_config(cfg)
    return Codec(encoder, build_quantizer(cfg), decoder, cfg.data.sample_rate, bottleneck=bottleneck,
                 continuous=m.continuous, frame_lookahead=m.frame_lookahead)


def build_discriminators(cfg: Config) -> nn.ModuleDict:
    """One entry per name in ``cfg.train.discriminators``, in that order."""
    return nn.ModuleDict({name: DISCRIMINATORS.get(name).from_config(cfg) for name in cfg.train.discriminators})
