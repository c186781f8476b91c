"""Run the workbook's notebooks headless, in order, with papermill.

    python -m lib.runner --preset cpu --run-dir runs/workbook --figures figures --data data/default

Every notebook accepts the same four parameters (``preset``, ``data_dir``, ``run_dir``, ``figures_dir``); the
rest of its knobs default from the preset. Executed copies go to ``<run_dir>/executed/`` (git-ignored), figures
to ``figures_dir``. Papermill runs each notebook with ``notebooks/`` as working directory, like JupyterLab does.

The kernels run with ``WORKBOOK_HEADLESS=1`` (``lib.headless``): outputs are saved for a reader as plain HTML
players, tables and images rather than live widgets. Every executed copy is then signed with nbformat's notary
(the secret and signature database of this user's Jupyter data folder), so that it opens *trusted* in
JupyterLab on this machine: untrusted notebooks have their players and HTML stripped.

Where ``OMP_WAIT_POLICY`` is unset or "auto" (``make workbook``'s default), the runner first times this machine with
threads that spin at a barrier and threads that sleep, and the kernels inherit the faster (``lib.wait_policy``).
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
HEADLESS_ENV = "WORKBOOK_HEADLESS"  # lib.headless.ENV (the runner loads nothing of lib that loads torch)


def notebook_paths(selection: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally filtered by prefix (e.g. ``["01", "02"]``)."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if selection:
        paths = [p for p in paths if any(p.name.startswith(s) for s in selection)]
    return paths


def run_notebook(path: Path, parameters: dict, out_dir: Path, kernel: str = "python3") -> Path:
    """Execute one notebook; raises papermill's error (with the failing cell) when a cell fails."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    previous = os.environ.get(HEADLESS_ENV)
    os.environ[HEADLESS_ENV] = "1"  # the kernel inherits it
    try:
        papermill.execute_notebook(str(path), str(out), parameters=parameters, cwd=str(NOTEBOOK_DIR),
                                   kernel_name=kernel, progress_bar=False, log_output=False)
    finally:
        if previous is None:
            os.environ.pop(HEADLESS_ENV, None)
        else:
            os.environ[HEADLESS_ENV] = previous
    sign_notebook(out)
    return out


def sign_notebook(path: str | os.PathLike) -> None:
    """Mark an executed notebook as trusted for this user (what `jupyter trust <path>` does), after removing what
    would make JupyterLab mark it modified as it opens (saved widget state, a stale kernel display name)."""
    import nbformat
    from nbformat.sign import NotebookNotary

    notebook = nbformat.read(str(path), as_version=4)
    changed = notebook.metadata.pop("widgets", None) is not None  # state of widgets no saved view uses
    spec = notebook.metadata.get("kernelspec", {})
    try:  # JupyterLab rewrites a display name that differs from the installed kernel's: "modified" on open
        from jupyter_client.kernelspec import KernelSpecManager

        display_name = KernelSpecManager().get_kernel_spec(spec.get("name", "python3")).display_name
    except Exception:  # noqa: BLE001 - no such kernel here: keep what papermill wrote
        display_name = spec.get("display_name")
    if spec and display_name and spec.get("display_name") != display_name:
        spec["display_name"], changed = display_name, True
    if changed:
        nbformat.write(notebook, str(path))
    notary = NotebookNotary()
    try:
        notary.sign(notebook)
    finally:
        notary.store.close()


def run_all(preset: str, run_dir: str | Path, figures_dir: str | Path, data_dir: str | Path,
            selection: list[str] | None = None, extra: dict | None = None) -> list[Path]:
    """Run the notebooks in order with shared parameters; returns the executed copies."""
    run_dir, figures_dir, data_dir = (Path(p).resolve() for p in (run_dir, figures_dir, data_dir))
    params = {"preset": preset, "data_dir": str(data_dir), "run_dir": str(run_dir),
              "figures_dir": str(figures_dir), **(extra or {})}
    executed = []
    for nb in notebook_paths(selection):
        t0 = time.time()
        print(f"[runner] {nb.name} (preset={preset}) ...", flush=True)
        executed.append(run_notebook(nb, params, run_dir / "executed"))
        print(f"[runner] {nb.name} done in {time.time() - t0:.0f} s -> {executed[-1]}", flush=True)
    return executed


def _literal(text: str):
    """``"100"`` -> 100, ``"(0.1, 0.2)"`` -> (0.1, 0.2), ``"None"`` -> None; anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--run-dir", default="runs/workbook")
    ap.add_argument("--figures", default="figures")
    ap.add_argument("--data", default="data/default")
    ap.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 01 02")
    ap.add_argument("--steps", type=int, default=None, help="training steps for notebook 02 (default: the preset's)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="a budget of training minutes for notebook 02 (default: the preset's train.minutes)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a parameter for every notebook that has it (a Python literal, else a string), e.g. "
                         "-p prior_steps=100")
    args = ap.parse_args(argv)
    extra = {k: v for k, v in (("steps", args.steps), ("minutes", args.minutes)) if v is not None}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            ap.error(f"-p {item!r}: expected NAME=VALUE")
        extra[name] = _literal(value)
    extra = extra or None
    from lib.wait_policy import resolve  # the kernels inherit the chosen OpenMP variables

    resolve(report=lambda line: print(f"[runner] {line}", flush=True))
    run_all(args.preset, args.run_dir, args.figures, args.data, args.only, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
