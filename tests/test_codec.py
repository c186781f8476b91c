"""SEANet encoder/decoder and the Codec: shapes, impulse causality, streaming == offline, bitrate, errors."""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lib.model.activations import Snake
from lib.model.codec import Codec, CodecOutput, SEANetDecoder, SEANetEncoder
from lib.model.conv import CausalConv1d, CausalConvTranspose1d
from lib.model.quantize import ResidualVQ

RATIOS = (2, 2, 3)
HOP = 12
SMALL = dict(n_filters=4, dim=8, ratios=RATIOS)


def make_codec(n_q: int = 4, codebook_size: int = 16, **kwargs) -> Codec:
    """A tiny codec in eval mode. Without k-means init the codes are N(0, 1) draws, far apart, so the nearest
    code never hangs on float rounding (streaming and offline convs round differently in the last bit)."""
    quantizer = ResidualVQ(SMALL["dim"], n_q, codebook_size, kmeans_init=False)
    return Codec(SEANetEncoder(**SMALL), quantizer, SEANetDecoder(**SMALL), 24000, **kwargs).eval()


def chunk_sizes(total: int, kind) -> list[int]:
    """Chunk lengths summing to ``total``: a fixed size, or random sizes in [0, 40] (zeros included)."""
    if kind == "random":
        sizes, left = [0], total
        g = torch.Generator().manual_seed(total + 1)
        while left > 0:
            n = min(int(torch.randint(0, 41, (1,), generator=g)), left)
            sizes.append(n)
            left -= n
        return sizes + [0]
    return [min(kind, total - i) for i in range(0, total, kind)]


def split(x: torch.Tensor, kind) -> tuple[torch.Tensor, ...]:
    return torch.split(x, chunk_sizes(x.shape[-1], kind), dim=-1)


