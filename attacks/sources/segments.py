"""A file holding pieces of a process's memory back to back, each at a known address.

Written by an attack that had the memory copied out piece by piece (an injected `write`,
a debugger's `memory read` per region): `segments` says where each piece came from.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._base import Chunk, ReadStats
from ._regions import Region

CHUNK_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Segment:
    address: int
    file_offset: int
    length: int


class SegmentFileSource:
    name = "segment-file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        segments: list[Segment],
        live_regions: list[Region],
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.path = Path(path)
        self.segments = sorted(segments, key=lambda s: s.address)
        self._live = sorted(live_regions, key=lambda r: r.start)
        self._starts = [r.start for r in self._live]
        self._chunk_bytes = chunk_bytes
        self._stats = ReadStats()

    @property
    def stats(self) -> ReadStats:
        return self._stats

    def _region_for(self, address: int, length: int) -> Region:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and address < self._live[i].end:
            return self._live[i]
        return Region(address, address + length, "----", path="(copied out)")

    def regions(self) -> list[Region]:
        return [self._region_for(s.address, s.length) for s in self.segments]

    def chunks(self) -> Iterator[Chunk]:
        buffer = bytearray(self._chunk_bytes)
        view = memoryview(buffer)
        with open(self.path, "rb", buffering=0) as handle:
            for segment in self.segments:
                self._stats.regions_total += 1
                region = self._region_for(segment.address, segment.length)
                done = 0
                while done < segment.length:
                    want = min(len(view), segment.length - done)
                    got = os.preadv(handle.fileno(), [view[:want]], segment.file_offset + done)
                    if got <= 0:
                        self._stats.record_error(0, segment.length - done)
                        break
                    self._stats.bytes_read += got
                    yield Chunk(region, segment.address + done, view[:got])
                    done += got
        view.release()
