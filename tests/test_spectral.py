"""The frame-rate STFT encoder / iSTFT decoder: exact analysis-synthesis, frame-level causality, streaming."""
import math

import pytest
import torch

from lib.model.spectral import ISTFTDecoder, STFTEncoder

HOP = 320


@pytest.mark.parametrize("ratio", [2, 4])
def test_stft_then_istft_reconstructs_the_signal(ratio):
    """Passing the encoder's spectrum straight to the decoder's synthesis gives the input back (sqrt-Hann pair)."""
    n_fft = ratio * HOP
    enc, dec = STFTEncoder(dim=8, hop_length=HOP, n_fft=n_fft), ISTFTDecoder(dim=8, hop_length=HOP, n_fft=n_fft)
    x = torch.randn(2, 1, 30 * HOP)
    # As inside the Codec (frame look-ahead): one leading zero, encoder frame 0 dropped.
    spec = enc.stft(torch.nn.functional.pad(x, (1, 0)))[..., 1:]
    y = dec._overlap_add(dec._segments(spec))[:, dec.latency:].reshape(2, 1, -1)
    tail = n_fft - HOP  # still waiting for later frames' overlap-add
    assert y.shape == x.shape
    assert torch.allclose(y[..., : x.shape[-1] - tail], x[..., : x.shape[-1] - tail], atol=1e-4)


@pytest.mark.parametrize("head", ["complex", "polar", "compressed"])
def test_decoder_frame_f_writes_only_its_window(head):
    """A change in latent frame f alters output samples (f + 1) * hop - n_fft ... (f + 1) * hop - 1 and no other
    sample before them (frame-level causality with n_fft - hop samples of decoder latency)."""
    dec = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=2, head=head).eval()
    z = torch.randn(1, 8, 12)
    f = 6
    z2 = z.clone()
    z2[..., f:] += torch.randn(1, 8, 12 - f)
    with torch.no_grad():
        a, b = dec(z), dec(z2)
    first = (f + 1) * HOP - dec.n_fft
    assert torch.equal(a[..., :first], b[..., :first])
    assert not torch.allclose(a[..., first:first + HOP], b[..., first:first + HOP])
    assert dec.latency == dec.n_fft - HOP


@pytest.mark.parametrize("n_fft,head", [(2 * HOP, "complex"), (4 * HOP, "complex"), (2 * HOP, "polar"),
                                        (2 * HOP, "compressed")])
def test_decoder_streams_like_offline(n_fft, head):
    dec = ISTFTDecoder(dim=8, hop_length=HOP, n_fft=n_fft, hidden=16, n_blocks=2, head=head).eval()
    z = torch.randn(2, 8, 17)
    with torch.no_grad():
        offline = dec(z)
        dec.reset_stream()
        parts = [dec.stream(chunk) for chunk in torch.split(z, [1, 0, 3, 1, 7, 5], dim=-1)]
        streamed = torch.cat(parts + [dec.flush()], dim=-1)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5
    # Each chunk returns exactly the samples no later frame can change.
    assert parts[0].shape[-1] == max(0, HOP - dec.latency)


def test_encoder_streams_like_offline_and_is_causal():
    enc = STFTEncoder(dim=8, hop_length=HOP, hidden=16, n_blocks=2).eval()
    x = torch.randn(1, 1, 11 * HOP)
    with torch.no_grad():
        offline = enc(x)
        enc.reset_stream()
        streamed = torch.cat([enc.stream(c) for c in torch.split(x, 777, dim=-1)], dim=-1)
        y = x.clone()
        y[..., 5 * HOP + 1:] = 0  # frame j sees samples up to j * hop
        changed = enc(y)
    assert torch.allclose(streamed, offline[..., : streamed.shape[-1]], atol=1e-5)
    assert streamed.shape[-1] == offline.shape[-1]
    assert torch.equal(changed[..., :6], offline[..., :6]) and not torch.equal(changed[..., 6:], offline[..., 6:])


def test_stft_front_is_fixed_and_not_a_parameter():
    enc = STFTEncoder(dim=8, hop_length=HOP)
    names = [n for n, _ in enc.named_parameters()]
    assert not any(n.startswith("stft.") for n in names)
    assert "stft.conv.weight" not in enc.state_dict()  # rebuilt from the window, never loaded


