"""swap against real processes: a real swap file, real pageout, the file read raw.

Every test checks that it leaves the system as found: no swap area of ours, no swap file
or state file, zswap as it was.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Holder, needs_root

from attacks import BLOCKED, OK
from attacks._swap import Swap
from attacks._swapfile import STATE_FILE, ZSWAP, active_swaps, restore_swap_state, zswap_state
from attacks.scan import FULL, Hit, NeedleSet, Scanner, Secret
from attacks.sources import PAGE, Region, read_regions
from attacks.sources.swap import UNMAPPED, UNMAPPED_BASE, SwapSource

pytestmark = [
    needs_root(),
    pytest.mark.integration,
    pytest.mark.skipif(Swap.supported() is not None, reason=str(Swap.supported())),
]


def _leftovers() -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob("memlab-swap-*"))


@pytest.fixture(autouse=True)
def system_restored(tmp_path: Path) -> Iterator[None]:
    before = (active_swaps(), zswap_state())
    yield
    after = (active_swaps(), zswap_state())
    left = (STATE_FILE.exists(), _leftovers(), list(tmp_path.rglob("swapfile")))
    restore_swap_state()  # a failing test must not leave this host swapping to our file
    assert after == before
    assert left == (False, [], [])


def _scanner(marker: bytes) -> Scanner:
    return Scanner(NeedleSet([Secret("plaintext", marker), Secret("decoy", os.urandom(32))]))


def _raw_hits(hits: list[Hit], kind: str = "plaintext") -> list[Hit]:
    return [h for h in hits if h.kind == kind and h.encoding == "raw" and h.form == FULL]


def _pushed(reason: str) -> int:
    match = re.search(r"(\d+) pages pushed out", reason)
    assert match, reason
    return int(match.group(1))


def test_source_attributes_pages_and_reads_each_byte_once(tmp_path: Path) -> None:
    """A secret split across two pages stored apart in the file is one match at its virtual
    address; a copy in a page no process owns is found in '(swap, unmapped)'."""
    secret = os.urandom(32)
    pages = [bytearray(PAGE) for _ in range(8)]
    pages[5][-16:] = secret[:16]  # first half at the end of virtual page 0 ...
    pages[2][:16] = secret[16:]  # ... second half at the start of virtual page 1
    pages[7][100:132] = secret
    path = tmp_path / "pages.bin"
    path.write_bytes(b"".join(pages))
    region = Region(0x10000, 0x12000, "rw-p")
    source = SwapSource(path, {5: (0x10000, region), 2: (0x11000, region)})
    hits = _raw_hits(Scanner(NeedleSet([Secret("plaintext", secret)])).scan(source))
    assert sorted((h.address, h.region.name) for h in hits) == [
        (0x10000 + PAGE - 16, "[anon]"),
        (UNMAPPED_BASE + 7 * PAGE + 100, UNMAPPED),
    ]
    assert source.stats.bytes_read == 8 * PAGE
    assert set(source.digests) == {2, 5}


def test_plain_secret_reaches_swap_and_outlives_the_process(holder: Holder, tmp_path: Path) -> None:
    live_regions, _ = read_regions(holder.pid)
    outcome = Swap().run(holder.pid, _scanner(holder.marker), tmp_path)
    assert outcome.status == OK, outcome.reason
    assert _pushed(outcome.reason) > 0
    hits = _raw_hits(outcome.hits)
    spans = {(r.start, r.end) for r in live_regions}
    attributed = [h for h in hits if h.region is not None and h.region.path != UNMAPPED]
    assert attributed, outcome.reason  # found in swap, at the child's own address
    for h in attributed:
        assert (h.region.start, h.region.end) in spans
        assert h.region.start <= h.address < h.region.end
    assert not _raw_hits(outcome.hits, "decoy")
    # after exit: measured here, Linux leaves freed swap slots as they were
    assert holder.proc.poll() is not None  # the attack killed it
    ((moment, later),) = outcome.follow_ups
    assert moment == "after-exit" and later.status == OK, later.reason
    assert len(_raw_hits(later.hits)) == len(hits)
    assert later.stats.bytes_read == outcome.stats.bytes_read
    assert not _raw_hits(later.hits, "decoy")


_PAGE_HOLDER = textwrap.dedent(
    """
    import ctypes, mmap, os, sys
    fd, n, lock = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    page = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    if lock:
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.mlock(ctypes.c_void_p(address), 4096) == 0, ctypes.get_errno()
    assert os.readv(fd, [page]) == n  # straight into the page: no other copy
    print(address, flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "mlocked"])
