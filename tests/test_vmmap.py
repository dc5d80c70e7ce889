"""The macOS vmmap parser on fixtures laid out like recorded outputs (macOS 10.10 to 26)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from attacks.sources._vmmap import VmmapError, page_size, parse_vmmap, size_bytes

FIXTURES = Path(__file__).parent / "fixtures" / "vmmap"
ALL = sorted(FIXTURES.glob("*.txt"))


def _load(name: str) -> str:
    return (FIXTURES / name).read_text()


def _region_lines(text: str) -> int:
    """Lines inside region sections that carry an address range (what must be parsed)."""
    count, inside = 0, False
    for line in text.splitlines():
        if line.startswith("===="):
            inside = "regions" in line
        elif inside and "SM=" in line and "unmapped-unmapped" not in line:
            count += 1
    return count


def test_there_are_fixtures_from_several_macos_versions() -> None:
    assert len(ALL) >= 5 and (FIXTURES / "README.md").exists()


@pytest.mark.parametrize("fixture", ALL, ids=lambda p: p.stem)
def test_every_region_line_is_parsed_and_nothing_else(fixture: Path) -> None:
    text = fixture.read_text()
    regions = parse_vmmap(text)
    submaps = sum(1 for line in text.splitlines() if line.startswith("Submap "))
    assert len(regions) == _region_lines(text) - submaps
    assert regions == sorted(regions, key=lambda r: (r.start, r.end))
    for r in regions:
        assert 0 < r.start < r.end < 1 << 64
        assert len(r.perms) == 4 and r.perms[3] in "ps"
        assert r.extra["type"] and r.extra["max"] and r.extra["share_mode"]
        assert r.path.startswith("/") or r.path == f"[{r.extra['type']}]"


def test_modern_wide_report_fields() -> None:
    text = _load("macos-14.6-x86_64-wide.txt")
    regions = parse_vmmap(text)
    assert page_size(text) == 4096
    text_seg = regions[0]
    assert (text_seg.start, text_seg.end) == (0x104C2E000, 0x104C2F000)
    assert text_seg.perms == "r-xp" and text_seg.extra["max"] == "r-x"
    assert text_seg.path == "/Users/lab/memlab/.venv/bin/memlab-victim"
    assert text_seg.rss_kb == 4 and text_seg.swap_kb == 0
    guard = next(r for r in regions if r.extra["type"] == "STACK GUARD")
    assert guard.perms == "---p" and guard.extra["share_mode"] == "NUL"
    assert guard.extra["detail"] == "stack guard for thread 0" and guard.path == "[STACK GUARD]"
    assert guard.size == 56 << 20
    shared = next(r for r in regions if r.extra["type"] == "shared memory")
    assert shared.perms == "r--s" and shared.path == "[shared memory]"
    # shared-cache segments split per library: not page-aligned, sizes in bytes
    blocks = next(r for r in regions if r.path.endswith("libsystem_blocks.dylib"))
    assert blocks.start % 4096 and blocks.size == 1344 and blocks.rss_kb == 1
    unused = [r for r in regions if r.extra["type"].startswith("unused ")]
    assert {r.extra["type"] for r in unused} == {"unused __TEXT", "unused __DATA"}
    heap = next(r for r in regions if r.extra["type"] == "MALLOC_NANO")
    assert heap.start == 0x600000000000 and heap.extra["detail"].startswith("DefaultMallocZone")
    # the summary tables after the regions are not regions
    assert not any(r.extra["type"] in ("TOTAL", "REGION TYPE") for r in regions)


def test_arm64e_interleaved_report_quirks() -> None:
    text = _load("macos-26-arm64e-interleaved.txt")
    regions = parse_vmmap(text)
    assert page_size(text) == 16384
    types = {r.extra["type"] for r in regions}
    assert {"AttributeGraph Data (old", "IOAccelerator", "IOAccelerator (graphics)"} <= types
    assert "Memory Tag 22" in types and "owned unmapped (graphics)" not in types
    tracing = next(r for r in regions if r.extra["type"] == "Activity Tracing")
    assert tracing.extra["purge"] == "N" and tracing.perms == "rw-s" and tracing.swap_kb == 16
    graphics = next(r for r in regions if r.extra["type"] == "IOAccelerator (graphics)")
    assert graphics.extra["purge"] == "N" and graphics.extra["detail"] == ""
    dyld = next(r for r in regions if r.extra["type"] == "dyld private memory")
    assert dyld.perms == "---p" and dyld.extra["max"] == "---"
    spaced = next(r for r in regions if "Keyboard Layouts" in r.path)
    assert spaced.path.endswith("/InfoPlist.loctable")


def test_submap_lines_are_not_regions_of_their_own() -> None:
    regions = parse_vmmap(_load("macos-15-x86_64-wide.txt"))
    commpage = [r for r in regions if r.start == 0x7FFFFFE00000]
    assert [r.extra["type"] for r in commpage] == ["shared memory"]
    starts = [r.start for r in regions]
    assert len(starts) == len(set(starts))


def test_legacy_reports_have_one_size_column_and_cut_details() -> None:
    regions = parse_vmmap(_load("macos-10.10-x86_64.txt"))
    assert all(r.rss_kb is None for r in regions)
    assert any(r.extra["detail"].startswith("...") for r in regions)
    assert any(r.extra["share_mode"] == "ZER" for r in regions)
    old = parse_vmmap(_load("macos-10.13-x86_64-writable.txt"))
    assert all(r.perms[1] == "w" for r in old)  # the writable section only
    empty = next(r for r in old if r.extra["type"] == "MALLOC_SMALL (empty)")
    assert empty.size == 8 << 20 and empty.rss_kb == 12


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0K", 0),
        ("1344", 1344),
        ("4K", 4096),
        ("10.7M", int(10.7 * 2**20)),
        ("1.2G", int(1.2 * 2**30)),
    ],
)
def test_size_cells(text: str, expected: int) -> None:
    assert size_bytes(text) == expected


def test_no_sections_no_regions() -> None:
    assert parse_vmmap("vmmap: no process\n") == []
    assert issubclass(VmmapError, RuntimeError)


@pytest.mark.skipif(sys.platform != "darwin", reason="vmmap exists on macOS only")
def test_vmmap_of_this_process() -> None:  # pragma: no cover - macOS only
    import os

    from attacks.sources._vmmap import vmmap_regions

    regions = vmmap_regions(os.getpid())
    assert any(r.extra["type"] == "Stack" for r in regions)
