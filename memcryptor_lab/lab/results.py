"""Result rows: flat, typed, versioned. Written as CSV plus meta.json; one call loads them.

A row never holds secret bytes: only kinds, encodings, counts, regions and salted ids.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import secrets
import socket
import time
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: design_notes (backing, process measures, downgrades)
RESULTS_FILE = "results.csv"
HITS_FILE = "hits.csv"
BENCH_FILE = "bench.csv"
META_FILE = "meta.json"


@dataclass(slots=True)
class Row:
    """One (design, attack, attacker, victim, phase, needle kind, encoding, form) cell."""

    schema_version: int
    run_id: str
    host: str
    kernel: str
    lab_version: str
    design: str
    attack: str
    attacker: str
    victim: str  # 'subject' holds the run's secret; 'control' never received it
    phase: str
    artefact: str
    needle_kind: str  # plaintext | key | decoy
    encoding: str
    form: str  # full | fragment16
    needle_id: str
    needle_len: int
    hits: int
    copies: int
    regions: int
    region_names: str
    bytes_scanned: int
    bytes_unreadable: int
    read_errors: str
    regions_total: int
    duration_s: float
    status: str  # ok | blocked | skipped | error; n/a, alias: needle form rows
    reason: str
    design_notes: str  # what the design really had here: backing, downgrades, crypto path


@dataclass(slots=True)
class HitRow:
    """One hit: where a copy lies. Addresses are virtual (live) or file offsets (images)."""

    schema_version: int
    run_id: str
    design: str
    attack: str
    attacker: str
    victim: str
    phase: str
    needle_kind: str
    encoding: str
    form: str
    needle_id: str
    address: str
    region: str
    perms: str
    vmflags: str
    anonymous: bool
    offset_in_region: int


@dataclass(slots=True)
class BenchRow:
    """One benchmark figure. `value` is the median (p50 for latencies); `ratio` is
    value / baseline_value, measured in the same run; `better` says which way is good."""

    schema_version: int
    run_id: str
    host: str
    kernel: str
    lab_version: str
    profile: str
    group: str  # latency | throughput | scale | scanner | attack | concurrency
    subject: str  # a design, a baseline, a scanner or an attack
    operation: str
    param: int  # payload bytes, secrets held, clients, image bytes ...
    metric: str
    unit: str
    better: str  # higher | lower | ""
    samples: int
    inner: int
    value: float
    p99: float
    q1: float
    q3: float
    min: float
    max: float
    baseline: str
    baseline_value: float
    ratio: float
    goal: str
    meets_goal: str  # yes | no | "" (no goal)
    status: str  # ok | skipped | error
    reason: str


# field annotations are strings here (postponed evaluation)
_PANDAS_TYPES = {"int": "int64", "float": "float64", "str": "string", "bool": "boolean"}


def _dtypes(cls: type) -> dict[str, str]:
    return {f.name: _PANDAS_TYPES[str(f.type)] for f in fields(cls)}


ROW_DTYPES = _dtypes(Row)
HIT_DTYPES = _dtypes(HitRow)
BENCH_DTYPES = _dtypes(BenchRow)
_TABLES = {
    "rows": (RESULTS_FILE, ROW_DTYPES),
    "hits": (HITS_FILE, HIT_DTYPES),
    "bench": (BENCH_FILE, BENCH_DTYPES),
}


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def host_facts() -> dict[str, Any]:
    """What the machine is and how it is configured: re-read every run, never assumed."""

    def read(path: str) -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    swaps = read("/proc/swaps")
    return {
        "host": socket.gethostname(),
        "kernel": platform.release(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "euid": os.geteuid(),
        "rlimit_memlock": [soft, hard],
        "vm_max_map_count": read("/proc/sys/vm/max_map_count"),
        "core_pattern": read("/proc/sys/kernel/core_pattern"),
        "ptrace_scope": read("/proc/sys/kernel/yama/ptrace_scope"),
        "zswap_enabled": read("/sys/module/zswap/parameters/enabled"),
        "swap_active": bool(swaps and len(swaps.splitlines()) > 1),
    }


def row_base(run_id: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The metadata columns every row of a run starts with."""
    from .. import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "host": facts["host"],
        "kernel": facts["kernel"],
        "lab_version": __version__,
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ("memcryptor-lab", "cryptography", "hyperscan", "psutil", "pandas", "rich"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class TableWriter:
    """Writes typed rows to a CSV as they come, so an interrupted run leaves readable files."""

    def __init__(self, path: Path, cls: type) -> None:
        self.path = path
        self._handle = open(path, "w", newline="")  # noqa: SIM115 - closed in close()
        self._writer = csv.DictWriter(self._handle, fieldnames=[f.name for f in fields(cls)])
        self._writer.writeheader()
        self.count = 0

    def add(self, row: Any) -> None:
        self._writer.writerow(dataclasses.asdict(row))
        self._handle.flush()
        self.count += 1

    def close(self) -> None:
        self._handle.close()


def write_meta(run_dir: Path, updates: dict[str, Any]) -> None:
    """Merge `updates` into the run's meta.json (the matrix and the bench share one run)."""
    path = run_dir / META_FILE
    meta = json.loads(path.read_text()) if path.exists() else {}
    meta.update(updates)
    meta["schema_version"] = SCHEMA_VERSION
    meta["files"] = sorted(p.name for p in run_dir.glob("*.csv"))
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


class ResultsWriter:
    """The matrix's files: rows and hits."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=False)
        self._rows = TableWriter(run_dir / RESULTS_FILE, Row)
        self._hits = TableWriter(run_dir / HITS_FILE, HitRow)

    @property
    def row_count(self) -> int:
        return self._rows.count

    @property
    def hit_count(self) -> int:
        return self._hits.count

    def add(self, row: Row) -> None:
        self._rows.add(row)

    def add_hit(self, hit: HitRow) -> None:
        self._hits.add(hit)

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_meta(self.run_dir, meta)

    def close(self) -> None:
        self._rows.close()
        self._hits.close()


def resolve_run_dir(path: str | os.PathLike[str], file: str = META_FILE) -> Path:
    """A run folder, or a results folder (then its newest run that has `file`)."""
    path = Path(path)
    if (path / file).exists():
        return path
    runs = sorted(p for p in path.iterdir() if (p / file).exists() and p.name != "reference")
    if not runs:
        raise FileNotFoundError(f"no run folder with {file} under {path}")
    return runs[-1]


def load_results(path: str | os.PathLike[str], table: str = "rows") -> Any:
    """Load a run's table ('rows', 'hits' or 'bench') into a typed pandas DataFrame."""
    import pandas as pd

    if table not in _TABLES:
        raise ValueError(f"table must be one of {', '.join(_TABLES)}, got {table!r}")
    name, dtypes = _TABLES[table]
    run_dir = resolve_run_dir(path, name)
    frame = pd.read_csv(run_dir / name, dtype=dtypes, keep_default_na=False)
    meta = json.loads((run_dir / META_FILE).read_text()) if (run_dir / META_FILE).exists() else {}
    frame.attrs["meta"] = meta
    return frame
