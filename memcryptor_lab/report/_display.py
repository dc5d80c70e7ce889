"""How notebook cells show claims and tables (IPython objects; notebooks only)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd


def bullets(lines: Iterable[str]) -> Any:
    """Claims as a Markdown list: each line carries its own numbers."""
    from IPython.display import Markdown

    return Markdown("\n".join(f"- {line}" for line in lines))


def markdown(text: str) -> Any:
    from IPython.display import Markdown

    return Markdown(text)


def table(frame: pd.DataFrame, caption: str = "", *, collapsed: bool = False) -> Any:
    """A table without the pandas index, every row shown (a reader must see all designs
    and attacks; a truncated table would hide some). `collapsed`: behind a click, for the
    long tables a summary above already states."""
    from IPython.display import HTML

    if frame.empty:
        return markdown(f"*{caption or 'table'}: no rows.*")
    styler = frame.style.hide(axis="index")
    if caption:
        styler = styler.set_caption(caption)
    styler = styler.set_table_styles(
        [
            {
                "selector": "caption",
                "props": "caption-side: top; font-weight: bold; text-align: left;",
            },
            {"selector": "td, th", "props": "text-align: left; padding: 2px 8px;"},
        ]
    ).format(precision=3, thousands=",")
    html = styler.to_html()
    if collapsed:
        summary = f"{caption or 'table'} ({len(frame):,} rows): show"
        html = f"<details><summary>{summary}</summary>{html}</details>"
    return HTML(html)


def facts(values: Mapping[str, str]) -> Any:
    """Run facts as a two-column Markdown table."""
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {str(value).replace('|', '/')} |" for key, value in values.items()]
    return markdown("\n".join(lines))
