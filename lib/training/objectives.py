"""The generator objective as a table of weighted terms, and the adversarial loss kinds.

The trainer's generator loss is ``sum(weight[name] * term(ctx))`` over the terms registered in :data:`LOSS_TERMS`,
in registration order, with ``weight[name]`` the field of :class:`lib.config.LossConfig` of the same name. A term
is built once per run (``Term(cfg)``, an ``nn.Module`` so it follows the trainer to its device) when its weight is
above 0 or it is ``always`` logged, and is called with the :class:`StepContext` of the step. Adding a loss::

    @LOSS_TERMS.register("waveform_mse")      # plus a field ``waveform_mse: float = 0.0`` in LossConfig
    class WaveformMSE(LossTerm):
        def forward(self, ctx: StepContext) -> torch.Tensor:
            return (ctx.recon - ctx.target).pow(2).mean()

``loss.adversarial_kind`` names an entry of :data:`ADVERSARIAL_LOSSES`: a discriminator and a generator loss on
the discriminators' logit lists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from lib.registry import Registry
from lib.training.envelope import EnvelopeCorrelationLoss
from lib.training.adversarial import feature_matching_loss, hinge_d_loss, hinge_g_loss, lsgan_d_loss, lsgan_g_loss
from lib.training.losses import (ComplexSTFTLoss, MultiResolutionSTFTLoss, MultiScaleMelLoss, SpectrumPair,
                                  downsampled_signal_loss, waveform_l1, waveform_mse)

LOSS_TERMS = Registry("loss term")
ADVERSARIAL_LOSSES = Registry("adversarial loss")


class AdversarialLoss(NamedTuple):
    discriminator: Callable  # (real_logits, fake_logits) -> scalar
    generator: Callable  # (fake_logits) -> scalar


ADVERSARIAL_LOSSES.register("hinge", AdversarialLoss(hinge_d_loss, hinge_g_loss))
ADVERSARIAL_LOSSES.register("lsgan", AdversarialLoss(lsgan_d_loss, lsgan_g_loss))


@dataclass
class StepContext:
    """What a loss term sees of one generator step.

    ``wav`` the batch ``[B, C, T]``; ``out`` the codec's :class:`lib.model.codec.CodecOutput`; ``discriminate`` a
    callable returning, per discriminator in play, ``(fake_logits, fake_features, real_features)`` computed with
    the discriminators frozen (called at most once per step, through :meth:`discriminator_outputs`); ``tail`` the
    last samples of a crop the decoder cannot finish (``Codec.unfinished_tail``: an overlap-add still waiting for
    the next frame), which the reconstruction terms leave out through :attr:`recon` and :attr:`target`;
    :attr:`spectra` their STFTs, computed once per resolution for every spectral term of the step.
    """

    wav: torch.Tensor
    out: Any
    discriminate: Callable[[], list[tuple]] | None = None
    tail: int = 0
    _disc: list[tuple] | None = field(default=None, repr=False)
    _spectra: SpectrumPair | None = field(default=None, repr=False)

    @property
    def recon(self) -> torch.Tensor:
        """The reconstruction ``[B, C, T - tail]`` the codec can be held to (float32, whatever the forward's
        precision)."""
        return self.out.recon[..., : self.out.recon.shape[-1] - self.tail].float()

    @property
    def target(self) -> torch.Tensor:
        """The input ``[B, C, T - tail]`` aligned with :attr:`recon`."""
        return self.wav[..., : self.wav.shape[-1] - self.tail]

    @property
    def spectra(self) -> SpectrumPair:
        """The :class:`lib.training.losses.SpectrumPair` of :attr:`recon` and :attr:`target`."""
        if self._spectra is None:
            self._spectra = SpectrumPair.of(self.recon, self.target, None)
        return self._spectra

    def discriminator_outputs(self) -> list[tuple]:
        if self._disc is None:
            if self.discriminate is None:
                raise ValueError("this step has no discriminators in play")
            self._disc = self.discriminate()
        return self._disc


class LossTerm(nn.Module):
    """A generator loss term: ``forward(ctx: StepContext) -> scalar``.

    Class attributes: ``always`` computed and logged even at weight 0; ``adversarial`` only on steps where the
    discriminators play; ``on_output`` depends on the codec only through ``ctx.recon`` (the gradient balancer
    rescales exactly these); ``needs_stages`` asks the codec for its decoder stage outputs.
    """

    always = False
    adversarial = False
    on_output = True
    needs_stages = False

    def __init__(self, cfg):
        super().__init__()


@LOSS_TERMS.register("mel")
class MelTerm(LossTerm):
    """SoundStream's multi-window mel loss (``loss.mel_windows``, ``.mel_log_distance``, ``.mel_log_weight``)."""

    always = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss = MultiScaleMelLoss(cfg.data.sample_rate, windows=tuple(cfg.loss.mel_windows),
                                      log_distance=cfg.loss.mel_log_distance, log_weight=cfg.loss.mel_log_weight,
                                      hop_fraction=cfg.loss.stft_hop_fraction)

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return self.loss(ctx.recon, ctx.target, spectra=ctx.spectra)


