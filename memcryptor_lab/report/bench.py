"""Costs from bench.csv: latency, throughput against payload size, ratios to the baselines
measured in the same run, memory against secrets held, and the project's goals."""

from __future__ import annotations

import math
import re

import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._common import (
    design_order,
    human,
    join,
    message_figure,
    new_figure,
    size_label,
)

PARAM_MEANING = {
    "latency": "payload",
    "throughput": "payload",
    "scale": "secrets held",
    "concurrency": "clients",
    "scanner": "image",
    "attack": "victim image",
}
# groups whose subjects are designs (the others measure scanners and attacks)
DESIGN_GROUPS = ("latency", "throughput", "scale", "concurrency")
_BASELINE_STYLES = ["--", ":", "-.", (0, (5, 1, 1, 1))]


def ok(bench: pd.DataFrame, group: str | None = None) -> pd.DataFrame:
    frame = bench[bench["status"] == "ok"]
    return frame if group is None else frame[frame["group"] == group]


def baselines(bench: pd.DataFrame) -> list[str]:
    """Subjects that are references, not designs: in the timing groups, those never
    compared to anything (in-process AES-GCM, memcpy, the Unix-socket echo)."""
    timed = bench[bench["group"].isin(["latency", "throughput"])]
    compared = set(timed.loc[timed["baseline"] != "", "subject"])
    return sorted(set(timed["subject"]) - compared)


def subjects(bench: pd.DataFrame) -> list[str]:
    """The designs (and anything else compared to a baseline), in the lab's order."""
    base = set(baselines(bench))
    held = bench[bench["group"].isin(DESIGN_GROUPS)]
    return design_order(s for s in held["subject"] if s not in base)


def _colors(names: list[str]) -> dict[str, tuple[float, ...]]:
    palette = colormaps["tab10"]
    return {name: palette(i % 10) for i, name in enumerate(names)}


def param_label(group: str, param: int) -> str:
    meaning = PARAM_MEANING.get(group, "")
    if meaning in ("payload", "image", "victim image"):
        return size_label(int(param))
    return f"{int(param):,} {meaning}".rstrip()


def bench_table(bench: pd.DataFrame, groups: list[str] | None = None) -> pd.DataFrame:
    """Every figure in people's units: median, spread (p99 for latencies, q1..q3 otherwise),
    the baseline and the ratio to it, the goal and whether it is met."""
    frame = ok(bench)
    if groups is not None:
        frame = frame[frame["group"].isin(groups)]
    records = []
    for r in frame.itertuples():
        if r.group == "latency":
            spread = f"p99 {human(r.p99, r.unit)}"
        elif r.samples > 1:
            spread = f"{human(r.q1, r.unit)} .. {human(r.q3, r.unit)}"
        else:
            spread = ""
        records.append(
            {
                "group": r.group,
                "subject": r.subject,
                "operation": r.operation,
                "size / count": param_label(r.group, r.param),
                "metric": r.metric,
                "median": human(r.value, r.unit),
                "spread": spread,
                "samples": r.samples,
                "baseline": r.baseline,
                "ratio": f"{r.ratio:.2f}×" if r.baseline else "",
                "goal": r.goal,
                "meets goal": r.meets_goal,
            }
        )
    return pd.DataFrame.from_records(records)


def goals_table(bench: pd.DataFrame) -> pd.DataFrame:
    """The project's goals, each with the measured value and ratio: met or not, never bent."""
    frame = ok(bench)
    frame = frame[frame["goal"] != ""]
    return pd.DataFrame(
        {
            "subject": frame["subject"],
            "figure": [
                f"{r.group} {r.operation} {param_label(r.group, r.param)} ({r.metric})"
                for r in frame.itertuples()
            ],
            "measured": [human(v, u) for v, u in zip(frame["value"], frame["unit"], strict=True)],
            "ratio": [
                f"{r.ratio:.2f}× {r.baseline}" if r.baseline else "" for r in frame.itertuples()
            ],
            "goal": frame["goal"],
            "met": frame["meets_goal"],
        }
    ).reset_index(drop=True)


def not_measured_table(bench: pd.DataFrame) -> pd.DataFrame:
    frame = bench[bench["status"] != "ok"]
    return frame[["group", "subject", "operation", "metric", "status", "reason"]].reset_index(
        drop=True
    )


