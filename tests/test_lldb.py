"""lldb and lldb-core against real processes: positive control, what lldb does not reach
(PROT_NONE, memfd_secret), what it ignores (MADV_DONTDUMP), refused attaches, and an
interrupted harness that must leave no lldb behind and the target running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, Holder, needs_root

from attacks import ATTACKS, BLOCKED, ERROR, OK
from attacks.scan import FULL, NeedleSet, Scanner, Secret

MISSING = ATTACKS["lldb"].supported()
pytestmark = [
    needs_root(),
    pytest.mark.integration,
    pytest.mark.skipif(MISSING is not None, reason=f"lldb unavailable: {MISSING}"),
]
BOTH = ["lldb", "lldb-core"]

# A holder that moves its marker (read from a pipe) into one special page and zeroes the
# bytearray it arrived in: 'secret' (memfd_secret) or 'dontdump' (MADV_DONTDUMP).
_SPECIAL_HOLDER = textwrap.dedent(
    """
    import ctypes, mmap, os, sys
    fd = int(sys.argv[1]); n = int(sys.argv[2]); kind = sys.argv[3]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    held = bytearray(n)
    os.readv(fd, [held])
    if kind == "secret":
        sfd = libc.syscall(447, 0)  # memfd_secret
        if sfd < 0:
            print("no-memfd-secret", ctypes.get_errno(), flush=True); sys.exit(0)
        os.ftruncate(sfd, 4096)
        page = mmap.mmap(sfd, 4096)
    else:
        page = mmap.mmap(-1, 4096)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        assert libc.madvise(ctypes.c_void_p(addr), 4096, 16) == 0  # MADV_DONTDUMP
    page[100:100 + n] = held
    held[:] = bytes(n)
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def _special_holder(marker: bytes, kind: str) -> Iterator[Holder]:
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SPECIAL_HOLDER, str(r), str(len(marker)), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(r,),
    )
    os.close(r)
    os.write(w, marker)
    os.close(w)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    try:
        if line.startswith("no-memfd-secret"):
            pytest.skip(f"this kernel has no memfd_secret ({line}): boot with secretmem.enable=1")
        assert line == "ready"
        yield Holder(proc.pid, marker, proc)
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def secret_holder(marker: bytes) -> Iterator[Holder]:
    yield from _special_holder(marker, "secret")


@pytest.fixture
def dontdump_holder(marker: bytes) -> Iterator[Holder]:
    yield from _special_holder(marker, "dontdump")


def _scanner(marker: bytes) -> Scanner:
    return Scanner(NeedleSet([Secret("plaintext", marker), Secret("decoy", os.urandom(32))]))


def _copies(outcome, kind: str) -> int:
    return next(
        f.copies
        for f in outcome.findings
        if f.kind == kind and f.encoding == "raw" and f.form == FULL
    )


def _state(pid: int) -> tuple[str, int]:
    """(state letter, tracer pid) of a live process."""
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    status = Path(f"/proc/{pid}/status").read_text()
    tracer = int(next(x for x in status.splitlines() if x.startswith("TracerPid:")).split()[1])
    return state, tracer


def _assert_left_running(pid: int) -> None:
    state, tracer = _state(pid)
    assert state not in ("t", "T") and tracer == 0, (state, tracer)


@pytest.mark.parametrize("attack", BOTH)
def test_positive_control_finds_the_marker_and_leaves_nothing(
    holder: Holder, tmp_path: Path, attack: str
) -> None:
    outcome = ATTACKS[attack]().run(holder.pid, _scanner(holder.marker), tmp_path)
    assert outcome.status == OK, outcome.reason
    assert _copies(outcome, "plaintext") >= 1 and _copies(outcome, "decoy") == 0
    assert {h.region.name for h in outcome.hits if h.form == FULL} <= {"[anon]", "[heap]"}
    assert outcome.stats.bytes_read > 1 << 20
    assert "19." in outcome.reason  # the lldb version that ran
    assert list(tmp_path.iterdir()) == []  # dumps and cores held the victim's memory
    _assert_left_running(holder.pid)


