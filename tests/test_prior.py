"""The prior over codes (lib.model.prior), its training (lib.bitstream.prior_fit) and the .vqc payload coded with it
(lib.bitstream.prior_coding): shapes, causality, the incremental path against the full forward, learning a strongly
structured code sequence, bit-exact range coding at any caller thread count, exact resumes, safe loading, generation
and the command line."""
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lib.bitstream.cli import main
from lib.bitstream.prior_coding import PriorModel
from lib.bitstream.prior_file import PRIOR_NAME, PriorError, load_prior
from lib.bitstream.prior_fit import PriorTraining, evaluate_prior, train_prior
from lib.bitstream.vqc import Header, iter_codes, read_header
from lib.build import build_codec
from lib.config import load_config
from lib.model.prior import PriorConfig, TransformerPrior, sample_continuation
from lib.model.registries import PRIORS
from lib.training.checkpoint import load_checkpoint, save_checkpoint

K = 16
PERMUTATION = np.random.default_rng(7).permutation(K)


def synthetic(n_clips: int, frames: int, seed: int = 0) -> list[np.ndarray]:
    """Codes ``[3, frames]`` with strong structure: level 0 counts up mod K from a random start, level 1 is a fixed
    permutation of level 0, level 2 copies level 1."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n_clips):
        c0 = (rng.integers(0, K) + np.arange(frames)) % K
        clips.append(np.stack([c0, PERMUTATION[c0], PERMUTATION[c0]]))
    return clips


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small prior trained for 150 steps on the synthetic codes, with its metrics before and after."""
    prior = make_prior(n_layers=1, n_heads=2, context=16)
    valid = synthetic(2, 64, seed=1)
    training = PriorTraining(steps=150, batch_size=8, lr=3e-3, warmup_steps=10, val_every=150, ckpt_every=150,
                             level_dropout=0.0)
    before = evaluate_prior(prior, valid, 16)
    path = tmp_path_factory.mktemp("prior") / "prior.pt"
    after = train_prior(prior, synthetic(8, 64), valid, path, training)
    return dict(prior=prior, before=before, after=after, path=path, valid=valid)


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


# ------------------------------------------------------------------------------------------------ training

def test_training_learns_a_structured_code_sequence(trained):
    before, after = trained["before"], trained["after"]
    print(f"synthetic codes, K={K}: {before['bits_per_code']:.3f} -> {after['bits_per_code']:.3f} bits/code, "
          f"top-1 {after['top1']}")
    assert before["bits_per_code"] > 3.5  # about log2 K untrained
    assert after["bits_per_code"] < 0.5 and min(after["top1"]) > 0.9 and min(after["top5"]) > 0.95
    prior, state = load_prior(trained["path"])
    assert state["step"] == 150 and state["config"]["prior"]["kind"] == "transformer"
    assert state["extra"]["history"][-1]["valid"] == after
    # The coder's quantised probabilities spend about what the model does on the whole (unwindowed) stream.
    model = PriorModel(prior, bytes(16))
    assert model.bits(trained["valid"][0]) / trained["valid"][0].size < 0.5


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    clips, valid = synthetic(4, 40), synthetic(1, 40, seed=1)
    training = PriorTraining(steps=12, batch_size=4, warmup_steps=2, val_every=6, ckpt_every=100, level_dropout=0.5)
    whole = make_prior(dropout=0.1)  # dropout: the RNG states must come back too
    train_prior(whole, clips, valid, tmp_path / "whole.pt", training)
    train_prior(make_prior(dropout=0.1), clips, valid, tmp_path / "parts.pt", training, stop_after=5)
    assert load_checkpoint(tmp_path / "parts.pt")["step"] == 5
    resumed = make_prior(dropout=0.1, seed=1)  # other initial weights: the checkpoint's replace them
    train_prior(resumed, clips, valid, tmp_path / "parts.pt", training)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    a, b = load_checkpoint(tmp_path / "whole.pt"), load_checkpoint(tmp_path / "parts.pt")
    assert a["step"] == b["step"] == 12 and a["extra"]["history"] == b["extra"]["history"]
    with pytest.raises(PriorError, match="other codec weights|codec weights"):
        train_prior(make_prior(), clips, valid, tmp_path / "parts.pt", training, codec_hash=b"x" * 16)
    with pytest.raises(PriorError, match="other settings"):
        train_prior(make_prior(d_model=16), clips, valid, tmp_path / "parts.pt", training)