def _payload_axis(ax: Axes, params: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(params, [size_label(p) for p in params], rotation=30, fontsize=8)
    ax.minorticks_off()


def throughput_figure(bench: pd.DataFrame) -> Figure:
    """Throughput against payload size, one panel per operation; the baselines (dashed)
    are the same run's in-process AES-GCM, memory copy and socket round trip."""
    frame = ok(bench, "throughput")
    if frame.empty:
        return message_figure("no throughput figures in this run")
    base = baselines(frame)
    designs = subjects(frame)
    operations = list(dict.fromkeys(frame.loc[frame["subject"].isin(designs), "operation"]))
    colors = _colors(designs)
    params = sorted(set(frame["param"]))
    fig = new_figure(5.2 * len(operations) + 0.5, 4.6)
    axes = fig.subplots(1, len(operations), squeeze=False, sharey=True)[0]
    for ax, operation in zip(axes, operations, strict=True):
        for i, subject in enumerate(base):
            rows = frame[frame["subject"] == subject]
            same = rows[rows["operation"] == operation]
            rows = same if len(same) else rows  # memcpy 'copy', echo 'round-trip'
            for op, part in rows.groupby("operation"):
                part = part.sort_values("param")
                ax.plot(
                    part["param"],
                    part["value"],
                    linestyle=_BASELINE_STYLES[i % 4],
                    color="#555555",
                    linewidth=1.2,
                    label=f"{subject} {op}",
                )
        for subject in designs:
            part = frame[(frame["subject"] == subject) & (frame["operation"] == operation)]
            part = part.sort_values("param")
            if part.empty:
                continue
            ax.plot(
                part["param"],
                part["value"],
                marker="o",
                markersize=4,
                color=colors[subject],
                label=subject,
            )
            ax.fill_between(
                part["param"], part["q1"], part["q3"], color=colors[subject], alpha=0.15
            )
        ax.set_yscale("log")
        _payload_axis(ax, params)
        ax.set_title(operation)
        ax.set_xlabel("payload")
        ax.grid(color="#e5e5e5", linewidth=0.6)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("bytes per second (median; band q1..q3)")
    fig.suptitle("Throughput against payload size (grey: baselines measured in the same run)")
    return fig


_GOAL = re.compile(r"([<>]=)\s*([0-9.]+)\s*x")


def goal_threshold(goal: str) -> float | None:
    """The ratio a goal asks for ('>= 0.8x aes-gcm' -> 0.8), or None."""
    match = _GOAL.search(goal or "")
    return float(match.group(2)) if match else None


def ratio_figure(bench: pd.DataFrame) -> Figure:
    """Each design's throughput as a ratio to the same run's in-process AES-GCM. A ringed
    red point misses a project goal (the dotted line in its colour)."""
    frame = ok(bench, "throughput")
    frame = frame[frame["baseline"] != ""]
    if frame.empty:
        return message_figure("no throughput ratios in this run")
    designs = subjects(frame)
    colors = _colors(designs)
    operations = list(dict.fromkeys(frame["operation"]))
    params = sorted(set(frame["param"]))
    fig = new_figure(5.2 * len(operations) + 0.5, 4.4)
    axes = fig.subplots(1, len(operations), squeeze=False, sharey=True)[0]
    for ax, operation in zip(axes, operations, strict=True):
        ax.axhline(1.0, color="#555555", linestyle="--", linewidth=1)
        for subject in designs:
            part = frame[(frame["subject"] == subject) & (frame["operation"] == operation)]
            part = part.sort_values("param")
            if part.empty:
                continue
            ax.plot(
                part["param"],
                part["ratio"],
                marker="o",
                markersize=4,
                color=colors[subject],
                label=subject,
            )
            missed = part[part["meets_goal"] == "no"]
            ax.scatter(
                missed["param"],
                missed["ratio"],
                s=90,
                facecolors="none",
                edgecolors="#d7301f",
                linewidths=1.5,
                zorder=3,
            )
            for goal in sorted(set(part["goal"]) - {""}):
                threshold = goal_threshold(goal)
                if threshold is not None:
                    ax.axhline(threshold, color=colors[subject], linestyle=":", linewidth=1)
        _payload_axis(ax, params)
        ax.set_title(f"{operation} / {join(sorted(set(part['baseline'])))}")
        ax.set_xlabel("payload")
        ax.grid(color="#e5e5e5", linewidth=0.6)
    axes[0].set_ylabel("ratio to the baseline (1 = as fast)")
    handles = [Line2D([], [], color=colors[s], marker="o", label=s) for s in designs]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            markersize=9,
            markerfacecolor="none",
            markeredgecolor="#d7301f",
            linestyle="",
            label="misses its goal",
        )
    )
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False
    )
    fig.suptitle("Throughput as a ratio to in-process AES-GCM measured in the same run")
    return fig