def diverging_pair(shape: tuple[int, ...], t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two signals equal before sample ``t`` and different from ``t`` on."""
    a = torch.randn(shape)
    b = a.clone()
    b[..., t:] = torch.randn(*shape[:-1], shape[-1] - t)
    return a, b


KINDS = [1, 7, 64, "random"]


# --------------------------------------------------------------------------------------- shapes and structure

@pytest.mark.parametrize("T", [1, 11, 12, 13, 101])
def test_shapes_for_any_length(T):
    codec = make_codec()
    x = torch.randn(2, 1, T)
    frames = math.ceil(T / HOP)
    assert codec.encoder(x).shape == (2, 8, frames)
    assert codec.decoder(torch.randn(2, 8, frames)).shape == (2, 1, frames * HOP)
    with torch.no_grad():
        out = codec(x)
        codes = codec.encode(x)
    assert out.recon.shape == (2, 1, T)
    assert out.codes.shape == codes.shape == (2, 4, frames)
    assert codes.dtype == torch.long
    assert codec.decode(codes).shape == (2, 1, frames * HOP)
    assert codec.decode(codes, length=T).shape == (2, 1, T)


def test_encoder_ratio_order_and_decoder_mirror():
    enc, dec = SEANetEncoder(**SMALL), SEANetDecoder(**SMALL)
    enc_strides = [m.stride for m in enc.modules() if isinstance(m, CausalConv1d) and m.stride > 1]
    dec_strides = [m.stride for m in dec.modules() if isinstance(m, CausalConvTranspose1d)]
    assert enc_strides == [2, 2, 3] and dec_strides == [3, 2, 2]
    assert all(m.kernel_size == 2 * m.stride for m in enc.modules() if isinstance(m, CausalConv1d) and m.stride > 1)
    assert all(m.kernel_size == 2 * m.stride for m in dec.modules() if isinstance(m, CausalConvTranspose1d))
    # Channels double at each downsampling (4 -> 32) and halve at each upsampling (32 -> 4).
    assert [m.out_ch for m in enc.modules() if isinstance(m, CausalConv1d) and m.stride > 1] == [8, 16, 32]
    z = torch.randn(1, 8, 5)
    y, stages = dec(z, return_stages=True)
    assert [tuple(s.shape) for s in stages] == [(1, 16, 15), (1, 8, 30), (1, 4, 60)]
    assert y.shape == (1, 1, 60)


def test_residual_units_use_dilations_and_compression():
    enc = SEANetEncoder(**SMALL, dilations=(1, 3, 9), residual_kernel_size=3, compress=2)
    dilated = [m for m in enc.modules() if isinstance(m, CausalConv1d) and m.dilation > 1 or
               isinstance(m, CausalConv1d) and m.kernel_size == 3 and m.stride == 1]
    assert sorted({m.dilation for m in dilated}) == [1, 3, 9]
    first_stage_units = [m for m in dilated if m.in_ch == 4]
    assert len(first_stage_units) == 3 and all(m.out_ch == 2 for m in first_stage_units)  # 4 // compress


def test_weight_norm_everywhere():
    codec = make_codec()
    convs = [m for m in codec.modules() if isinstance(m, (CausalConv1d, CausalConvTranspose1d))]
    assert len(convs) > 10
    for m in convs:
        inner = m.conv if isinstance(m, CausalConv1d) else m.convtr
        assert parametrize.is_parametrized(inner, "weight")


@pytest.mark.parametrize("activation", ["elu", "leaky_relu", "gelu", "snake"])
def test_activations(activation):
    enc = SEANetEncoder(**SMALL, activation=activation)
    dec = SEANetDecoder(**SMALL, activation=activation)
    assert dec(enc(torch.randn(1, 1, 30))).shape == (1, 1, 36)
    n_snake = sum(isinstance(m, Snake) for m in enc.modules())
    assert (n_snake > 0) == (activation == "snake")


def test_snake_formula():
    snake = Snake(2)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([1.0, 2.0]).view(1, 2, 1))
    x = torch.tensor([[[0.5], [0.5]]])
    expected = torch.tensor([0.5 + math.sin(0.5) ** 2, 0.5 + math.sin(1.0) ** 2 / 2]).view(1, 2, 1)
    torch.testing.assert_close(snake(x), expected)


# --------------------------------------------------------------------------------------- causality by impulse

def test_encoder_impulse_causality():
    enc = SEANetEncoder(**SMALL).eval()
    t = 50
    a, b = diverging_pair((1, 1, 120), t)
    with torch.no_grad():
        za, zb = enc(a), enc(b)
    first = math.ceil(t / HOP)  # latent frame f sees samples <= f * hop
    assert (za[..., :first] - zb[..., :first]).abs().max() < 1e-7
    assert (za[..., first] - zb[..., first]).abs().max() > 1e-6


def test_decoder_impulse_causality():
    dec = SEANetDecoder(**SMALL).eval()
    g = 4
    a, b = diverging_pair((1, 8, 10), g)
    with torch.no_grad():
        ya, yb = dec(a), dec(b)
    assert (ya[..., : g * HOP] - yb[..., : g * HOP]).abs().max() < 1e-7
    assert (ya[..., g * HOP] - yb[..., g * HOP]).abs().max() > 1e-6


@pytest.mark.parametrize("t", [37, 48])
def test_codec_impulse_causality(t):
    codec = make_codec()
    a, b = diverging_pair((1, 1, 120), t)
    with torch.no_grad():
        ra, rb = codec(a).recon, codec(b).recon
    assert (ra[..., :t] - rb[..., :t]).abs().max() < 1e-7
    assert (ra[..., t:] - rb[..., t:]).abs().max() > 1e-6


def test_codec_frame_lookahead_sees_its_own_frame_only():
    t = 41  # inside frame 3 = samples 36..47
    start = (t // HOP) * HOP
    a, b = diverging_pair((1, 1, 120), t)
    quantized = make_codec(frame_lookahead=True)
    # Continuous, so that no quantisation can hide a change of the latents.
    continuous = Codec(SEANetEncoder(**SMALL), None, SEANetDecoder(**SMALL), 24000, continuous=True,
                       frame_lookahead=True).eval()
    for codec in (quantized, continuous):
        with torch.no_grad():
            ra, rb = codec(a).recon, codec(b).recon
        assert (ra[..., :start] - rb[..., :start]).abs().max() < 1e-7
    assert (ra[..., start:t] - rb[..., start:t]).abs().max() > 1e-6  # the frame holding t looks ahead to it


def test_sample_causal_codec_output_cannot_see_current_sample_inside_a_frame():
    """Why frame_lookahead exists: without it, recon[n] depends on x[n] only when n is a multiple of hop."""
    codec = Codec(SEANetEncoder(**SMALL), None, SEANetDecoder(**SMALL), 24000, continuous=True).eval()
    x = torch.randn(1, 1, 2 * HOP, requires_grad=True)
    y = codec(x).recon
    own = [torch.autograd.grad(y[0, 0, n], x, retain_graph=True)[0][0, 0, n].item() for n in range(2 * HOP)]
    assert [n for n, v in enumerate(own) if v != 0.0] == [0, HOP]


# --------------------------------------------------------------------------------------- streaming == offline

@pytest.mark.parametrize("kind", KINDS)
def test_encoder_stream_equals_offline(kind):
    enc = SEANetEncoder(**SMALL, activation="snake")
    x = torch.randn(2, 1, 150)
    with torch.no_grad():
        offline = enc(x)
        enc.reset_stream()
        streamed = torch.cat([enc.stream(p) for p in split(x, kind)], dim=-1)
    assert streamed.shape == offline.shape == (2, 8, 13)
    assert (streamed - offline).abs().max() < 1e-5


@pytest.mark.parametrize("kind", [1, 3, "random"])
def test_decoder_stream_equals_offline(kind):
    dec = SEANetDecoder(**SMALL)
    z = torch.randn(2, 8, 20)
    with torch.no_grad():
        offline = dec(z)
        dec.reset_stream()
        streamed = torch.cat([dec.stream(p) for p in split(z, kind)], dim=-1)
    assert streamed.shape == offline.shape == (2, 1, 240)
    assert (streamed - offline).abs().max() < 1e-5


def stream_codec(codec: Codec, x: torch.Tensor, kind, n_q=None) -> tuple[torch.Tensor, torch.Tensor]:
    codec.reset_stream()
    codes, audio = [], []
    for piece in split(x, kind):
        c = codec.stream_encode(piece, n_q=n_q)
        codes.append(c)
        audio.append(codec.stream_decode(c))
    return torch.cat(codes, dim=-1), torch.cat(audio, dim=-1)


@pytest.mark.parametrize("frame_lookahead", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_codec_stream_equals_offline(kind, frame_lookahead):
    codec = make_codec(frame_lookahead=frame_lookahead)
    T = 133
    x = torch.randn(2, 1, T)
    with torch.no_grad():
        offline = codec(x)
    codes, audio = stream_codec(codec, x, kind)
    # Frames complete at sample f * hop (sample-causal) or at the frame's last sample (frame_lookahead).
    done = math.ceil(T / HOP) if not frame_lookahead else T // HOP
    assert codes.shape == (2, 4, done)
    assert torch.equal(codes, offline.codes[..., :done])
    n = min(T, done * HOP)
    assert audio.shape[-1] == done * HOP
    assert (audio[..., :n] - offline.recon[..., :n]).abs().max() < 1e-5


def test_codec_stream_with_fewer_quantizers_and_reset():
    codec = make_codec()
    x, x2 = torch.randn(1, 1, 60), torch.randn(1, 1, 60)
    stream_codec(codec, x, 7, n_q=2)  # a first stream, then a reset inside stream_codec
    codes, audio = stream_codec(codec, x2, 5, n_q=2)
    assert torch.equal(codes, codec.encode(x2, n_q=2))
    assert (audio - codec.decode(codes)).abs().max() < 1e-5


class CausalCumulativeMean(nn.Module):
    """A causal bottleneck without ``stream``: the running mean over frames."""

    causal = True

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.cumsum(-1) / torch.arange(1, z.shape[-1] + 1)


def test_codec_stream_with_causal_bottleneck_without_stream():
    codec = make_codec(bottleneck=CausalCumulativeMean())
    x = torch.randn(1, 1, 100)
    with torch.no_grad():
        offline = codec(x)
    codes, audio = stream_codec(codec, x, "random")
    assert torch.equal(codes, offline.codes)
    assert (audio[..., :100] - offline.recon).abs().max() < 1e-5


def test_continuous_mode_streams_latents_and_is_not_a_codec():
    codec = Codec(SEANetEncoder(**SMALL), None, SEANetDecoder(**SMALL), 24000, continuous=True).eval()
    x = torch.randn(1, 1, 50)
    with torch.no_grad():
        out = codec(x)
    assert out.codes is None and out.n_q == 0 and float(out.commit_loss) == 0.0
    assert codec.encode(x).shape == (1, 8, 5)
    latents, audio = stream_codec(codec, x, 7)
    assert (audio[..., :50] - out.recon).abs().max() < 1e-5
    with pytest.raises(ValueError, match="not a codec"):
        codec.bitrate()


# --------------------------------------------------------------------------------------- training forward

def test_training_forward_gradients_and_stages():
    codec = make_codec().train()
    x = torch.randn(2, 1, 70)
    out = codec(x, return_stages=True)
    assert isinstance(out, CodecOutput)
    assert out.recon.shape == x.shape and out.commit_loss.dim() == 0
    assert [s.shape[-1] for s in out.stages] == [18, 36, 72]
    assert len(out.stats) == 4
    (out.recon.pow(2).mean() + out.commit_loss).backward()
    first_conv = codec.encoder.layers[0].conv.parametrizations.weight.original1
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_forward_with_fixed_n_q():
    codec = make_codec()
    with torch.no_grad():
        out = codec(torch.randn(1, 1, 40), n_q=2)
    assert out.n_q == 2 and out.codes.shape == (1, 2, 4)


# --------------------------------------------------------------------------------------- bitrate, sizes

def test_bitrate_arithmetic():
    enc = SEANetEncoder(n_filters=1, dim=4, ratios=(2, 4, 5, 8), dilations=(1,))
    dec = SEANetDecoder(n_filters=1, dim=4, ratios=(2, 4, 5, 8), dilations=(1,))
    codec = Codec(enc, ResidualVQ(4, 8, 1024), dec, 24000)
    assert codec.hop_length == 320 and codec.frame_rate == 75.0
    assert codec.bitrate() == pytest.approx(6000.0)  # 8 x 10 bits x 75 Hz
    assert codec.bitrate(n_q=2) == pytest.approx(1500.0)
    for bad in (0, 9):
        with pytest.raises(ValueError, match="n_q"):
            codec.bitrate(bad)


def test_num_parameters():
    codec = make_codec()
    assert codec.num_parameters() == sum(p.numel() for p in codec.parameters())
    codec.decoder.requires_grad_(False)
    assert codec.num_parameters(trainable_only=True) == sum(p.numel() for p in codec.encoder.parameters())


# --------------------------------------------------------------------------------------- errors

def test_clear_errors():
    codec = make_codec()
    with pytest.raises(ValueError, match="wav"):
        codec(torch.randn(1, 40))  # no channel axis
    with pytest.raises(ValueError, match="wav"):
        codec.encode(torch.randn(1, 2, 40))  # stereo into a mono codec
    with pytest.raises(ValueError, match="wav"):
        codec(torch.zeros(1, 1, 0))
    with pytest.raises(ValueError, match="codes"):
        codec.decode(torch.randn(1, 4, 3))  # floats are not code indices
    with pytest.raises(ValueError, match="n_q"):
        codec(torch.randn(1, 1, 40), n_q=5)
    with pytest.raises(ValueError, match="hop_length"):
        Codec(SEANetEncoder(**SMALL), None, SEANetDecoder(n_filters=4, dim=8, ratios=(2, 2)), 24000,
              continuous=True)
    with pytest.raises(ValueError, match="quantizer"):
        Codec(SEANetEncoder(**SMALL), None, SEANetDecoder(**SMALL), 24000)
    with pytest.raises(ValueError, match="activation"):
        SEANetEncoder(**SMALL, activation="swish")
    with pytest.raises(ValueError, match="block"):
        SEANetEncoder(**SMALL, block="lstm")
    with pytest.raises(ValueError, match="upsampler"):
        SEANetDecoder(**SMALL, upsampler="nearest")
    with pytest.raises(ValueError, match="ratios"):
        SEANetEncoder(n_filters=4, dim=8, ratios=())


# --------------------------------------------------------------------------------------- research blocks

def test_multires_block_and_wavelet_upsampler():
    multires = pytest.importorskip("lib.model.multires")
    enc = SEANetEncoder(**SMALL, block="multires")
    dec = SEANetDecoder(**SMALL, block="multires", upsampler="wavelet")
    assert any(isinstance(m, multires.MultiresResidualBlock) for m in enc.modules())
    assert any(isinstance(m, multires.WaveletUpsampler) for m in dec.modules())
    codec = Codec(enc, ResidualVQ(8, 2, 16, kmeans_init=False), dec, 24000).eval()
    t = 40
    a, b = diverging_pair((1, 1, 96), t)
    with torch.no_grad():
        out_a, out_b = codec(a), codec(b)
    assert out_a.recon.shape == (1, 1, 96)
    assert (out_a.recon[..., :t] - out_b.recon[..., :t]).abs().max() < 1e-7
    codes, audio = stream_codec(codec, a, 7)
    assert torch.equal(codes, out_a.codes)
    assert (audio[..., :96] - out_a.recon).abs().max() < 1e-5


def test_codec_stream_with_energy_bottleneck():
    energy = pytest.importorskip("lib.model.energy")
    bottleneck = energy.EnergyTransformer(8, n_heads=2, head_dim=4, causal=True)
    codec = make_codec(bottleneck=bottleneck)
    x = torch.randn(1, 1, 100)
    with torch.no_grad():
        offline = codec(x)
    codes, audio = stream_codec(codec, x, "random")
    assert torch.equal(codes, offline.codes)
    assert (audio[..., :100] - offline.recon).abs().max() < 1e-5
