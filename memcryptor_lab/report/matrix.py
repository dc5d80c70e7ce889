"""The threat matrix: one cell per design x victim x attacker x attack x phase, heatmaps of
what each cell found, and the per-threat verdicts a recommendation rests on."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..lab._phases import PHASE_ORDER
from ._common import (
    ATTACKER_ORDER,
    CONTROL,
    DECOY,
    IN_USE,
    NO_ATTACKER,
    NOT_A_CELL_STATUS,
    PLAINTEXT,
    SUBJECT,
    attack_order,
    attacker_order,
    design_order,
    human,
    join,
    message_figure,
    new_figure,
    ordered,
    phase_order,
    sort_frame,
    target_label,
    target_order,
)

CELL_KEYS = ["design", "victim", "attacker", "attack", "phase"]
MEASURED = ("ok", "blocked")  # the acquisition ran; blocked: some pages refused, the rest scanned


def key_kinds(kinds: Iterable[str]) -> list[str]:
    """Needle kinds that are key material: everything but the plaintext and the decoy (a
    key-schedule needle counts as key, whatever the scanner calls it)."""
    return sorted({k for k in kinds if k not in (PLAINTEXT, DECOY)})


def _cell_status(statuses: pd.Series) -> str:
    present = set(statuses)
    for status in ("error", "blocked"):
        if status in present:
            return status
    if present and present <= {"skipped"}:
        return "skipped"
    return "ok" if "ok" in present else join(sorted(present))


def _first(values: pd.Series) -> str:
    for value in values:
        if isinstance(value, str) and value:
            return value
    return ""


def _labels(values: Iterable[str]) -> list[str]:
    """Region labels from `region_names` ('[anon] rw-p lo,dd; [heap] rw-p')."""
    labels: set[str] = set()
    for value in values:
        labels.update(part for part in str(value).split("; ") if part)
    return sorted(labels)


def cells(rows: pd.DataFrame) -> pd.DataFrame:
    """One tidy row per (design, victim, attacker, attack, phase): status, copies of each
    needle kind (full and partial), the encodings and regions of the plaintext copies.

    Columns `plaintext_copies`, `key_copies` and `decoy_copies` add full and partial copies;
    `exposure` is what the cell shows ('plaintext+key', 'plaintext', 'key', 'none', or
    'not measured' when the attack did not run)."""
    frame = rows[~rows["status"].isin(NOT_A_CELL_STATUS)]
    if frame.empty:
        raise ValueError("no result rows with an attack status: is this a results.csv?")
    grouped = frame.groupby(CELL_KEYS, sort=False, dropna=False)
    base = grouped.agg(
        artefact=("artefact", "first"),
        status=("status", _cell_status),
        reason=("reason", _first),
        bytes_scanned=("bytes_scanned", "max"),
        bytes_unreadable=("bytes_unreadable", "max"),
        read_errors=("read_errors", _first),
        regions_total=("regions_total", "max"),
        duration_s=("duration_s", "max"),
        design_notes=("design_notes", _first),
    )
    counted = frame[frame["status"].isin(MEASURED)]
    column = counted["needle_kind"].astype(str) + np.where(
        counted["form"] == "full", "", "_partial"
    )
    copies = (
        counted.assign(column=column)
        .pivot_table(index=CELL_KEYS, columns="column", values="copies", aggfunc="sum")
        .fillna(0)
        .astype(int)
    )
    kinds = sorted(set(frame["needle_kind"].astype(str)) | {PLAINTEXT, "key", DECOY})
    for kind in kinds:
        for name in (kind, f"{kind}_partial"):
            if name not in copies.columns:
                copies[name] = 0
    out = base.join(copies, how="left").fillna({c: 0 for c in copies.columns})
    for c in copies.columns:
        out[c] = out[c].astype(int)
    out["plaintext_copies"] = out[PLAINTEXT] + out[f"{PLAINTEXT}_partial"]
    out["key_copies"] = sum(out[k] + out[f"{k}_partial"] for k in key_kinds(kinds))
    out["decoy_copies"] = out[DECOY] + out[f"{DECOY}_partial"]

    found = counted[counted["copies"] > 0]
    plaintext_found = found[found["needle_kind"] == PLAINTEXT].groupby(CELL_KEYS)
    key_found = found[found["needle_kind"].isin(key_kinds(kinds))].groupby(CELL_KEYS)
    out["plaintext_encodings"] = plaintext_found["encoding"].agg(lambda v: join(sorted(set(v)), ""))
    out["plaintext_regions"] = plaintext_found["region_names"].agg(lambda v: join(_labels(v), ""))
    out["key_regions"] = key_found["region_names"].agg(lambda v: join(_labels(v), ""))
    out = out.fillna({"plaintext_encodings": "", "plaintext_regions": "", "key_regions": ""})
    out = out.reset_index()

    def exposure(r: Any) -> str:
        if r.status not in MEASURED:
            return "not measured"
        what = [n for n, c in ((PLAINTEXT, r.plaintext_copies), ("key", r.key_copies)) if c]
        return "+".join(what) or "none"

    out["exposure"] = [exposure(r) for r in out.itertuples()]
    return sort_frame(out, CELL_KEYS)


CELL_COLUMNS = [
    *CELL_KEYS,
    "artefact",
    "status",
    "exposure",
    PLAINTEXT,
    f"{PLAINTEXT}_partial",
    "key",
    "key_partial",
    DECOY,
    "plaintext_encodings",
    "plaintext_regions",
    "key_regions",
    "bytes_scanned",
    "bytes_unreadable",
    "read_errors",
    "duration_s",
    "reason",
]


def cell_table(cell_frame: pd.DataFrame, *, compact: bool = False) -> pd.DataFrame:
    """The cells with the columns a reader needs, in the lab's order (the full matrix).
    `compact`: only what fits a page (copies as 'full+partial', no reasons or byte counts)."""
    columns = [c for c in CELL_COLUMNS if c in cell_frame.columns]
    extra = [c for c in cell_frame.columns if c.endswith("_partial") and c not in columns]
    full = cell_frame[columns + [c for c in extra if not c.startswith(DECOY)]]
    if not compact:
        return full

    def pair(whole: pd.Series, partial: pd.Series) -> list[str]:
        return [f"{w}" + (f"+{p}p" if p else "") for w, p in zip(whole, partial, strict=True)]

    key_full = cell_frame["key_copies"] - cell_frame["key_partial"]
    return pd.DataFrame(
        {
            **{c: cell_frame[c] for c in CELL_KEYS},
            "status": cell_frame["status"],
            "plaintext": pair(cell_frame[PLAINTEXT], cell_frame[f"{PLAINTEXT}_partial"]),
            "key": pair(key_full, cell_frame["key_partial"]),
            "decoy": cell_frame["decoy_copies"],
            "plaintext encodings": cell_frame["plaintext_encodings"],
            "plaintext regions": cell_frame["plaintext_regions"],
            "key regions": cell_frame["key_regions"],
        }
    )


def coverage(cell_frame: pd.DataFrame) -> pd.DataFrame:
    """How many cells each attack measured, was blocked in, skipped or failed, per attacker."""
    table = (
        cell_frame.groupby(["attack", "attacker", "status"]).size().unstack("status", fill_value=0)
    )
    for status in ("ok", "blocked", "skipped", "error"):
        if status not in table.columns:
            table[status] = 0
    table = table.reset_index()
    table["cells"] = table[[c for c in table.columns if c not in ("attack", "attacker")]].sum(
        axis=1
    )
    reasons = (
        cell_frame[cell_frame["status"].isin(["skipped", "error"])]
        .groupby(["attack", "attacker"])["reason"]
        .agg(lambda v: join(sorted(set(v)), ""))
    )
    table = table.merge(reasons.rename("why not measured"), on=["attack", "attacker"], how="left")
    table["why not measured"] = table["why not measured"].fillna("")
    return sort_frame(table, ["attack", "attacker"])


def controls(cell_frame: pd.DataFrame) -> pd.DataFrame:
    """The method's false-positive checks per design and attack: the decoy (a secret no
    victim ever saw) in every victim, and the run's secrets in the control victim. All
    must be 0."""
    measured = cell_frame[cell_frame["status"].isin(MEASURED)]
    control = measured[measured["victim"] == CONTROL]
    decoy = measured.groupby(["design", "attack"])["decoy_copies"].sum().rename("decoy copies")
    ctl = control.groupby(["design", "attack"])[["plaintext_copies", "key_copies"]].sum()
    ctl.columns = ["control: plaintext copies", "control: key copies"]
    n_cells = measured.groupby(["design", "attack"]).size().rename("cells checked")
    table = pd.concat([n_cells, decoy, ctl], axis=1).fillna(0).astype(int).reset_index()
    return sort_frame(table, ["design", "attack"])


def blocked_table(cell_frame: pd.DataFrame) -> pd.DataFrame:
    """Where the reader was refused, and what the kernel answered (errno counts per page)."""
    frame = cell_frame[cell_frame["status"] == "blocked"]
    columns = [
        "design",
        "victim",
        "attacker",
        "attack",
        "phases",
        "refused",
        "read errors",
        "reason",
    ]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    records = []
    for (design, victim, attacker, attack), group in frame.groupby(
        ["design", "victim", "attacker", "attack"], sort=False
    ):
        records.append(
            {
                "design": design,
                "victim": victim,
                "attacker": attacker,
                "attack": attack,
                "phases": join(phase_order(group["phase"])),
                "refused": human(float(group["bytes_unreadable"].max()), "B"),
                "read errors": join(sorted(set(group["read_errors"]) - {""}), ""),
                "reason": join(sorted(set(group["reason"]) - {""}), ""),
            }
        )
    return sort_frame(
        pd.DataFrame.from_records(records), ["design", "victim", "attacker", "attack"]
    )


def gaps(cell_frame: pd.DataFrame) -> list[str]:
    """What the run did not measure: skipped or failed cells with their reasons, attacker
    classes and phases absent from the rows. A gap is a gap, never a pass."""
    lines = []
    missing = cell_frame[~cell_frame["status"].isin(MEASURED)]
    for (attack, status, reason), group in missing.groupby(["attack", "status", "reason"]):
        targets = join(
            sorted(
                {target_label(d, v) for d, v in zip(group["design"], group["victim"], strict=True)}
            )
        )
        lines.append(
            f"`{attack}` {status} in {len(group)} cells ({targets}): {reason or 'no reason given'}."
        )
    attackers = attacker_order(cell_frame["attacker"])
    absent = [a for a in ATTACKER_ORDER if a not in attackers]
    if absent:
        lines.append(
            f"Attacker classes with no rows: {join(absent)} (this run measured {join(attackers)})."
        )
    phases = set(cell_frame["phase"])
    absent_phases = [p for p in PHASE_ORDER if p not in phases]
    if absent_phases:
        lines.append(f"Phases with no rows: {join(absent_phases)}.")
    return lines


def verdict_claims(verdict_frame: pd.DataFrame) -> list[str]:
    """One sentence per design: the classes it resisted, leaked in use only, or lost."""
    lines = []
    for design in design_order(verdict_frame["design"]):
        mine = verdict_frame[verdict_frame["design"] == design]
        parts = []
        for codes, words in (
            (("key",), "**loses the key** to"),
            (("plaintext",), "**leaks plaintext outside use** to"),
            (("in-use",), "shows the plaintext only while in use to"),
            (RESISTS, "resists"),
            (("not-measured",), "was not measured against"),
        ):
            group = mine[mine["verdict"].isin(codes)]
            if len(group):
                parts.append(
                    f"{words} "
                    + join(
                        f"{r.threat} ({r.evidence or r.why_not_measured or 'no rows'})"
                        for r in group.itertuples()
                    )
                )
        lines.append(f"**{design}** " + "; ".join(parts) + ".")
    return lines


def _phase_span(phases: str) -> str:
    """'at-rest, in-use, released, ...' -> 'at-rest … after-gc (6 phases)': a cell has
    room for a few words; the table beside the figure lists them all."""
    names = [p for p in phases.split(", ") if p]
    if len(names) <= 2:
        return ", ".join(names)
    return f"{names[0]} … {names[-1]}\n({len(names)} phases)"


# --- heatmaps -----------------------------------------------------------------------------

_COPY_COLORS = ["#d9f0d3", "#fdae61", "#f46d43", "#d73027", "#a50026"]
_COPY_BOUNDS = [-0.5, 0.5, 1.5, 3.5, 7.5, 1e12]
_STATUS_CODES = {"ok": 0, "blocked": 1, "error": 2}
_STATUS_COLORS = ["#f4f4f4", "#3a6fb0", "#222222"]
_MISSING = "#d0d0d0"
METRICS = {
    "plaintext": "copies of the plaintext (full + partial)",
    "key": "copies of the key",
    "blocked": "acquisition blocked (some pages refused the reader)",
}


def _panels(cell_frame: pd.DataFrame, ncols: int) -> list[tuple[str, str]]:
    attackers = attacker_order(cell_frame["attacker"]) or [NO_ATTACKER]
    phases = phase_order(cell_frame["phase"])
    panels: list[tuple[str, str]] = []
    for attacker in attackers:
        row = [(attacker, phase) for phase in phases]
        while len(row) % ncols:
            row.append(("", ""))  # each attacker starts a new row of panels
        panels += row
    return panels


def heatmap(cell_frame: pd.DataFrame, metric: str = "plaintext", *, max_cols: int = 3) -> Figure:
    """Design (and the design's other processes) x attack, one panel per attacker class and
    phase. Cells give the copies found (or whether the reader was blocked); grey cells were
    not measured (the attack was skipped there, or does not apply to that phase); a hatched
    cell was blocked: what was readable was still scanned and counted."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    frame = cell_frame[cell_frame["victim"] != CONTROL]
    if frame.empty:
        return message_figure("no subject victims in this run")
    targets = target_order(frame)
    attacks = attack_order(frame["attack"])
    ncols = max(1, min(max_cols, len(phase_order(frame["phase"]))))
    panels = _panels(frame, ncols)
    nrows = math.ceil(len(panels) / ncols)
    width = ncols * (0.62 * len(attacks) + 0.6) + 2.2
    height = nrows * (0.36 * len(targets) + 1.3) + 1.0
    fig = new_figure(width, height)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    pairs = zip(frame["design"], frame["victim"], strict=True)
    labels = frame.assign(target=[target_label(d, v) for d, v in pairs])
    if metric == "blocked":
        cmap = ListedColormap(_STATUS_COLORS).with_extremes(bad=_MISSING)
        norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3)
    else:
        cmap = ListedColormap(_COPY_COLORS).with_extremes(bad=_MISSING)
        norm = BoundaryNorm(_COPY_BOUNDS, len(_COPY_COLORS))
    for index, (attacker, phase) in enumerate(panels):
        ax = axes[index // ncols][index % ncols]
        if not attacker:
            ax.axis("off")
            continue
        shown = labels[
            (labels["phase"] == phase)
            & ((labels["attacker"] == attacker) | (labels["attacker"] == NO_ATTACKER))
        ]
        grid = np.full((len(targets), len(attacks)), np.nan)
        text = [["–"] * len(attacks) for _ in targets]
        blocked = []
        for r in shown.itertuples():
            y, x = targets.index(r.target), attacks.index(r.attack)
            if r.status == "blocked":
                blocked.append((x, y))
            if metric == "blocked":
                if r.status in _STATUS_CODES:
                    grid[y, x] = _STATUS_CODES[r.status]
                    text[y][x] = {"ok": "read", "blocked": "blocked", "error": "error"}[r.status]
                continue
            if r.status not in MEASURED:
                text[y][x] = "error" if r.status == "error" else "–"
                continue
            full = r.plaintext if metric == PLAINTEXT else r.key_copies - r.key_partial
            partial = r.plaintext_partial if metric == PLAINTEXT else r.key_partial
            grid[y, x] = full + partial
            text[y][x] = f"{full}" + (f"+{partial}p" if partial else "")
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
        for y, row in enumerate(text):
            for x, label in enumerate(row):
                dark = not np.isnan(grid[y, x]) and (
                    grid[y, x] >= 4 if metric != "blocked" else grid[y, x] >= 1
                )
                ax.text(
                    x,
                    y,
                    label,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
        if metric != "blocked":
            for x, y in blocked:
                box = Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="///")
                box.set(edgecolor="#3a6fb0", linewidth=0)
                ax.add_patch(box)
        ax.set_title(f"{attacker} · {phase}", fontsize=10)
        ax.set_xticks(range(len(attacks)), attacks, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(targets)), targets if index % ncols == 0 else [], fontsize=9)
        ax.set_xticks(np.arange(-0.5, len(attacks)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(targets)), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
    if metric == "blocked":
        handles = [
            Patch(facecolor=_STATUS_COLORS[0], edgecolor="#999", label="read (nothing refused)"),
            Patch(facecolor=_STATUS_COLORS[1], label="blocked (pages refused; rest scanned)"),
            Patch(facecolor=_STATUS_COLORS[2], label="error"),
            Patch(facecolor=_MISSING, label="– not measured"),
        ]
    else:
        handles = [
            Patch(facecolor=_COPY_COLORS[0], label="0 copies"),
            Patch(facecolor=_COPY_COLORS[1], label="1"),
            Patch(facecolor=_COPY_COLORS[2], label="2-3"),
            Patch(facecolor=_COPY_COLORS[3], label="4-7"),
            Patch(facecolor=_COPY_COLORS[4], label="8+"),
            Patch(facecolor="white", hatch="///", edgecolor="#3a6fb0", label="blocked"),
            Patch(facecolor=_MISSING, label="– not measured"),
        ]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False
    )
    note = " ('+Np': N partial copies)" if metric != "blocked" else ""
    fig.suptitle(f"{METRICS[metric]}{note}: design × attack, per attacker and phase")
    return fig


