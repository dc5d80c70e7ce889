"""Ordering, labels, number formatting and file output shared by the report modules."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ..lab._phases import PHASE_ORDER

# weakest attacker first: a reader scans from "who can do least" to "who can do most"
ATTACKER_ORDER = ("other-user", "same-user", "root")
# rows whose attack never ran carry this attacker: they belong to every attacker's view
NO_ATTACKER = "n/a"
SUBJECT, CONTROL = "subject", "control"
# rows that describe a needle form rather than an attack (see lab.render)
NOT_A_CELL_STATUS = ("n/a", "alias")
PLAINTEXT, DECOY = "plaintext", "decoy"
IN_USE = "in-use"


def ordered(values: Iterable[Any], preferred: Sequence[str]) -> list[str]:
    """The distinct values, those in `preferred` first in its order, the rest sorted: new
    designs, attacks and phases show up in every table and figure without a code change."""
    seen = {str(v) for v in values if not pd.isna(v)}
    known = [v for v in preferred if v in seen]
    return known + sorted(seen - set(known))


def _registry_names(kind: str) -> list[str]:
    if kind == "design":
        from .._registry import DESIGNS

        return list(DESIGNS)
    from attacks import ATTACKS

    return list(ATTACKS)


def phase_order(values: Iterable[Any]) -> list[str]:
    return ordered(values, PHASE_ORDER)


def design_order(values: Iterable[Any]) -> list[str]:
    return ordered(values, _registry_names("design"))


def attack_order(values: Iterable[Any]) -> list[str]:
    return ordered(values, _registry_names("attack"))


def attacker_order(values: Iterable[Any]) -> list[str]:
    return [a for a in ordered(values, ATTACKER_ORDER) if a != NO_ATTACKER]


def victim_order(values: Iterable[Any]) -> list[str]:
    rest = [v for v in ordered(values, (SUBJECT,)) if v not in (SUBJECT, CONTROL)]
    present = {str(v) for v in values}
    return [v for v in (SUBJECT, *rest, CONTROL) if v in present]


def target_label(design: str, victim: str) -> str:
    """A row label for a heatmap: the design, or the design's other process in brackets."""
    return design if victim == SUBJECT else f"{design} [{victim}]"


def target_order(frame: pd.DataFrame) -> list[str]:
    """Target labels (design x non-control victim) in design order, subject first."""
    labels = []
    for design in design_order(frame["design"]):
        victims = frame.loc[frame["design"] == design, "victim"]
        labels += [target_label(design, v) for v in victim_order(victims) if v != CONTROL]
    return labels


def sort_frame(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Sort by the lab's natural orders (design, victim, attacker, attack, phase ...)."""
    orders = {
        "design": design_order,
        "attack": attack_order,
        "phase": phase_order,
        "attacker": lambda v: ordered(v, (*ATTACKER_ORDER, NO_ATTACKER)),
        "victim": victim_order,
    }
    keys = []
    for column in columns:
        if column in orders:
            rank = {v: i for i, v in enumerate(orders[column](frame[column]))}
            keys.append(frame[column].map(lambda v, rank=rank: rank.get(v, len(rank))))
        else:
            keys.append(frame[column])
    if frame.empty:
        return frame
    index = pd.DataFrame({str(i): k.to_numpy() for i, k in enumerate(keys)}, index=frame.index)
    return frame.loc[index.sort_values(list(index.columns), kind="stable").index].reset_index(
        drop=True
    )


# --- numbers for people -------------------------------------------------------------------


def human(value: float, unit: str) -> str:
    """One figure in the unit a reader expects (µs, MB/s, KiB ...)."""
    if pd.isna(value):
        return ""
    if unit == "B/s":
        if value >= 1e9:
            return f"{value / 1e9:,.2f} GB/s"
        return f"{value / 1e6:,.1f} MB/s" if value >= 1e5 else f"{value / 1e3:,.1f} kB/s"
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:,.1f} µs"
        return f"{value * 1e3:,.1f} ms" if value < 1 else f"{value:,.2f} s"
    if unit == "B":
        for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if value >= scale:
                return f"{value / scale:,.1f} {name}"
        return f"{value:,.0f} B"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def size_label(n: int) -> str:
    """A payload size: 32 B, 64 KiB, 16 MiB."""
    for scale, name in ((2**20, "MiB"), (2**10, "KiB")):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {name}"
    return f"{n:,} B"


def join(items: Iterable[Any], empty: str = "none") -> str:
    items = [str(i) for i in items if str(i)]
    return ", ".join(items) if items else empty


# --- output --------------------------------------------------------------------------------


def figures_dir(
    run_dir: str | os.PathLike[str], figures: str | os.PathLike[str] | None = None
) -> Path:
    """Where a run's figures and summary tables go: `RUN_DIR/figures/` unless given."""
    path = Path(figures) if figures else Path(run_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: Figure, directory: Path, name: str, dpi: int = 110) -> Path:
    path = directory / f"{name}.png"
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def save_table(frame: pd.DataFrame, directory: Path, name: str) -> Path:
    path = directory / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def new_figure(width: float, height: float) -> Figure:
    """A figure outside pyplot's global state: nothing leaks between figures or kernels."""
    return Figure(figsize=(width, height), layout="constrained")


def message_figure(text: str, width: float = 8, height: float = 1.2) -> Figure:
    """A figure that says why there is nothing to plot (never an empty axes)."""
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11)
    return fig
