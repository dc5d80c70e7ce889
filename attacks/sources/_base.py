"""What every memory source yields: contiguous chunks of bytes, each inside one region."""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ._regions import Region

PAGE = 4096


@dataclass(slots=True)
class Chunk:
    """`data` is valid only until the source yields the next chunk."""

    region: Region
    address: int
    data: memoryview


@dataclass(slots=True)
class ReadStats:
    """Everything a reader could not read is counted here, never hidden."""

    regions_total: int = 0
    regions_unreadable: int = 0
    regions_partial: int = 0
    bytes_read: int = 0
    bytes_unreadable: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # regions that refused some or all of their bytes: (region, bytes refused)
    refused: list[tuple[Region, int]] = field(default_factory=list)

    def record_error(self, err: int, nbytes: int) -> None:
        self.errors[errno.errorcode.get(err, str(err))] += 1
        self.bytes_unreadable += nbytes

    def errors_text(self) -> str:
        """'EIO:3;EFAULT:1', stable order; '' when nothing failed."""
        return ";".join(f"{k}:{v}" for k, v in sorted(self.errors.items()))


class MemorySource(Protocol):
    name: str

    def regions(self) -> list[Region]: ...

    def chunks(self) -> Iterator[Chunk]: ...

    @property
    def stats(self) -> ReadStats: ...
