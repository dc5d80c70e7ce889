"""MinidumpSource on a real lldb minidump, and SegmentSource's address bookkeeping."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Holder, needs_root

from attacks import ATTACKS
from attacks.scan import FULL, NeedleSet, Scanner, Secret
from attacks.sources import (
    MinidumpSource,
    NotAMinidumpError,
    Region,
    Segment,
    SegmentSource,
    read_regions,
)

MISSING = ATTACKS["lldb-core"].supported()


@pytest.fixture
def lldb_minidump(holder: Holder, tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("reads another process's memory: run as root")
    if MISSING is not None:
        pytest.skip(f"lldb unavailable: {MISSING}")
    from attacks._lldb import find_lldb, run_helper

    report = run_helper(find_lldb(), holder.pid, tmp_path, core=True)
    assert report.detached and report.core, report.error
    yield tmp_path / report.core
    (tmp_path / report.core).unlink()  # it holds the holder's memory


@needs_root()
def test_a_real_lldb_minidump_is_read_at_virtual_addresses(
    holder: Holder, lldb_minidump: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live, _ = read_regions(holder.pid)
    with caplog.at_level(logging.DEBUG):
        source = MinidumpSource(lldb_minidump, live)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no PEB noise
    assert source.memory_list in ("MemoryList", "Memory64List")
    assert len(source.segments) > 10
    assert all(s.path == lldb_minidump for s in source.segments)
    heap = next(r for r in live if r.name == "[heap]")
    assert any(start <= heap.start < end for start, end in source.ranges())
    assert any(m.path.endswith("libc.so.6") for m in source.modules)

    hits = Scanner(NeedleSet([Secret("plaintext", holder.marker)])).scan(source)
    full = [h for h in hits if h.form == FULL and h.encoding == "raw"]
    assert full and {h.region.name for h in full} <= {"[anon]", "[heap]"}
    assert source.stats.bytes_read <= lldb_minidump.stat().st_size


@needs_root()
def test_without_live_regions_ranges_are_named_by_module(lldb_minidump: Path) -> None:
    source = MinidumpSource(lldb_minidump)
    named = {c.region.path for c in source.chunks()}
    assert any(name.endswith("libc.so.6") for name in named)  # inside a loaded module
    assert "(segment)" in named  # heap and anonymous memory belong to no module


def test_a_file_that_is_not_a_minidump_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "core"
    path.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(NotAMinidumpError):
        MinidumpSource(path)


def test_segments_are_read_once_and_chunks_stay_inside_regions(tmp_path: Path) -> None:
    data = os.urandom(3 * 4096)
    path = tmp_path / "seg"
    path.write_bytes(b"HEAD" + data)
    base = 0x7F0000000000
    live = [Region(base, base + 4096, "rw-p"), Region(base + 4096, base + 3 * 4096, "r--p")]
    segments = [
        Segment(base, 3 * 4096, path, offset=4),
        Segment(base + 4096, 4096, path, offset=4 + 4096),  # listed again: read once
    ]
    source = SegmentSource(segments, live, chunk_bytes=8192)
    chunks = [(c.region.start, c.address, bytes(c.data)) for c in source.chunks()]
    assert [(r, a) for r, a, _ in chunks] == [
        (base, base),
        (base + 4096, base + 4096),
    ]
    assert b"".join(d for _, _, d in chunks) == data
    assert source.stats.bytes_read == len(data)
    assert [r.start for r in source.regions()] == [base, base + 4096]


def test_a_short_file_is_counted_not_hidden(tmp_path: Path) -> None:
    path = tmp_path / "seg"
    path.write_bytes(bytes(4096))
    source = SegmentSource([Segment(0x1000, 8192, path)])
    got = sum(len(c.data) for c in source.chunks())
    assert got == 4096
    assert source.stats.bytes_unreadable == 4096 and source.stats.errors["0"] == 1
    assert source.regions()[0].path == "(segment)"
