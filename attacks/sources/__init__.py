"""Memory sources: where the bytes an attack scans come from."""

from ._base import PAGE, Chunk, MemorySource, ReadStats
from ._regions import Region, parse_maps, read_regions
from .file import FileSource
from .proc_mem import ProcessGoneError, ProcMemSource

__all__ = [
    "PAGE",
    "Chunk",
    "FileSource",
    "MemorySource",
    "ProcMemSource",
    "ProcessGoneError",
    "ReadStats",
    "Region",
    "parse_maps",
    "read_regions",
]
