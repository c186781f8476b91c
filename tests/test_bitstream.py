"""The .vqc format and the command line: exact round trips in both payload modes, sizes against the nominal
bitrate, entropy coding below packing on held-out audio of a (briefly) trained codec, and every bad input."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from lib.bitstream.cli import StreamingResampler, main
from lib.bitstream.entropy import EntropyModel, EntropyModelError, count_codes, fit_for_checkpoint
from lib.bitstream.prior_coding import PriorModel
from lib.bitstream.prior_fit import fit_prior
from lib.bitstream.vqc import (DEFAULT_BLOCK_FRAMES, Header, VqcError, bits_per_level, decode_audio,
                               encode_to_file, iter_codes, pack_codes, read_header, reference_decode, unpack_codes)
from lib.config import load_config
from lib.data.audio import load_audio
from lib.data.corpus import build_default_corpus
from lib.data.datasets import AudioFolder
from lib.training.checkpoint import load_checkpoint, load_codec, save_checkpoint
from lib.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny codec trained for 30 steps on real audio where the Debian packages exist (else synthetic), its
    entropy model beside the checkpoint, a small prior over its codes (in a folder of its own, so that ``--mode
    auto`` still finds the entropy model) and held-out clips (valid + test splits)."""
    root = tmp_path_factory.mktemp("vqc")
    corpus = root / "corpus"
    build_default_corpus(corpus, minutes=1.0, sources="auto", progress=False)
    cfg = load_config("tiny", ["train.steps=30", "train.val_every=1000", "train.ckpt_every=1000",
                               "data.valid_clips=1", "data.valid_seconds=0.5"])
    Trainer(cfg, corpus, root / "run", resume=False, progress=False, device="cpu").fit()
    ckpt = root / "run" / "checkpoint.pt"
    model, _ = fit_for_checkpoint(ckpt, corpus)
    _, prior_path, _ = fit_prior(ckpt, corpus, root / "prior" / "prior.pt", steps=30,
                                 settings=dict(d_model=32, n_layers=1, context=32))
    codec, _ = load_codec(ckpt)
    heldout = []
    for split in ("valid", "test"):
        try:
            ds = AudioFolder(corpus, split=split, sample_rate=24000)
        except ValueError:
            continue
        heldout += [ds.load(i) for i in range(len(ds))]
    assert heldout, "the corpus has no held-out clips"
    return dict(root=root, corpus=corpus, ckpt=ckpt, codec=codec, model=model, heldout=heldout,
                prior=PriorModel.load(prior_path), prior_path=prior_path)


@pytest.fixture(scope="module")
def clip(trained):
    """About 3 s of held-out audio `[1, T]` (clips joined), so small blocks give several of them."""
    x = torch.cat(trained["heldout"], dim=-1)
    while x.shape[-1] < 3 * 24000:
        x = torch.cat([x, x], dim=-1)
    return x[:, :3 * 24000 + 77]


def _chunks(x, sizes=(1000, 5, 24000, 333)):
    i, k = 0, 0
    while i < x.shape[-1]:
        yield x[:, i:i + sizes[k % len(sizes)]]
        i += sizes[k % len(sizes)]
        k += 1


def _codes(path, header, model=None):
    return np.concatenate(list(iter_codes(path, header, model)), axis=1)


def _write_wav(path, x, rate=24000):
    sf.write(str(path), x.numpy().T, rate, subtype="FLOAT")
    return path


# ------------------------------------------------------------------------------------------------ format

def test_header_round_trip_fits_fsq_levels():
    h = Header("entropy", 24000, 320, 1, (1000, 1000, 1000), n_frames=10, length=3100, radices=(8, 5, 5, 5),
               quantizer="fsq", source_rate=44100, source_channels=2, weights_hash=bytes(range(16)),
               model_hash=bytes(range(16, 32)), payload_size=99, payload_crc=1234, checkpoint="/x/ckpt.pt")
    data = h.to_bytes()
    assert Header.from_bytes(data + b"payload") == h
    assert h.bits == [10, 10, 10] and math.isclose(h.nominal_bitrate, 30 * 75)
    with pytest.raises(VqcError, match="radices"):
        Header.from_bytes(Header("packed", 24000, 320, 1, (999,), radices=(8, 5, 5, 5)).to_bytes())


