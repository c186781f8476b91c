"""End-to-end check of the blind MUSHRA widget in a real browser: JupyterLab + headless Chromium (Playwright).

What it does, in a scratch folder:
1. writes a two-cell notebook that imports `lib.analysis.listening` and displays a `MushraTest` on synthetic clips
   (`synthetic_trials`: one trial, a tone and three processed versions; generated rather than notebook 04
   so that the check needs no checkpoint or corpus and runs in seconds);
2. starts JupyterLab on 127.0.0.1 (a free port, a random token, no browser, root_dir = the scratch folder,
   settings/runtime/workspace folders inside it so nothing outside is touched);
3. opens the notebook in headless Chromium, runs all cells from the Run menu, waits for the widget to render
   (all six players loaded, 1 s each);
4. moves slider "A" with the arrow keys, saves a screenshot of the widget (`mushra_widget.png`), clicks
   "Finish" and waits for the "Done" message; the caller then checks the CSV row with that score.
The server is shut down through its API on exit (also on failure), then terminated and killed if it lingers;
the kernel is killed by its pid if it outlives the server. Every wait is bounded.

Usage: python tests/browser_check.py [--out DIR]   (prints a JSON summary; DIR also gets the screenshot)
Needs Debian's `chromium` at /usr/bin/chromium and the `playwright` Python package (no `playwright install`).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SAMPLE_RATE = 8000
SEED = 0  # MushraTest order seed: the check recomputes which system slider "A" is
LISTENER = "browser-check"
ARROW_PRESSES = 37  # slider "A" goes 0 -> 37 with the right arrow key, one step per press


def synthetic_trials() -> list[dict]:
    """One trial of 1 s at 8 kHz: a 440 Hz tone with two harmonics, and three degraded copies
    (deterministic, so the browser's kernel and this process build the same trial)."""
    import torch

    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    reference = 0.3 * sum(torch.sin(2 * math.pi * 440 * k * t) / k for k in (1, 2, 3))
    noise = torch.sin(2 * math.pi * 1234.5 * t * (1 + 3 * t))  # a chirp as "noise", no RNG needed
    systems = {"quiet": 0.5 * reference, "noisy": reference + 0.05 * noise, "harsh": torch.clamp(3 * reference, -0.3, 0.3)}
    return [{"name": "tone", "reference": reference, "systems": systems}]


def missing_requirements() -> str | None:
    """Why the check cannot run here (None when it can)."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright; no 'playwright install')"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(folder: Path, results_csv: Path, pid_file: Path) -> Path:
    cells = [
        "import os, sys\n"
        f"sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))  # so the check can always end this kernel\n"
        "from browser_check import SAMPLE_RATE, SEED, LISTENER, synthetic_trials\n"
        "from lib.analysis.mushra import MushraTest",
        f"test = MushraTest(synthetic_trials(), SAMPLE_RATE, {str(results_csv)!r}, LISTENER, seed=SEED)\n"
        "test.widget",
    ]
    notebook = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"cell{i}", "metadata": {}, "source": src, "outputs": [],
                   "execution_count": None} for i, src in enumerate(cells)],
    }
    path = folder / "mushra_check.ipynb"
    path.write_text(json.dumps(notebook, indent=1))
    return path


LAB_SETTINGS = {  # user settings that keep JupyterLab from opening dialogs over the notebook
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # no "Select Kernel" dialog; every cell rendered, so that screenshots scrolled to an output show it
    "notebook-extension/tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
}


def _lab_settings(settings_dir: Path) -> None:
    for name, values in LAB_SETTINGS.items():
        target = settings_dir / "@jupyterlab" / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _end_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM one process we started, SIGKILL it after `grace` seconds if it is still there."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def jupyter_lab(root: Path, start_timeout: float = 120.0, kernel_pid_file: Path | None = None):
    """Run JupyterLab on 127.0.0.1 for the duration of the block; yields `(base_url, token)`."""
    port, token = _free_port(), secrets.token_hex(16)
    private = root / ".jupyter"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(private / "config"), JUPYTER_RUNTIME_DIR=str(private / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(private / "lab-settings"), JUPYTERLAB_WORKSPACES_DIR=str(private / "workspaces"),
               IPYTHONDIR=str(private / "ipython"), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    _lab_settings(private / "lab-settings")
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI run as root
    log = open(root / "jupyter.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {server.returncode}:\n{(root / 'jupyter.log').read_text()[-3000:]}")
            try:
                _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"JupyterLab did not answer within {start_timeout:.0f} s")
                time.sleep(0.3)
        yield base, token
    finally:
        try:  # graceful: the server shuts its kernels down first
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=5).close()
        except OSError:
            pass
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=5)
        log.close()
        if kernel_pid_file is not None and kernel_pid_file.exists():
            _end_pid(int(kernel_pid_file.read_text()))  # kernels run in their own session


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run_all_cells(page, attempts: int = 3, wait_ms: int = 8_000) -> None:
    """Run > Run All Cells, until the first code cell's prompt shows it queued or run ("[*]:" or "[1]:").
    While JupyterLab is still starting the kernel the menu command can be ignored, hence the retries."""
    from playwright.sync_api import expect

    prompt = page.locator(".jp-Notebook .jp-CodeCell").first.locator(".jp-InputPrompt")
    for _ in range(attempts):
        page.locator(".jp-Notebook .jp-Cell").first.click()  # the notebook must be the current widget
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            expect(prompt).to_have_text(re.compile(r"\[(\*|\d+)\]"), timeout=wait_ms)
            return
        except AssertionError:
            page.keyboard.press("Escape")  # close a menu left open
    raise RuntimeError(f"Run All Cells did not start the notebook after {attempts} attempts")


def _save_failure(page, work_dir: Path, screenshot_dirs) -> None:
    """On failure: a full-page screenshot and the server log, beside the widget screenshot."""
    try:
        page.screenshot(path=str(work_dir / "failure.png"), full_page=True)
    except Exception:  # the page itself may be gone; the original error matters more
        return
    for folder in screenshot_dirs:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(work_dir / "failure.png", Path(folder) / "failure.png")
        shutil.copy(work_dir / "jupyter.log", Path(folder) / "jupyter.log")


def run_check(work_dir: Path, screenshot_dirs: list[Path] = (), timeout_s: float = 80.0) -> dict:
    """Run the whole check in `work_dir` (created). Returns a summary dict; raises on any failure."""
    from playwright.sync_api import sync_playwright

    start = time.monotonic()
    timings = {}
    work_dir.mkdir(parents=True, exist_ok=True)
    results_csv, pid_file = work_dir / "mushra.csv", work_dir / "kernel.pid"
    notebook = _write_notebook(work_dir, results_csv, pid_file)
    with jupyter_lab(work_dir, kernel_pid_file=pid_file) as (base, token):
        timings["server_ready_s"] = time.monotonic() - start
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(max(5_000, 1000 * (timeout_s - (time.monotonic() - start))))
                page.goto(f"{base}/lab/tree/{notebook.name}?token={token}")
                page.locator(".jp-Notebook .jp-Cell").first.wait_for()
                timings["notebook_open_s"] = time.monotonic() - start
                _run_all_cells(page)
                widget = page.locator(".mushra-test")
                widget.wait_for(state="visible")
                page.locator(".mushra-test .widget-slider").nth(4).wait_for()  # all five sliders drawn
                # Every player has decoded its WAV (a duration of 1 s) before the picture is taken.
                page.wait_for_function("() => { const a = [...document.querySelectorAll('.mushra-test audio')];"
                                       " return a.length === 6 && a.every(x => x.readyState >= 1); }")
                durations = page.eval_on_selector_all(".mushra-test audio", "els => els.map(e => e.duration)")
                timings["widget_rendered_s"] = time.monotonic() - start
                handle = page.locator(".mushra-test .widget-slider").first.locator(".noUi-handle")
                handle.focus()
                for _ in range(ARROW_PRESSES):
                    handle.press("ArrowRight")
                readout = page.locator(".mushra-test .widget-slider").first.locator(".widget-readout")
                shown = int(readout.inner_text().strip())
                screenshot = work_dir / "mushra_widget.png"  # after the move: slider A shows its new score
                widget.screenshot(path=str(screenshot))
                for folder in screenshot_dirs:
                    Path(folder).mkdir(parents=True, exist_ok=True)
                    shutil.copy(screenshot, Path(folder) / screenshot.name)
                # BS.1534: "Finish" refuses while a stimulus is unplayed or a slider untouched.
                page.locator(".mushra-test button", has_text="Finish").click()
                page.locator(".mushra-test .mushra-refused").wait_for()
                refused = page.locator(".mushra-test .mushra-refused").inner_text()
                buttons = page.locator(".mushra-test .mushra-stimulus button")
                for i in range(buttons.count()):
                    buttons.nth(i).click()
                sliders = page.locator(".mushra-test .widget-slider")
                for i in range(1, sliders.count()):  # touched, then put back to 0
                    other = sliders.nth(i).locator(".noUi-handle")
                    other.focus()
                    other.press("ArrowRight")
                    page.wait_for_timeout(150)
                    other.press("ArrowLeft")
                    page.wait_for_timeout(150)
                page.wait_for_timeout(500)
                page.locator(".mushra-test button", has_text="Finish").click()
                page.locator(".mushra-test", has_text="Done").wait_for()
                timings["submitted_s"] = time.monotonic() - start
            except Exception:
                _save_failure(page, work_dir, screenshot_dirs)
                raise
            finally:
                browser.close()
    timings["total_s"] = time.monotonic() - start
    rows = _read_csv(results_csv)
    return {"rows": rows, "readout": shown, "refused": refused, "screenshot": str(screenshot), "durations_s": durations,
            "timings": {k: round(v, 1) for k, v in timings.items()}}


RAW_WIDGET_TEXT = ("VBox(", "HBox(", "MapExplorer(", "Error displaying widget", "model not found",
                   "Failed to load model class")


def check_executed_notebooks(folder: Path, screenshot_dirs=(), timeout_s: float = 150.0) -> dict:
    """Open every executed notebook in `folder` in JupyterLab as a person would (no cell is run) and report, per
    notebook: whether the server marks it trusted, how many `<audio>` elements it shows and their durations, any
    raw widget text in the outputs, whether the tab is marked modified a few seconds after opening. Screenshots
    (`<name>.png`, the top of the notebook, and `<name>_players.png`, the first player in view) go to
    `screenshot_dirs`. JupyterLab runs with the caller's JUPYTER_DATA_DIR (where the runner signed the notebooks)."""
    from playwright.sync_api import sync_playwright

    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="lab_open_"))
    shots_dir = Path(tempfile.mkdtemp(prefix="lab_shots_"))
    names = sorted(p.name for p in Path(folder).glob("*.ipynb"))
    for name in names:
        shutil.copy2(Path(folder) / name, work / name)  # copies keep the content, so the signature holds
    report = {}
    try:
        with jupyter_lab(work) as (base, token):
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.set_default_timeout(max(5_000, 1000 * (timeout_s - (time.monotonic() - start))))
                    for index, name in enumerate(names):
                        model = json.loads(_get(f"{base}/api/contents/{name}?content=1&token={token}", timeout=30))
                        code = [c for c in model["content"]["cells"] if c["cell_type"] == "code"]
                        trusted = all(c["metadata"].get("trusted") for c in code)
                        saved = sum(str(o.get("data", {}).get("text/html", "")).count("<audio")
                                    for c in code for o in c.get("outputs", []))
                        # a fresh workspace per notebook: only this one is open
                        page.goto(f"{base}/lab/workspaces/open{index}/tree/{name}?reset&token={token}")
                        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").first.wait_for()
                        page.wait_for_function(
                            "n => { const a = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) audio')];"
                            " return a.length >= n && a.every(x => x.readyState >= 1); }", arg=saved)
                        page.wait_for_timeout(2500)  # time for anything that would mark the notebook modified
                        panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
                        durations = page.eval_on_selector_all(f"{panel} audio", "els => els.map(e => e.duration)")
                        outputs = page.eval_on_selector_all(f"{panel} .jp-OutputArea-output", "els => els.map(e => e.innerText)")
                        raw = sorted({marker for text in outputs for marker in RAW_WIDGET_TEXT if marker in text})
                        dirty = page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty").count() > 0
                        shots = []
                        for suffix, locator in (("", None), ("_players", f"{panel} audio")):
                            if locator:
                                if not durations:
                                    continue
                                page.locator(locator).first.evaluate("e => e.closest('.jp-Cell').scrollIntoView()")
                                page.wait_for_timeout(500)
                            shot = shots_dir / f"{Path(name).stem}{suffix}.png"
                            page.screenshot(path=str(shot))
                            shots.append(shot.name)
                            for target in screenshot_dirs:
                                Path(target).mkdir(parents=True, exist_ok=True)
                                shutil.copy(shot, Path(target) / shot.name)
                        report[name] = {"trusted": trusted, "saved_players": saved, "durations_s": durations,
                                        "raw_widget_text": raw, "modified": dirty, "screenshots": shots}
                except Exception:
                    _save_failure(page, work, screenshot_dirs)
                    raise
                finally:
                    browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shots_dir, ignore_errors=True)
    report["_seconds"] = round(time.monotonic() - start, 1)
    return report


def expected_order() -> list[str]:
    """System names of sliders A, B, ... as the notebook's MushraTest shows them (same trials, same seed)."""
    from lib.analysis.mushra import MushraTest

    with tempfile.TemporaryDirectory() as folder:
        test = MushraTest(synthetic_trials(), SAMPLE_RATE, Path(folder) / "unused.csv", LISTENER, seed=SEED)
        return test.trials[0]["order"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder that also receives mushra_widget.png")
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="mushra_browser_") as folder:
        summary = run_check(Path(folder), [args.out] if args.out else [])
        summary["expected_order"] = expected_order()
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
