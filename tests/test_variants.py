"""Each research variant of the codec builds from config and trains through the same trainer, stays causal
where it claims to, and streams where it claims to."""
import pytest
import torch

from lib.build import build_codec
from lib.config import load_config
from lib.data.corpus import build_default_corpus
from lib.training.trainer import Trainer

VARIANTS = {
    "conv": [],
    "multires_blocks": ["model.block=multires"],
    "wavelet_upsampler": ["model.upsampler=wavelet"],
    "energy_rvq": ["model.bottleneck=energy", "model.energy.n_steps=2", "model.energy.head_dim=8"],
    "energy_continuous": ["model.bottleneck=energy", "model.continuous=true", "model.quantizer.som=false",
                          "model.energy.n_steps=2", "model.energy.head_dim=8"],
    "ema_codebooks": ["model.quantizer.som=false"],
    "factorised_cosine": ["model.quantizer.codebook_dim=4", "model.quantizer.cosine=true",
                          "model.quantizer.beam_width=1"],
    "factorised_code_gradient": ["model.quantizer.codebook_dim=4", "model.quantizer.normalized_search=true",
                                 "model.quantizer.code_gradient=true", "model.quantizer.beam_width=1"],
    "beam_search": ["model.quantizer.beam_width=3"],
    "spectral_fsq": ["model.encoder=stft", "model.decoder=istft", "model.spectral.hidden=32",
                     "model.spectral.encoder_blocks=1", "model.spectral.decoder_blocks=2",
                     "model.quantizer.kind=fsq", "model.quantizer.som=false", "model.quantizer.fsq_levels=[5, 3]"],
    "spectral_rvq": ["model.encoder=stft", "model.decoder=istft", "model.spectral.hidden=32",
                     "model.spectral.n_fft=1280", "model.quantizer.som=false"],
    "spectral_lookahead": ["model.encoder=stft", "model.decoder=istft", "model.spectral.hidden=32",
                           "model.spectral.decoder_lookahead=1", "model.quantizer.som=false"],
    "spectral_causal_decoder": ["model.spectral.decoder_lookahead=0", "model.quantizer.som=false"],
    "spectral_subframes": ["model.spectral.decoder_subframes=2", "model.quantizer.som=false"],
    "spectral_envelope": ["model.spectral.envelope_band_hz=[1000, 4000]", "model.quantizer.som=false"],
    "seanet_fsq": ["model.quantizer.kind=fsq", "model.quantizer.som=false"],
}
STREAMABLE = {"conv", "beam_search", "multires_blocks", "wavelet_upsampler", "ema_codebooks",
              "factorised_code_gradient", "spectral_fsq", "spectral_rvq", "spectral_lookahead",
              "spectral_causal_decoder", "spectral_subframes", "spectral_envelope", "seanet_fsq"}
# k-means on the first batch alone: these tests take a few steps, too few to pool one frame per code.
FIRST_BATCH_INIT = ["model.quantizer.kmeans_frames_per_code=0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_default_corpus(out, minutes=0.3, sources="synthetic", progress=False)
    return out


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_trains_through_the_trainer(name, corpus, tmp_path):
    cfg = load_config("tiny", VARIANTS[name] + FIRST_BATCH_INIT + ["data.batch_size=2", "train.adv_warmup_steps=1", "train.quantizer_warmup_steps=0",
                                                "data.valid_clips=1", "data.valid_seconds=0.5"])
    tr = Trainer(cfg, corpus, tmp_path, progress=False)
    before = [p.detach().clone() for p in tr.codec.parameters()]
    results = [tr.train_step(tr.batches[s]) for s in range(3)]
    assert not any(r.skipped for r in results)
    assert all(torch.isfinite(torch.tensor(list(r.losses.values()))).all() for r in results)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, tr.codec.parameters()))
    assert changed == len(before), f"{len(before) - changed} parameter tensors got no update"
    val = tr.validate()
    assert val["mel_distance"] > 0 and ("usage_0" in val) == (not cfg.model.continuous)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_codec_is_causal_at_frame_level(name):
    """A change from sample t on alters no output before the start of t's frame (one frame of latency), less the
    decoder's own latency (the iSTFT decoder's overlap-add reaches n_fft - hop samples back).

    (A whole new signal after t rather than a lone impulse, so that the quantized codes change too.)"""
    cfg = load_config("tiny", VARIANTS[name] + FIRST_BATCH_INIT + ["model.quantizer.quantizer_dropout=false"])
    codec = build_codec(cfg)
    hop = cfg.hop_length
    x = torch.randn(1, 1, 12 * hop) * 0.1
    codec(x)  # k-means init on these frames, so that different inputs get different codes
    codec.eval()
    t = 7 * hop + 100
    y = x.clone()
    y[..., t:] = torch.randn(1, 1, x.shape[-1] - t)
    with torch.no_grad():
        a, b = codec(x).recon, codec(y).recon
    frame_start = (t // hop) * hop - getattr(codec.decoder, "latency", 0)
    assert torch.equal(a[..., :frame_start], b[..., :frame_start])
    assert not torch.equal(a[..., frame_start:], b[..., frame_start:])


@pytest.mark.parametrize("name", sorted(STREAMABLE))
def test_variant_streams_like_offline(name):
    cfg = load_config("tiny", VARIANTS[name] + ["model.quantizer.kmeans_init=false"])
    codec = build_codec(cfg).eval()
    hop = cfg.hop_length
    x = torch.randn(1, 1, 10 * hop) * 0.1
    with torch.no_grad():
        offline = codec.decode(codec.encode(x))
        codec.reset_stream()
        codes = [codec.stream_encode(chunk) for chunk in torch.split(x, 777, dim=-1)]
        streamed = torch.cat([codec.stream_decode(c) for c in codes] + [codec.stream_flush()], dim=-1)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5