def test_pack_unpack_round_trip_any_alphabet():
    rng = np.random.default_rng(0)
    alphabet = (1000, 64, 2, 1, 1024, 5)
    codes = np.stack([rng.integers(0, k, size=37) for k in alphabet])
    bits = bits_per_level(alphabet)
    assert bits == [10, 6, 1, 0, 10, 3]
    data = pack_codes(codes, bits)
    assert len(data) == math.ceil(37 * sum(bits) / 8)
    np.testing.assert_array_equal(unpack_codes(data, 37, bits), codes)


@pytest.mark.parametrize("orig,new", [(44100, 24000), (16000, 24000), (48000, 24000), (24000, 22050)])
def test_streaming_resampler_equals_one_call(orig, new):
    x = torch.randn(2, orig + 1234)
    r = StreamingResampler(orig, new)
    y = torch.cat([r(c) for c in _chunks(x, (1, 700, 9000, 31))] + [r.flush()], dim=-1)
    ref = AF.resample(x, orig, new)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ entropy model

def test_unseen_symbols_stay_codable_in_every_context():
    rng = np.random.default_rng(1)
    alphabet = (16, 16, 8)
    train = [np.stack([rng.integers(0, 4, 50), rng.integers(0, 4, 50), rng.integers(0, 2, 50)])]  # few symbols
    counts = count_codes(train, alphabet)
    for contexts in (("none", "none", "none"), ("prev", "prev", "prev"), ("prev", "coarse", "coarse")):
        model = EntropyModel(alphabet, contexts, (16, 1, 4096), counts["unigram"],
                             [counts[c][l] if c != "none" else np.zeros((0, k), np.int64)
                              for l, (c, k) in enumerate(zip(contexts, alphabet))])
        codes = np.stack([rng.integers(0, k, 40) for k in alphabet])  # mostly symbols never seen in training
        prev = np.array([15, 3, 7])
        words = model.encode_block(codes, prev)
        np.testing.assert_array_equal(model.decode_block(words, 3, 40, prev), codes)
        np.testing.assert_array_equal(model.decode_block(model.encode_block(codes[:2], None), 2, 40, None), codes[:2])


def test_entropy_model_save_load_and_bad_files(tmp_path, trained):
    model = trained["model"]
    path = model.save(tmp_path / "m.npz")
    again = EntropyModel.load(path)
    assert again.digest() == model.digest() and again.context == model.context
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(EntropyModelError, match="bad.npz"):
        EntropyModel.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", format_version=np.array([{"a": 1}], dtype=object))
    with pytest.raises(EntropyModelError, match="obj.npz"):  # pickled objects are refused, not loaded
        EntropyModel.load(tmp_path / "obj.npz")


# ------------------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("mode", ["packed", "entropy", "prior"])
@pytest.mark.parametrize("n_q", [4, 2])
def test_round_trip_is_exact(tmp_path, trained, clip, mode, n_q):
    codec, path, model = trained["codec"], tmp_path / "x.vqc", trained["prior" if mode == "prior" else "model"]
    header = encode_to_file(codec, _chunks(clip), path, n_q=n_q, mode=mode, model=model, block_frames=16)
    assert read_header(path) == header and header.n_frames > 4 * 16
    with torch.inference_mode():
        expected_codes = codec.encode(clip.unsqueeze(0), n_q=n_q)[0]
        offline = codec.decode(expected_codes.unsqueeze(0), length=clip.shape[-1])[0]
    codes = _codes(path, header, model)
    np.testing.assert_array_equal(codes, expected_codes.numpy())  # the file holds codec.encode(x) exactly
    streamed = torch.cat(list(decode_audio(codec, path, header, model)), dim=-1)
    assert streamed.shape == clip.shape
    assert torch.equal(streamed, reference_decode(codec, expected_codes, clip.shape[-1], block_frames=16))
    whole = torch.cat(list(decode_audio(codec, path, header, model, offline=True)), dim=-1)
    assert torch.equal(whole, offline)  # sample for sample codec.decode(codec.encode(x))
    assert (streamed - offline).abs().max() < 1e-5  # streaming differs by float rounding only