def test_mlocked_page_never_reaches_swap(locked: bool, tmp_path: Path) -> None:
    marker = os.urandom(32)
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAGE_HOLDER, str(r), str(len(marker)), "1" if locked else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(r,),
    )
    os.close(r)
    os.write(w, marker)
    os.close(w)
    try:
        assert proc.stdout is not None
        address = int(proc.stdout.readline())
        outcome = Swap().run(proc.pid, _scanner(marker), tmp_path)
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    assert _pushed(outcome.reason) > 0  # the rest of the process did go out
    ((_, later),) = outcome.follow_ups
    if locked:
        # the locked region refuses MADV_PAGEOUT; the secret is nowhere in the file
        assert outcome.status == BLOCKED, outcome.reason
        assert re.search(r"refused to be pushed out: .*\[anon\] rw-p lo\b", outcome.reason)
        assert _raw_hits(outcome.hits) == [] and _raw_hits(later.hits) == []
    else:
        # the same child without mlock: its page is in swap, at its own address
        assert outcome.status == OK, outcome.reason
        assert [h.address for h in _raw_hits(outcome.hits)] == [address]
        assert [h.address for h in _raw_hits(later.hits)] == [address]


def test_cli_reports_the_after_exit_moment(holder: Holder, tmp_path: Path) -> None:
    needle = tmp_path / "needle"
    needle.write_bytes(holder.marker)
    try:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "attacks.swap", "--pid", str(holder.pid)),
                *("--needle-file", str(needle), "--keep-newline", "--json"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        needle.unlink()
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    later = report["follow_ups"]["after-exit"]
    for moment in (report, later):
        raw = next(f for f in moment["findings"] if f["encoding"] == "raw" and f["form"] == "full")
        assert raw["copies"] >= 1, moment["reason"]


_BIG = textwrap.dedent(
    """
    import os, sys
    ballast = os.urandom(int(sys.argv[1]) << 20)
    print("ready", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def big_target() -> Iterator[subprocess.Popen[str]]:
    """A 64 MiB target: the attack then keeps the swap on for a while, long enough to be
    caught with it on."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _BIG, "64"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _attack_until_swap_is_on(pid: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    needle = tmp_path / "needle"
    needle.write_bytes(os.urandom(32))
    theirs = {p for p, _ in active_swaps()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "attacks.swap", "--pid", str(pid), "--needle-file", str(needle)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not {p for p, _ in active_swaps()} - theirs:
        assert proc.poll() is None, "the attack ended before its swap was seen on"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_attack_takes_its_swap_down(
    sig: signal.Signals, big_target: subprocess.Popen[str], tmp_path: Path
) -> None:
    proc = _attack_until_swap_is_on(big_target.pid, tmp_path)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) != 0
    # the autouse fixture checks the rest: no swap of ours, no file, zswap as it was


def test_killed_attack_is_repaired_by_restore_swap_state(
    big_target: subprocess.Popen[str], tmp_path: Path
) -> None:
    """SIGKILL leaves the swap on and zswap off; restore_swap_state puts both back. zswap
    is turned on for this test (it is off on this host) so that its restore is tested."""
    original = zswap_state()
    if original is None:
        pytest.skip("no zswap in this kernel")
    ZSWAP.write_text("Y")
    try:
        proc = _attack_until_swap_is_on(big_target.pid, tmp_path)
        proc.kill()
        proc.wait()
        assert zswap_state() == "N"  # the attack turned it off ...
        ours = [p for p, _ in active_swaps() if "memlab-swap-" in p]
        assert ours and STATE_FILE.exists()  # ... and died with its swap on
        done = restore_swap_state()
        assert done is not None and "swapoff" in done, done
        assert zswap_state() == "Y"
        assert not any(Path(p).exists() for p in ours)
    finally:
        ZSWAP.write_text(original)


def test_restore_leaves_a_live_run_alone(big_target: subprocess.Popen[str], tmp_path: Path) -> None:
    proc = _attack_until_swap_is_on(big_target.pid, tmp_path)
    try:
        assert restore_swap_state() is None  # its lock is held: not ours to undo
        assert any("memlab-swap-" in p for p, _ in active_swaps())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_swap_file_page_is_read_with_o_direct(tmp_path: Path) -> None:
    """O_DIRECT needs page-aligned buffers: the source reads into mmap'd memory."""
    path = tmp_path / "pages.bin"
    path.write_bytes(bytes(3 * PAGE))
    source = SwapSource(path, {}, chunk_bytes=PAGE)
    chunks = [(c.address, len(c.data)) for c in source.chunks()]
    assert chunks == [(UNMAPPED_BASE + i * PAGE, PAGE) for i in range(3)]
    assert source.stats.bytes_read == 3 * PAGE and source.stats.errors_text() == ""
