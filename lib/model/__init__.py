"""The model layer: layers, codec, quantizers, bottlenecks, discriminators. Imports nothing from training, data
or analysis.

Importing the package imports every model module, so every built-in kind is in its registry
(:mod:`lib.model.registries`). A new module that registers a kind is added to the list below.
"""
from lib.model import (activations, codebook, codec, conv, discriminators, energy, fsq, guards,  # noqa: F401
                       longform, multires, prior, quantize, registries, som, spectral)