@pytest.mark.parametrize("mode", ["packed", "entropy", "prior"])
def test_cli_round_trip_is_exact(tmp_path, trained, clip, mode):
    wav, vqc, out, out_off = (_write_wav(tmp_path / "in.wav", clip), tmp_path / "a.vqc", tmp_path / "out.wav",
                              tmp_path / "off.wav")
    prior = ["--prior", str(trained["prior_path"])]
    assert main(["compress", str(wav), str(vqc), "--checkpoint", str(trained["ckpt"]), "--mode", mode, "-q",
                 *prior]) == 0
    assert main(["decompress", str(vqc), str(out), "-q", *prior]) == 0
    assert main(["decompress", str(vqc), str(out_off), "--offline", "-q", *prior]) == 0
    codec = trained["codec"]
    with torch.inference_mode():
        codes = codec.encode(clip.unsqueeze(0))[0]
        offline = codec.decode(codes.unsqueeze(0), length=clip.shape[-1])[0]
    got, rate = sf.read(str(out), dtype="float32", always_2d=True)
    assert rate == 24000 and got.shape == (clip.shape[-1], 1)
    assert np.array_equal(got.T, reference_decode(codec, codes, clip.shape[-1], DEFAULT_BLOCK_FRAMES).numpy())
    assert np.array_equal(sf.read(str(out_off), dtype="float32", always_2d=True)[0].T, offline.numpy())
    assert read_header(vqc).mode == mode


def test_cli_beam_width_writes_the_beam_searched_codes(tmp_path, trained, clip, capsys):
    wav = _write_wav(tmp_path / "in.wav", clip)
    argv = ["compress", str(wav), "OUT", "--checkpoint", str(trained["ckpt"]), "--mode", "packed", "-q"]
    codes, errors = {}, {}
    for width in (1, 16):  # greedy search, and a beam wider than the trained setting
        vqc = tmp_path / f"w{width}.vqc"
        assert main([str(vqc) if a == "OUT" else a for a in argv] + ["--beam-width", str(width)]) == 0
        codec, cfg = load_codec(trained["ckpt"], beam_width=width)
        with torch.inference_mode():
            x = clip.unsqueeze(0)
            codes[width] = codec.encode(x)[0]
            latents = codec._latents(codec._wav(x))
            errors[width] = (latents - codec.quantizer.decode(codes[width][None])).pow(2).sum().item()
        assert np.array_equal(_codes(vqc, read_header(vqc)), codes[width].numpy())
    assert trained["codec"].quantizer.beam_width == cfg.model.quantizer.beam_width  # the trained setting stays
    assert not torch.equal(codes[1], codes[16]) and errors[16] < errors[1]  # other codes, nearer the latents
    _fails(capsys, [str(tmp_path / "bad.vqc") if a == "OUT" else a for a in argv] + ["--beam-width", "0"],
           "beam_width must be an integer >= 1, got 0", trained["ckpt"].name)


def test_resampling_and_mixdown_are_said_and_exact(tmp_path, trained, capsys):
    stereo = torch.randn(2, 44100) * 0.1
    wav = tmp_path / "stereo.wav"
    sf.write(str(wav), stereo.numpy().T, 44100, subtype="FLOAT")
    assert main(["compress", str(wav), str(tmp_path / "s.vqc"), "--checkpoint", str(trained["ckpt"]),
                 "--mode", "packed"]) == 0
    err = capsys.readouterr().err
    assert "mixed down to mono" in err and "resampled to 24000 Hz" in err and "44100 Hz, 2 channel" in err
    header = read_header(tmp_path / "s.vqc")
    x = load_audio(wav, 24000)  # the same mix-down and resampling, in one go
    assert (header.source_rate, header.source_channels, header.length) == (44100, 2, x.shape[-1])
    with torch.inference_mode():
        np.testing.assert_array_equal(_codes(tmp_path / "s.vqc", header), trained["codec"].encode(x[None])[0])
    assert main(["decompress", str(tmp_path / "s.vqc"), str(tmp_path / "s.wav"), "--sample-rate", "source",
                 "-q"]) == 0
    assert sf.info(str(tmp_path / "s.wav")).samplerate == 44100


