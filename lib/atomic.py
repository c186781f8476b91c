"""Atomic file writes: the content goes to a temp file beside the target, which replaces it in one rename only
when complete, so a reader (or a resumed run) never sees half a file and a crash leaves the old file intact."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a new, empty temp path ``.<name>.<random><suffix>`` in ``path``'s folder; write it in the block.

    On a clean exit the file gets the permissions a plain ``open`` would give (``mkstemp`` creates 0600) and is
    renamed over ``path``; on any error it is deleted. The name is unique, so two processes writing the same
    target at once never rename each other's file away: the last rename wins, whole.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
