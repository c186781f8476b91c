"""Shared test settings: deterministic seeds, one thread (CI has 2 cores), headless matplotlib; real speech."""
import os
import random

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


HUMAN_SPEECH_RATE = 16000


def _alsa_voice_files() -> list:
    from lib.data.corpus import ALSA_SOUNDS_DIR

    return sorted(p for p in ALSA_SOUNDS_DIR.glob("*.wav") if p.stem != "Noise")


@pytest.fixture(scope="session")
def speech_source() -> str:
    """Where `human_speech` comes from: "alsa-utils" (a human voice) or "espeak-ng" (synthetic)."""
    return "alsa-utils" if _alsa_voice_files() else "espeak-ng"


@pytest.fixture(scope="session")
def human_speech(speech_source) -> torch.Tensor:
    """Speech, 16 kHz mono float32 `[T]` of about 11 s, peak 0.5: a human voice, alsa-utils' recordings ("Front
    Left", "Rear Right", ...; Noise.wav left out) one after another; where alsa-utils is missing, espeak-ng reading
    four sentences. Skips the test when neither is installed."""
    from lib.data.audio import load_audio
    from lib.data.corpus import _speak
    from lib.data.espeak_text import ENGLISH_SENTENCES

    if speech_source == "alsa-utils":
        wav = torch.cat([load_audio(p, HUMAN_SPEECH_RATE)[0] for p in _alsa_voice_files()])
    else:
        spoken = [_speak("en", 150, 50, " ".join(ENGLISH_SENTENCES[i: i + 2]), HUMAN_SPEECH_RATE) for i in (0, 2)]
        if any(s is None for s in spoken):
            pytest.skip("no speech: install the Debian package alsa-utils (or espeak-ng); make data-packages")
        wav = torch.cat([s[0] for s in spoken])
    return 0.5 * wav / wav.abs().max()


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


# Knobs that are not the preset's, made tiny for the tests: notebook 05's prior and how much it measures.
TINY_EXTRAS = {"05": {"prior_steps": 20, "prior_size": {"d_model": 16, "n_layers": 1, "n_heads": 2, "context": 16},
                      "damage_clips": 1, "shares": [0.1], "bit_error_rates": [0.01], "n_continuations": 1,
                      "prompt_seconds": 0.25}}


class TinyWorkbook:
    """The notebooks executed once per test session at the tiny preset, in order, sharing one data, run and
    figures folder exactly as `python -m lib.runner` chains them (plus `TINY_EXTRAS`). `run(prefix)` executes a
    notebook (and those before it) the first time it is asked for; a failure is kept and raised again for every
    later ask."""

    def __init__(self, root):
        self.root = root
        self.params = {"preset": "tiny", "data_dir": str(root / "data"), "run_dir": str(root / "run"),
                       "figures_dir": str(root / "figures")}
        self.executed_dir = root / "run" / "executed"
        self.results: dict[str, object] = {}

    def run(self, prefix: str):
        from lib.runner import notebook_paths, run_notebook

        for path in notebook_paths():
            key = path.name[:2]
            if key not in self.results:
                try:
                    self.results[key] = run_notebook(path, {**self.params, **TINY_EXTRAS.get(key, {})},
                                                     self.executed_dir)
                except Exception as error:  # noqa: BLE001 - re-raised by every test that needs this notebook
                    self.results[key] = error
            if key == prefix:
                break
        result = self.results[prefix]
        if isinstance(result, Exception):
            raise result
        return result


@pytest.fixture(scope="session")
def tiny_workbook(tmp_path_factory):
    """Executed copies are signed into a private Jupyter data folder (its notary secret and database), which the
    browser check's JupyterLab also uses, so that nothing under ~/.local is touched."""
    root = tmp_path_factory.mktemp("workbook")
    previous = os.environ.get("JUPYTER_DATA_DIR")
    os.environ["JUPYTER_DATA_DIR"] = str(root / "jupyter-data")
    yield TinyWorkbook(root)
    if previous is None:
        os.environ.pop("JUPYTER_DATA_DIR", None)
    else:
        os.environ["JUPYTER_DATA_DIR"] = previous
