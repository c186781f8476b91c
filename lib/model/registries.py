"""The model's extensible families, one :class:`lib.registry.Registry` each, keyed by the strings a config uses.

| registry         | config key                  | an entry is                                                      |
|------------------|-----------------------------|------------------------------------------------------------------|
| `QUANTIZERS`     | `model.quantizer.kind`      | a class with `from_config(cfg)`; see `lib.model.codebook.Quantizer` |
| `ENCODERS`       | `model.encoder`             | a class with `from_config(cfg)`: `[B, C, T] -> [B, D, ceil(T / hop)]` |
| `DECODERS`       | `model.decoder`             | a class with `from_config(cfg)`: `[B, D, F] -> [B, C, F * hop]`   |
| `BOTTLENECKS`    | `model.bottleneck`          | a class with `from_config(cfg)`: `[B, D, F] -> [B, D, F]` ("none" = no entry) |
| `DISCRIMINATORS` | `train.discriminators`      | a class with `from_config(cfg)`: `wav -> (logits, features)`     |
| `BLOCKS`         | `model.block`               | `f(channels, dilations, kernel_size, activation, compress) -> [modules]` |
| `UPSAMPLERS`     | `model.upsampler`           | `f(in_ch, out_ch, stride) -> module` `[B, in, T] -> [B, out, T * stride]` |
| `ACTIVATIONS`    | `model.activation`          | `f(channels) -> module`                                          |
| `PRIORS`         | a prior checkpoint's `kind` | a class with `from_config(prior_config)`: codes `[B, n_q, F]` -> logits per level |

``from_config`` receives the whole :class:`lib.config.Config` (read by attribute; model code never imports the
config module), except a prior's, which receives its own settings (``lib.model.prior.PriorConfig``, kept in the
prior's checkpoint). Importing :mod:`lib.model` imports every model module, so every built-in entry is registered.
"""
from __future__ import annotations

from lib.registry import Registry

QUANTIZERS = Registry("quantizer")
ENCODERS = Registry("encoder")
DECODERS = Registry("decoder")
BOTTLENECKS = Registry("bottleneck")
DISCRIMINATORS = Registry("discriminator")
BLOCKS = Registry("block")
UPSAMPLERS = Registry("upsampler")
ACTIVATIONS = Registry("activation")
PRIORS = Registry("prior")
