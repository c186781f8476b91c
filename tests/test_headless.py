"""Progress bars: live for a person, one final line where the output is kept (a headless notebook, a log file)."""
import io
import subprocess
import sys

import pytest

from lib import headless


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_command_writing_to_a_log_file_leaves_one_final_line(monkeypatch):
    monkeypatch.delenv(headless.ENV, raising=False)
    log = io.StringIO()
    for _ in headless.progress_bar(range(447), desc="codes", file=log, mininterval=0):
        pass
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in log.getvalue()
    assert lines[0].startswith("codes: 100%") and "447/447" in lines[0]


def test_a_terminal_gets_a_live_bar(monkeypatch):
    monkeypatch.delenv(headless.ENV, raising=False)
    terminal = Terminal()
    for _ in headless.progress_bar(range(50), desc="codes", file=terminal, mininterval=0, miniters=1):
        pass
    assert terminal.getvalue().count("\r") > 10  # redrawn in place as it goes


def test_a_headless_notebook_keeps_its_final_line_on_stdout(monkeypatch, capsys):
    monkeypatch.setenv(headless.ENV, "1")
    terminal = Terminal()
    for _ in headless.progress_bar(range(20), desc="steps", file=terminal):
        pass
    assert terminal.getvalue() == ""  # nothing drawn while running, even on a terminal
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("steps: 100%") and "20/20" in lines[0]


def test_the_cli_progress_is_one_line_in_a_log(tmp_path):
    """`python -m lib ... 2>log`: what the fit-entropy report complained of (447 updates on one line)."""
    code = ("from lib.headless import progress_bar\n"
            "for _ in progress_bar(range(447), desc='codes', mininterval=0): pass\n")
    with open(tmp_path / "log", "w") as log:
        subprocess.run([sys.executable, "-c", code], stderr=log, check=True)
    text = (tmp_path / "log").read_text()
    assert text.count("\n") == 1 and "\r" not in text and "447/447" in text
