"""Rendering of a run for people: tidy tables, matplotlib figures, claims with their
numbers, recommendations, and the HTML report (`memlab report`). Nothing here measures.

The notebooks in `notebooks/` are thin: each loads a run with `load_run` and calls these.
Every function works on whatever designs, attacks, attackers and phases the rows hold.
"""

from . import bench, exposure, matrix, recommend
from ._common import PHASE_ORDER, human, size_label
from ._display import bullets, facts, markdown, table
from ._run import Run, SavedFigure, load_run
from .build import NOTEBOOKS, REPORT_FILE, ReportError, build_report, publish

__all__ = [
    "NOTEBOOKS",
    "PHASE_ORDER",
    "REPORT_FILE",
    "ReportError",
    "Run",
    "SavedFigure",
    "bench",
    "build_report",
    "bullets",
    "exposure",
    "facts",
    "human",
    "load_run",
    "markdown",
    "matrix",
    "publish",
    "recommend",
    "size_label",
    "table",
]
