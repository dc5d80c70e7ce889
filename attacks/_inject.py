"""Code injection: a debugger makes the target hand over its own memory or secrets.

`inject`: gdb attaches and makes the target `write(2)` every region of its memory to a
file, then detaches. The reads are the target's own, so what refuses every outside reader
(memfd_secret; PROT_NONE, opened with the target's own `mprotect` and closed again) comes
out too. Nothing of the secret is copied inside the target: the kernel writes straight
from its pages.

`inject-api`: gdb makes the target run Python that finds the protector library's `Sealed`
objects and calls their public `reveal()`, as the program itself would, writing what it
gets to a file. No design that keeps the means to decrypt within reach of the process
survives this (the broker included: the broker serves the process, and injected code is
the process). It shows where the line of trust lies: an attacker who can run code in the
process as it (root, or the same user when the process is dumpable) gets the secret.

Both need ptrace: a non-dumpable target refuses a same-user attacker (`blocked`). gdb
needs the target's program files for symbols; an attacker who cannot read them where the
target has them (the lab's same-user attacker: the interpreter lives under /root) gets
copies, as any attacker can of a public binary: $MEMLAB_TARGET_FILES names a directory of
them by file name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ._base import BLOCKED, ERROR, Attack, AttackOutcome
from ._proc_mem import KERNEL_PAGES
from .scan import Scanner
from .sources import FileSource, Region, Segment, SegmentSource, read_regions

GDB_TIMEOUT_S = 300
_HERE = Path(__file__).resolve().parent
_PROT = {"r": 1, "w": 2, "x": 4}


def _prot(perms: str) -> int:
    return sum(bit for flag, bit in _PROT.items() if flag in perms[:3])


def _target_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[2]) for line in status if line.startswith("Uid:"))


def _run_gdb(pid: int, plan: dict[str, object], private: Path) -> tuple[dict[str, object], str]:
    """Run the plan inside gdb attached to pid: (the target's result, gdb's last words)."""
    plan_file = private / "plan.json"
    plan_file.write_text(json.dumps(plan))
    command = ["gdb", "-nx", "-batch"]
    copies = os.environ.get("MEMLAB_TARGET_FILES")
    if copies:
        command += ["-iex", f"set solib-search-path {copies}"]
        with contextlib.suppress(OSError):
            exe = Path(copies) / Path(os.readlink(f"/proc/{pid}/exe")).name
            command += [str(exe)] if exe.exists() else []
    done = subprocess.run(
        [*command, "-p", str(pid), "-x", str(_HERE / "_gdb_inject.py")],
        capture_output=True,
        text=True,
        timeout=GDB_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "MEMLAB_INJECT_PLAN": str(plan_file)},
    )
    for line in done.stdout.splitlines():
        if line.startswith("MEMLAB-INJECT "):
            return json.loads(line.split(" ", 1)[1]), ""
    for line in done.stderr.splitlines():
        if line.startswith("ptrace:"):  # the kernel refused the attach
            return {}, line[:200]
    last = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()][-1:]
    return {}, (last[0] if last else f"gdb exited with {done.returncode}")[:200]


class _Injection(Attack):
    @classmethod
    def supported(cls) -> str | None:
        if shutil.which("gdb") is None:
            return "gdb is not installed: apt-get install gdb"
        return None

    def _private(self, pid: int, workdir: Path | None) -> tempfile.TemporaryDirectory[str]:
        private = tempfile.TemporaryDirectory(prefix=f"{self.name}-", dir=workdir)
        if os.geteuid() == 0:  # the target writes there itself, as whoever it runs as
            os.chown(private.name, _target_uid(pid), -1)
        return private

    def _refused(self, outcome: AttackOutcome, why: str) -> None:
        refused = any(word in why.lower() for word in ("ptrace", "not permitted", "denied"))
        outcome.status = BLOCKED if refused else ERROR
        outcome.reason = f"gdb could not attach or call: {why}"


class Inject(_Injection):
    name = "inject"
    artefact = "injected-copy"
    summary = "gdb makes the target write(2) all its memory out (memfd_secret, PROT_NONE too)"

    def _run(
        self, pid: int, scanner: Scanner, workdir: Path | None, outcome: AttackOutcome
    ) -> None:
        try:
            live, _ = read_regions(pid)
        except FileNotFoundError:
            outcome.status, outcome.reason = ERROR, f"process {pid} does not exist"
            return
        wanted = [r for r in live if r.name not in KERNEL_PAGES and r.size > 0]
        with self._private(pid, workdir) as private:
            image = Path(private) / "image"
            plan = {
                "kind": "copy-out",
                "image": str(image),
                "regions": [[r.start, r.size, _prot(r.perms), not r.readable] for r in wanted],
            }
            result, why = _run_gdb(pid, plan, Path(private))
            if "written" not in result:
                self._refused(outcome, why or str(result.get("error")))
                return
            segments, offset, failed = [], 0, 0
            for start, done in result["written"]:  # type: ignore[attr-defined]
                if done > 0:
                    segments.append(Segment(start, done, image, offset))
                    offset += done
                else:
                    failed += 1
            source = SegmentSource(segments, live)
            try:
                outcome.regions_total = len(wanted)
                outcome.hits = scanner.scan(source)
                outcome.stats = source.stats
                outcome.findings = scanner.summarize(outcome.hits)
            finally:
                image.unlink(missing_ok=True)
        opened = sum(1 for r in wanted if not r.readable)
        outcome.reason = (
            f"the target wrote {len(segments)} of {len(wanted)} regions ({offset} bytes), "
            f"{opened} of them PROT_NONE opened by its own mprotect; {failed} failed"
        )


class InjectApi(_Injection):
    name = "inject-api"
    artefact = "injected-code"
    summary = "gdb makes the target run Python that reveals every Sealed via the public API"
    # it leaves what it revealed in the target's heap: the lab gives it a victim of its own
    destructive = True

    def _run(
        self, pid: int, scanner: Scanner, workdir: Path | None, outcome: AttackOutcome
    ) -> None:
        if not Path(f"/proc/{pid}").exists():
            outcome.status, outcome.reason = ERROR, f"process {pid} does not exist"
            return
        with self._private(pid, workdir) as private:
            image, report = Path(private) / "revealed", Path(private) / "report.json"
            payload = Path(private) / "payload.py"
            payload.write_text(
                f"_memlab_image = {str(image)!r}\n_memlab_report = {str(report)!r}\n"
                + (_HERE / "_inject_payload.py").read_text()
            )
            os.chmod(payload, 0o644)
            result, why = _run_gdb(pid, {"kind": "python", "payload": str(payload)}, Path(private))
            if "status" not in result or not report.exists():
                self._refused(outcome, why or str(result.get("error", "the payload did not run")))
                return
            told = json.loads(report.read_text())
            source = FileSource(image)
            try:
                outcome.regions_total = 1
                outcome.hits = scanner.scan_chunks(
                    source.chunks(), [Region(0, image.stat().st_size, "----", path="(revealed)")]
                )
                outcome.stats = source.stats
                outcome.findings = scanner.summarize(outcome.hits)
            finally:
                image.unlink(missing_ok=True)
        failures = ", ".join(sorted(set(told["failures"]))) or "none"
        outcome.reason = (
            f"injected code revealed {told['revealed']} secret(s) through Sealed.reveal() "
            f"(failures: {failures})"
            if told["library"]
            else "the target does not use memcryptor_lab: nothing to reveal through its API"
        )
