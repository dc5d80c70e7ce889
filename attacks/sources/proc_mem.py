"""Read a live process through /proc/PID/mem, every region, PROT_NONE ones included.

/proc/PID/mem reads with FOLL_FORCE, so permissions do not stop a privileged reader; what
fails (vvar pages, memfd_secret pages, guard pages) is counted per errno, page by page.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ._base import PAGE, Chunk, ReadStats
from ._regions import Region, read_regions

CHUNK_BYTES = 16 * 1024 * 1024
_SIGNED_LIMIT = 1 << 63


class ProcessGoneError(OSError):
    """The target exited while it was being read."""


class ProcMemSource:
    name = "proc-mem"

    def __init__(self, pid: int, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.pid = pid
        self._chunk_bytes = chunk_bytes
        self._stats = ReadStats()
        self._regions: list[Region] | None = None
        self.region_source = ""

    @property
    def stats(self) -> ReadStats:
        return self._stats

    def regions(self) -> list[Region]:
        if self._regions is None:
            try:
                self._regions, self.region_source = read_regions(self.pid)
            except FileNotFoundError:
                raise ProcessGoneError(f"process {self.pid} does not exist") from None
        return self._regions

    def _open(self) -> int:
        return os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)

    def _close(self, handle: int) -> None:
        os.close(handle)

    def _read_at(self, handle: int, target: memoryview, address: int) -> int:
        return _read_at(handle, target, address)

    def chunks(self) -> Iterator[Chunk]:
        regions = self.regions()
        fd = self._open()
        buffer = bytearray(self._chunk_bytes)
        view = memoryview(buffer)
        try:
            for region in regions:
                self._stats.regions_total += 1
                before = self._stats.bytes_read
                yield from self._read_region(fd, region, view)
                got = self._stats.bytes_read - before
                if got < region.size:
                    self._stats.refused.append((region, region.size - got))
                if got == 0:
                    self._stats.regions_unreadable += 1
                elif got < region.size:
                    self._stats.regions_partial += 1
        finally:
            view.release()
            self._close(fd)

    def _read_region(self, fd: int, region: Region, view: memoryview) -> Iterator[Chunk]:
        address = region.start
        while address < region.end:
            want = min(len(view), region.end - address)
            try:
                got = self._read_at(fd, view[:want], address)
            except OSError:
                # Salvage page by page: one bad page must not hide the rest of the chunk.
                yield from self._read_pages(fd, region, view, address, address + want)
                address += want
                continue
            if got:
                self._stats.bytes_read += got
                yield Chunk(region, address, view[:got])
            if got < want:
                yield from self._read_pages(fd, region, view, address + got, address + want)
            address += want

    def _read_pages(
        self, fd: int, region: Region, view: memoryview, start: int, end: int
    ) -> Iterator[Chunk]:
        page = view[:PAGE]
        for address in range(start, end, PAGE):
            size = min(PAGE, end - address)
            try:
                got = self._read_at(fd, page[:size], address)
            except OSError as exc:
                self._stats.record_error(exc.errno or 0, size)
                continue
            if got < size:
                self._stats.record_error(0, size - got)  # '0': short read without an errno
            if got:
                self._stats.bytes_read += got
                yield Chunk(region, address, page[:got])


def _read_at(fd: int, target: memoryview, address: int) -> int:
    """pread for addresses that fit a signed off_t; lseek to a negative offset otherwise.

    /proc/PID/mem accepts unsigned offsets through lseek ([vsyscall] sits at 0xffffffffff600000).
    """
    if address < _SIGNED_LIMIT:
        return os.preadv(fd, [target], address)
    os.lseek(fd, address - (1 << 64), os.SEEK_SET)
    return os.readv(fd, [target])
