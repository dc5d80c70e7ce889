"""One run folder as the notebooks see it: its tables, its meta, where figures go."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ..lab.results import (
    BENCH_DTYPES,
    BENCH_FILE,
    HITS_FILE,
    META_FILE,
    RESULTS_FILE,
    load_results,
    resolve_run_dir,
)
from ._common import figures_dir, save_figure, save_table


@dataclass
class SavedFigure:
    """A figure written to disk. IPython shows it through `_repr_png_` (figures made
    outside pyplot have no display hook of their own)."""

    path: Path
    figure: Figure

    def _repr_png_(self) -> bytes:
        return self.path.read_bytes()


@dataclass
class Run:
    path: Path
    meta: dict[str, Any]
    rows: pd.DataFrame
    hits: pd.DataFrame
    bench: pd.DataFrame  # empty (with its columns) when the run has no bench.csv
    figures: Path
    dpi: int = 110
    written: list[Path] = field(default_factory=list)

    @property
    def has_bench(self) -> bool:
        return not self.bench.empty

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id", self.path.name))

    def save(self, fig: Figure, name: str) -> SavedFigure:
        """Write the figure as `figures/NAME.png`; a notebook cell shows exactly that PNG."""
        path = save_figure(fig, self.figures, name, self.dpi)
        self.written.append(path)
        return SavedFigure(path, fig)

    def table(self, frame: pd.DataFrame, name: str) -> pd.DataFrame:
        """Write the table as `figures/NAME.csv` and return it for display."""
        self.written.append(save_table(frame, self.figures, name))
        return frame

    def facts(self) -> dict[str, str]:
        """What a reader needs to know about where and when the numbers were taken."""
        host = self.meta.get("host_facts", {})
        bench = self.meta.get("bench", {})
        return {
            "run": self.run_id,
            "status": str(self.meta.get("status", "unknown")),
            "host": f"{host.get('host', '?')} ({host.get('system', '?')} "
            f"{host.get('kernel', '?')}, {host.get('machine', '?')})",
            "python": str(host.get("python", "?")),
            "designs": ", ".join(self.meta.get("designs", [])),
            "attacks": ", ".join(self.meta.get("attacks", [])),
            "phases": ", ".join(self.meta.get("phases", [])),
            "secret": f"{self.meta.get('secret_kind', '?')}, {self.meta.get('secret_len', '?')} "
            f"bytes; key {self.meta.get('key_len', '?')} bytes",
            "matrix": f"{self.meta.get('rows', '?')} rows, {self.meta.get('hits', '?')} hits, "
            f"{self.meta.get('duration_s', '?')} s",
            "bench": f"profile {bench.get('profile')}, {bench.get('rows')} figures, "
            f"{bench.get('status')}"
            if bench
            else "not run (memlab run --bench quick)",
            "swap active": str(host.get("swap_active", "?")),
            "ptrace_scope": str(host.get("ptrace_scope", "?")),
        }


def load_run(
    run_dir: str | os.PathLike[str],
    figures: str | os.PathLike[str] | None = None,
    dpi: int = 110,
) -> Run:
    """A run folder (or a results folder: its newest run) with its rows, hits and bench."""
    path = resolve_run_dir(run_dir, RESULTS_FILE)
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    rows = load_results(path, "rows")
    hits = load_results(path, "hits") if (path / HITS_FILE).exists() else None
    if hits is None:
        raise FileNotFoundError(f"{path / HITS_FILE} is missing: the run is incomplete")
    if (path / BENCH_FILE).exists():
        bench = load_results(path, "bench")
    else:  # memlab run without --bench: the cost pages say so and how to get it
        bench = pd.DataFrame({c: pd.Series(dtype=t) for c, t in BENCH_DTYPES.items()})
    return Run(path, meta, rows, hits, bench, figures_dir(path, figures), dpi)
