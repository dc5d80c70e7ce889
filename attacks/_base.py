"""The Attack interface: acquire memory from a process, scan it, report what was found.

Attacks depend on memory sources and scanners only, never on a design's internals, so
they work on any process: `python -m attacks.<name> --pid N --needle-file F`.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .scan import Finding, Hit, Scanner
from .sources import ReadStats, Region

OK, BLOCKED, SKIPPED, ERROR = "ok", "blocked", "skipped", "error"


@dataclass(slots=True)
class AttackOutcome:
    attack: str
    attacker: str
    artefact: str
    pid: int
    status: str
    reason: str = ""
    findings: list[Finding] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    stats: ReadStats = field(default_factory=ReadStats)
    duration_s: float = 0.0
    regions_total: int = 0
    # later moments of the same acquisition, e.g. [("after-exit", outcome)] from swap:
    # the lab emits each as a row of that phase
    follow_ups: list[tuple[str, AttackOutcome]] = field(default_factory=list)


def attacker_class(pid: int) -> str:
    """'root', 'same-user' or 'other-user', seen from the process running the attack."""
    if os.geteuid() == 0:
        return "root"
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return "same-user"
    return "same-user" if uid == os.geteuid() else "other-user"


class Attack(ABC):
    """Subclasses set `name`, `artefact` and `summary`, and implement `_run`."""

    name: ClassVar[str]
    artefact: ClassVar[str]
    summary: ClassVar[str]
    # kills its target: the lab gives such an attack a victim of its own
    destructive: ClassVar[bool] = False

    @classmethod
    def supported(cls) -> str | None:
        """None if the attack can run here, else the reason and the command that fixes it."""
        return None

    def run(self, pid: int, scanner: Scanner, workdir: Path | None = None) -> AttackOutcome:
        outcome = AttackOutcome(self.name, attacker_class(pid), self.artefact, pid, OK)
        reason = self.supported()
        if reason is not None:
            outcome.status, outcome.reason = SKIPPED, reason
            return outcome
        started = time.perf_counter()
        try:
            self._run(pid, scanner, workdir, outcome)
        except PermissionError as exc:
            # the kernel's ptrace access check: a non-dumpable process (or another user's)
            # refuses even its own uid; only root with CAP_SYS_PTRACE gets past it
            outcome.status = BLOCKED
            outcome.reason = f"access refused ({exc.strerror}) to {exc.filename or 'the process'}"
            outcome.reason += "; the target is non-dumpable or not this user's"
        finally:
            outcome.duration_s = time.perf_counter() - started
        return outcome

    @abstractmethod
    def _run(
        self, pid: int, scanner: Scanner, workdir: Path | None, outcome: AttackOutcome
    ) -> None: ...


def scan_core(
    core: Path, live: list[Region], scanner: Scanner, outcome: AttackOutcome
) -> tuple[int, int, int]:
    """Scan an ELF core into `outcome`, then delete it (it holds the victim's memory).
    Returns (core bytes, segments dumped, segments excluded)."""
    from .sources import ElfCoreSource

    source = ElfCoreSource(core, live)
    try:
        outcome.regions_total = len(source.regions())
        outcome.hits = scanner.scan(source)
        outcome.stats = source.stats
        outcome.findings = scanner.summarize(outcome.hits)
        return core.stat().st_size, source.segments_dumped, source.segments_excluded
    finally:
        core.unlink(missing_ok=True)
