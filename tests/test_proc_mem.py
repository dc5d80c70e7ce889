"""proc-mem against real processes: positive control, PROT_NONE, errors, the CLI front."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import Holder, needs_root

from attacks import ATTACKS, BLOCKED, ERROR, OK
from attacks.scan import FULL, NeedleSet, Scanner, Secret
from attacks.sources import ProcMemSource, parse_maps, read_regions

pytestmark = [needs_root(), pytest.mark.integration]

# the kernel ends an unnamed mapping's line with a space
SMAPS = (
    "7f0000000000-7f0000002000 rw-p 00000000 00:00 0 \n"
    + """\
Size:                  8 kB
Rss:                   4 kB
Swap:                  0 kB
Locked:                8 kB
VmFlags: rd wr mr mw me lo dd ac
55d000000000-55d000021000 rw-p 00000000 00:00 0                          [heap]
VmFlags: rd wr mr mw me ac
7f1000000000-7f1000001000 r-xp 00001000 fe:00 1234                       /usr/lib/libc.so.6
VmFlags: rd ex mr mw me
"""
)


def _scanner(marker: bytes) -> Scanner:
    return Scanner(NeedleSet([Secret("plaintext", marker), Secret("decoy", os.urandom(32))]))


def _copies(outcome, kind: str, encoding: str = "raw") -> int:
    return next(
        f.copies
        for f in outcome.findings
        if f.kind == kind and f.encoding == encoding and f.form == FULL
    )


def test_parse_smaps_fields_and_flags() -> None:
    anon, heap, lib = parse_maps(SMAPS)
    assert (anon.size, anon.rss_kb, anon.locked_kb) == (8192, 4, 8)
    assert anon.vmflags[-3:] == ("lo", "dd", "ac")
    assert anon.name == "[anon]" and anon.anonymous and anon.describe() == "[anon] rw-p lo,dd"
    assert heap.name == "[heap]" and heap.anonymous
    assert lib.path == "/usr/lib/libc.so.6" and not lib.anonymous and lib.offset == 0x1000


def test_read_regions_of_this_process() -> None:
    regions, origin = read_regions(os.getpid())
    assert origin == "smaps"
    assert any(r.name == "[stack]" for r in regions)
    assert all(r.vmflags for r in regions)


def test_positive_control_finds_the_marker_and_not_the_decoy(holder: Holder) -> None:
    outcome = ATTACKS["proc-mem"]().run(holder.pid, _scanner(holder.marker))
    assert outcome.status == OK and outcome.attacker == "root"
    assert _copies(outcome, "plaintext") >= 1
    assert _copies(outcome, "decoy") == 0
    assert outcome.stats.bytes_read > 1 << 20
    regions = {h.region.name for h in outcome.hits if h.form == FULL}
    assert regions <= {"[anon]", "[heap]"}


def test_prot_none_regions_are_read_too(prot_none_holder: Holder) -> None:
    outcome = ATTACKS["proc-mem"]().run(prot_none_holder.pid, _scanner(prot_none_holder.marker))
    full = [h for h in outcome.hits if h.form == FULL and h.kind == "plaintext"]
    assert [h.region.perms[:3] for h in full] == ["---"]  # the bytearray copy was zeroed
    assert full[0].address - full[0].region.start == 100


def test_unreadable_pages_are_counted_per_errno(holder: Holder) -> None:
    source = ProcMemSource(holder.pid)
    vvar = [r for r in source.regions() if r.name.startswith("[vvar")]
    if not vvar:
        pytest.skip("this kernel maps no [vvar] region")
    for _ in source.chunks():
        pass
    assert source.stats.errors.get("EIO", 0) >= sum(r.size for r in vvar) // 4096
    assert source.stats.bytes_unreadable >= sum(r.size for r in vvar)
    assert source.stats.regions_unreadable >= len(vvar)


def test_a_vanished_process_is_an_error_not_zero_hits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    outcome = ATTACKS["proc-mem"]().run(proc.pid, _scanner(os.urandom(32)))
    assert outcome.status == ERROR and "does not exist" in outcome.reason


def test_another_uid_is_blocked_not_counted_as_zero(holder: Holder) -> None:
    # Fork (modules already imported: /root is not traversable for nobody), drop to
    # nobody, attack the root-owned holder: the kernel refuses, and the row says so.
    scanner = _scanner(holder.marker)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            outcome = ATTACKS["proc-mem"]().run(holder.pid, scanner)
            os.write(w, f"{outcome.status} {outcome.attacker}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as reader:
        result = reader.read().split()
    os.waitpid(child, 0)
    assert result == [BLOCKED, "other-user"]


def test_cli_front_reports_without_secret_bytes(holder: Holder, tmp_path) -> None:
    needle = tmp_path / "needle"
    needle.write_bytes(holder.marker)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "attacks.proc_mem",
            "--pid",
            str(holder.pid),
            "--needle-file",
            str(needle),
            "--json",
        ],
        capture_output=True,
        check=True,
    )
    report = json.loads(out.stdout)
    raw = next(f for f in report["findings"] if f["encoding"] == "raw" and f["form"] == "full")
    assert raw["copies"] >= 1
    for form in (holder.marker, holder.marker.hex().encode(), holder.marker.hex().upper().encode()):
        assert form not in out.stdout + out.stderr


def test_vm_readv_positive_control_and_prot_none_refusal(
    holder: Holder, prot_none_holder: Holder
) -> None:
    outcome = ATTACKS["vm-readv"]().run(holder.pid, _scanner(holder.marker))
    assert outcome.status == OK and _copies(outcome, "plaintext") >= 1
    # process_vm_readv does not force access: a PROT_NONE page fails with EFAULT, counted
    outcome = ATTACKS["vm-readv"]().run(prot_none_holder.pid, _scanner(prot_none_holder.marker))
    assert outcome.status == BLOCKED and outcome.stats.errors.get("EFAULT", 0) >= 1
    assert _copies(outcome, "plaintext") == 0


@pytest.mark.parametrize("attack", ["gcore", "gcore-all"])
def test_gcore_finds_the_marker_and_deletes_its_core(holder: Holder, tmp_path, attack) -> None:
    if ATTACKS[attack].supported() is not None:
        pytest.skip(ATTACKS[attack].supported())
    outcome = ATTACKS[attack]().run(holder.pid, _scanner(holder.marker), tmp_path)
    assert outcome.status == OK, outcome.reason
    assert _copies(outcome, "plaintext") >= 1 and _copies(outcome, "decoy") == 0
    regions = {h.region.name for h in outcome.hits if h.form == FULL}
    assert regions <= {"[anon]", "[heap]"}  # attributed through the live smaps
    assert list(tmp_path.iterdir()) == []  # the core held the victim's memory: deleted


def test_crash_core_finds_the_marker_and_restores_core_pattern(holder: Holder, tmp_path) -> None:
    from attacks._crash_core import CORE_PATTERN

    if ATTACKS["crash-core"].supported() is not None:
        pytest.skip(ATTACKS["crash-core"].supported())
    before = CORE_PATTERN.read_text()
    outcome = ATTACKS["crash-core"]().run(holder.pid, _scanner(holder.marker), tmp_path)
    assert outcome.status == OK, outcome.reason
    assert _copies(outcome, "plaintext") >= 1 and _copies(outcome, "decoy") == 0
    assert CORE_PATTERN.read_text() == before
    assert list(tmp_path.iterdir()) == []
    assert holder.proc.wait(timeout=10) == -6  # SIGABRT: the attack kills its target
