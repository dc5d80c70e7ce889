"""Rendering of result rows (tables for the terminal). Nothing here measures."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from .results import Row

SUMMARY_COLUMNS = (
    "design",
    "victim",
    "phase",
    "attack",
    "attacker",
    "status",
    "plaintext",
    "plaintext_partial",
    "key",
    "key_partial",
    "key_schedule",
    "decoy",
    "plaintext_encodings",
    "plaintext_regions",
    "bytes_scanned",
    "duration_s",
)


# rows that describe a needle form, not the attack: the encoding does not apply, or aliases
NOT_A_CELL_STATUS = ("n/a", "alias")


def summarize_rows(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """One line per (attacker, design, victim, phase, attack): copies per needle kind, full
    and partial."""
    cells: dict[tuple[str, ...], dict[str, Any]] = {}
    encodings: dict[tuple[str, ...], set[str]] = defaultdict(set)
    regions: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for r in rows:
        key = (r.attacker, r.design, r.victim, r.phase, r.attack)
        cell = cells.setdefault(
            key,
            {
                "design": r.design,
                "victim": r.victim,
                "phase": r.phase,
                "attack": r.attack,
                "attacker": r.attacker,
                "status": "",
                "plaintext": 0,
                "plaintext_partial": 0,
                "key": 0,
                "key_partial": 0,
                "key_schedule": 0,
                "decoy": 0,
                "bytes_scanned": r.bytes_scanned,
                "duration_s": r.duration_s,
            },
        )
        if r.status in NOT_A_CELL_STATUS:
            continue
        cell["status"] = cell["status"] or r.status
        if r.status not in ("ok", "blocked") or not r.copies:  # blocked: what was readable
            continue
        if r.needle_kind == "decoy":
            cell["decoy"] += r.copies
            continue
        if r.needle_kind == "key-schedule":  # the round keys after the key: whole only
            cell["key_schedule"] += r.copies
            continue
        column = r.needle_kind + ("" if r.form == "full" else "_partial")
        if column in cell:
            cell[column] += r.copies
        if r.needle_kind == "plaintext":
            encodings[key].add(r.encoding)
            regions[key].update(n.split(" ")[0] for n in r.region_names.split("; ") if n)
    for key, cell in cells.items():
        cell["plaintext_encodings"] = ",".join(sorted(encodings[key]))
        cell["plaintext_regions"] = ",".join(sorted(regions[key]))
    return list(cells.values())


def print_summary(summary: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="copies found (full / partial); decoy and control must be 0")
    for column in (
        "attacker",
        "design",
        "victim",
        "phase",
        "attack",
        "status",
        "plaintext",
        "key",
        "sched",
        "decoy",
        "plaintext encodings",
        "where",
        "MiB",
        "s",
    ):
        table.add_column(column, justify="right" if column in ("MiB", "s", "decoy") else "left")
    for c in summary:
        table.add_row(
            c["attacker"],
            c["design"],
            c["victim"],
            c["phase"],
            c["attack"],
            c["status"],
            f"{c['plaintext']} / {c['plaintext_partial']}",
            f"{c['key']} / {c['key_partial']}",
            str(c["key_schedule"]),
            str(c["decoy"]),
            c["plaintext_encodings"],
            escape(c["plaintext_regions"]),
            f"{c['bytes_scanned'] / 2**20:.1f}",
            f"{c['duration_s']:.2f}",
        )
    Console(width=max(160, Console().width)).print(table)


def _human(value: float, unit: str) -> str:
    if unit == "B/s":
        return f"{value / 1e6:,.1f} MB/s"
    if unit == "s":
        return f"{value * 1e6:,.1f} µs" if value < 0.01 else f"{value:,.3f} s"
    if unit == "B":
        return f"{value / 2**20:,.2f} MiB" if value >= 2**20 else f"{value:,.0f} B"
    return f"{value:,.0f}"


def print_bench(rows: Iterable[Any]) -> None:
    """The bench figures as one table: median, spread, and the ratio to the baseline."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="benchmarks (median; spread q1..q3; ratio = value / baseline, same run)")
    for column in (
        "group",
        "subject",
        "op",
        "param",
        "metric",
        "median",
        "p99 / spread",
        "baseline",
        "ratio",
        "goal",
    ):
        table.add_column(column, justify="right" if column in ("param", "ratio") else "left")
    for r in rows:
        if r.status != "ok":
            table.add_row(
                r.group, r.subject, r.operation, "", r.metric, r.status, r.reason, "", "", ""
            )
            continue
        spread = (
            f"p99 {_human(r.p99, r.unit)}"
            if r.group == "latency"
            else f"{_human(r.q1, r.unit)}..{_human(r.q3, r.unit)}"
            if r.samples > 1
            else ""
        )
        goal = f"{r.goal}: {r.meets_goal}" if r.goal else ""
        table.add_row(
            r.group,
            r.subject,
            r.operation,
            f"{r.param:,}",
            r.metric,
            _human(r.value, r.unit),
            spread,
            r.baseline,
            f"{r.ratio:.2f}x" if r.baseline else "",
            goal,
        )
    Console(width=max(160, Console().width)).print(table)