# ------------------------------------------------------------------------------------------------ sizes

def test_packed_size_matches_the_nominal_bitrate(tmp_path, trained, clip):
    codec = trained["codec"]
    for n_q in range(1, 5):
        header = encode_to_file(codec, [clip], tmp_path / "p.vqc", n_q=n_q, mode="packed")
        frames_seconds = header.n_frames / codec.frame_rate
        assert os.path.getsize(tmp_path / "p.vqc") == header.size + header.payload_size
        assert header.payload_size == math.ceil(header.n_frames * n_q * 6 / 8)
        assert abs(8 * header.payload_size - codec.bitrate(n_q) * frames_seconds) < 8  # within the last byte
        assert header.size < 200


def test_entropy_coding_beats_packing_on_heldout_audio(tmp_path, trained):
    codec, model = trained["codec"], trained["model"]
    for n_q in range(1, 5):
        packed = entropy = 0
        for i, x in enumerate(trained["heldout"]):
            packed += encode_to_file(codec, [x], tmp_path / "p.vqc", n_q=n_q, mode="packed").payload_size
            entropy += encode_to_file(codec, [x], tmp_path / "e.vqc", n_q=n_q, mode="entropy",
                                      model=model).payload_size
        assert entropy < packed, (n_q, entropy, packed)


