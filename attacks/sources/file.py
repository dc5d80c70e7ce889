"""Any file (a dump, a core, a swap copy, an image) read as one region of file offsets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ._base import Chunk, ReadStats
from ._regions import Region

CHUNK_BYTES = 16 * 1024 * 1024


class FileSource:
    name = "file"

    def __init__(self, path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = Path(path)
        self._chunk_bytes = chunk_bytes
        self._stats = ReadStats()

    @property
    def stats(self) -> ReadStats:
        return self._stats

    def regions(self) -> list[Region]:
        size = self.path.stat().st_size
        return [Region(start=0, end=size, perms="----", path=str(self.path))]

    def chunks(self) -> Iterator[Chunk]:
        (region,) = self.regions()
        self._stats.regions_total = 1
        buffer = bytearray(self._chunk_bytes)
        view = memoryview(buffer)
        with open(self.path, "rb", buffering=0) as handle:
            offset = 0
            while True:
                got = handle.readinto(view)
                if not got:
                    break
                self._stats.bytes_read += got
                yield Chunk(region, offset, view[:got])
                offset += got
        view.release()
