"""macOS: the regions of a live process from `vmmap -wide PID`, as `Region`s.

Tested here on fixtures only (tests/fixtures/vmmap/, laid out like vmmap outputs recorded
on macOS 10.10 to 26, x86-64 and arm64e): these machines run Linux, so `vmmap_regions`
itself has never run in this project's CI.

What the parser relies on, seen across those versions:
- region lines sit between a '==== Non-writable regions', '==== Writable regions' or
  '==== regions for process' header and the next '====' line (Legend, Summary);
- a line is `TYPE START-END [SIZES] CUR/MAX SM=MODE [PURGE=X] [DETAIL]`; the type column
  has spaces ('MALLOC guard page'), qualifiers ('MALLOC_SMALL (empty)') and may be cut
  short ('AttributeGraph Data (old') or push the addresses right, so lines are matched on
  the address range, not on column positions;
- addresses are 9 to 16 hex digits, not always page-aligned (the shared cache is split per
  library); SIZES has one column (VSIZE, old releases) or four (VSIZE RSDNT DIRTY SWAP),
  each in bytes ('1344'), K, M or G;
- 'Submap' lines describe a container whose contents follow on their own lines (same
  range): they are skipped, as are lines without addresses ('unmapped-unmapped').

Each Region gets `perms` = the current protection plus 's' for shared modes (SHM, ALI,
S/A) or 'p'; `path` = the detail when it is a file, else '[TYPE]'; and in `extra`: type,
max protection, share mode, purge mode and detail.
"""

from __future__ import annotations

import re
import subprocess

from ._regions import Region

VMMAP = "/usr/bin/vmmap"
_SECTION = re.compile(r"^==== (?:Non-writable regions|Writable regions|regions) for process")
_LINE = re.compile(
    r"^\s*(?P<type>\S.*?)\s+"
    r"(?:0x)?(?P<start>[0-9a-fA-F]{1,16})-(?:0x)?(?P<end>[0-9a-fA-F]{1,16})\s+"
    r"\[(?P<sizes>[^\]]*)\]\s+"
    r"(?P<cur>[-rwx]{3})/(?P<max>[-rwx]{3})\s+SM=(?P<sm>\S+)"
    r"(?:\s+PURGE=(?P<purge>\S+))?"
    r"(?:\s+(?P<detail>.*?))?\s*$"
)
_SIZE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>[KMG]?)$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
SHARED_MODES = frozenset({"SHM", "ALI", "S/A"})


class VmmapError(RuntimeError):
    """vmmap ran but did not list the process; the message has vmmap's own words."""


def size_bytes(text: str) -> int | None:
    """'1344' -> 1344, '4K' -> 4096, '10.7M' -> 11219763; None for anything else."""
    match = _SIZE.match(text.strip())
    if match is None:
        return None
    return int(float(match["number"]) * _UNITS[match["unit"]])


def _kb(text: str | None) -> int | None:
    value = size_bytes(text) if text is not None else None
    return None if value is None else value // 1024


def parse_vmmap(text: str) -> list[Region]:
    """Every region of a `vmmap [-wide] [-interleaved] PID` report, sorted by address."""
    regions: list[Region] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("===="):
            inside = bool(_SECTION.match(line))
            continue
        if not inside:
            continue
        match = _LINE.match(line)
        if match is None:
            continue  # the column header, blank lines, 'unmapped-unmapped' ones
        kind = match["type"].strip()
        if kind == "Submap":
            continue
        detail = (match["detail"] or "").strip()
        sizes = match["sizes"].split()
        sm = match["sm"]
        regions.append(
            Region(
                start=int(match["start"], 16),
                end=int(match["end"], 16),
                perms=match["cur"] + ("s" if sm in SHARED_MODES else "p"),
                path=detail if detail.startswith("/") else f"[{kind}]",
                rss_kb=_kb(sizes[1]) if len(sizes) >= 4 else None,
                swap_kb=_kb(sizes[3]) if len(sizes) >= 4 else None,
                extra={
                    "type": kind,
                    "max": match["max"],
                    "share_mode": sm,
                    "purge": match["purge"] or "",
                    "detail": detail,
                },
            )
        )
    regions.sort(key=lambda r: (r.start, r.end))
    return regions


def page_size(text: str) -> int | None:
    """The report's 'VM page size:  16384 bytes', if it says."""
    match = re.search(r"^VM page size:\s+(\d+) bytes", text, re.MULTILINE)
    return int(match[1]) if match else None


def vmmap_regions(pid: int, timeout: float = 120) -> list[Region]:
    """Run `vmmap -wide PID` and parse it. ProcessLookupError when the process is gone."""
    done = subprocess.run(
        [VMMAP, "-wide", str(pid)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    regions = parse_vmmap(done.stdout) if done.returncode == 0 else []
    if regions:
        return regions
    import psutil

    if not psutil.pid_exists(pid):
        raise ProcessLookupError(f"process {pid} does not exist")
    said = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    raise VmmapError(f"vmmap -wide {pid} listed no regions ({done.returncode}): {said[0][:200]}")
