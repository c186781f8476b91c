"""The codebook-prior experiment's measurements (lib.analysis.priors): code replacements that do what they say, bit
errors at the asked rate, the prior's report against evaluate_prior, robustness rows, and decoded damage."""
import math

import numpy as np
import pytest
import torch

from lib.analysis.priors import (code_positions, context_robustness, decoded_damage, flip_bits, mistakes,
                                 nearest_other, prior_report, replace_codes, top1_guesses)
from lib.bitstream.prior_fit import PriorTraining, evaluate_prior, train_prior
from lib.build import build_codec
from lib.config import load_config
from lib.model.prior import prior_for_quantizer

SR = 24000


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return build_codec(load_config("tiny", ["model.quantizer.som=true"])).eval()  # 4 levels x 64 codes, 8x8 grids


def counting(codec, n_clips: int, frames: int, seed: int) -> list[np.ndarray]:
    """Strongly structured codes ``[4, frames]``: level 0 counts up, the others repeat it."""
    rng = np.random.default_rng(seed)
    k = codec.quantizer.codebook_size
    return [np.stack([(rng.integers(0, k) + np.arange(frames)) % k] * codec.quantizer.n_q) for _ in range(n_clips)]


@pytest.fixture(scope="module")
def prior(codec, tmp_path_factory):
    torch.manual_seed(0)
    prior = prior_for_quantizer(codec.quantizer, "som_grid", d_model=32, n_layers=1, n_heads=2, context=16)
    training = PriorTraining(steps=120, batch_size=8, lr=3e-3, warmup_steps=10, val_every=120, ckpt_every=120,
                             level_dropout=0.0)
    train_prior(prior, counting(codec, 8, 64, 0), counting(codec, 2, 64, 1),
                tmp_path_factory.mktemp("prior") / "prior.pt", training)
    return prior.eval()


def test_replacements_do_what_they_say(codec):
    q, rng = codec.quantizer, np.random.default_rng(0)
    codes = np.stack([np.arange(64)] * 4)
    assert np.array_equal(replace_codes(codes, 0.0, "random code", q, rng), codes)
    moved = replace_codes(codes, 1.0, "grid neighbour", q, rng)
    pos = code_positions(q.levels[0])
    steps = np.abs(pos[moved[0]] - pos[codes[0]]).max(axis=1)  # Chebyshev distance on the 8x8 grid
    assert (steps == 1).all()
    assert np.array_equal(replace_codes(codes, 1.0, "nearest code", q, rng)[2], nearest_other(q.levels[2])[codes[2]])
    assert (replace_codes(codes, 1.0, "random code", q, rng) != codes).all()
    some = replace_codes(codes, 0.25, "random code", q, np.random.default_rng(1), levels=(1,))
    assert np.array_equal(some[[0, 2, 3]], codes[[0, 2, 3]]) and 5 < (some[1] != codes[1]).sum() < 30
    with pytest.raises(ValueError, match="how must be one of"):
        replace_codes(codes, 0.1, "typo", q, rng)


def test_bit_errors_flip_each_bit_at_the_asked_rate():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1024, size=(2, 20000))
    assert np.array_equal(flip_bits(codes, (1024, 1024), 0.0, rng), codes)
    assert np.array_equal(flip_bits(codes, (1024, 1024), 1.0, rng), codes ^ 1023)  # every one of the 10 bits
    flipped = flip_bits(codes, (1024, 1024), 0.01, rng) ^ codes
    rate = np.unpackbits(flipped.astype(">u2").view(np.uint8)).mean() * 16 / 10  # of the 10 bits a code has
    assert rate == pytest.approx(0.01, rel=0.1)


def test_the_report_agrees_with_the_training_validation_and_the_structure_is_learned(codec, prior):
    valid = counting(codec, 2, 64, 1)
    report = prior_report(prior, valid)
    reference = evaluate_prior(prior, valid, prior.config.context)
    assert report["bits_per_code"] == pytest.approx(reference["bits_per_code"], rel=1e-5)
    assert report["levels"][0]["top1"] == pytest.approx(reference["top1"][0], abs=1e-6)
    assert report["bits_per_code"] < 1.0 < math.log2(64)  # far below the 6 bits of a packed code
    assert report["saving"] == pytest.approx(1 - report["bits_per_code"] / 6)
    found = mistakes(prior, codec.quantizer, valid)
    assert 0 <= found["top1"] <= 1 and found["mistakes"] == round((1 - found["top1"]) * report["frames"])
    guessed = top1_guesses(prior, valid[0])
    assert np.array_equal(guessed[1:], valid[0][1:]) and (guessed[0] == valid[0][0]).mean() > 0.8


def test_a_damaged_context_costs_the_prior_bits(codec, prior):
    rows = context_robustness(prior, codec.quantizer, counting(codec, 2, 64, 1), shares=(0.2, 0.6))
    clean = {r["how"]: r["bits_per_code"] for r in rows if r["share"] == 0}
    assert len(set(clean.values())) == 1  # one clean reference for every kind of damage
    damaged = {(r["how"], r["share"]): r["bits_per_code"] for r in rows}
    assert damaged[("random code", 0.6)] > damaged[("random code", 0.2)] > clean["random code"]


def test_decoded_damage_is_zero_for_undamaged_codes_and_grows_with_damage(codec):
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 64, size=(4, 75))
    same = decoded_damage(codec, clean, clean, SR, dnsmos=False)
    assert same["mel_distance"] == pytest.approx(0.0, abs=1e-5) and same["si_sdr"] == 100.0
    hit = decoded_damage(codec, clean, replace_codes(clean, 0.5, "random code", codec.quantizer, rng), SR,
                         dnsmos=False)
    assert hit["mel_distance"] > 0.01 and hit["si_sdr"] < 40