def latency_figure(bench: pd.DataFrame) -> Figure:
    """Latency distributions per design and operation (box q1..q3, median line, whiskers
    min..p99), the baselines first; each box is labelled with its median and its ratio."""
    frame = ok(bench, "latency")
    if frame.empty:
        return message_figure("no latency figures in this run")
    order = baselines(frame) + subjects(frame)
    stats, labels, notes = [], [], []
    for subject in order:
        for r in frame[frame["subject"] == subject].sort_values("operation").itertuples():
            stats.append(
                {
                    "med": r.value,
                    "q1": r.q1,
                    "q3": r.q3,
                    "whislo": r.min,
                    "whishi": r.p99,
                    "fliers": [],
                }
            )
            labels.append(f"{subject}\n{r.operation}")
            notes.append(
                human(r.value, "s") + (f"\n{r.ratio:.1f}× {r.baseline}" if r.baseline else "")
            )
    fig = new_figure(max(8.0, 0.75 * len(stats) + 1.5), 5.0)
    ax = fig.add_subplot()
    ax.bxp(
        stats,
        showfliers=False,
        patch_artist=True,
        boxprops={"facecolor": "#c6dbef", "edgecolor": "#3a6fb0"},
        medianprops={"color": "#d7301f"},
    )
    ax.set_yscale("log")
    ax.minorticks_off()
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=8)
    for x, (s, note) in enumerate(zip(stats, notes, strict=True), start=1):
        ax.annotate(
            note,
            (x, s["whishi"]),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=6.5,
        )
    ax.set_ylabel("seconds per operation (log)")
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    payload = join(sorted({size_label(int(p)) for p in frame["param"]}))
    fig.suptitle(f"Latency of one operation on a {payload} secret (box q1..q3, whiskers min..p99)")
    return fig


SCALE_METRICS = {
    "rss_per_secret": "resident memory per secret (B)",
    "locked_per_secret": "locked memory per secret (B)",
    "mappings": "mappings in the process",
    "seal_time_per_secret": "seal time per secret (s)",
}


