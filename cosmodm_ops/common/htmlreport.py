"""Self-contained HTML QA pages: one file, plots embedded as PNG, every value escaped."""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["cell", "embed_png", "figures_html", "html_page", "html_table", "write_html_report"]

_STYLE = ("body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin-bottom:1em}"
          " td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px} tr.fail,tr.quarantined{background:#fdd}"
          " img{max-width:100%}")


def embed_png(png: str | os.PathLike[str]) -> str:
    """The PNG file's bytes as base64 text for a ``data:image/png`` URL."""
    return base64.b64encode(Path(png).read_bytes()).decode("ascii")


def cell(v: Any) -> str:
    """One table cell's text: floats to 4 significant digits (non-finite as empty), ``None`` as empty."""
    if isinstance(v, float):
        return html.escape(f"{v:.4g}") if math.isfinite(v) else ""
    return html.escape("" if v is None else str(v))


def html_table(head: Sequence[str], body: Sequence[Sequence[Any]], row_classes: Sequence[str] | None = None) -> str:
    """An escaped ``<table>`` with a header row; ``row_classes`` gives each body row a CSS class."""
    rows = []
    for i, r in enumerate(body):
        cls = f" class='{html.escape(row_classes[i])}'" if row_classes else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def figures_html(figures: Sequence[tuple[str, Path]]) -> str:
    """``<h2>title</h2><img>`` per existing PNG, embedded."""
    return "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{embed_png(p)}' alt='{html.escape(t)}'>"
                   for t, p in figures if Path(p).exists())


def html_page(title: str, body: str) -> str:
    """A complete HTML document around ``body`` (already escaped HTML) with the house style."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            f"<style>{_STYLE}</style>\n</head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n")


def write_html_report(path: str | os.PathLike[str], title: str, summary: Mapping[str, Any],
                      checks: Sequence[Mapping[str, Any]], figures: Sequence[tuple[str, Path]],
                      tables: Sequence[tuple[str, list[str], list[list[Any]]]]) -> Path:
    """One self-contained HTML page: summary, QA checks, figures (embedded PNG) and tables; written atomically."""
    path = Path(path)
    summ = [(k, v) for k, v in summary.items() if isinstance(v, (int, float, str)) or v is None]
    chk_rows = [[c.get("name"), c.get("value"), c.get("threshold"), c.get("verdict"), c.get("reason") or ""]
                for c in checks]
    body = ("<h2>Summary</h2>" + html_table(["key", "value"], summ)
            + "<h2>QA checks</h2>"
            + html_table(["check", "value", "threshold", "verdict", "reason"], chk_rows,
                         [str(c.get("verdict")) for c in checks])
            + figures_html(figures)
            + "".join(f"<h2>{html.escape(t)}</h2>" + html_table(head, rows) for t, head, rows in tables))
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(html_page(title, body), encoding="utf-8")
    os.replace(tmp, path)
    return path
