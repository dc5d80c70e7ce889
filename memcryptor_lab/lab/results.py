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

SCHEMA_VERSION = 1
RESULTS_FILE = "results.csv"
HITS_FILE = "hits.csv"
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


# field annotations are strings here (postponed evaluation)
_PANDAS_TYPES = {"int": "int64", "float": "float64", "str": "string", "bool": "boolean"}


def _dtypes(cls: type) -> dict[str, str]:
    return {f.name: _PANDAS_TYPES[str(f.type)] for f in fields(cls)}


ROW_DTYPES = _dtypes(Row)
HIT_DTYPES = _dtypes(HitRow)


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


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ("memcryptor-lab", "cryptography", "hyperscan", "psutil", "pandas", "rich"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class ResultsWriter:
    """Writes rows as they come (a partial run still leaves readable files)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=False)
        self._files = []
        self._rows = self._open(RESULTS_FILE, Row)
        self._hits = self._open(HITS_FILE, HitRow)
        self.row_count = 0
        self.hit_count = 0

    def _open(self, name: str, cls: type) -> csv.DictWriter[str]:
        handle = open(self.run_dir / name, "w", newline="")  # noqa: SIM115 - closed in close()
        self._files.append(handle)
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(cls)])
        writer.writeheader()
        return writer

    def add(self, row: Row) -> None:
        self._rows.writerow(dataclasses.asdict(row))
        self.row_count += 1

    def add_hit(self, hit: HitRow) -> None:
        self._hits.writerow(dataclasses.asdict(hit))
        self.hit_count += 1

    def write_meta(self, meta: dict[str, Any]) -> None:
        meta = {
            "schema_version": SCHEMA_VERSION,
            **meta,
            "files": {"rows": RESULTS_FILE, "hits": HITS_FILE},
        }
        (self.run_dir / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def close(self) -> None:
        for handle in self._files:
            handle.close()


def resolve_run_dir(path: str | os.PathLike[str]) -> Path:
    """A run folder, or a results folder (then its newest run)."""
    path = Path(path)
    if (path / RESULTS_FILE).exists():
        return path
    runs = sorted(
        p for p in path.iterdir() if (p / RESULTS_FILE).exists() and p.name != "reference"
    )
    if not runs:
        raise FileNotFoundError(f"no run folder with {RESULTS_FILE} under {path}")
    return runs[-1]


def load_results(path: str | os.PathLike[str], table: str = "rows") -> Any:
    """Load a run's rows (or hits, with table='hits') into a typed pandas DataFrame."""
    import pandas as pd

    run_dir = resolve_run_dir(path)
    name, dtypes = (RESULTS_FILE, ROW_DTYPES) if table == "rows" else (HITS_FILE, HIT_DTYPES)
    frame = pd.read_csv(run_dir / name, dtype=dtypes, keep_default_na=False)
    meta = json.loads((run_dir / META_FILE).read_text()) if (run_dir / META_FILE).exists() else {}
    frame.attrs["meta"] = meta
    return frame