@pytest.mark.parametrize("attack", BOTH)
def test_prot_none_is_not_walked_and_the_row_is_blocked(
    prot_none_holder: Holder, tmp_path: Path, attack: str
) -> None:
    # lldb lists a PROT_NONE mapping as unmapped: its region walk and its core skip it
    outcome = ATTACKS[attack]().run(prot_none_holder.pid, _scanner(prot_none_holder.marker))
    assert outcome.status == BLOCKED, outcome.reason
    assert outcome.stats.errors["lldb-unmapped"] >= 1
    assert "1 PROT_NONE" in outcome.reason and "---" in outcome.reason
    assert _copies(outcome, "plaintext") == 0  # its only copy is in that page
    _assert_left_running(prot_none_holder.pid)


@pytest.mark.parametrize("attack", BOTH)
def test_memfd_secret_refuses_lldb_and_the_row_is_blocked(
    secret_holder: Holder, tmp_path: Path, attack: str
) -> None:
    outcome = ATTACKS[attack]().run(secret_holder.pid, _scanner(secret_holder.marker), tmp_path)
    assert outcome.status == BLOCKED, outcome.reason
    assert "/secretmem" in outcome.reason and "1 refused" in outcome.reason
    assert outcome.stats.errors["lldb-read-failed"] >= 1
    refused = [r for r, n in outcome.stats.refused if r.path.startswith("/secretmem")]
    assert len(refused) == 1 and refused[0].size == 4096
    assert _copies(outcome, "plaintext") == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("attack", BOTH)
def test_madv_dontdump_does_not_stop_lldb(
    dontdump_holder: Holder, tmp_path: Path, attack: str
) -> None:
    # unlike gdb's gcore and the kernel's core, lldb's save-core ignores MADV_DONTDUMP
    outcome = ATTACKS[attack]().run(dontdump_holder.pid, _scanner(dontdump_holder.marker))
    assert outcome.status == OK, outcome.reason
    full = [h for h in outcome.hits if h.form == FULL and h.kind == "plaintext"]
    assert [("dd" in h.region.vmflags, h.address - h.region.start) for h in full] == [(True, 100)]


def test_an_already_traced_process_is_blocked(holder: Holder) -> None:
    # A tracer that seizes the holder without stopping it; lldb's attach then fails.
    tracer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True);"
            "r = libc.ptrace(0x4206, int(sys.argv[1]), None, None);"  # PTRACE_SEIZE
            "print(r, ctypes.get_errno(), flush=True); sys.stdin.read()",
            str(holder.pid),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert tracer.stdout is not None and tracer.stdout.readline().split()[0] == "0"
        outcome = ATTACKS["lldb"]().run(holder.pid, _scanner(holder.marker))
        assert outcome.status == BLOCKED
        assert f"already traced by pid {tracer.pid}" in outcome.reason
        assert outcome.hits == [] and outcome.stats.bytes_read == 0
    finally:
        tracer.kill()
        tracer.wait()
        for stream in (tracer.stdin, tracer.stdout):
            if stream is not None:
                stream.close()
    _assert_left_running(holder.pid)