def test_loading_refuses_a_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"config": {"prior": {}}, "model": {"prior": {}}, "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(PriorError, match="refusing"):
        load_prior(tmp_path / "evil.pt")
    assert not marker.exists()
    save_checkpoint(tmp_path / "codec.pt", config={"model": {}}, step=0, model={"codec": {}})
    with pytest.raises(PriorError, match="not a prior checkpoint"):
        load_prior(tmp_path / "codec.pt")
    with pytest.raises(PriorError, match="missing.pt"):
        load_prior(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------------ coding

def _code(model: PriorModel, codes: np.ndarray, block: int) -> list[np.ndarray]:
    coder, prev, words = model.block_coder(), None, []
    for s in range(0, codes.shape[1], block):
        words.append(coder.encode_block(codes[:, s:s + block], prev))
        prev = codes[:, min(s + block, codes.shape[1]) - 1]
    return words


def _decode(model: PriorModel, words: list[np.ndarray], n_levels: int, frames: int, block: int) -> np.ndarray:
    coder, prev, out = model.block_coder(), None, []
    for i, s in enumerate(range(0, frames, block)):
        out.append(coder.decode_block(words[i], n_levels, min(block, frames - s), prev))
        prev = out[-1][:, -1]
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("block", [8, 24, 512])
def test_range_coding_with_the_prior_is_bit_exact_at_any_thread_count(trained, block):
    model = PriorModel(trained["prior"], bytes(16))
    codes = np.concatenate([synthetic(1, 70, seed=3)[0], np.stack([np.arange(30) % K] * 3)], axis=1)  # and a jump
    try:
        for enc_threads, dec_threads in ((1, 2), (2, 1)):
            torch.set_num_threads(enc_threads)
            words = _code(model, codes, block)
            torch.set_num_threads(dec_threads)
            np.testing.assert_array_equal(_decode(model, words, 3, codes.shape[1], block), codes)
            assert torch.get_num_threads() == dec_threads  # the caller's setting comes back
        again = _code(model, codes, block)
        assert all(np.array_equal(a, b) for a, b in zip(words, again))  # the same words at either thread count
        size, ideal = 4 * sum(len(w) for w in words), model.bits(codes) / 8
        assert ideal <= size <= ideal + 8 * len(words)  # within two words a block of the ideal code length
        if block == 512:
            assert size < codes.size * 4 / 8 / 2  # half the packed size (4 bits a code), surprises included
        two = _code(model, codes[:2], block)  # a prefix of the levels, as a lower bitrate codes them
        np.testing.assert_array_equal(_decode(model, two, 2, codes.shape[1], block), codes[:2])
    finally:
        torch.set_num_threads(1)
    with pytest.raises(ValueError, match="in order"):
        model.block_coder().encode_block(codes[:, :8], codes[:, 0])


def test_generation_is_reproducible_and_top_k_one_is_argmax(trained):
    prior, prompt = trained["prior"], synthetic(1, 5, seed=4)[0]
    greedy = sample_continuation(prior, prompt, 10, temperature=0)
    assert greedy.shape == (3, 15) and np.array_equal(greedy[:, :5].numpy(), prompt)
    assert torch.equal(greedy, sample_continuation(prior, prompt, 10, temperature=0, seed=9))
    assert torch.equal(greedy, sample_continuation(prior, prompt, 10, top_k=1, seed=3))
    np.testing.assert_array_equal(greedy[0, 5:].numpy(), (prompt[0, -1] + 1 + np.arange(10)) % K)  # it learned
    draws = [sample_continuation(make_prior(), prompt, 20, temperature=1.5, seed=s) for s in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert sample_continuation(prior, np.zeros((2, 0), np.int64), 4, top_k=3).shape == (2, 4)


# ------------------------------------------------------------------------------------------------ .vqc and CLI

OLD_PACKED_VQC = bytes.fromhex(  # written by the version 1 code (before the prior mode): 10 frames of 2 levels
    "895651430100700000000201c05d0000400100000800000000000000000000000a00000000000000760c0000000000000f00000000"
    "0000007d7bb7fd000102030405060708090a0b0c0d0e0f000000000000000000000000000000004000000040000000060"
    "06f6c642e7074828a86530fa0491070491432420a61841460da")


def test_old_files_still_read(tmp_path):
    path = tmp_path / "old.vqc"
    path.write_bytes(OLD_PACKED_VQC)
    header = read_header(path)
    assert (header.version, header.mode, header.alphabet, header.checkpoint) == (1, "packed", (64, 64), "old.pt")
    codes = np.concatenate(list(iter_codes(path, header)), axis=1)
    np.testing.assert_array_equal(codes, [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [58, 9, 7, 9, 3, 2, 38, 4, 6, 26]])
    assert header.to_bytes() == OLD_PACKED_VQC[:header.size]  # packed files are still written as version 1
    prior_header = Header(**{**header.__dict__, "mode": "prior"})
    assert Header.from_bytes(prior_header.to_bytes()).version == 2


@pytest.fixture(scope="module")
def codec_files(tmp_path_factory):
    """A tiny codec's checkpoint (untrained), a folder of 8 one-second clips, the prior fitted by the command
    line beside the checkpoint, and a two-second input file."""
    root = tmp_path_factory.mktemp("codec")
    cfg = load_config("tiny")
    torch.manual_seed(0)
    codec = build_codec(cfg).eval()
    ckpt = save_checkpoint(root / "run" / "checkpoint.pt", config=cfg.to_dict(), step=0,
                           model={"codec": codec.state_dict()})
    data, rng = root / "data", np.random.default_rng(0)
    data.mkdir()
    t = np.arange(24000) / 24000
    for i in range(8):
        x = 0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t * (1 + 0.2 * t)) + 0.02 * rng.standard_normal(t.size)
        sf.write(str(data / f"clip{i}.wav"), x.astype(np.float32), 24000, subtype="FLOAT")
    argv = ["fit-prior", "--checkpoint", str(ckpt), "--data", str(data), "--steps", "20", "--d-model", "32",
            "--layers", "1", "--context", "16", "--batch-size", "4", "-q"]
    assert main(argv) == 0
    wav = root / "in.wav"
    sf.write(str(wav), (0.3 * np.sin(2 * np.pi * 220 * np.arange(48000) / 24000 * (1 + np.arange(48000) / 96000)))
             .astype(np.float32), 24000, subtype="FLOAT")
    return dict(root=root, ckpt=ckpt, data=data, argv=argv, wav=wav)


def test_fit_prior_caches_the_codes_and_resumes(codec_files, monkeypatch):
    prior_path = codec_files["ckpt"].parent / PRIOR_NAME
    state = load_checkpoint(prior_path)
    assert state["step"] == 20 and len(state["config"]["codec_weights_hash"]) == 32
    cache = codec_files["ckpt"].parent / f"codes-{state['config']['codec_weights_hash']}.npz"
    assert cache.is_file()
    import lib.bitstream.entropy as entropy

    monkeypatch.setattr(entropy, "clip_codes", lambda *a, **k: pytest.fail("the cached codes were not used"))
    out = codec_files["root"] / "more.pt"
    out.write_bytes(prior_path.read_bytes())
    argv = [a if a != "20" else "25" for a in codec_files["argv"]] + ["--out", str(out)]
    assert main(argv) == 0
    assert load_checkpoint(out)["step"] == 25


def test_prior_coded_file_decodes_like_the_packed_one(codec_files, tmp_path):
    ckpt, wav = str(codec_files["ckpt"]), str(codec_files["wav"])
    for mode in ("auto", "packed"):
        assert main(["compress", wav, str(tmp_path / f"{mode}.vqc"), "--checkpoint", ckpt, "--mode", mode,
                     "--block-frames", "16", "-q"]) == 0
        assert main(["decompress", str(tmp_path / f"{mode}.vqc"), str(tmp_path / f"{mode}.wav"), "-q"]) == 0
    header = read_header(tmp_path / "auto.vqc")
    assert (header.mode, header.version) == ("prior", 2) and read_header(tmp_path / "packed.vqc").version == 1
    model = PriorModel.load(codec_files["ckpt"].parent / PRIOR_NAME)
    assert header.model_hash == model.digest()
    packed = np.concatenate(list(iter_codes(tmp_path / "packed.vqc", read_header(tmp_path / "packed.vqc"))), 1)
    np.testing.assert_array_equal(np.concatenate(list(iter_codes(tmp_path / "auto.vqc", header, model)), 1), packed)
    a, b = sf.read(str(tmp_path / "auto.wav"))[0], sf.read(str(tmp_path / "packed.wav"))[0]
    assert a.shape == b.shape and np.array_equal(a, b)


def test_a_prior_for_other_codec_weights_is_refused_naming_both_files(codec_files, tmp_path, capsys):
    ckpt, wav = codec_files["ckpt"], str(codec_files["wav"])
    state = load_checkpoint(ckpt.parent / PRIOR_NAME)
    state["config"]["codec_weights_hash"] = "ab" * 16
    other = save_checkpoint(tmp_path / "other_prior.pt", config=state["config"], step=state["step"],
                            model=state["model"])
    assert main(["compress", wav, str(tmp_path / "x.vqc"), "--checkpoint", str(ckpt), "--mode", "prior",
                 "--prior", str(other), "-q"]) == 1
    err = capsys.readouterr().err
    assert str(other) in err and str(ckpt) in err and not (tmp_path / "x.vqc").exists()
    assert main(["compress", wav, str(tmp_path / "p.vqc"), "--checkpoint", str(ckpt), "--prior", str(other)]) == 0
    assert "not used" in capsys.readouterr().err and read_header(tmp_path / "p.vqc").mode == "packed"
    assert main(["compress", wav, str(tmp_path / "g.vqc"), "--checkpoint", str(ckpt), "-q"]) == 0
    assert main(["decompress", str(tmp_path / "g.vqc"), str(tmp_path / "g.wav"), "--prior", str(other), "-q"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "g.vqc") in err and str(other) in err and "prior" in err
    assert not (tmp_path / "g.wav").exists()
    missing = Path(tmp_path / "none.pt")
    assert main(["compress", wav, str(tmp_path / "y.vqc"), "--checkpoint", str(ckpt), "--mode", "prior",
                 "--prior", str(missing), "-q"]) == 1
    assert "none.pt" in capsys.readouterr().err