@LOSS_TERMS.register("l1")
class L1Term(LossTerm):
    """Mean absolute sample difference."""

    always = True

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return waveform_l1(ctx.recon, ctx.target)


@LOSS_TERMS.register("waveform_mse")
class WaveformMSETerm(LossTerm):
    """Mean squared sample difference: fixes polarity and phase, which the spectral terms cannot see."""

    def __init__(self, cfg):
        super().__init__(cfg)
        own = cfg.loss.waveform_mse_max_hz
        self.sample_rate, self.max_hz = cfg.data.sample_rate, cfg.loss.phase_max_hz if own is None else own

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return waveform_mse(ctx.recon, ctx.target, self.sample_rate, self.max_hz)


@LOSS_TERMS.register("complex_stft")
class ComplexSTFTTerm(LossTerm):
    """Multi-resolution L2 on power-compressed complex spectra (magnitude and phase)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss = ComplexSTFTLoss(sample_rate=cfg.data.sample_rate, phase_max_hz=cfg.loss.phase_max_hz,
                                    phase_derivative=cfg.loss.phase_derivative,
                                    derivative_min_hz=cfg.loss.phase_derivative_min_hz,
                                    hop_fraction=cfg.loss.stft_hop_fraction)

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return self.loss(ctx.recon, ctx.target, spectra=ctx.spectra)


@LOSS_TERMS.register("envelope_correlation")
class EnvelopeCorrelationTerm(LossTerm):
    """1 - correlation of one-third-octave band envelopes over 384 ms segments (what STOI measures)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss = EnvelopeCorrelationLoss(cfg.data.sample_rate)

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return self.loss(ctx.recon, ctx.target)


@LOSS_TERMS.register("stft")
class STFTTerm(LossTerm):
    """Multi-resolution STFT loss (spectral convergence + log magnitude)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss = MultiResolutionSTFTLoss()

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return self.loss(ctx.recon, ctx.target)


@LOSS_TERMS.register("adversarial")
class AdversarialTerm(LossTerm):
    """The ``loss.adversarial_kind`` generator loss, averaged over the discriminators in play."""

    always = True
    adversarial = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.g_loss = ADVERSARIAL_LOSSES.get(cfg.loss.adversarial_kind).generator

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return torch.stack([self.g_loss(fake) for fake, _, _ in ctx.discriminator_outputs()]).mean()


@LOSS_TERMS.register("feature")
class FeatureTerm(LossTerm):
    """Relative feature matching against the real batch, averaged over the discriminators in play."""

    always = True
    adversarial = True

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return torch.stack([feature_matching_loss(real, fake)
                            for _, fake, real in ctx.discriminator_outputs()]).mean()


@LOSS_TERMS.register("downsampled")
class DownsampledTerm(LossTerm):
    """Decoder stages should track the input resampled to their rate (the downsampled-signal objective)."""

    on_output = False
    needs_stages = True

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return downsampled_signal_loss(ctx.out.stages, ctx.wav)


@LOSS_TERMS.register("commitment")
class CommitmentTerm(LossTerm):
    """The quantizer's commitment loss (zero without a quantizer)."""

    always = True
    on_output = False

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return ctx.out.commit_loss


def loss_weights(loss_cfg) -> dict[str, float]:
    """``{term: weight}`` for every registered term, read from the ``LossConfig`` field of the same name."""
    missing = [name for name in LOSS_TERMS if not hasattr(loss_cfg, name)]
    if missing:
        raise ValueError(f"loss terms {missing} have no weight: add a field of that name to LossConfig")
    return {name: float(getattr(loss_cfg, name)) for name in LOSS_TERMS}


def build_terms(cfg) -> nn.ModuleDict:
    """The terms this run computes (weight above 0, or logged always), in registration order."""
    weights = loss_weights(cfg.loss)
    return nn.ModuleDict({name: LOSS_TERMS.get(name)(cfg) for name in LOSS_TERMS
                          if weights[name] > 0 or LOSS_TERMS.get(name).always})
