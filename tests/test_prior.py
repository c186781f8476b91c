"""The prior over codes (lib.model.prior): shapes, causality and the incremental path against the full forward."""
import numpy as np
import pytest
import torch

from lib.model.prior import PriorConfig, TransformerPrior
from lib.model.registries import PRIORS

K = 16


def make_prior(embedding: str = "learned", seed: int = 0, **settings) -> TransformerPrior:
    settings = {"d_model": 32, "n_layers": 2, "n_heads": 4, "context": 8, **settings}
    books = None
    if embedding == "som_grid":
        settings["grid_shapes"] = ((4, 4),) * 3
    if embedding == "codebook":
        settings["code_dim"] = 6
        books = [torch.randn(K, 6, generator=torch.Generator().manual_seed(l)) for l in range(3)]
    torch.manual_seed(seed)
    return TransformerPrior(PriorConfig((K, K, K), embedding=embedding, **settings), books).eval()


def random_codes(batch: int, frames: int, levels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (batch, levels, frames), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ the model

def test_registry_builds_the_prior_and_shapes_are_as_documented():
    cfg = PriorConfig((16, 8, 4), d_model=32, n_layers=1, n_heads=2, context=4)
    prior = PRIORS.get("transformer").from_config(cfg.to_dict()).eval()
    codes = torch.stack([torch.randint(0, k, (2, 10)) for k in cfg.alphabet], dim=1)
    assert [tuple(lg.shape) for lg in prior(codes)] == [(2, 10, 16), (2, 10, 8), (2, 10, 4)]
    assert [tuple(lg.shape) for lg in prior(codes[:, :2])] == [(2, 10, 16), (2, 10, 8)]
    bits = prior.bits(codes)
    assert bits.shape == (2, 3, 10) and bool((bits > 0).all())
    torch.testing.assert_close(bits, -prior.log_prob(codes) / np.log(2))
    state, h = prior.step(prior.init_state(2), None)
    assert h.shape == (2, 32) and state.t == 1 and state.keys[0].shape == (2, 2, 1, 16)
    assert prior.level_logits(h, codes[:, :, 0], 2).shape == (2, 4)
    for bad in ({"d_model": 30, "n_heads": 4}, {"embedding": "nope"}, {"embedding": "som_grid"},
                {"embedding": "codebook"}):
        with pytest.raises(ValueError, match="prior"):
            PriorConfig((16, 8, 4), **bad)
    with pytest.raises(ValueError, match="unknown settings"):
        PriorConfig.from_dict({**cfg.to_dict(), "width": 3})


@pytest.mark.parametrize("embedding", ["learned", "som_grid", "codebook"])
def test_changing_a_code_never_changes_what_came_before_it(embedding):
    prior = make_prior(embedding)
    codes = random_codes(1, 12)
    with torch.no_grad():
        base = prior(codes)
        for t in (0, 5, 11):
            for j in range(3):
                changed = codes.clone()
                changed[0, j, t] = (changed[0, j, t] + 1) % K
                out = prior(changed)
                for l in range(3):
                    assert torch.equal(out[l][:, :t], base[l][:, :t])  # the frames before t
                    if l <= j:  # the levels of frame t up to the changed one
                        assert torch.equal(out[l][:, t], base[l][:, t])
                if t + 1 < codes.shape[2]:  # the next frame does see it
                    assert not torch.allclose(out[0][:, t + 1], base[0][:, t + 1])


@pytest.mark.parametrize("embedding", ["learned", "som_grid", "codebook"])
def test_incremental_path_equals_the_full_forward(embedding):
    prior = make_prior(embedding, context=8)
    codes = random_codes(2, 20)  # longer than the context: the sliding window is in play
    with torch.no_grad():
        for n in (3, 2):  # all levels, and a prefix of them (a lower bitrate)
            full = prior(codes[:, :n])
            state = prior.init_state(2, n)
            for t in range(20):
                state, h = prior.step(state, codes[:, :n, t - 1] if t else None)
                assert state.keys[0].shape[2] == min(t + 1, 8)
                for l in range(n):
                    torch.testing.assert_close(prior.level_logits(h, codes[:, :n, t], l), full[l][:, t],
                                               rtol=0, atol=1e-5)
        # A stream that starts after a known frame: teacher forcing with ``prev`` = a first step with that frame.
        full = prior(codes[:, :, 10:], prev=codes[:, :, 9])
        state, h = prior.step(prior.init_state(2), codes[:, :, 9])
        torch.testing.assert_close(prior.level_logits(h, codes[:, :, 10], 1), full[1][:, 0], rtol=0, atol=1e-5)
