"""Whether a notebook's outputs are being saved for a reader (a headless run) or shown live to a person.

`python -m lib.runner` (and so `make workbook` and the notebook tests) sets ``WORKBOOK_HEADLESS=1`` for the
kernels it starts. Headless, the notebooks save what a reader needs as plain outputs (HTML players, tables and
images, a static summary instead of a widget) and progress bars leave one final line instead of a frozen
widget; opened and run by a person in JupyterLab, the same cells show live ipywidgets and live bars. Commands
(`python -m lib ...`, the trainer) draw live bars on a terminal and one final line into a log file.
Imports nothing from lib: every layer may use it.
"""
from __future__ import annotations

import io
import os
import sys

from tqdm.std import tqdm as _tqdm

ENV = "WORKBOOK_HEADLESS"


def headless() -> bool:
    """True when outputs are saved for later reading rather than watched (``WORKBOOK_HEADLESS`` set, not 0)."""
    return os.environ.get(ENV, "").strip() not in ("", "0", "false", "False")


def progress_bar(iterable=None, **kwargs):
    """A tqdm bar: live for a person (in a notebook, or in a terminal), one final text line where the output is
    kept for later: a headless notebook run (on stdout, which the executed notebook saves) or a command whose
    progress stream (``file``, default stderr) is not a terminal, e.g. redirected to a log file."""
    if headless():
        return _FinalLineBar(iterable, report=sys.stdout, **kwargs)
    if _in_kernel():
        from tqdm.auto import tqdm
        return tqdm(iterable, **kwargs)
    stream = kwargs.get("file") or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        return _FinalLineBar(iterable, report=stream, **kwargs)
    return _tqdm(iterable, **kwargs)


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws a widget), False in a terminal or a script."""
    shell = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None
    return shell is not None and hasattr(shell, "kernel")


class _FinalLineBar(_tqdm):
    """Draws nowhere while running; prints its final state as one line on `report` when closed."""

    def __init__(self, iterable=None, report=None, **kwargs):
        kwargs.pop("dynamic_ncols", None)
        kwargs.update(file=io.StringIO(), ncols=80, ascii=True, mininterval=1e9)
        self._reported = False
        self._report = report if report is not None else sys.stdout
        super().__init__(iterable, **kwargs)

    def close(self):
        if not self.disable and not self._reported:
            self._reported = True
            if self.total is not None and self.n > self.total:
                self.total = self.n
            print(self.__str__(), file=self._report, flush=True)
        super().close()
