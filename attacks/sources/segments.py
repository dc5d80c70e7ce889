"""Memory saved as file segments (a debugger's reads, a core's memory list) scanned at the
virtual addresses they came from.

Each `Segment` says where its bytes sit in which file and which address they were read
from. Chunks are attributed to the live region that held the address when the memory was
taken (the caller passes the process's regions from just before), else to what the caller's
`fallback` names (a minidump's module, say), else to a region made from the segment.
Chunks never cross a region boundary; bytes covered by an earlier segment are not read
again (a core may list a thread's stack twice).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ._base import Chunk, ReadStats
from ._regions import Region, RegionIndex

CHUNK_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Segment:
    address: int
    length: int
    path: Path
    offset: int = 0  # where the bytes start in `path`

    @property
    def end(self) -> int:
        return self.address + self.length


class SegmentSource:
    name = "segments"

    def __init__(
        self,
        segments: list[Segment],
        live_regions: list[Region] | None = None,
        fallback: Callable[[Segment, int], Region | None] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.segments = sorted(segments, key=lambda s: (s.address, -s.length))
        self._live = RegionIndex(live_regions or [])
        self._fallback = fallback
        self._chunk_bytes = chunk_bytes
        self._stats = ReadStats()

    @property
    def stats(self) -> ReadStats:
        return self._stats

    def region_for(self, segment: Segment, address: int) -> Region:
        live = self._live.find(address)
        if live is not None:
            return live
        named = self._fallback(segment, address) if self._fallback is not None else None
        if named is not None and named.start <= address < named.end:
            return named
        return Region(segment.address, segment.end, "----", path="(segment)")

    def regions(self) -> list[Region]:
        found: dict[int, Region] = {r.start: r for r in self._live.regions}
        for segment in self.segments:
            address = segment.address
            while address < segment.end:
                region = self.region_for(segment, address)
                found.setdefault(region.start, region)
                address = min(region.end, segment.end) if region.end > address else segment.end
        return sorted(found.values(), key=lambda r: r.start)

    def chunks(self) -> Iterator[Chunk]:
        buffer = bytearray(self._chunk_bytes)
        view = memoryview(buffer)
        covered = 0  # highest address yielded so far
        handles: dict[Path, int] = {}
        try:
            for segment in self.segments:
                self._stats.regions_total += 1
                address = max(segment.address, covered)
                while address < segment.end:
                    region = self.region_for(segment, address)
                    stop = min(segment.end, region.end if region.end > address else segment.end)
                    want = min(len(view), stop - address)
                    fd = handles.get(segment.path)
                    if fd is None:
                        fd = handles[segment.path] = os.open(segment.path, os.O_RDONLY)
                    got = os.preadv(fd, [view[:want]], segment.offset + address - segment.address)
                    if got <= 0:  # the file is shorter than the segment says
                        self._stats.record_error(0, segment.end - address)
                        break
                    self._stats.bytes_read += got
                    yield Chunk(region, address, view[:got])
                    address += got
                covered = max(covered, segment.end)
        finally:
            view.release()
            for fd in handles.values():
                os.close(fd)
