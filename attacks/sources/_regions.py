"""Memory regions of a live process, from /proc/PID/smaps (or maps when smaps is refused)."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_HEADER = re.compile(
    r"^(?P<start>[0-9a-f]+)-(?P<end>[0-9a-f]+)\s+(?P<perms>\S{4})\s+(?P<offset>[0-9a-f]+)\s+"
    r"(?P<dev>\S+)\s+(?P<inode>\d+)\s*(?P<path>.*)$"
)
_KB_FIELDS = {"Rss": "rss_kb", "Swap": "swap_kb", "Locked": "locked_kb"}


@dataclass(frozen=True, slots=True)
class Region:
    """One mapping. For files and images, `start` is a file offset and `perms` is '----'."""

    start: int
    end: int
    perms: str = "----"
    offset: int = 0
    dev: str = "00:00"
    inode: int = 0
    path: str = ""
    vmflags: tuple[str, ...] = ()
    rss_kb: int | None = None
    swap_kb: int | None = None
    locked_kb: int | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def name(self) -> str:
        """The path or pseudo-name ([heap], [stack], ...); '[anon]' for unnamed anonymous."""
        return self.path or "[anon]"

    @property
    def anonymous(self) -> bool:
        return self.inode == 0 and not self.path.startswith("/")

    @property
    def readable(self) -> bool:
        return self.perms[:1] == "r"

    def describe(self) -> str:
        """'name perms [flags]', with only the flags a reviewer cares about (dd, lo, ...)."""
        interesting = [f for f in self.vmflags if f in {"dd", "lo", "wf", "io", "pf"}]
        flags = f" {','.join(interesting)}" if interesting else ""
        return f"{self.name} {self.perms}{flags}"


class RegionIndex:
    """Regions sorted by start, looked up by address: every source that attributes bytes
    to the live regions (cores, minidumps, segment files, scanner hits) asks one of these."""

    def __init__(self, regions: Iterable[Region]) -> None:
        self.regions = sorted(regions, key=lambda r: r.start)
        self._starts = [r.start for r in self.regions]

    def find(self, address: int) -> Region | None:
        """The region holding `address`, or None."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and address < self.regions[i].end:
            return self.regions[i]
        return None


def parse_maps(text: str) -> list[Region]:
    """Parse /proc/PID/smaps or /proc/PID/maps text."""
    regions: list[Region] = []
    current: dict[str, object] | None = None

    def flush() -> None:
        if current is not None:
            regions.append(Region(**current))  # type: ignore[arg-type]

    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            flush()
            current = {
                "start": int(m["start"], 16),
                "end": int(m["end"], 16),
                "perms": m["perms"],
                "offset": int(m["offset"], 16),
                "dev": m["dev"],
                "inode": int(m["inode"]),
                "path": m["path"].strip(),
            }
            continue
        if current is None or ":" not in line:
            continue
        key, _, value = line.partition(":")
        if key == "VmFlags":
            current["vmflags"] = tuple(value.split())
        elif key in _KB_FIELDS:
            current[_KB_FIELDS[key]] = int(value.split()[0])
    flush()
    return regions


def read_regions(pid: int, proc: Path = Path("/proc")) -> tuple[list[Region], str]:
    """Regions of `pid` and which file they came from ('smaps', or 'maps' if smaps failed)."""
    try:
        return parse_maps((proc / str(pid) / "smaps").read_text()), "smaps"
    except PermissionError:
        return parse_maps((proc / str(pid) / "maps").read_text()), "maps"
