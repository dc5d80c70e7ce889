"""`crash-core`: the target is crashed (SIGABRT) and the kernel's core file is scanned.

This is what a crash leaves on disk. The kernel honours MADV_DONTDUMP and
/proc/PID/coredump_filter, and writes nothing for a non-dumpable process (unless
fs.suid_dumpable says otherwise): that is a result, `blocked`. To put the core somewhere
private, core_pattern is pointed at the 0700 work directory for the crash and restored at
once; the original is also saved to a file, so a harness killed with SIGKILL in that window
has it restored by the next run (`restore_core_pattern`). The target's RLIMIT_CORE is
raised with prlimit. The attack kills its target: the lab gives it a victim of its own.
"""

from __future__ import annotations

import os
import resource
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._base import BLOCKED, ERROR, Attack, AttackOutcome, scan_core
from .scan import Scanner
from .sources import read_regions

CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")
SAVED_PATTERN = Path(tempfile.gettempdir()) / "memlab-core_pattern.saved"
DEATH_TIMEOUT_S = 60


def restore_core_pattern() -> str | None:
    """Put back a core_pattern a killed harness left changed. Returns what was restored."""
    try:
        saved = SAVED_PATTERN.read_text()
    except OSError:
        return None
    CORE_PATTERN.write_text(saved)
    SAVED_PATTERN.unlink()
    return saved


@contextmanager
def core_pattern(pattern: str) -> Iterator[None]:
    original = CORE_PATTERN.read_text().rstrip("\n")
    SAVED_PATTERN.write_text(original)
    try:
        CORE_PATTERN.write_text(pattern)
        yield
    finally:
        CORE_PATTERN.write_text(original)
        SAVED_PATTERN.unlink(missing_ok=True)


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _dumpable(pid: int) -> bool:
    # /proc/PID is owned by root:root when the process is non-dumpable
    info = os.stat(f"/proc/{pid}")
    with open(f"/proc/{pid}/status") as status:
        uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    return info.st_uid == uid


def _raise_core_limit(pid: int) -> str | None:
    """Lift the target's RLIMIT_CORE; None, or why no core can be had."""
    try:
        resource.prlimit(
            pid, resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        return None
    except PermissionError:
        pass  # raising a hard limit needs CAP_SYS_RESOURCE, which this root may lack
    _, hard = resource.prlimit(pid, resource.RLIMIT_CORE)
    if hard == 0:
        return "no core possible: the process set RLIMIT_CORE 0 (hard) itself"
    resource.prlimit(pid, resource.RLIMIT_CORE, (hard, hard))
    return None


class CrashCore(Attack):
    name = "crash-core"
    artefact = "kernel-core"
    summary = "SIGABRT with RLIMIT_CORE raised; the kernel's core file is scanned"
    destructive = True

    @classmethod
    def supported(cls) -> str | None:
        if os.geteuid() != 0:
            return "needs root to point core_pattern at a private directory: run as root"
        if not os.access(CORE_PATTERN, os.W_OK):
            return f"{CORE_PATTERN} is not writable here (a container?): run on a host"
        return None

    def _run(
        self, pid: int, scanner: Scanner, workdir: Path | None, outcome: AttackOutcome
    ) -> None:
        try:
            live, _ = read_regions(pid)
            dumpable = _dumpable(pid)
        except (FileNotFoundError, StopIteration):
            outcome.status, outcome.reason = ERROR, f"process {pid} does not exist"
            return
        with tempfile.TemporaryDirectory(prefix="crash-", dir=workdir) as private:
            with core_pattern(f"{private}/core.%p"):
                refusal = _raise_core_limit(pid)
                if refusal is not None:
                    outcome.status, outcome.reason = BLOCKED, refusal
                    return
                os.kill(pid, signal.SIGABRT)
                deadline = time.monotonic() + DEATH_TIMEOUT_S
                while not _dead(pid) and time.monotonic() < deadline:
                    time.sleep(0.01)  # the kernel writes the core before the process dies
            cores = list(Path(private).iterdir())
            if not cores:
                outcome.status = BLOCKED
                outcome.reason = (
                    "no core written: the process is non-dumpable (PR_SET_DUMPABLE 0)"
                    if not dumpable
                    else "no core written (coredump_filter or RLIMIT_CORE)"
                )
                return
            size, dumped, excluded = scan_core(cores[0], live, scanner, outcome)
            outcome.reason = f"core of {size} bytes: {dumped} segments dumped, {excluded} excluded"
