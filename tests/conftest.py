"""Shared test settings: deterministic seeds, one thread (CI has 2 cores), headless matplotlib."""
import os
import random

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


class TinyWorkbook:
    """The four notebooks executed once per test session at the tiny preset, in order, sharing one data, run and
    figures folder exactly as `python -m lib.runner` chains them. `run(prefix)` executes a notebook (and those
    before it) the first time it is asked for; a failure is kept and raised again for every later ask."""

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
                    self.results[key] = run_notebook(path, self.params, self.executed_dir)
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