# --- verdicts per threat class ------------------------------------------------------------

# worst first; colours for the verdict grid
VERDICTS: dict[str, tuple[str, str]] = {
    "key": ("key found", "#b2182b"),
    "plaintext": ("plaintext outside use", "#ef8a62"),
    "in-use": ("plaintext only while in use", "#fddbc7"),
    "clean": ("nothing found", "#a6dba0"),
    "blocked": ("blocked, nothing found", "#1b7837"),
    "not-measured": ("not measured", "#e0e0e0"),
}
RESISTS = ("clean", "blocked")


def threat_label(attacker: str, artefact: str) -> str:
    return f"{attacker} · {artefact}"


def _phases_with(frame: pd.DataFrame, column: str) -> list[str]:
    return phase_order(frame.loc[frame[column] > 0, "phase"])


def verdicts(cell_frame: pd.DataFrame) -> pd.DataFrame:
    """One row per design x threat class (attacker x artefact): what the design let the
    attacks of that class find, over every phase and every victim of the design except the
    control (the broker design is its client and its key-holder process together).

    verdict: 'key' (key material found in any phase: every secret under it is lost),
    'plaintext' (plaintext found outside the in-use phase), 'in-use' (plaintext only while
    revealed), 'clean', 'blocked' (every measured cell refused some pages and nothing was
    found), 'not-measured' (no attack of the class ran)."""
    frame = cell_frame[cell_frame["victim"] != CONTROL]
    # no attacker class at all: nothing ran; every class is then 'n/a' and not measured
    attackers = attacker_order(frame["attacker"]) or [NO_ATTACKER]
    artefacts = list(dict.fromkeys(frame["artefact"]))
    ran = set(zip(frame["attacker"], frame["artefact"], strict=True))
    # an artefact no attacker reached (its attacks were all skipped) is a gap in every class
    classes = [
        (attacker, artefact)
        for attacker in attackers
        for artefact in artefacts
        if (attacker, artefact) in ran or not any((a, artefact) in ran for a in attackers)
    ]
    records = []
    for design in design_order(frame["design"]):
        mine = frame[frame["design"] == design]
        for attacker, artefact in classes:
            group = mine[
                (mine["artefact"] == artefact) & mine["attacker"].isin([attacker, NO_ATTACKER])
            ]
            if not group.empty:
                records.append(_verdict(design, attacker, artefact, group))
    return pd.DataFrame.from_records(records)


