"""A swap file read raw (O_DIRECT), its pages attributed to the process that was pushed out.

/proc/PID/pagemap says, for every page of a process that sits in swap, which swap area
(type, bits 0-4) and which page of it (offset, bits 5-54). `swap_slots` turns that into
{file page: (virtual address, region)} for one swap area. `SwapSource` then yields the
victim's pages at their virtual addresses, in address order (so a secret that straddles
two pages stored apart in the file is still one match), and every other page of the file
as the region "(swap, unmapped)" at `UNMAPPED_BASE + file offset`, an address above any
user address space. Every byte of the file is read once, with O_DIRECT into page-aligned
buffers: the kernel writes swap to the disk blocks directly, and a buffered read would be
served stale bytes from the page cache (seen here: zeros).
"""

from __future__ import annotations

import array
import mmap
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from ._base import PAGE, Chunk, ReadStats
from ._regions import Region

CHUNK_BYTES = 16 * 1024 * 1024
UNMAPPED_BASE = 1 << 60
UNMAPPED = "(swap, unmapped)"
PAGEMAP_PRESENT, PAGEMAP_SWAPPED = 1 << 63, 1 << 62
_SWAP_TYPE_MASK = 0x1F
_SWAP_OFFSET_MASK = (1 << 50) - 1
_PAGEMAP_BATCH = 1 << 16  # entries per read
_KERNEL_PAGES = frozenset({"[vvar]", "[vvar_vclock]", "[vsyscall]"})
ZERO_DIGEST = zlib.crc32(bytes(PAGE))


def pagemap_entries(pid: int | str, first_page: int, count: int) -> array.array[int]:
    """Raw 64-bit /proc/PID/pagemap entries of `count` pages from virtual page `first_page`.
    Swap offsets show only to CAP_SYS_ADMIN (others read them as 0)."""
    entries = array.array("Q")
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
        entries.frombytes(os.pread(pagemap.fileno(), count * 8, first_page * 8))
    return entries


def swap_entry(entry: int) -> tuple[int, int] | None:
    """(swap type, swap offset) of a pagemap entry, None if the page is not in swap."""
    if not entry & PAGEMAP_SWAPPED:
        return None
    return entry & _SWAP_TYPE_MASK, (entry >> 5) & _SWAP_OFFSET_MASK


def swap_slots(
    pid: int, regions: list[Region], swap_type: int
) -> tuple[dict[int, tuple[int, Region]], int]:
    """{page of swap area `swap_type`: (virtual address, region)} for `pid`, and how many
    of its pages sit in other swap areas. Regions whose smaps say Swap: 0 are not read."""
    slots: dict[int, tuple[int, Region]] = {}
    elsewhere = 0
    for region in regions:
        if region.name in _KERNEL_PAGES or region.swap_kb == 0:
            continue
        first, count = region.start // PAGE, region.size // PAGE
        for batch in range(0, count, _PAGEMAP_BATCH):
            entries = pagemap_entries(pid, first + batch, min(_PAGEMAP_BATCH, count - batch))
            for i, entry in enumerate(entries):
                if not entry & PAGEMAP_SWAPPED:
                    continue
                if entry & _SWAP_TYPE_MASK != swap_type:
                    elsewhere += 1
                    continue
                address = (first + batch + i) * PAGE
                slots[(entry >> 5) & _SWAP_OFFSET_MASK] = (address, region)
    return slots, elsewhere


def read_direct(path: Path, offset: int, length: int) -> bytes:
    """`length` bytes at `offset` read with O_DIRECT (both page-aligned)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    buffer = mmap.mmap(-1, length)
    try:
        got = os.preadv(fd, [buffer], offset)
        return bytes(buffer[:got])
    finally:
        buffer.close()
        os.close(fd)


class SwapSource:
    name = "swap"

    def __init__(
        self,
        path: str | os.PathLike[str],
        slots: dict[int, tuple[int, Region]],
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.path = Path(path)
        self.slots = slots
        self._chunk_bytes = max(PAGE, chunk_bytes // PAGE * PAGE)
        self._stats = ReadStats()
        # CRC32 of each attributed page as read, to tell what a slot kept between two reads
        # (change detection only, no copy of the page is kept; ~4x faster than blake2b here)
        self.digests: dict[int, int] = {}
        self._size = self.path.stat().st_size // PAGE * PAGE

    @property
    def stats(self) -> ReadStats:
        return self._stats

    def regions(self) -> list[Region]:
        held = {region.start: region for _, region in self.slots.values()}
        unmapped = Region(UNMAPPED_BASE, UNMAPPED_BASE + self._size, "----", path=UNMAPPED)
        return [*sorted(held.values(), key=lambda r: r.start), unmapped]

    def _runs(self) -> Iterator[tuple[Region, int, int, int]]:
        """(region, address, first slot, pages): pages adjacent in memory and in the file."""
        ordered = sorted((address, slot, region) for slot, (address, region) in self.slots.items())
        limit = self._chunk_bytes // PAGE
        run: list[int] | None = None  # [address, slot, pages]
        run_region: Region | None = None
        for address, slot, region in ordered:
            if (
                run is not None
                and region is run_region
                and address == run[0] + run[2] * PAGE
                and slot == run[1] + run[2]
                and run[2] < limit
            ):
                run[2] += 1
                continue
            if run is not None and run_region is not None:
                yield run_region, run[0], run[1], run[2]
            run, run_region = [address, slot, 1], region
        if run is not None and run_region is not None:
            yield run_region, run[0], run[1], run[2]

    def _unattributed(self) -> Iterator[tuple[int, int]]:
        """(offset, length) runs of file pages no victim page sits in, each <= a chunk."""
        limit = self._chunk_bytes // PAGE
        start = None
        for page in range(self._size // PAGE + 1):
            taken = page == self._size // PAGE or page in self.slots
            if start is not None and (taken or page - start == limit):
                yield start * PAGE, (page - start) * PAGE
                start = None
            if not taken and start is None:
                start = page

    def _read(self, fd: int, view: memoryview, offset: int) -> int:
        try:
            got = os.preadv(fd, [view], offset)
        except OSError as exc:
            self._stats.record_error(exc.errno or 0, len(view))
            return 0
        if got < len(view):
            self._stats.record_error(0, len(view) - got)  # '0': short read without an errno
        self._stats.bytes_read += got
        return got

    def chunks(self) -> Iterator[Chunk]:
        regions = self.regions()
        self._stats.regions_total = len(regions)
        unmapped = regions[-1]
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        buffer = mmap.mmap(-1, self._chunk_bytes)  # page-aligned, as O_DIRECT wants
        view = memoryview(buffer)
        try:
            # the victim's pages, at their virtual addresses
            for region, address, slot, pages in self._runs():
                got = self._read(fd, view[: pages * PAGE], slot * PAGE)
                for i in range(got // PAGE):
                    page = view[i * PAGE : (i + 1) * PAGE]
                    self.digests[slot + i] = zlib.crc32(page)
                if got:
                    yield Chunk(region, address, view[:got])
            # everything else in the file, at UNMAPPED_BASE + offset
            for offset, length in self._unattributed():
                got = self._read(fd, view[:length], offset)
                if got:
                    yield Chunk(unmapped, UNMAPPED_BASE + offset, view[:got])
        finally:
            view.release()  # the mmap goes with the last chunk the consumer still holds
            os.close(fd)
