"""An ELF core (gdb's gcore, a kernel core) read segment by segment at virtual addresses.

pyelftools parses the program headers. Each PT_LOAD segment's file bytes are yielded at its
virtual address, attributed to the live region that held that address when the core was
taken (the caller passes the process's smaps from just before the dump), or to a region
made from the segment itself. Segments with no file bytes (excluded from the dump, e.g. by
MADV_DONTDUMP) are counted, not read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from elftools.elf.elffile import ELFFile

from ._base import Chunk, ReadStats
from ._regions import Region, RegionIndex

CHUNK_BYTES = 16 * 1024 * 1024
_PF_X, _PF_W, _PF_R = 1, 2, 4


class ElfCoreSource:
    name = "elf-core"

    def __init__(
        self,
        path: str | os.PathLike[str],
        live_regions: list[Region] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.path = Path(path)
        self._live = RegionIndex(live_regions or [])
        self._chunk_bytes = chunk_bytes
        self._stats = ReadStats()
        self.segments_dumped = 0
        self.segments_excluded = 0
        self._regions: list[Region] | None = None
        self._loads: list[tuple[int, int, int, int, int]] | None = None

    @property
    def stats(self) -> ReadStats:
        return self._stats

    def _segments(self) -> list[tuple[int, int, int, int, int]]:
        """(vaddr, offset, filesz, memsz, flags) of every PT_LOAD (parsed once: both
        `regions` and `chunks` need them)."""
        if self._loads is None:
            self._loads = self._parse_loads()
        return self._loads

    def _parse_loads(self) -> list[tuple[int, int, int, int, int]]:
        with open(self.path, "rb") as handle:
            elf = ELFFile(handle)
            if elf["e_type"] != "ET_CORE":
                raise ValueError(f"{self.path} is not an ELF core ({elf['e_type']})")
            return [
                (seg["p_vaddr"], seg["p_offset"], seg["p_filesz"], seg["p_memsz"], seg["p_flags"])
                for seg in elf.iter_segments()
                if seg["p_type"] == "PT_LOAD"
            ]

    def _region_for(self, vaddr: int, memsz: int, flags: int) -> Region:
        live = self._live.find(vaddr)
        if live is not None:
            return live
        perms = (
            "".join(
                c if flags & bit else "-" for c, bit in (("r", _PF_R), ("w", _PF_W), ("x", _PF_X))
            )
            + "p"
        )
        return Region(vaddr, vaddr + memsz, perms, path="(core segment)")

    def regions(self) -> list[Region]:
        if self._regions is None:
            self._regions = [self._region_for(v, m, f) for v, _, _, m, f in self._segments()]
        return self._regions

    def chunks(self) -> Iterator[Chunk]:
        buffer = bytearray(self._chunk_bytes)
        view = memoryview(buffer)
        with open(self.path, "rb", buffering=0) as handle:
            for vaddr, offset, filesz, memsz, flags in self._segments():
                self._stats.regions_total += 1
                if filesz == 0:
                    self.segments_excluded += 1
                    continue
                self.segments_dumped += 1
                region = self._region_for(vaddr, memsz, flags)
                done = 0
                while done < filesz:
                    want = min(len(view), filesz - done)
                    got = os.preadv(handle.fileno(), [view[:want]], offset + done)
                    if got <= 0:
                        self._stats.record_error(0, filesz - done)
                        break
                    self._stats.bytes_read += got
                    yield Chunk(region, vaddr + done, view[:got])
                    done += got
        view.release()