def _verdict(design: str, attacker: str, artefact: str, group: pd.DataFrame) -> dict[str, Any]:
    measured = group[group["status"].isin(MEASURED) & (group["attacker"] == attacker)]
    not_measured = group[~group.index.isin(measured.index)]
    plaintext_phases = _phases_with(measured, "plaintext_copies")
    key_phases = _phases_with(measured, "key_copies")
    if measured.empty:
        verdict = "not-measured"
    elif key_phases:
        verdict = "key"
    elif [p for p in plaintext_phases if p != IN_USE]:
        verdict = "plaintext"
    elif plaintext_phases:
        verdict = "in-use"
    elif (measured["status"] == "blocked").all():
        verdict = "blocked"
    else:
        verdict = "clean"
    attacks_run = attack_order(measured["attack"])
    attacks_missing = [a for a in attack_order(not_measured["attack"]) if a not in attacks_run]
    evidence = []
    if key_phases:
        evidence.append(f"key ≤{measured['key_copies'].max()}× ({join(key_phases)})")
    if plaintext_phases:
        evidence.append(
            f"plaintext ≤{measured['plaintext_copies'].max()}× ({join(plaintext_phases)})"
        )
    blocked = attack_order(measured.loc[measured["status"] == "blocked", "attack"])
    if blocked:
        evidence.append(f"blocked: {join(blocked)}")
    if not evidence and not measured.empty:
        evidence.append(f"0 copies in {len(measured)} cells")
    return {
        "design": design,
        "attacker": attacker,
        "artefact": artefact,
        "threat": threat_label(attacker, artefact),
        "verdict": verdict,
        "label": VERDICTS[verdict][0],
        "plaintext_phases": join(plaintext_phases, ""),
        "key_phases": join(key_phases, ""),
        "max_plaintext_copies": int(measured["plaintext_copies"].max() or 0)
        if not measured.empty
        else 0,
        "max_key_copies": int(measured["key_copies"].max() or 0) if not measured.empty else 0,
        "cells_measured": len(measured),
        "attacks": join(attacks_run, ""),
        "attacks_not_measured": join(attacks_missing, ""),
        "why_not_measured": join(sorted(set(not_measured["reason"]) - {""}), ""),
        "evidence": "; ".join(evidence),
    }