def test_bad_framing_is_refused():
    with pytest.raises(ValueError, match="n_fft must be hop"):
        ISTFTDecoder(dim=8, hop_length=HOP, n_fft=3 * HOP)


def test_polar_head_synthesises_log_magnitude_and_phase():
    """head="polar": the trunk's two outputs per bin are log magnitude and phase. The encoder's spectrum given in
    that form gives the input back, as the complex head does with real and imaginary parts."""
    enc = STFTEncoder(dim=8, hop_length=HOP)
    dec = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=1, head="polar")
    x = torch.randn(1, 1, 30 * HOP)
    spec = enc.stft(torch.nn.functional.pad(x, (1, 0)))[..., 1:]
    re, im = spec[:, : dec.n_bins], spec[:, dec.n_bins:]
    polar = torch.cat([torch.complex(re, im).abs().clamp_min(1e-12).log(), torch.atan2(im, re)], dim=1)
    y = dec._overlap_add(dec._segments(polar))[:, dec.latency:].reshape(1, 1, -1)
    keep = x.shape[-1] - dec.latency
    assert torch.allclose(y[..., :keep], x[..., :keep], atol=1e-4)
    # Log magnitudes are capped at log(100): a runaway output cannot overflow to inf.
    loud = dec._segments(torch.full((1, 2 * dec.n_bins, 3), 1e4))
    assert torch.isfinite(loud).all() and loud.abs().max() < 100 * dec.n_bins


def test_compressed_head_inverts_the_encoders_features():
    """head="compressed": the trunk's two outputs per bin are the real and imaginary parts of |X|^0.3 e^{i phase},
    the very features the encoder computes, so the encoder's features given to the synthesis give the input back."""
    enc = STFTEncoder(dim=8, hop_length=HOP)
    dec = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=1, head="compressed")
    x = torch.randn(1, 1, 30 * HOP)
    feats = enc._features(enc.stft(torch.nn.functional.pad(x, (1, 0)))[..., 1:], batch=1)
    y = dec._overlap_add(dec._segments(feats))[:, dec.latency:].reshape(1, 1, -1)
    keep = x.shape[-1] - dec.latency
    assert torch.allclose(y[..., :keep], x[..., :keep], atol=1e-4)
    # doubling the compressed spectrum scales the output by 2^(1/0.3)
    y2 = dec._overlap_add(dec._segments(2 * feats))[:, dec.latency:].reshape(1, 1, -1)
    assert torch.allclose(y2[..., :keep], 2 ** (1 / 0.3) * x[..., :keep], atol=1e-3)
    # magnitudes are capped at 100, as the polar head's: a runaway output cannot overflow to inf
    loud = dec._segments(1e4 * torch.randn(1, 2 * dec.n_bins, 3))
    # irfft * sqrt(n_fft) of bins of magnitude <= 100 stays below 2 * bins * 100 / sqrt(n_fft) (window <= 1)
    assert torch.isfinite(loud).all() and loud.abs().max() < 2 * dec.n_bins * 100 / math.sqrt(dec.n_fft)


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="head='magphase'"):
        ISTFTDecoder(dim=8, hop_length=HOP, head="magphase")


@pytest.mark.parametrize("lookahead,subframes,splits", [(1, 1, [1, 0, 3, 1, 7, 5]), (2, 1, [1, 1, 0, 4, 11]),
                                                        (2, 1, [17]), (0, 2, [1, 0, 3, 1, 7, 5]),
                                                        (1, 2, [1, 1, 0, 4, 11]), (1, 4, [17])])
def test_decoder_with_lookahead_or_subframes_streams_like_offline(lookahead, subframes, splits):
    dec = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=2, head="compressed", lookahead=lookahead,
                       subframes=subframes).eval()
    z = torch.randn(2, 8, 17)
    with torch.no_grad():
        offline = dec(z)
        dec.reset_stream()
        parts = [dec.stream(chunk) for chunk in torch.split(z, splits, dim=-1)]
        streamed = torch.cat(parts + [dec.flush()], dim=-1)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5
    # a chunk of f frames returns the samples of frame f - lookahead that no later segment changes
    assert parts[0].shape[-1] == max(0, (splits[0] - lookahead) * HOP - dec.overlap)


