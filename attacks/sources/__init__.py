"""Memory sources: where the bytes an attack scans come from."""

from ._base import PAGE, Chunk, MemorySource, ReadStats
from ._regions import Region, parse_maps, read_regions
from .elf_core import ElfCoreSource
from .file import FileSource
from .proc_mem import ProcessGoneError, ProcMemSource
from .swap import SwapSource
from .vm_readv import VmReadvSource

__all__ = [
    "PAGE",
    "Chunk",
    "ElfCoreSource",
    "FileSource",
    "MemorySource",
    "ProcMemSource",
    "ProcessGoneError",
    "ReadStats",
    "Region",
    "SwapSource",
    "VmReadvSource",
    "parse_maps",
    "read_regions",
]
