"""Make `import torchaudio` work beside a CPU-only torch build, then prove the parts the workbook uses.

PyPI's torchaudio wheels for x86_64 Linux are CUDA builds: their compiled extension (`_torchaudio*.so`) links
`libc10_cuda.so`, which a CPU-only torch (`torch==2.13.0+cpu`, the small build `requirements.txt` installs where
it is on disk) does not ship, so `import torchaudio` fails. The workbook, and `encodec` which imports torchaudio,
use only pure-Python parts (`transforms.MelSpectrogram`, `functional.resample`, `functional.melscale_fbanks`).
torchaudio skips its extension when the file is absent, so on a CPU-only torch this script moves the CUDA-linked
extension aside (renamed `*.cuda-only`, nothing deleted). With a CUDA torch it changes nothing.

usage: python .ci/torchaudio-check.py   (run by `make env` after pip; exits non-zero if torchaudio still fails)
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

PROBE = ("import torch, torchaudio.functional as F, torchaudio.transforms as T\n"
         "x = torch.randn(1, 4000)\n"
         "assert F.resample(x, 16000, 24000).shape == (1, 6000)\n"
         "assert T.MelSpectrogram(16000, n_fft=512, n_mels=40)(x).shape[-2] == 40\n")


def probe() -> subprocess.CompletedProcess:
    """Import torchaudio in a fresh interpreter (a failed extension load cannot be undone in-process)."""
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)


def main() -> int:
    result = probe()
    if result.returncode == 0:
        return 0
    import torch

    spec = importlib.util.find_spec("torchaudio")
    if torch.version.cuda is not None or spec is None or "libc10_cuda" not in result.stderr:
        sys.stderr.write(f"torchaudio does not import beside torch {torch.__version__}:\n{result.stderr}")
        return 1
    lib_dir = Path(spec.origin).parent / "lib"
    for so in sorted(lib_dir.glob("_torchaudio*.so")):
        so.rename(so.with_name(so.name + ".cuda-only"))
        print(f"torch {torch.__version__} is CPU-only: moved torchaudio's CUDA-linked extension aside ({so.name})")
    result = probe()
    if result.returncode != 0:
        sys.stderr.write(f"torchaudio still does not import:\n{result.stderr}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