def threat_order(verdict_frame: pd.DataFrame) -> list[str]:
    """Threat classes: by attacker (weakest first), then by artefact as first seen."""
    order = []
    for attacker in ordered(verdict_frame["attacker"], (*ATTACKER_ORDER, NO_ATTACKER)):
        mine = verdict_frame[verdict_frame["attacker"] == attacker]
        order += list(dict.fromkeys(mine["threat"]))
    return order


def recommendations(verdict_frame: pd.DataFrame) -> pd.DataFrame:
    """Which design resists which threat class: a design x threat table of verdicts, with
    the classes each design resists outright, those where it leaks only while a secret is
    in use, and those where it lost the key or the plaintext."""
    if verdict_frame.empty:
        return pd.DataFrame(columns=["design"])
    threats = threat_order(verdict_frame)
    wide = verdict_frame.pivot(index="design", columns="threat", values="label")[threats]
    rows = []
    for design in design_order(verdict_frame["design"]):
        mine = verdict_frame[verdict_frame["design"] == design].set_index("threat")
        measured = mine[mine["verdict"] != "not-measured"]

        def classes(codes: tuple[str, ...], mine: pd.DataFrame = measured) -> str:
            return join([t for t in threats if t in mine.index and mine.at[t, "verdict"] in codes])

        rows.append(
            {
                "design": design,
                "resists (nothing found)": classes(RESISTS),
                "exposed only while in use": classes(("in-use",)),
                "loses plaintext or key": classes(("plaintext", "key")),
                "not measured": join(t for t in mine.index if t not in measured.index),
                **{t: wide.at[design, t] if t in wide.columns else "" for t in threats},
            }
        )
    return pd.DataFrame(rows)


