"""`gcore` and `gcore-all`: gdb attaches and writes a core file, which is then scanned.

`gcore` honours MADV_DONTDUMP and /proc/PID/coredump_filter, as a crash core would;
`gcore -a` dumps every mapping. gdb reads memory through /proc/PID/mem, so pages that refuse
it (memfd_secret) come out as "Memory read failed" warnings: the row is then `blocked`.
The core lives in the private work directory and is deleted as soon as it is scanned.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ._base import BLOCKED, ERROR, Attack, AttackOutcome, scan_core
from ._proc_mem import KERNEL_PAGES
from .scan import Scanner
from .sources import read_regions

_READ_FAILED = re.compile(r"Memory read failed for corefile section, (\d+) bytes at (0x[0-9a-f]+)")
GCORE_TIMEOUT_S = 300


class Gcore(Attack):
    name = "gcore"
    artefact = "debugger-core"
    summary = "gdb's gcore writes a core (honouring MADV_DONTDUMP); the core is scanned"
    dump_all = False

    @classmethod
    def supported(cls) -> str | None:
        if shutil.which("gcore") is None:
            return "gdb's gcore is not installed: apt-get install gdb"
        return None

    def _run(
        self, pid: int, scanner: Scanner, workdir: Path | None, outcome: AttackOutcome
    ) -> None:
        try:
            live, _ = read_regions(pid)
        except FileNotFoundError:
            outcome.status, outcome.reason = ERROR, f"process {pid} does not exist"
            return
        with tempfile.TemporaryDirectory(prefix="gcore-", dir=workdir) as private:
            prefix = Path(private) / "core"
            command = ["gcore", *(["-a"] if self.dump_all else []), "-o", str(prefix), str(pid)]
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=GCORE_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
            core = Path(f"{prefix}.{pid}")
            if done.returncode != 0 or not core.exists():
                last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                outcome.status = BLOCKED if "ptrace" in last[0].lower() else ERROR
                outcome.reason = f"gcore failed ({done.returncode}): {last[0][:200]}"
                return
            size, dumped, excluded = scan_core(core, live, scanner, outcome)
        refused = _refused_sections(done.stdout + done.stderr, live)
        outcome.reason = f"core of {size} bytes: {dumped} segments dumped, {excluded} excluded"
        if refused:
            outcome.status = BLOCKED
            outcome.reason += (
                f"; gdb could not read {len(refused)} section(s) "
                f"({sum(refused)} bytes, e.g. memfd_secret)"
            )


class GcoreAll(Gcore):
    name = "gcore-all"
    summary = "gdb's gcore -a writes a core of every mapping (ignores MADV_DONTDUMP); scanned"
    dump_all = True


def _refused_sections(output: str, live: list) -> list[int]:  # type: ignore[type-arg]
    """Sizes of the sections gdb could not read, the kernel's own pages left out."""
    kernel = [r for r in live if r.name in KERNEL_PAGES]
    sizes = []
    for size, address in _READ_FAILED.findall(output):
        addr = int(address, 16)
        if not any(r.start <= addr < r.end for r in kernel) and addr < 0xFFFF800000000000:
            sizes.append(int(size))
    return sizes
