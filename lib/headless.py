"""Whether a notebook's outputs are being saved for a reader (a headless run) or shown live to a person.

`python -m lib.runner` (and so `make workbook` and the notebook tests) sets ``WORKBOOK_HEADLESS=1`` for the
kernels it starts. Headless, the notebooks save what a reader needs as plain outputs (HTML players, tables and
images, a static summary instead of a widget) and progress bars leave one final line instead of a frozen
widget; opened and run by a person in JupyterLab, the same cells show live ipywidgets and live bars.
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
    """A tqdm bar: live (``tqdm.auto``) for a person, one final text line on stdout when headless."""
    if not headless():
        from tqdm.auto import tqdm
        return tqdm(iterable, **kwargs)
    return _FinalLineBar(iterable, **kwargs)


class _FinalLineBar(_tqdm):
    """Draws nowhere while running; prints its final state as one line on stdout when closed."""

    def __init__(self, iterable=None, **kwargs):
        kwargs.pop("dynamic_ncols", None)
        kwargs.update(file=io.StringIO(), ncols=80, ascii=True, mininterval=1e9)
        self._reported = False
        super().__init__(iterable, **kwargs)

    def close(self):
        if not self.disable and not self._reported:
            self._reported = True
            if self.total is not None and self.n > self.total:
                self.total = self.n
            print(self.__str__(), file=sys.stdout, flush=True)
        super().close()