def verdict_figure(verdict_frame: pd.DataFrame) -> Figure:
    """The verdict grid: design x threat class, coloured worst (key found) to best."""
    if verdict_frame.empty:
        return message_figure("no measured cells: nothing to judge")
    designs = design_order(verdict_frame["design"])
    threats = threat_order(verdict_frame)
    codes = list(VERDICTS)
    grid = np.full((len(designs), len(threats)), np.nan)
    fig = new_figure(max(8.0, 1.55 * len(threats) + 2.6), 0.55 * len(designs) + 2.0)
    ax = fig.add_subplot()
    cmap = ListedColormap([VERDICTS[c][1] for c in codes]).with_extremes(
        bad=VERDICTS["not-measured"][1]
    )
    norm = BoundaryNorm(np.arange(len(codes) + 1) - 0.5, len(codes))
    for r in verdict_frame.itertuples():
        y, x = designs.index(r.design), threats.index(r.threat)
        grid[y, x] = codes.index(r.verdict)
        short = {
            "key": f"key\n{_phase_span(r.key_phases)}",
            "plaintext": f"plaintext\n{_phase_span(r.plaintext_phases)}",
            "in-use": "in use only",
            "clean": "nothing",
            "blocked": "blocked",
            "not-measured": "–",
        }[r.verdict]
        dark = r.verdict in ("key", "blocked")
        ax.text(
            x,
            y,
            short,
            ha="center",
            va="center",
            fontsize=7.5,
            wrap=True,
            color="white" if dark else "black",
        )
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(len(threats)), [t.replace(" · ", "\n") for t in threats], fontsize=9)
    ax.set_yticks(range(len(designs)), designs, fontsize=10)
    ax.xaxis.tick_top()
    ax.set_xticks(np.arange(-0.5, len(threats)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(designs)), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    handles = [
        Patch(facecolor=VERDICTS[c][1], edgecolor="#999", label=VERDICTS[c][0]) for c in codes
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("What each design let each threat class find (all phases, all its processes)")
    return fig


# --- claims with their numbers ------------------------------------------------------------


def matrix_claims(cell_frame: pd.DataFrame) -> list[str]:
    """Sentences for the threat-matrix page, each with the counts behind it."""
    frame = cell_frame[cell_frame["victim"] != CONTROL]
    measured = frame[frame["status"].isin(MEASURED)]
    claims = [
        f"{len(frame)} cells (design × victim × attacker × attack × phase, control victims "
        f"aside): {len(measured)} measured ({(measured['status'] == 'blocked').sum()} of them "
        f"blocked), {(frame['status'] == 'skipped').sum()} skipped, "
        f"{(frame['status'] == 'error').sum()} errors."
    ]
    for design in design_order(frame["design"]):
        mine = measured[measured["design"] == design]
        if mine.empty:
            reasons = join(sorted(set(frame.loc[frame["design"] == design, "reason"])))
            claims.append(f"**{design}**: not measured ({reasons}).")
            continue
        pt = mine[mine["plaintext_copies"] > 0]
        key = mine[mine["key_copies"] > 0]
        parts = []
        if len(pt):
            parts.append(
                f"plaintext in {len(pt)}/{len(mine)} cells (up to {pt['plaintext_copies'].max()} "
                f"copies; phases {join(phase_order(pt['phase']))}; attacks "
                f"{join(attack_order(pt['attack']))})"
            )
        else:
            parts.append(f"no plaintext in any of {len(mine)} cells")
        if len(key):
            parts.append(
                f"key in {len(key)}/{len(mine)} cells (up to {key['key_copies'].max()} copies; "
                f"phases {join(phase_order(key['phase']))})"
            )
        else:
            parts.append("no key anywhere")
        blocked = mine[mine["status"] == "blocked"]
        if len(blocked):
            parts.append(
                f"blocked in {len(blocked)} cells ({join(attack_order(blocked['attack']))})"
            )
        claims.append(f"**{design}**: " + "; ".join(parts) + ".")
    return claims


def control_claims(control_frame: pd.DataFrame) -> list[str]:
    totals = control_frame[
        ["decoy copies", "control: plaintext copies", "control: key copies"]
    ].sum()
    cells_checked = int(control_frame["cells checked"].sum())
    if cells_checked == 0:
        return ["No measured cells: the decoy and control-victim checks did not run."]
    bad = int(totals.sum())
    verdict = (
        "the method found nothing that was not there"
        if bad == 0
        else ("FALSE POSITIVES: the counts above cannot be trusted until this is explained")
    )
    return [
        f"Decoy copies across {cells_checked} measured cells: {int(totals['decoy copies'])}; "
        f"the run's plaintext in control victims: {int(totals['control: plaintext copies'])}; "
        f"its key in control victims: {int(totals['control: key copies'])}: {verdict}."
    ]


def positive_control_claims(cell_frame: pd.DataFrame, design: str = "plain") -> list[str]:
    """Every attack must find the naive design's plaintext at rest, or its zeros mean
    nothing. Says which attacks did, and which did not or could not run."""
    mine = cell_frame[(cell_frame["design"] == design) & (cell_frame["victim"] == SUBJECT)]
    if mine.empty:
        return [
            f"The positive control (`{design}`) is not in this run: zeros elsewhere are "
            f"unchecked. Run it with `memlab run --designs {design},...`."
        ]
    lines = []
    for attack in attack_order(mine["attack"]):
        cells_ = mine[mine["attack"] == attack]
        measured = cells_[cells_["status"].isin(MEASURED)]
        found = measured[measured["plaintext_copies"] > 0]
        if measured.empty:
            why = join(sorted(set(cells_["reason"]) - {""}), "no reason given")
            lines.append(f"`{attack}`: did not run ({why}).")
        elif found.empty:
            lines.append(
                f"`{attack}`: **found no plaintext in `{design}`**: its zeros prove nothing."
            )
        else:
            lines.append(
                f"`{attack}`: found `{design}`'s plaintext in {len(found)}/{len(measured)} "
                f"phases (up to {found['plaintext_copies'].max()} copies)."
            )
    return lines