def test_decoder_without_lookahead_keeps_its_parameters():
    """Look-ahead 0 is the causal decoder: the same parameter shapes, so older checkpoints load."""
    causal, ahead = ISTFTDecoder(dim=8, hidden=16, n_blocks=1), ISTFTDecoder(dim=8, hidden=16, n_blocks=1, lookahead=1)
    assert causal.trunk.inp.weight.shape == (16, 8, 1) and ahead.trunk.inp.weight.shape == (16, 8, 2)
    with pytest.raises(ValueError, match="lookahead"):
        ISTFTDecoder(dim=8, lookahead=-1)


@pytest.mark.parametrize("lookahead,subframes", [(1, 1), (2, 1), (0, 2), (1, 2), (0, 4)])
def test_decoder_lookahead_and_subframes_set_where_a_frame_writes(lookahead, subframes):
    """With a look-ahead of k frames and s sub-frames, a change in latent frame f alters no sample before the first
    sub-window of frame f - k, ``(f - k) * hop + hop / s - n_fft / s``, and does alter the samples just after it:
    k hops more latency than the causal decoder, and an overlap-add that reaches back (n_fft - hop) / s samples."""
    dec = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=2, head="compressed", lookahead=lookahead,
                       subframes=subframes).eval()
    z = torch.randn(1, 8, 12)
    f = 6
    z2 = z.clone()
    z2[..., f] += 1.0
    with torch.no_grad():
        a, b = dec(z), dec(z2)
    first = (f - lookahead) * HOP + HOP // subframes - dec.n_fft // subframes
    assert a.shape == (1, 1, 12 * HOP)
    assert torch.equal(a[..., :first], b[..., :first])
    assert not torch.allclose(a[..., first:first + HOP // subframes], b[..., first:first + HOP // subframes])
    assert dec.latency == (dec.n_fft - HOP) // subframes + lookahead * HOP


@pytest.mark.parametrize("subframes", [2, 4])
def test_decoder_subframes_synthesise_a_spectrum_per_subframe(subframes):
    """The trunk's output read as s spectra per frame, sub-frame j of frame f being segment f * s + j: the
    sub-hop STFT of a signal laid out that way is synthesised back into the signal (sqrt-Hann pair)."""
    s, hop_s, n_s = subframes, HOP // subframes, 2 * HOP // subframes
    dec = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=1, head="complex", subframes=s)
    assert (dec.synth_hop, dec.synth_n_fft) == (hop_s, n_s) and dec.overlap == n_s - hop_s
    assert dec.trunk.out.out_channels == s * 2 * (n_s // 2 + 1)
    enc = STFTEncoder(dim=8, hop_length=hop_s, n_fft=n_s)
    x = torch.randn(2, 1, 30 * HOP)
    spec = enc.stft(torch.nn.functional.pad(x, (1, 0)))[..., 1:]  # [B, 2 * bins, 30 * s] at the sub-hop
    frames = spec.reshape(2, 2, dec.n_bins, 30, s).permute(0, 4, 1, 2, 3).reshape(2, -1, 30)
    y = dec._overlap_add(dec._segments(frames))[:, dec.latency:].reshape(2, 1, -1)
    keep = x.shape[-1] - dec.overlap
    assert y.shape == x.shape
    assert torch.allclose(y[..., :keep], x[..., :keep], atol=1e-4)


def test_decoder_subframes_are_checked():
    with pytest.raises(ValueError, match="subframes=3"):
        ISTFTDecoder(dim=8, hop_length=HOP, subframes=3)
    assert ISTFTDecoder(dim=8, hidden=16, n_blocks=1).trunk.out.out_channels == 2 * 321  # s = 1 as before


ENVELOPE = dict(envelope_band_hz=[500.0, 1000.0, 2000.0, 4000.0, 8000.0], envelope_steps=4, sample_rate=24000)


def _with_envelope(log_gains: torch.Tensor, frames: int) -> torch.Tensor:
    """Head outputs for the envelope: ``log_gains [bands, steps]`` for every one of ``frames`` frames."""
    return log_gains.reshape(-1, 1).expand(-1, frames)


def test_decoder_envelope_starts_as_the_plain_decoder():
    """The envelope's head rows start at zero (gains of one): the same trunk with and without it decodes alike."""
    torch.manual_seed(0)
    plain = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=2, head="compressed", lookahead=1)
    banded = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=2, head="compressed", lookahead=1, **ENVELOPE)
    assert banded.n_envelope == 6 * 4 and banded.trunk.out.out_channels == 2 * 321 + 24
    state = banded.state_dict()
    for key, value in plain.state_dict().items():
        state[key][: value.shape[0]] = value  # the envelope's rows are the extra ones at the end of the head
    banded.load_state_dict(state)
    z = torch.randn(2, 8, 15)
    with torch.no_grad():
        assert (banded(z) - plain(z)).abs().max() < 1e-5 * plain(z).abs().max()  # float sums over bands
    assert torch.equal(banded.band_masks.sum(0), torch.ones(321))  # every bin in exactly one band
    assert torch.allclose(banded.envelope_basis.sum(0), torch.ones(2 * HOP))  # the hats interpolate: sum to one


