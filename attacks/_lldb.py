"""`lldb` and `lldb-core`: LLVM's debugger attaches to the target and reads it, or saves a core.

`lldb`: lldb lists the regions (its SB API's `GetMemoryRegions`, what `memory region --all`
prints), reads every region it lists as readable into files in the private work directory,
and detaches; the files are then scanned at their virtual addresses, attributed to the
live regions (/proc/PID/smaps on Linux, `vmmap` on macOS) and deleted. What lldb did not
read is counted, never hidden: lldb lists PROT_NONE mappings as unmapped, so its region
walk skips them (its `memory read` at such an address does read them, through ptrace:
that forced read is what `proc-mem` measures), and reads of memfd_secret pages fail. Either
makes the row `blocked` (the kernel's own [vvar]/[vsyscall] pages excepted); MADV_DONTDUMP
does not stop lldb.

`lldb-core`: `process save-core --style full` (lldb >= 19; lldb-16 cannot save full cores
on Linux). On Linux lldb-19 writes a minidump (its ELF plugin saves no cores), read with
`MinidumpSource`; an ELF core (another lldb) would be read with `ElfCoreSource`. Ranges
absent from the core are counted the same way. lldb ignores MADV_DONTDUMP here too, and its
full style keeps only the live part of a thread's stack (from the stack pointer up).

How lldb is driven, and why. Three ways were tried on this machine (Debian 12, lldb-19,
the venv's pyenv Python 3.11.7):
- `lldb-19 --batch -p PID -o ...`: works, but every command is fixed before the attach, so
  listing the regions and then reading them takes two attaches or a prompt parsed over a
  pipe; `memory read` stops at the first unreadable page and writes only what came before.
- the Python binding imported into the harness: works only with path fixes for Debian's
  layout, and only because pyenv's libpython3.11 happens to share its soname and ABI with
  Debian's python3.11, which liblldb is linked against; it loads ~150 MB of LLVM into the
  harness.
- chosen: the same binding in a child process (`_lldb_helper.py`) run by the interpreter
  the binding was built for (Debian's python3.11): one attach, lldb's own region list, a
  per-read error to salvage readable pages page by page, and a process of its own that the
  harness can always stop and reap. The helper detaches in `finally` (also on SIGTERM and
  SIGINT, and when the harness dies: PR_SET_PDEATHSIG); if it is killed outright,
  lldb-server loses its connection and detaches by itself, and the target runs on.

Reading through lldb's gdb-remote protocol is slow (~15 MB/s here): the target is stopped
for as long as the read takes.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._base import BLOCKED, ERROR, Attack, AttackOutcome, scan_core
from ._proc_mem import KERNEL_PAGES
from .scan import Scanner
from .sources import MinidumpSource, ReadStats, Region, Segment, SegmentSource, live_regions
from .sources._vmmap import VmmapError

HELPER = Path(__file__).with_name("_lldb_helper.py")
LLDB_NAMES = ("lldb-19", "lldb")  # Debian installs versioned names only
INSTALL = "apt-get install -y --no-install-recommends lldb-19 python3-lldb-19 liblldb-19-dev"
FIX = f"{INSTALL} (or: bash scripts/setup-system-tools)"
MACOS_FIX = "xcode-select --install"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's; on macOS the shim to the CLT's python3
HELPER_TIMEOUT_S = 900  # a 200 MB target takes ~15 s; this only stops a hung lldb
REAP_TIMEOUT_S = 30  # the helper's detach after SIGTERM
HELD = {signal.SIGINT, signal.SIGTERM}


class LldbUnavailableError(RuntimeError):
    """lldb or its Python binding cannot be used here; the message says the fix."""


@dataclass(frozen=True, slots=True)
class LldbTools:
    lldb: str
    version: str
    major: int
    python: str  # the interpreter lldb's binding was built for
    module_dir: str  # `lldb -P`
    server: str | None  # lldb-server (Linux); macOS uses the system debugserver


def _run_quiet(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@functools.cache
def find_lldb() -> LldbTools:
    """The lldb to use, checked by importing its binding once; raises with the fix."""
    darwin = sys.platform == "darwin"
    fix = MACOS_FIX if darwin else FIX
    lldb = next((path for name in LLDB_NAMES if (path := shutil.which(name))), None)
    if lldb is None:
        raise LldbUnavailableError(f"lldb is not installed: {fix}")
    version = _run_quiet([lldb, "--version"]).stdout.strip().splitlines()[0:1] or ["?"]
    match = re.search(r"version (\d+)", version[0])
    major = int(match[1]) if match else 0
    module_dir = _run_quiet([lldb, "-P"]).stdout.strip()
    # Debian: .../llvm-19/lib/python3.11/site-packages, built for the system's python3.11
    # (not whatever python3.11 is first on PATH: a pyenv shim is another build)
    wanted = re.search(r"/(python3\.\d+)/", module_dir)
    python = f"/usr/bin/{wanted[1]}" if wanted else SYSTEM_PYTHON
    if not os.path.exists(python):
        python = SYSTEM_PYTHON
    probe = _run_quiet(
        [python, "-I", "-c", f"import sys; sys.path.insert(0, {module_dir!r}); import lldb"]
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1][:160]
        raise LldbUnavailableError(
            f"lldb's Python binding does not import under {python} ({last}): {fix}"
        )
    server = None
    if not darwin:
        beside = Path(os.path.realpath(lldb)).with_name("lldb-server")
        server = str(beside) if beside.exists() else shutil.which(f"lldb-server-{major}")
        if server is None:
            raise LldbUnavailableError(f"lldb-server is missing beside {lldb}: {fix}")
    return LldbTools(lldb, version[0], major, python, module_dir, server)


def lldb_unavailable(min_major: int = 0) -> str | None:
    """None if lldb can run here (at least `min_major`), else the reason and the fix."""
    try:
        tools = find_lldb()
    except (LldbUnavailableError, OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if tools.major < min_major:
        fix = MACOS_FIX if sys.platform == "darwin" else FIX
        return f"{tools.version} cannot save full cores (needs lldb >= {min_major}): {fix}"
    return None


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    note: str = ""  # the run's file, or lldb's error for refused bytes


@dataclass
class HelperReport:
    """What the helper said, event by event (addresses, sizes and lldb's messages only)."""

    returncode: int | None = None
    attached: dict[str, object] | None = None
    error: str = ""
    regions: list[Region] = field(default_factory=list)  # lldb's own region list
    listed: list[Span] = field(default_factory=list)  # the regions it lists as readable
    runs: list[Span] = field(default_factory=list)  # bytes read, note = file name
    refused: list[Span] = field(default_factory=list)  # reads that failed, note = error
    core: str = ""  # the core file's name
    detached: bool = False
    stderr_tail: str = ""
    retried: str = ""  # why the attach was tried a second time, if it was


def _terminate_raises() -> None:
    raise KeyboardInterrupt(f"signal {signal.SIGTERM}")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while lldb runs, so the helper is always stopped and
    reaped. Left alone when someone already handles SIGTERM (the lab does) or off the main
    thread (only it may set handlers)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(
        signal.SIGTERM
    ) not in (signal.SIG_DFL, None):
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: _terminate_raises())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _reap(proc: subprocess.Popen[str]) -> None:
    """Stop the helper (it detaches first) and wait for it, with SIGINT/SIGTERM held back
    so that a second signal cannot leave it running; they are delivered afterwards."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=REAP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()  # lldb-server then detaches on its own
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def run_helper(tools: LldbTools, pid: int, out: Path, core: bool = False) -> HelperReport:
    command = [
        tools.python,
        "-I",
        str(HELPER),
        "--lldb-python",
        tools.module_dir,
        "--pid",
        str(pid),
        "--out",
        str(out),
        "--parent",
        str(os.getpid()),
        *(["--core"] if core else []),
    ]
    env = dict(os.environ)
    if tools.server:
        env["LLDB_DEBUGSERVER_PATH"] = tools.server
    report = HelperReport()
    err_path = out / "helper.err"
    with _sigterm_as_interrupt(), open(err_path, "w") as err:
        # Signals are held back until the helper is in hand, so that an interrupt cannot
        # leave it unreaped; the helper unblocks them itself (it inherits the mask).
        before = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
            watchdog = threading.Timer(HELPER_TIMEOUT_S, proc.terminate)
            watchdog.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                _record(report, json.loads(line))
            report.returncode = proc.wait()
        finally:
            watchdog.cancel()
            _reap(proc)
    tail = err_path.read_text(errors="replace").strip().splitlines()
    err_path.unlink()
    report.stderr_tail = tail[-1][:200] if tail else ""
    return report


def attach_and_run(tools: LldbTools, pid: int, out: Path, core: bool = False) -> HelperReport:
    """`run_helper`, with one more attempt when lldb-server died during an attach that the
    kernel allows: lldb-server aborts when ptrace refuses one of the target's threads for a
    moment (llvm-project issues 138085 and 161510), which the client sees as a lost
    connection. Seen once in 450 attaches here. The retry is reported, never hidden."""
    report = run_helper(tools, pid, out, core)
    if (
        report.attached is None
        and "lost connection" in report.error
        and os.path.exists(f"/proc/{pid}")
        and not _ptrace_refused(pid)
        and not _tracer(pid)
    ):
        first = report.error
        time.sleep(0.2)
        report = run_helper(tools, pid, out, core)
        report.retried = f"; attach retried once after '{first}'"
    return report


def _record(report: HelperReport, event: dict[str, object]) -> None:
    kind = event.pop("event")
    if kind == "attached":
        report.attached = event
    elif kind == "error":
        report.error = f"{event['stage']}: {event['message']}"
    elif kind == "region" and event["mapped"]:
        start, end, perms = int(str(event["start"])), int(str(event["end"])), str(event["perms"])
        # lldb does not say private or shared: '?' in the fourth place
        report.regions.append(Region(start, end, perms + "?", path=str(event["name"])))
        if perms.startswith("r"):
            report.listed.append(Span(start, end))
    elif kind in ("run", "refused"):
        address, length = int(str(event["address"])), int(str(event["length"]))
        note = str(event["file"] if kind == "run" else event["error"])
        (report.runs if kind == "run" else report.refused).append(
            Span(address, address + length, note)
        )
    elif kind == "core":
        report.core = str(event["file"])
    elif kind == "detached":
        report.detached = True


def _tracer(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            line = next(x for x in status if x.startswith("TracerPid:"))
        return int(line.split()[1])
    except (OSError, StopIteration):
        return 0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _ptrace_refused(pid: int) -> str:
    """Why the kernel refuses this process ptrace access, '' if it does not: opening
    /proc/PID/mem makes the same check as an attach (lldb-server reports a refused attach
    only as a lost connection). Nothing is read."""
    if sys.platform == "darwin":
        return ""
    try:
        os.close(os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC))
    except PermissionError as exc:
        return f"{errno.errorcode.get(exc.errno or 0, 'EACCES')} opening /proc/{pid}/mem"
    except OSError:
        return ""
    return ""


def _not_attached(pid: int, report: HelperReport, outcome: AttackOutcome) -> None:
    """Why lldb got nothing: a refused attach is the target's (or the kernel's) defence."""
    message = report.error or (
        f"helper exited {report.returncode}: {report.stderr_tail or 'no output'}"
    )
    if not os.path.exists(f"/proc/{pid}") and sys.platform != "darwin":
        outcome.status, outcome.reason = ERROR, f"process {pid} does not exist"
        return
    tracer = _tracer(pid)
    if tracer:
        outcome.status = BLOCKED
        outcome.reason = f"already traced by pid {tracer} ({_comm(tracer)}); lldb {message}"
    elif (refused := _ptrace_refused(pid)) or re.search(
        r"not permitted|permission|denied", message, re.IGNORECASE
    ):
        outcome.status = BLOCKED
        outcome.reason = (
            f"lldb {message}; ptrace access refused ({refused or 'lldb says so'}): "
            f"non-dumpable process, another uid, or ptrace_scope"
        )
    else:
        tail = f" ({report.stderr_tail})" if report.error and report.stderr_tail else ""
        outcome.status, outcome.reason = ERROR, f"lldb {message}{tail}"
    outcome.reason += report.retried


def _overlap(start: int, end: int, spans: list[Span]) -> int:
    return sum(max(0, min(end, x.end) - max(start, x.start)) for x in spans)


UNMAPPED, REFUSED, PARTIAL = "lldb-unmapped", "lldb-read-failed", "lldb-left-out"


@dataclass
class Shortfall:
    """Live regions lldb did not get in full: (region, bytes missing, why)."""

    missing: list[tuple[Region, int, str]] = field(default_factory=list)

    def blocking(self) -> list[tuple[Region, int, str]]:
        return [m for m in self.missing if m[2] != PARTIAL and m[0].name not in KERNEL_PAGES]

    def record(self, stats: ReadStats) -> None:
        for region, missing, why in self.missing:
            stats.errors[why] += 1
            stats.bytes_unreadable += missing
            stats.refused.append((region, missing))
            if missing >= region.size:
                stats.regions_unreadable += 1
            else:
                stats.regions_partial += 1

    def text(self) -> str:
        parts = []
        blocking = self.blocking()
        if blocking:
            unmapped = sum(1 for m in blocking if m[2] == UNMAPPED)
            names = ", ".join(sorted({r.describe() for r, _, _ in blocking})[:3])
            parts.append(
                f"{len(blocking)} region(s), {sum(n for _, n, _ in blocking)} bytes not read "
                f"({unmapped} PROT_NONE, which lldb lists as unmapped; "
                f"{len(blocking) - unmapped} refused, e.g. memfd_secret): {names}; "
                f"the rest was scanned"
            )
        partial = [m for m in self.missing if m[2] == PARTIAL]
        if partial:
            parts.append(
                f"{len(partial)} region(s) in part only ({sum(n for _, n, _ in partial)} "
                f"bytes left out, e.g. a stack below its stack pointer)"
            )
        return "; ".join(parts)


def read_shortfall(live: list[Region], report: HelperReport) -> Shortfall:
    """What lldb's region walk did not read, and why: not listed as readable (PROT_NONE:
    lldb calls it unmapped), or listed but the read failed (memfd_secret, [vvar])."""
    result = Shortfall()
    for region in live:
        missing = region.size - _overlap(region.start, region.end, report.runs)
        if missing <= 0:
            continue
        unlisted = region.size - _overlap(region.start, region.end, report.listed)
        if unlisted >= missing:
            why = UNMAPPED
        elif _overlap(region.start, region.end, report.refused):
            why = REFUSED
        else:
            why = PARTIAL
        result.missing.append((region, missing, why))
    return result


def core_shortfall(live: list[Region], ranges: list[Span]) -> Shortfall:
    """What lldb left out of its core: whole regions (PROT_NONE ones, which it lists as
    unmapped; ones it could not read), or parts of regions (a stack below its pointer)."""
    result = Shortfall()
    for region in live:
        missing = region.size - _overlap(region.start, region.end, ranges)
        if missing <= 0:
            continue
        if missing < region.size:
            why = PARTIAL
        else:
            why = UNMAPPED if region.perms[:3] == "---" else REFUSED
        result.missing.append((region, missing, why))
    return result


def _live(pid: int, outcome: AttackOutcome) -> tuple[list[Region], str] | None:
    """The target's regions and a note; no regions when the system refuses them (another
    uid: lldb's attach will be refused too, and say so); None, with the outcome filled,
    when the process is gone."""
    try:
        return live_regions(pid), ""
    except (FileNotFoundError, ProcessLookupError):
        outcome.status, outcome.reason = ERROR, f"process {pid} does not exist"
        return None
    except (PermissionError, VmmapError) as exc:
        return [], f"; live regions refused ({exc}), lldb's own list used"


def _finished(report: HelperReport, outcome: AttackOutcome) -> bool:
    """The helper attached and ran to the end; else the outcome says why not."""
    if report.returncode == 0:
        return True
    outcome.status = ERROR
    outcome.reason = (
        f"lldb helper exited {report.returncode} after attaching: "
        f"{report.error or report.stderr_tail or 'no output'}"
    )
    return False


def _detach_check(report: HelperReport, outcome: AttackOutcome) -> bool:
    if report.detached:
        return True
    outcome.status = ERROR
    outcome.reason += f"; the helper did not report its detach ({report.stderr_tail})"
    return False


class Lldb(Attack):
    name = "lldb"
    artefact = "live-memory"
    summary = "lldb attaches, reads every region it lists as readable, detaches; scanned"

    @classmethod
    def supported(cls) -> str | None:
        return lldb_unavailable()

    def _run(
        self, pid: int, scanner: Scanner, workdir: Path | None, outcome: AttackOutcome
    ) -> None:
        found = _live(pid, outcome)
        if found is None:
            return
        live, note = found
        tools = find_lldb()
        with tempfile.TemporaryDirectory(prefix="lldb-", dir=workdir) as private:
            report = attach_and_run(tools, pid, Path(private))
            if report.attached is None:
                _not_attached(pid, report, outcome)
                return
            if not _finished(report, outcome):
                return
            live = live or report.regions  # the live map was refused, lldb's was not
            source = SegmentSource(
                [Segment(r.start, r.end - r.start, Path(private) / r.note) for r in report.runs],
                live,
            )
            outcome.regions_total = len(live)
            outcome.hits = scanner.scan(source)
        _settle(
            outcome,
            scanner,
            source.stats,
            read_shortfall(live, report),
            report,
            f"{tools.version}: {len(report.listed)} regions listed readable, "
            f"{len(report.runs)} runs read{note}{report.retried}",
        )


def _settle(
    outcome: AttackOutcome,
    scanner: Scanner,
    stats: ReadStats,
    missing: Shortfall,
    report: HelperReport,
    reason: str,
) -> None:
    """Fill the outcome of a finished read: stats, findings, reason; `blocked` when nothing
    was readable or the target refused regions that are its own."""
    missing.record(stats)
    outcome.stats = stats
    outcome.findings = scanner.summarize(outcome.hits)
    outcome.reason = reason
    if not _detach_check(report, outcome):
        return
    if stats.bytes_read == 0:
        outcome.status = BLOCKED
        outcome.reason += "; no byte readable"
    elif missing.blocking():
        outcome.status = BLOCKED
    if missing.text():
        outcome.reason += f"; {missing.text()}"


class LldbCore(Attack):
    name = "lldb-core"
    artefact = "debugger-core"
    summary = "lldb's process save-core --style full (a minidump on Linux); the core is scanned"

    @classmethod
    def supported(cls) -> str | None:
        return lldb_unavailable(min_major=19)

    def _run(
        self, pid: int, scanner: Scanner, workdir: Path | None, outcome: AttackOutcome
    ) -> None:
        found = _live(pid, outcome)
        if found is None:
            return
        live, note = found
        tools = find_lldb()
        with tempfile.TemporaryDirectory(prefix="lldb-core-", dir=workdir) as private:
            report = attach_and_run(tools, pid, Path(private), core=True)
            if report.attached is None:
                _not_attached(pid, report, outcome)
                return
            if not _finished(report, outcome):
                return
            core = Path(private) / report.core
            with open(core, "rb") as handle:
                magic = handle.read(4)
            if magic == b"\x7fELF":  # not what lldb-19 writes on Linux, but a core all the same
                size, dumped, excluded = scan_core(core, live, scanner, outcome)
                outcome.reason = (
                    f"{tools.version}: ELF core of {size} bytes: {dumped} segments dumped, "
                    f"{excluded} excluded{note}{report.retried}"
                )
                _detach_check(report, outcome)
                return
            try:
                source = MinidumpSource(core, live)
                outcome.regions_total = len(live)
                outcome.hits = scanner.scan(source)
                size = core.stat().st_size
            finally:
                core.unlink(missing_ok=True)  # it holds the victim's memory
        ranges = [Span(start, end) for start, end in source.ranges()]
        _settle(
            outcome,
            scanner,
            source.stats,
            core_shortfall(live, ranges),
            report,
            f"{tools.version}: minidump ({source.memory_list}) of {size} bytes, "
            f"{len(ranges)} memory ranges{note}{report.retried}",
        )
