"""Every notebook, executed headless with papermill at the tiny preset, in order, producing its figures.

The four notebooks share one temporary data folder, run folder and figures folder, exactly as
`python -m lib.runner` chains them; a failing cell fails its test with papermill's cell traceback.
"""
from pathlib import Path

import pytest

from lib.runner import notebook_paths, run_notebook

EXPECTED = {
    "01": ["01_durations.png", "01_spectrograms.png"],
    "02": ["02_losses.png", "02_spectrograms.png", "02_codebook_usage.png", "02_runs.png"],
    "03": ["03_usage.png", "03_umatrix.png", "03_mosaic.png", "03_path.png", "03_path.gif", "03_pca.png",
           "03_topography.png", "03_patches_som.png", "03_patches_ema.png"],
    "04": ["04_rate_distortion.png", "04_mushra.png"],
}
RUN_FILES = {"02": ["checkpoint.pt", "log.jsonl", "config.yaml"], "04": ["metrics.csv", "mushra.csv"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("workbook")
    return {"preset": "tiny", "data_dir": str(root / "data"), "run_dir": str(root / "run"),
            "figures_dir": str(root / "figures")}


def test_every_notebook_is_covered():
    assert sorted(p.name[:2] for p in notebook_paths()) == sorted(EXPECTED)


@pytest.mark.notebook
@pytest.mark.parametrize("prefix", sorted(EXPECTED))
def test_notebook_runs_at_tiny_preset(prefix, workspace):
    (path,) = notebook_paths([prefix])
    executed = run_notebook(path, workspace, Path(workspace["run_dir"]) / "executed")
    assert executed.is_file()
    figures = Path(workspace["figures_dir"])
    missing = [f for f in EXPECTED[prefix] if not (figures / f).is_file() or (figures / f).stat().st_size < 2000]
    assert not missing, f"{path.name} did not write {missing}"
    run = Path(workspace["run_dir"])
    assert not [f for f in RUN_FILES.get(prefix, []) if not (run / f).is_file()]