def scale_figure(bench: pd.DataFrame) -> Figure:
    """Memory and mappings against the number of secrets held, one panel per metric."""
    frame = ok(bench, "scale")
    if frame.empty:
        return message_figure("no scale figures in this run")
    metrics = [m for m in SCALE_METRICS if m in set(frame["metric"])]
    metrics += sorted(set(frame["metric"]) - set(SCALE_METRICS) - {"rss", "locked"})
    designs = subjects(frame)
    colors = _colors(designs)
    ncols = min(2, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = new_figure(5.4 * ncols + 0.4, 3.6 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for index, metric in enumerate(metrics):
        ax = axes[index // ncols][index % ncols]
        for subject in designs:
            part = frame[(frame["subject"] == subject) & (frame["metric"] == metric)]
            part = part.sort_values("param")
            values = part["value"].where(part["value"] > 0)  # 0 (nothing locked) has no log
            if values.notna().any():
                ax.plot(part["param"], values, marker="o", markersize=4, color=colors[subject])
        ax.set_xscale("log")
        held = sorted(set(frame["param"]))
        ax.set_xticks(held, [f"{int(p):,}" for p in held], fontsize=8)
        positive = frame.loc[(frame["metric"] == metric) & (frame["value"] > 0), "value"]
        if len(positive) and positive.max() > 20 * positive.min():  # spans decades: log
            ax.set_yscale("log")
        ax.minorticks_off()  # log minor labels cost seconds in layout and say nothing
        ax.set_title(SCALE_METRICS.get(metric, metric), fontsize=10)
        ax.set_xlabel("secrets held")
        ax.grid(color="#e5e5e5", linewidth=0.6)
    for index in range(len(metrics), nrows * ncols):
        axes[index // ncols][index % ncols].axis("off")
    handles = [Line2D([], [], color=colors[s], marker="o", label=s) for s in designs]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False
    )
    fig.suptitle("Cost of holding many secrets (a design missing from a panel had 0 there)")
    return fig


def concurrency_figure(bench: pd.DataFrame) -> Figure:
    frame = ok(bench, "concurrency")
    if frame.empty:
        return message_figure("no concurrency figures in this run")
    designs = subjects(frame) or sorted(set(frame["subject"]))
    colors = _colors(designs)
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    for subject in designs:
        for operation, part in frame[frame["subject"] == subject].groupby("operation"):
            part = part.sort_values("param")
            ax.plot(
                part["param"],
                part["value"],
                marker="o",
                color=colors[subject],
                label=f"{subject} {operation}",
            )
    ax.set_xscale("log", base=2)
    params = sorted(set(frame["param"]))
    ax.set_xticks(params, [str(p) for p in params])
    ax.minorticks_off()
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("bytes per second, all clients")
    ax.grid(color="#e5e5e5", linewidth=0.6)
    ax.legend(fontsize=8)
    fig.suptitle("Throughput with concurrent clients")
    return fig


def cost_table(bench: pd.DataFrame) -> pd.DataFrame:
    """One line per design: what it costs, from this run's bench (for the review page)."""
    frame = ok(bench)
    records = []
    for subject in subjects(frame):
        mine = frame[frame["subject"] == subject]
        record: dict[str, str] = {"design": subject}
        for r in mine[mine["group"] == "latency"].sort_values("operation").itertuples():
            ratio = f" ({r.ratio:.1f}× {r.baseline})" if r.baseline else ""
            record[f"{r.operation} p50"] = human(r.value, "s") + ratio
        tput = mine[(mine["group"] == "throughput") & (mine["operation"] == "encrypt")]
        for r in tput.sort_values("param").itertuples():
            if r.param in (min(tput["param"]), max(tput["param"])) or r.param == 2**20:
                record[f"encrypt {size_label(int(r.param))} / {r.baseline}"] = f"{r.ratio:.2f}×"
        scale = mine[mine["group"] == "scale"]
        if len(scale):
            top = int(scale["param"].max())
            for metric in ("locked_per_secret", "rss_per_secret", "mappings"):
                hit = scale[(scale["param"] == top) & (scale["metric"] == metric)]
                if len(hit):
                    r = hit.iloc[0]
                    record[f"{metric.replace('_', ' ')} at {top:,}"] = human(r.value, r.unit)
        records.append(record)
    return pd.DataFrame.from_records(records).fillna("")


def bench_claims(bench: pd.DataFrame) -> list[str]:
    """The cost story in sentences, each with its numbers."""
    frame = ok(bench)
    if frame.empty:
        return [
            "No benchmark figures in this run: `memlab run --bench quick` measures them "
            "with the matrix, into the same run folder (`make lab` does)."
        ]
    lines = []
    lat = frame[frame["group"] == "latency"]
    base = lat[lat["subject"].isin(baselines(lat))]
    if len(base):
        lines.append(
            "Baselines, same run: "
            + join(f"{r.subject} {r.operation} {human(r.value, 's')}" for r in base.itertuples())
            + "."
        )
    for subject in subjects(lat):
        mine = lat[lat["subject"] == subject]
        lines.append(
            f"**{subject}**: "
            + join(
                f"{r.operation} p50 {human(r.value, 's')} (p99 {human(r.p99, 's')}; "
                f"{r.ratio:.1f}× {r.baseline})"
                for r in mine.sort_values("operation").itertuples()
            )
            + "."
        )
    tput = frame[(frame["group"] == "throughput") & (frame["baseline"] != "")]
    if len(tput):
        top = int(tput["param"].max())
        at_top = tput[(tput["param"] == top) & (tput["operation"] == "encrypt")]
        lines.append(
            f"Encrypting {size_label(top)}: "
            + join(f"{r.subject} {r.ratio:.2f}×" for r in at_top.itertuples())
            + f" of in-process {join(sorted(set(at_top['baseline'])))}."
        )
    goals = frame[frame["goal"] != ""]
    if len(goals):
        missed = goals[goals["meets_goal"] == "no"]
        lines.append(
            f"Goals: {len(goals) - len(missed)} of {len(goals)} figures meet theirs"
            + (
                "; missed: "
                + join(
                    f"{r.subject} {r.operation} {param_label(r.group, r.param)} "
                    f"({r.goal}; measured {r.ratio:.2f}×)"
                    if r.baseline
                    else f"{r.subject} {r.operation} ({r.goal}; measured {human(r.value, r.unit)})"
                    for r in missed.itertuples()
                )
                if len(missed)
                else ""
            )
            + "."
        )
    skipped = bench[bench["status"] != "ok"]
    if len(skipped):
        lines.append(
            "Not measured: "
            + join(f"{r.subject} ({r.status}: {r.reason})" for r in skipped.itertuples())
            + "."
        )
    return lines
