"""Exposure over the secret's life: how many copies of the plaintext and the key each
design leaves in each phase, and in which memory regions they lie."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ._common import (
    CONTROL,
    DECOY,
    IN_USE,
    PLAINTEXT,
    attack_order,
    attacker_order,
    join,
    message_figure,
    new_figure,
    phase_order,
    sort_frame,
    target_label,
    target_order,
)
from .matrix import MEASURED

# smaps flags a reviewer cares about: locked, no-dump, wipe-on-fork, I/O, pure PFN
INTERESTING_FLAGS = ("lo", "dd", "wf", "io", "pf")
NEEDLES = {PLAINTEXT: "plaintext", "key": "key"}
INJECTED_CODE = "injected-code"  # inject-api's artefact


def _targets(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[frame["victim"] != CONTROL]
    pairs = zip(frame["design"], frame["victim"], strict=True)
    return frame.assign(target=[target_label(d, v) for d, v in pairs])


def exposure_table(cell_frame: pd.DataFrame) -> pd.DataFrame:
    """Per design (and its other processes), attacker and phase: the most copies of the
    plaintext and of the key any attack found, and which attacks found that many."""
    frame = _targets(cell_frame)
    # copies that memory holds: injected code that calls the API gets every secret still
    # alive (what it can *get*), which says nothing about residue; the matrix shows it
    frame = frame[frame["status"].isin(MEASURED) & (frame["artefact"] != INJECTED_CODE)]
    records = []
    for (_, attacker, phase), group in frame.groupby(["target", "attacker", "phase"]):
        record = {
            "design": group["design"].iloc[0],
            "victim": group["victim"].iloc[0],
            "attacker": attacker,
            "phase": phase,
            "attacks measured": len(group),
            "blocked": join(attack_order(group.loc[group["status"] == "blocked", "attack"]), ""),
        }
        for column, name in (("plaintext_copies", "plaintext"), ("key_copies", "key")):
            most = int(group[column].max())
            record[f"{name} copies (most)"] = most
            record[f"{name} found by"] = (
                join(attack_order(group.loc[group[column] > 0, "attack"]), "") if most else ""
            )
        records.append(record)
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    return sort_frame(table, ["design", "victim", "attacker", "phase"])


def exposure_figure(cell_frame: pd.DataFrame, *, max_cols: int = 4) -> Figure:
    """One panel per design (and per other process of a design): copies over the phases,
    the most any attack found; plaintext and key, one line style per attacker class."""
    table = exposure_table(cell_frame)
    if table.empty:
        return message_figure("no measured cells: no exposure to plot")
    table = table.assign(
        target=[target_label(d, v) for d, v in zip(table.design, table.victim, strict=True)]
    )
    targets = target_order(table)
    phases = phase_order(cell_frame["phase"])
    attackers = attacker_order(table["attacker"])
    styles = ["-", "--", ":", "-."]
    ncols = min(max_cols, len(targets))
    nrows = math.ceil(len(targets) / ncols)
    fig = new_figure(max(9.0, ncols * max(3.2, 0.75 * len(phases) + 1.2)), nrows * 2.6 + 1.0)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    top = max(1, int(table[["plaintext copies (most)", "key copies (most)"]].max().max()))
    x = np.arange(len(phases))
    for index, target in enumerate(targets):
        ax = axes[index // ncols][index % ncols]
        mine = table[table["target"] == target]
        for a, attacker in enumerate(attackers):
            rows = mine[mine["attacker"] == attacker].set_index("phase")
            for name, color, offset in (("plaintext", "#d7301f", 0.06), ("key", "#54278f", -0.06)):
                y = np.array(
                    [
                        rows.at[p, f"{name} copies (most)"] if p in rows.index else np.nan
                        for p in phases
                    ],
                    dtype=float,
                )
                ax.plot(
                    x, y + offset, styles[a % len(styles)], color=color, marker="o", markersize=4
                )
                for xi, yi in zip(x, y, strict=True):
                    if not np.isnan(yi) and yi > 0:
                        ax.annotate(
                            f"{int(yi)}",
                            (xi, yi + offset),
                            textcoords="offset points",
                            xytext=(0, 5 if name == "plaintext" else -11),
                            ha="center",
                            fontsize=7,
                            color=color,
                        )
        if IN_USE in phases:
            ax.axvspan(
                phases.index(IN_USE) - 0.4, phases.index(IN_USE) + 0.4, color="#eeeeee", zorder=0
            )
        ax.set_title(target, fontsize=10)
        ax.set_xticks(x, phases, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(-0.4, top + 1)
        ax.set_xlim(-0.5, len(phases) - 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    for index in range(len(targets), nrows * ncols):
        axes[index // ncols][index % ncols].axis("off")
    handles = [
        Line2D([], [], color="#d7301f", marker="o", label="plaintext"),
        Line2D([], [], color="#54278f", marker="o", label="key"),
        *[
            Line2D([], [], color="#555555", linestyle=styles[a % len(styles)], label=attacker)
            for a, attacker in enumerate(attackers)
        ],
    ]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False
    )
    fig.supylabel("copies in memory (most any attack found; inject-api left out)", fontsize=9)
    fig.suptitle("Copies over the secret's life (grey band: in use); a gap means not measured")
    return fig


# --- regions ------------------------------------------------------------------------------


def region_label(region: str, perms: str, vmflags: str) -> str:
    flags = [f for f in str(vmflags).split() if f in INTERESTING_FLAGS]
    name = region or "(outside any region)"
    return f"{name} {perms}" + (f" {','.join(flags)}" if flags else "")


def region_table(hits: pd.DataFrame) -> pd.DataFrame:
    """Where the copies lie: per design, victim, attacker, phase, needle kind and region
    (name, permissions, the flags that matter), the most copies one attack found there and
    the attacks that found any. Addresses are left out: they mean nothing to a reader."""
    columns = ["design", "victim", "attacker", "phase", "needle", "region", "copies", "found by"]
    frame = hits[hits["victim"] != CONTROL]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    labels = [
        region_label(r, p, f)
        for r, p, f in zip(frame["region"], frame["perms"], frame["vmflags"], strict=True)
    ]
    needle = frame["needle_kind"].where(
        frame["needle_kind"].isin([PLAINTEXT, DECOY]), "key"
    )  # every key kind counts as key material
    frame = frame.assign(region_label=labels, needle=needle)
    per_attack = (
        frame.groupby(["design", "victim", "attacker", "phase", "needle", "region_label", "attack"])
        .size()
        .rename("copies")
        .reset_index()
    )
    grouped = per_attack.groupby(
        ["design", "victim", "attacker", "phase", "needle", "region_label"]
    )
    table = grouped.agg(
        copies=("copies", "max"), found_by=("attack", lambda v: join(attack_order(v)))
    ).reset_index()
    table = table.rename(columns={"region_label": "region", "found_by": "found by"})
    return sort_frame(table, ["design", "victim", "attacker", "phase", "needle", "region"])[columns]


def region_figure(
    regions: pd.DataFrame, cell_frame: pd.DataFrame, needle: str = PLAINTEXT, *, max_cols: int = 4
) -> Figure:
    """Stacked bars per design and phase: the copies of `needle` ('plaintext' or 'key')
    by the region they lie in (the most one attack found in each region)."""
    frame = regions[regions["needle"] == needle]
    targets = target_order(_targets(cell_frame))
    phases = phase_order(cell_frame["phase"])
    if frame.empty:
        return message_figure(f"no copies of the {needle} in any region, in any phase")
    labels = sorted(set(frame["region"]))
    palette = colormaps["tab20"]
    # colours from every region of the run, so a region has one colour in every figure
    colors = {label: palette(i % 20) for i, label in enumerate(sorted(set(regions["region"])))}
    attackers = attacker_order(frame["attacker"])
    ncols = min(max_cols, len(targets))
    nrows = math.ceil(len(targets) / ncols)
    fig = new_figure(
        max(9.0, ncols * max(3.2, 0.55 * len(phases) * len(attackers) + 1.2)), nrows * 2.6 + 1.4
    )
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    width = 0.8 / max(1, len(attackers))
    for index, target in enumerate(targets):
        ax = axes[index // ncols][index % ncols]
        pairs = zip(frame["design"], frame["victim"], strict=True)
        mine = frame[[target_label(d, v) == target for d, v in pairs]]
        for a, attacker in enumerate(attackers):
            bottom = np.zeros(len(phases))
            xs = np.arange(len(phases)) + (a - (len(attackers) - 1) / 2) * width
            for label in labels:
                part = mine[(mine["attacker"] == attacker) & (mine["region"] == label)]
                heights = np.array(
                    [part.loc[part["phase"] == p, "copies"].sum() for p in phases], dtype=float
                )
                if heights.any():
                    ax.bar(
                        xs,
                        heights,
                        width * 0.9,
                        bottom=bottom,
                        color=colors[label],
                        edgecolor="white",
                        linewidth=0.5,
                        hatch="" if a == 0 else "..",
                    )
                    bottom += heights
        if mine.empty:
            ax.text(0.5, 0.5, "no copies", transform=ax.transAxes, ha="center", color="#777777")
        ax.set_title(target, fontsize=10)
        ax.set_xticks(np.arange(len(phases)), phases, rotation=35, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(phases) - 0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
    for index in range(len(targets), nrows * ncols):
        axes[index // ncols][index % ncols].axis("off")
    handles = [Patch(facecolor=colors[label], label=label) for label in labels]
    if len(attackers) > 1:
        handles += [
            Patch(facecolor="white", edgecolor="#555", hatch="" if a == 0 else "..", label=attacker)
            for a, attacker in enumerate(attackers)
        ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(4, len(handles)),
        fontsize=8,
        frameon=False,
    )
    fig.supylabel("copies", fontsize=9)
    fig.suptitle(
        f"Where the {NEEDLES.get(needle, needle)} copies lie, by phase\n"
        "(region, permissions, smaps flags: lo locked, dd no-dump, wf wipe-on-fork)",
        fontsize=11,
    )
    return fig


def exposure_claims(exposure: pd.DataFrame, regions: pd.DataFrame) -> list[str]:
    """Per design: the copies phase by phase and where they lie, with the numbers."""
    if exposure.empty:
        return ["No measured cells: nothing to say about exposure."]
    lines = []
    for (design, victim, attacker), group in exposure.groupby(
        ["design", "victim", "attacker"], sort=False
    ):
        group = group.set_index("phase")
        phases = phase_order(group.index)

        def walk(name: str, group: pd.DataFrame = group, phases: list[str] = phases) -> str:
            return " → ".join(f"{p} {group.at[p, f'{name} copies (most)']}" for p in phases)

        where = regions[
            (regions["design"] == design)
            & (regions["victim"] == victim)
            & (regions["attacker"] == attacker)
            & (regions["needle"] != DECOY)
        ]
        after = (
            [p for p in phases if phases.index(p) > phases.index(IN_USE)]
            if IN_USE in phases
            else []
        )
        residue = [p for p in after if group.at[p, "plaintext copies (most)"] > 0]
        text = (
            f"**{target_label(design, victim)}** ({attacker}): plaintext {walk('plaintext')}; "
            f"key {walk('key')}"
        )
        if len(where):
            text += f"; in {join(sorted(set(where['region'])))}"
        blocked = sorted({a for v in group["blocked"] for a in v.split(", ") if a})
        if blocked:
            text += (
                f" (blocked: {join(attack_order(blocked))}; their counts are of what was readable)"
            )
        if residue:
            text += f". **Plaintext survives release** ({join(residue)})"
        lines.append(text + ".")
    return lines
