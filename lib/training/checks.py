"""Pre-flight checks: what can be known to fail before a run starts must fail then, not after it has trained."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputFolderError(ValueError):
    """An output folder cannot be created or written."""


def check_writable(*folders: str | os.PathLike) -> None:
    """Create each folder if needed and write (then delete) a file in it; ``OutputFolderError`` names the first
    one that fails (a read-only figures folder would otherwise fail only after the training)."""
    for folder in folders:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as err:
            raise OutputFolderError(f"output folder '{folder}' is not writable ({err.strerror or err}); "
                                    "choose another folder or fix its permissions before training") from err
