"""`proc-mem`: every mapped region of a live process read through /proc/PID/mem."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import ClassVar

from ._base import BLOCKED, ERROR, Attack, AttackOutcome
from .scan import Scanner
from .sources import ProcessGoneError, ProcMemSource, VmReadvSource

KERNEL_PAGES = frozenset({"[vvar]", "[vvar_vclock]", "[vsyscall]"})


class ProcMem(Attack):
    name = "proc-mem"
    artefact = "live-memory"
    summary = "region list from /proc/PID/smaps, every region read through /proc/PID/mem"
    source: ClassVar[type[ProcMemSource]] = ProcMemSource

    def _run(
        self, pid: int, scanner: Scanner, workdir: Path | None, outcome: AttackOutcome
    ) -> None:
        source = self.source(pid)
        try:
            regions = source.regions()
            outcome.regions_total = len(regions)
            outcome.hits = scanner.scan(source)
        except ProcessGoneError as exc:
            outcome.status, outcome.reason = ERROR, str(exc)
            return
        except PermissionError as exc:
            outcome.status = BLOCKED
            outcome.reason = (
                f"{errno.errorcode.get(exc.errno or 0, 'EACCES')} opening "
                f"{exc.filename}: non-dumpable process or another uid"
            )
            return
        outcome.stats = source.stats
        outcome.findings = scanner.summarize(outcome.hits)
        if source.stats.bytes_read == 0:
            outcome.status = BLOCKED
            outcome.reason = f"no byte readable ({source.stats.errors_text() or 'empty'})"
            return
        # The kernel's own pages ([vvar], [vsyscall]) refuse every reader. Any other region
        # that refuses (memfd_secret does) is the target defending itself: blocked, with
        # the hits in what was readable still counted.
        refused = [(r, n) for r, n in source.stats.refused if r.name not in KERNEL_PAGES]
        if refused:
            outcome.status = BLOCKED
            total = sum(n for _, n in refused)
            names = ", ".join(sorted({r.describe() for r, _ in refused})[:3])
            outcome.reason = (
                f"{len(refused)} region(s), {total} bytes refused reads "
                f"({source.stats.errors_text()}): {names}; the rest was scanned"
            )


class VmReadv(ProcMem):
    name = "vm-readv"
    summary = "region list from /proc/PID/smaps, every region read with process_vm_readv"
    source: ClassVar[type[ProcMemSource]] = VmReadvSource
