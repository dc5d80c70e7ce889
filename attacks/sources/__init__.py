"""Memory sources: where the bytes an attack scans come from."""

from ._base import PAGE, Chunk, MemorySource, ReadStats
from ._regions import Region, RegionIndex, parse_maps, read_regions
from .elf_core import ElfCoreSource
from .file import FileSource
from .live import live_regions
from .minidump import MinidumpSource, NotAMinidumpError
from .proc_mem import ProcessGoneError, ProcMemSource
from .segments import Segment, SegmentSource
from .swap import SwapSource
from .vm_readv import VmReadvSource

__all__ = [
    "PAGE",
    "Chunk",
    "ElfCoreSource",
    "FileSource",
    "MemorySource",
    "MinidumpSource",
    "NotAMinidumpError",
    "ProcMemSource",
    "ProcessGoneError",
    "ReadStats",
    "Region",
    "RegionIndex",
    "Segment",
    "SegmentSource",
    "SwapSource",
    "VmReadvSource",
    "live_regions",
    "parse_maps",
    "read_regions",
]
