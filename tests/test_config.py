"""Config loading, overrides and validation errors."""
import pytest

from lib.config import ConfigError, config_from_dict, list_presets, load_config


def test_presets_load_and_have_the_promised_bitrates():
    assert {"tiny", "cpu", "paper"} <= set(list_presets())
    cpu = load_config("cpu")
    assert cpu.data.sample_rate == 24000 and cpu.hop_length == 320 and cpu.frame_rate == 75.0
    assert cpu.model.quantizer.n_q == 8 and cpu.model.quantizer.codebook_size == 1024
    assert cpu.bitrate() == 8 * 10 * 75 == 6000
    assert cpu.bitrate(2) == 1500
    paper = load_config("paper")
    assert paper.bitrate() == 24000 and paper.model.n_filters == 32
    tiny = load_config("tiny")
    assert tiny.name == "tiny" and tiny.model.n_filters < cpu.model.n_filters


def test_overrides_dotted_strings_and_nested_dicts():
    a = load_config("tiny", ["model.quantizer.n_q=2", "train.discriminators=[period]", "loss.balancer=true"])
    assert a.model.quantizer.n_q == 2 and a.train.discriminators == ["period"] and a.loss.balancer is True
    b = load_config("tiny", {"model": {"dim": 24}, "train.steps": 7})
    assert b.model.dim == 24 and b.train.steps == 7
    # round trip through a plain dict (what checkpoints store)
    assert config_from_dict(b.to_dict()) == b
    # YAML 1.1 reads 1e-3 (no dot) as a string: a float field takes it as the number it means
    assert load_config("tiny", ["train.lr=1e-3"]).train.lr == 0.001


@pytest.mark.parametrize("overrides, fragment", [
    (["model.foo=1"], "unknown key(s) model.foo"),
    (["model.quantizer.codebok_size=8"], "model.quantizer.codebok_size"),
    (["model.hop_length=300"], "model.hop_length=300 but model.ratios"),
    (["model.quantizer.som=true", "model.quantizer.som_shape=[7, 9]"], "som_shape=[7, 9] does not hold"),
    (["model.dim=abc"], "model.dim: expected an integer"),
    (["model.block=transformer"], "model.block: 'transformer' is not one of"),
    (["train.discriminators=[stft, mpd]"], "train.discriminators: 'mpd'"),
    (["model.quantizer.codebook_dim=999"], "codebook_dim=999"),
    (["model.quantizer.code_gradient=true"], "model.quantizer.code_gradient needs codebook_dim < model.dim"),
    (["model.quantizer.beam_width=0"], "model.quantizer.beam_width must be an integer >= 1, got 0"),
    (["model.quantizer.beam_width=4", "model.quantizer.cosine=true"], "beam_width=4 needs Euclidean codes"),
    (["loss.phase_max_hz=20000"], "loss.phase_max_hz must be null or in (0, data.sample_rate / 2 = 12000]"),
    (["loss.waveform_mse_max_hz=-5"], "loss.waveform_mse_max_hz must be null or in (0, data.sample_rate / 2"),
    (["data.segment_seconds=0.001"], "shorter than one frame"),
    (["model.quantizer.decay=1.5"], "decay must be in (0, 1)"),
    (["model.spectral.head=magphase"], "model.spectral.head='magphase'"),
    (["model.encoder=stft", "model.decoder=istft", "model.spectral.decoder_lookahead=-1"],
     "model.spectral.decoder_lookahead=-1: expected a whole number of frames >= 0"),
    (["model.spectral.decoder_subframes=3"], "model.spectral.decoder_subframes=3: expected a whole number >= 1 that "
                                             "divides the hop (320)"),
    (["model.spectral.envelope_band_hz=[4000, 1000]"], "model.spectral.envelope_band_hz=[4000.0, 1000.0]: "
                                                       "expected rising band edges between 0 and 12000 Hz"),
    (["model.spectral.envelope_band_hz=[1000]", "model.spectral.envelope_steps=1"],
     "model.spectral.envelope_steps=1: expected a whole number >= 2"),
    (["train.minutes=0"], "train.minutes: must be > 0 or null"),
    (["train.lr=fast"], "train.lr: expected a number, got 'fast'"),
])
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides)
    assert fragment in str(e.value)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="known presets: .*cpu"):
        load_config("no-such-preset")


def test_preset_from_yaml_path_with_base(tmp_path):
    p = tmp_path / "mine.yml"
    p.write_text("base: tiny\nmodel:\n  quantizer:\n    n_q: 3\n")
    cfg = load_config(p)
    assert cfg.name == "mine" and cfg.model.quantizer.n_q == 3 and cfg.model.n_filters == 4


def test_valid_choices_come_from_the_registries():
    from lib.model.registries import DECODERS, QUANTIZERS

    cfg = load_config("tiny")
    assert cfg.model.quantizer.kind in QUANTIZERS and cfg.model.decoder in DECODERS
    with pytest.raises(ConfigError, match="model.quantizer.kind: 'nope' is not one of .*rvq"):
        load_config("tiny", ["model.quantizer.kind=nope"])
    with pytest.raises(ConfigError, match="model.decoder: 'nope' is not one of seanet"):
        load_config("tiny", ["model.decoder=nope"])
    with pytest.raises(ConfigError, match="train.discriminators: 'mel' is not one of stft, waveform, period"):
        load_config("tiny", ["train.discriminators=[mel]"])
