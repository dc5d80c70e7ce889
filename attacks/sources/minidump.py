"""A minidump (lldb's `process save-core` on Linux, Breakpad/Crashpad, Windows) scanned at
virtual addresses.

The `minidump` package (skelsec's) parses the streams: the memory list (Memory64List for
full dumps, else MemoryList) gives each range's virtual address, size and file offset, and
the module list names the ranges that fall inside a loaded module. Bytes are read straight
from the file at those offsets and attributed to the live regions the caller passes (the
process's regions from just before the dump), else to the module, else to a region made
from the range. Overlapping ranges (a thread's stack listed twice) are read once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from minidump.minidumpfile import MinidumpFile

from ._base import Chunk, ReadStats
from ._regions import Region, RegionIndex
from .segments import CHUNK_BYTES, Segment, SegmentSource

MAGIC = b"MDMP"


class NotAMinidumpError(ValueError):
    """The file does not start with the minidump signature."""


class _DropPebError(logging.Filter):
    """The package always tries to read a Windows PEB and logs a traceback when there is
    none (every Linux minidump): that is not an error here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "minidumpfile" and record.getMessage().startswith("PEB"))


@contextmanager
def _quiet_peb() -> Iterator[None]:
    root = logging.getLogger()
    drop = _DropPebError()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


class MinidumpSource:
    name = "minidump"

    def __init__(
        self,
        path: str | os.PathLike[str],
        live_regions: list[Region] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            if handle.read(4) != MAGIC:
                raise NotAMinidumpError(f"{self.path} is not a minidump")
            handle.seek(0)
            with _quiet_peb():
                dump = MinidumpFile.parse_external(handle, str(self.path))
            listing = dump.memory_segments_64 or dump.memory_segments
            ranges = listing.memory_segments if listing is not None else []
            self.segments = [
                Segment(r.start_virtual_address, r.size, self.path, r.start_file_address)
                for r in ranges
            ]
            modules = dump.modules.modules if dump.modules is not None else []
            self.modules = sorted(
                (Region(m.baseaddress, m.endaddress, "----", path=m.name) for m in modules),
                key=lambda r: r.start,
            )
            self.memory_list = "Memory64List" if dump.memory_segments_64 else "MemoryList"
        self._modules = RegionIndex(self.modules)
        self._source = SegmentSource(self.segments, live_regions, self._module_for, chunk_bytes)

    def _module_for(self, segment: Segment, address: int) -> Region | None:
        return self._modules.find(address)

    @property
    def stats(self) -> ReadStats:
        return self._source.stats

    def ranges(self) -> list[tuple[int, int]]:
        """(start, end) of every memory range in the dump, sorted."""
        return sorted((s.address, s.end) for s in self.segments)

    def regions(self) -> list[Region]:
        return self._source.regions()

    def chunks(self) -> Iterator[Chunk]:
        return self._source.chunks()