def test_another_uid_is_blocked(holder: Holder) -> None:
    # as nobody against a root process: lldb-server's ptrace attach is refused
    scanner = _scanner(holder.marker)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            outcome = ATTACKS["lldb"]().run(holder.pid, scanner)
            os.write(w, json.dumps([outcome.status, outcome.attacker, outcome.reason]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as reader:
        status, attacker, reason = json.loads(reader.read())
    os.waitpid(child, 0)
    assert (status, attacker) == (BLOCKED, "other-user"), reason
    assert "ptrace access refused (EACCES opening /proc/" in reason


def test_a_non_dumpable_process_of_the_same_uid_is_blocked(tmp_path: Path) -> None:
    # Both as nobody: the target made itself non-dumpable (PR_SET_DUMPABLE 0), so the
    # kernel refuses ptrace to its own uid. Debian's python3: nobody cannot reach pyenv's.
    target = subprocess.Popen(
        [
            "/usr/bin/python3",
            "-c",
            "import ctypes, sys; assert ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0;"
            "print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        user=65534,
        group=65534,
        extra_groups=[],
    )
    try:
        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
        scanner = _scanner(os.urandom(32))
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                outcome = ATTACKS["lldb"]().run(target.pid, scanner)
                os.write(w, json.dumps([outcome.status, outcome.attacker, outcome.reason]).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as reader:
            status, attacker, reason = json.loads(reader.read())
        os.waitpid(child, 0)
        # (the attacker label follows /proc/PID's owner, which non-dumpable makes root on
        # some kernels and not in this sandbox's user namespace: not what is tested here)
        assert status == BLOCKED and attacker in ("same-user", "other-user"), reason
        assert "ptrace access refused (EACCES opening /proc/" in reason
    finally:
        target.kill()
        target.wait()
        for stream in (target.stdin, target.stdout):
            if stream is not None:
                stream.close()


def test_a_vanished_process_is_an_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    for attack in BOTH:
        outcome = ATTACKS[attack]().run(proc.pid, _scanner(os.urandom(32)))
        assert outcome.status == ERROR and "does not exist" in outcome.reason


def test_cli_front_reports_without_secret_bytes(holder: Holder, tmp_path: Path) -> None:
    needle = tmp_path / "needle"
    needle.write_bytes(holder.marker)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "attacks.lldb_core",
            "--pid",
            str(holder.pid),
            "--needle-file",
            str(needle),
            "--json",
        ],
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    report = json.loads(out.stdout)
    raw = next(f for f in report["findings"] if f["encoding"] == "raw" and f["form"] == "full")
    assert report["status"] == OK and raw["copies"] >= 1
    for form in (holder.marker, holder.marker.hex().encode(), holder.marker.hex().upper().encode()):
        assert form not in out.stdout + out.stderr


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# A target big enough that lldb is still reading it (~15 MB/s) when the harness is stopped.
_BIG = "import sys; b = bytearray(96 << 20); print('ready', flush=True); sys.stdin.read()"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_harness_detaches_and_reaps_lldb(tmp_path: Path, sig: int) -> None:
    big = subprocess.Popen(
        [sys.executable, "-c", _BIG], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    private = tmp_path / "tmp"
    private.mkdir()
    needle = tmp_path / "needle"
    needle.write_bytes(os.urandom(32))
    try:
        assert big.stdout is not None and big.stdout.readline().strip() == "ready"
        harness = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "attacks.lldb",
                "--pid",
                str(big.pid),
                "--needle-file",
                str(needle),
            ],
            cwd=ROOT,
            env=dict(os.environ, TMPDIR=str(private)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lldb_pids: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until lldb holds the target
            lldb_pids |= {p.pid for p in psutil.Process(harness.pid).children(recursive=True)}
            if _state(big.pid)[1] != 0:
                time.sleep(0.3)  # well into the read
                break
            assert harness.poll() is None, "the harness ended before lldb attached"
            time.sleep(0.05)
        else:
            pytest.fail("lldb never attached")
        lldb_pids |= {p.pid for p in psutil.Process(harness.pid).children(recursive=True)}
        assert len(lldb_pids) >= 2  # the helper and its lldb-server
        os.kill(harness.pid, sig)
        assert harness.wait(timeout=60) != 0  # interrupted, not finished
        deadline = time.monotonic() + 10  # an orphaned lldb-server is reaped by init
        while any(_alive(pid) for pid in lldb_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in lldb_pids)
        _assert_left_running(big.pid)
        assert big.poll() is None  # alive
        assert list(private.iterdir()) == []  # the partial dump was removed
    finally:
        big.kill()
        big.wait()
        for stream in (big.stdin, big.stdout):
            if stream is not None:
                stream.close()
