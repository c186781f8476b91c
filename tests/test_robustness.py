"""Nothing lost, nothing silent: bad data, bad settings, kills and bad codes (issue 13). Each test fails on the
code before its fix."""
import json
import os
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from lib.build import build_codec
from lib.config import ConfigError, load_config


# ----------------------------------------------------------------------------- 10. settings


@pytest.mark.parametrize("override, key", [
    ("train.grad_clip=-1", "train.grad_clip"), ("train.grad_clip=.nan", "train.grad_clip"),
    ("data.valid_clips=0", "data.valid_clips"), ("data.batch_size=0", "data.batch_size"),
    ("data.valid_seconds=0", "data.valid_seconds"), ("train.betas=[0.5]", "train.betas"),
    ("train.lr=-1", "train.lr"), ("train.disc_lr=0", "train.disc_lr"), ("train.lr=.inf", "train.lr"),
    ("train.steps.x=1", "train.steps"), ("train.max_bad_steps=0", "train.max_bad_steps"),
])
def test_bad_settings_are_config_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("tiny", [override])


# ----------------------------------------------------------------------------- 11. codec API


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return build_codec(load_config("tiny")).eval()


def test_non_finite_audio_is_refused_by_encode_and_eval_forward(codec):
    x = torch.randn(1, 1, 2000) * 0.1
    x[0, 0, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        codec.encode(x)
    with pytest.raises(ValueError, match="NaN or inf"):
        codec(x)
    with pytest.raises(ValueError, match="NaN or inf"):
        codec.stream_encode(x)
    codec.reset_stream()


def test_codes_are_checked_and_any_integer_dtype_decodes(codec):
    codes = codec.encode(torch.randn(1, 1, 3200) * 0.1)
    ref = codec.decode(codes)
    for dtype in (torch.uint8, torch.int16, torch.int32):
        assert torch.equal(codec.decode(codes.to(dtype)), ref)
    with pytest.raises(ValueError, match=r"level 0 holds codes in \[-"):
        codec.decode(codes - 5)
    with pytest.raises(ValueError, match="must be in"):
        codec.decode(codes + 64)
    off = codes.clone()
    off[:, 1:] = -1  # the documented "level off"
    codec.decode(off)
    with pytest.raises(ValueError, match="length"):
        codec.decode(codes, length=-5)
    with pytest.raises(ValueError, match="integer"):
        codec.decode(codes.float())


def test_other_float_dtypes_are_cast_and_a_float64_codec_quantizes(codec):
    x = torch.randn(1, 1, 3200) * 0.1
    ref = codec.encode(x)
    assert torch.equal(codec.encode(x.double()), ref)
    assert codec.encode(x.half()).shape == ref.shape
    double = build_codec(load_config("tiny")).double().eval()
    assert double.encode(x.double()).shape == ref.shape


# ----------------------------------------------------------------------------- 13. long inputs, stream flush


def test_stream_encode_final_pads_the_last_partial_frame_like_encode(codec):
    x = torch.randn(1, 1, 24123) * 0.1
    codec.reset_stream()
    chunks = [codec.stream_encode(x[..., i:i + 1000], final=i + 1000 >= x.shape[-1])
              for i in range(0, x.shape[-1], 1000)]
    codec.reset_stream()
    streamed = torch.cat(chunks, dim=-1)
    assert streamed.shape[-1] == 76  # 75 before: the last 123 samples never made a frame
    assert torch.equal(streamed, codec.encode(x))


def test_long_inputs_go_through_the_streaming_path_and_leave_a_stream_alone(codec, monkeypatch):
    x = torch.randn(1, 1, 24123) * 0.1
    with torch.no_grad():
        codes, recon = codec.encode(x), codec.decode(codec.encode(x))
        codec.reset_stream()
        first = codec.stream_encode(x[..., :5000])  # a stream in progress
        monkeypatch.setattr(codec, "max_offline_frames", 10)
        monkeypatch.setattr(codec, "stream_chunk_frames", 7)
        calls = []
        original = type(codec).stream_encode

        def spy(self, *a, **k):
            calls.append(1)
            return original(self, *a, **k)

        monkeypatch.setattr(type(codec), "stream_encode", spy)
        assert torch.equal(codec.encode(x), codes)
        assert len(calls) == 11  # ceil(76 / 7) chunks, on a copy
        assert torch.allclose(codec.decode(codes), recon, atol=1e-5)
        rest = original(codec, x[..., 5000:], final=True)  # the caller's stream went on undisturbed
    codec.reset_stream()
    assert torch.equal(torch.cat([first, rest], -1), codes)
