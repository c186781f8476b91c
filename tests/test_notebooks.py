"""Every notebook, executed headless with papermill at the tiny preset, in order, producing its figures.

The four notebooks share one temporary data folder, run folder and figures folder, exactly as
`python -m lib.runner` chains them (the `tiny_workbook` fixture of conftest.py, shared with the browser test);
a failing cell fails its test with papermill's cell traceback.
"""
import re
from pathlib import Path

import nbformat
import pytest

from lib.runner import notebook_paths

EXPECTED = {
    "01": ["01_durations.png", "01_spectrograms.png"],
    "02": ["02_losses.png", "02_spectrograms.png", "02_codebook_usage.png", "02_runs.png"],
    "03": ["03_usage.png", "03_umatrix.png", "03_mosaic.png", "03_path.png", "03_jumps.png", "03_path.gif",
           "03_pca.png", "03_topography.png", "03_fsq.png", "03_patches_som.png", "03_patches_ema.png"],
    "04": ["04_rate_distortion.png", "04_mushra.png"],
    "05": ["05_damage.png", "05_context.png"],
}
RUN_FILES = {"02": ["checkpoint.pt", "log.jsonl", "config.yaml"], "04": ["metrics.csv", "mushra.csv"]}


def test_every_notebook_is_covered():
    assert sorted(p.name[:2] for p in notebook_paths()) == sorted(EXPECTED)


def test_committed_notebooks_are_clean():
    for path in notebook_paths():
        notebook = nbformat.read(str(path), as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        assert not any(c.outputs or c.execution_count for c in code), f"{path.name} carries outputs"


@pytest.mark.notebook
@pytest.mark.parametrize("prefix", sorted(EXPECTED))
def test_notebook_runs_at_tiny_preset(prefix, tiny_workbook):
    executed = tiny_workbook.run(prefix)
    assert executed.is_file()
    figures = Path(tiny_workbook.params["figures_dir"])
    missing = [f for f in EXPECTED[prefix] if not (figures / f).is_file() or (figures / f).stat().st_size < 2000]
    assert not missing, f"{executed.name} did not write {missing}"
    run = Path(tiny_workbook.params["run_dir"])
    assert not [f for f in RUN_FILES.get(prefix, []) if not (run / f).is_file()]
    # Saved for a reader: signed (trusted), no widget state, no raw widget reprs, no frozen progress widgets.
    notebook = nbformat.read(str(executed), as_version=4)
    assert "widgets" not in notebook.metadata
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
                   for c in notebook.cells for o in c.get("outputs", []))
    assert "VBox(" not in text and "HBox(" not in text and not re.search(r"(?<!\d)0%\|", text)
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for c in notebook.cells for o in c.get("outputs", []))
    from nbformat.sign import NotebookNotary

    notary = NotebookNotary()
    try:
        assert notary.check_signature(notebook), f"{executed.name} is not signed"
    finally:
        notary.store.close()


def test_the_runner_passes_parameters_to_the_notebooks(monkeypatch, capsys):
    import lib.runner as runner

    seen = {}
    monkeypatch.setattr(runner, "run_all", lambda *args: seen.setdefault("args", args))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # set by the user: kept, no timing
    assert runner.main(["--steps", "40", "-p", "prior_steps=60", "-p", "shares=(0.1, 0.2)", "-p", "embedding=learned",
                        "-p", "compare_checkpoint=None"]) == 0
    assert seen["args"][-1] == {"steps": 40, "prior_steps": 60, "shares": (0.1, 0.2), "embedding": "learned",
                                "compare_checkpoint": None}
    with pytest.raises(SystemExit):
        runner.main(["-p", "no value"])
    assert "expected NAME=VALUE" in capsys.readouterr().err
