"""Static HTML for saved notebook outputs: players, images and tables that a reader sees without a kernel.

Headless runs (`lib.headless.headless()`) save these instead of ipywidgets, whose saved state shows as raw text
or as "disconnected" widgets when the notebook is reopened; `show(widget, html)` picks one of the two.
Audio is a 16-bit WAV at its true level embedded as a data URI in an `<audio>` element.
"""
from __future__ import annotations

import base64
import html
import math
from typing import Callable, Sequence

from IPython.display import HTML, display

from lib.data.audio import wav_bytes
from lib.headless import headless

__all__ = ["audio_html", "image_html", "table_html", "show", "show_html", "show_table"]


def audio_html(wav, sample_rate: int, label: str | None = None) -> str:
    """An `<audio controls>` element holding `wav` (mono) as an embedded WAV at its true level."""
    data = base64.b64encode(wav_bytes(wav, sample_rate)).decode("ascii")
    player = f'<audio controls preload="auto" src="data:audio/wav;base64,{data}"></audio>'
    return player if label is None else f"<div><b>{html.escape(label)}</b><br>{player}</div>"


def image_html(png: bytes, width: int | None = None, alt: str = "") -> str:
    """An `<img>` holding PNG bytes."""
    size = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _cell(value, digits: int) -> tuple[str, bool]:
    if isinstance(value, bool) or value is None:
        return ("-" if value is None else str(value)), False
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, float):
        return ("-" if math.isnan(value) else f"{value:.{digits}f}"), True
    return html.escape(str(value)), False


def table_html(rows: Sequence[dict], columns: Sequence[str] | None = None, headers: dict | None = None,
               digits: int = 3, caption: str | None = None) -> str:
    """A list of dicts as an HTML table: one column per key (or `columns`), `headers` renames them (e.g. with
    units), numbers right-aligned and rounded to `digits`."""
    if not rows:
        return "<p>(empty table)</p>"
    columns = list(columns or rows[0])
    headers = headers or {}
    head = "".join(f'<th style="text-align:center">{html.escape(headers.get(c, c))}</th>' for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            text, numeric = _cell(row.get(column), digits)
            cells.append(f'<td style="text-align:{"right" if numeric else "left"}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def show_html(text: str) -> None:
    display(HTML(text))


def show_table(rows: Sequence[dict], **kwargs) -> None:
    """Display `table_html(rows, **kwargs)`."""
    show_html(table_html(rows, **kwargs))


def show(widget: Callable | object, static: Callable[[], str] | str):
    """Display a live widget for a person, or its static HTML stand-in in a headless run. `widget` and `static`
    may be callables, so that only the one shown is built. Returns what was displayed."""
    if headless():
        text = static() if callable(static) else static
        show_html(text)
        return text
    shown = widget() if callable(widget) else widget
    display(shown)
    return shown