def test_kbps_picks_the_levels_that_fit(tmp_path, trained, clip, capsys):
    wav = _write_wav(tmp_path / "in.wav", clip)
    assert main(["compress", str(wav), str(tmp_path / "k.vqc"), "--checkpoint", str(trained["ckpt"]), "--kbps", "1",
                 "-q"]) == 0
    assert read_header(tmp_path / "k.vqc").n_levels == 2  # 450 bit/s per level
    assert main(["compress", str(wav), str(tmp_path / "z.vqc"), "--checkpoint", str(trained["ckpt"]), "--kbps",
                 "0.1"]) == 2
    assert "below one level" in capsys.readouterr().err and not (tmp_path / "z.vqc").exists()
    assert main(["compress", str(wav), str(tmp_path / "z.vqc"), "--checkpoint", str(trained["ckpt"]),
                 "--block-frames", "12"]) == 2
    assert "multiple of 8" in capsys.readouterr().err and not (tmp_path / "z.vqc").exists()
    assert main(["info", str(tmp_path / "k.vqc"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["levels"] == 2 and info["nominal_kbps"] == 0.9 and info["mode"] == "entropy"


# ------------------------------------------------------------------------------------------------ bad input

@pytest.fixture()
def made(tmp_path, trained, clip):
    """A valid entropy-coded file and the paths around it."""
    vqc = tmp_path / "good.vqc"
    encode_to_file(trained["codec"], [clip[:, :24000]], vqc, mode="entropy", model=trained["model"],
                   checkpoint=str(trained["ckpt"]))
    return vqc


def _fails(capsys, argv, *needles, tmp=None, exit_code=1):
    assert main(argv) == exit_code
    err = capsys.readouterr().err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    if tmp is not None:  # no output file, no temp file left behind
        assert not [p for p in Path(tmp).iterdir() if p.name.startswith(".") or p.name.startswith("out")]
    return err


def _rewrite(path, edit):
    data = bytearray(path.read_bytes())
    edit(data)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("damage,needle", [
    (lambda d: d.__delitem__(slice(-3, None)), "truncated"),
    (lambda d: d.__delitem__(slice(40, None)), "truncated"),
    (lambda d: d.__setitem__(-2, d[-2] ^ 0x10), "corrupted payload"),
    (lambda d: d.__setitem__(13, d[13] ^ 0x01), "corrupted header"),
    (lambda d: d.extend(b"junk"), "unexpected bytes"),
    (lambda d: d.__setitem__(slice(0, 4), b"RIFF"), "not a .vqc file"),
    (lambda d: d.__setitem__(slice(4, 6), (3).to_bytes(2, "little")), "format version 3"),
    (lambda d: d.clear(), "not a .vqc file (empty)"),
])
def test_damaged_files_are_refused(tmp_path, made, capsys, damage, needle):
    _rewrite(made, damage)
    out = tmp_path / "sub"
    out.mkdir()
    _fails(capsys, ["decompress", str(made), str(out / "out.wav"), "-q"], made, needle, tmp=out)
    with pytest.raises(VqcError, match="good.vqc"):
        read_header(made)


def test_wrong_checkpoint_or_entropy_model_is_named(tmp_path, trained, made, capsys):
    state = load_checkpoint(trained["ckpt"])
    for key in ("codec", "ema"):
        if key in state["model"]:
            name = next(k for k, v in state["model"][key].items() if k.endswith("weight") and v.is_floating_point())
            state["model"][key][name] = state["model"][key][name] * 1.01
    other = save_checkpoint(tmp_path / "other.pt", config=state["config"], step=state["step"], model=state["model"])
    out = tmp_path / "sub"
    out.mkdir()
    _fails(capsys, ["decompress", str(made), str(out / "out.wav"), "--checkpoint", str(other), "-q"],
           made, other, trained["ckpt"], "weights", tmp=out)
    model = trained["model"]
    changed = EntropyModel(model.alphabet, model.context, tuple(b + 1 for b in model.beta), model.unigram,
                           model.counts, model.weights_hash)
    changed.save(tmp_path / "changed.npz")
    _fails(capsys, ["decompress", str(made), str(out / "out.wav"), "--entropy-model", str(tmp_path / "changed.npz"),
                    "-q"], made, "changed.npz", "entropy model", tmp=out)


def test_bad_audio_inputs_and_outputs(tmp_path, trained, clip, capsys):
    ckpt = ["--checkpoint", str(trained["ckpt"]), "-q"]
    out = tmp_path / "sub"
    out.mkdir()
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1), np.float32), 24000)
    _fails(capsys, ["compress", str(empty), str(out / "out.vqc"), *ckpt], empty, "no audio samples", tmp=out)
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    _fails(capsys, ["compress", str(zero), str(out / "out.vqc"), *ckpt], zero, "no audio samples", tmp=out)
    _fails(capsys, ["compress", str(tmp_path / "missing.wav"), str(out / "out.vqc"), *ckpt], "missing.wav",
           "does not exist", tmp=out)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + os.urandom(100))
    _fails(capsys, ["compress", str(garbage), str(out / "out.vqc"), *ckpt], garbage, tmp=out)
    wav = _write_wav(tmp_path / "in.wav", clip[:, :4800])
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    _fails(capsys, ["compress", str(wav), str(blocker / "out.vqc"), *ckpt], blocker / "out.vqc", "not a folder")
    _fails(capsys, ["compress", str(wav), str(out), *ckpt], out, "is a folder")
    _fails(capsys, ["compress", str(wav), str(tmp_path / "nope" / "out.vqc"), *ckpt], "nope", "does not exist")
    assert not (tmp_path / "nope").exists()
    assert main(["compress", str(wav), str(out / "ok.vqc"), *ckpt]) == 0
    _fails(capsys, ["decompress", str(out / "ok.vqc"), str(out / "out.xyz"), "-q"], "out.xyz", "unsupported")
    _fails(capsys, ["compress", str(wav), str(out / "x.vqc"), "--checkpoint", str(tmp_path / "none.pt")],
           "none.pt", "not found")
    assert sorted(p.name for p in out.iterdir()) == ["ok.vqc"]


def test_python_dash_m_lib_exit_codes(tmp_path, trained, clip, made):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"}

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "lib", *argv], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)

    wav = _write_wav(tmp_path / "in.wav", clip[:, :24000])
    ok = run("compress", str(wav), "a.vqc", "--checkpoint", str(trained["ckpt"]), "--threads", "1")
    assert ok.returncode == 0, ok.stderr
    assert "compress" in ok.stderr and "wrote a.vqc" in ok.stderr  # the progress bar and the summary
    _rewrite(made, lambda d: d.__setitem__(-1, d[-1] ^ 0xFF))
    bad = run("decompress", str(made), "out.wav")
    assert bad.returncode == 1 and str(made) in bad.stderr and "corrupted" in bad.stderr
    assert not (tmp_path / "out.wav").exists()
    assert run("compress", "a.wav").returncode == 2