def test_decoder_envelope_scales_each_band():
    """The analysis spectrum of a 300 Hz + 3 kHz pair through the synthesis with the 2-4 kHz band's gain at 0.01
    keeps the 300 Hz tone and takes the 3 kHz one 40 dB down; equal gains in every band scale the whole output."""
    dec = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=1, head="complex", **ENVELOPE)
    enc = STFTEncoder(dim=8, hop_length=HOP)
    t = torch.arange(40 * HOP) / 24000
    low, high = torch.sin(2 * math.pi * 300 * t), torch.sin(2 * math.pi * 3000 * t)
    spec = enc.stft(torch.nn.functional.pad((low + high).reshape(1, 1, -1), (1, 0)))[..., 1:]
    frames, keep = spec.shape[-1], slice(2 * HOP, 38 * HOP)  # away from the edges' partial overlap-adds

    def synthesise(log_gains: torch.Tensor) -> torch.Tensor:
        h = torch.cat([spec, _with_envelope(log_gains, frames)[None]], dim=1)
        return dec._overlap_add(dec._segments(h))[0, dec.latency:]

    y = synthesise(torch.full((6, 4), math.log(3.0)))
    assert torch.allclose(y[keep], 3 * (low + high)[keep], atol=1e-3)
    quiet = torch.zeros(6, 4)
    quiet[3] = math.log(0.01)  # band 3: 2-4 kHz
    y = synthesise(quiet)
    assert (y[keep] - low[keep] - 0.01 * high[keep]).abs().max() < 0.02


def test_decoder_envelope_streams_and_keeps_the_latency():
    """With a trained-looking envelope (random head rows) the decoder streams like offline and a change in frame f
    still alters nothing before frame f - 1's window."""
    torch.manual_seed(1)
    dec = ISTFTDecoder(dim=8, hop_length=HOP, hidden=16, n_blocks=2, head="compressed", lookahead=1,
                       **ENVELOPE).eval()
    with torch.no_grad():
        dec.trunk.out.weight[dec.n_spectral:].normal_(0.0, 0.3)
        z = torch.randn(2, 8, 17)
        offline = dec(z)
        dec.reset_stream()
        streamed = torch.cat([dec.stream(c) for c in torch.split(z, [1, 0, 3, 1, 7, 5], dim=-1)] + [dec.flush()], -1)
        z2 = z.clone()
        z2[..., 6] += 1.0
        changed = dec(z2)
    assert streamed.shape == offline.shape and (streamed - offline).abs().max() < 1e-5
    first = (6 - 1) * HOP + HOP - dec.n_fft
    assert torch.equal(offline[..., :first], changed[..., :first])
    assert not torch.allclose(offline[..., first:first + HOP], changed[..., first:first + HOP])


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(envelope_band_hz=[2000.0, 1000.0], sample_rate=24000), "rising edges"),
    (dict(envelope_band_hz=[1000.0, 13000.0], sample_rate=24000), "rising edges"),
    (dict(envelope_band_hz=[1000.0]), "sample_rate=None"),
    (dict(envelope_band_hz=[1000.0], sample_rate=24000, envelope_steps=1), "envelope_steps=1"),
    (dict(envelope_band_hz=[1000.0], sample_rate=24000, subframes=2), "subframes=1"),
])
def test_decoder_envelope_is_checked(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ISTFTDecoder(dim=8, hop_length=HOP, **kwargs)
