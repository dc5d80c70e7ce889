"""Run the matrix: designs x victims (subject, control) x phases x attacks -> result rows.

The harness makes fresh random secrets for the run, hands them to a victim through
pipes, walks the victim through the phases, and at each phase runs every attack with a
scanner that looks for the plaintext, the key and a decoy the victim never saw. A control
victim runs the same design with throwaway secrets and is scanned for the run's secrets.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._registry import DESIGNS
from .._wipe import wipe
from ._attacker import ATTACKER_CLASSES, ROOT, attacker_supported, lab_identity, run_as
from ._phases import EXPOSURE_PHASES, PHASES
from .results import (
    SCHEMA_VERSION,
    HitRow,
    ResultsWriter,
    Row,
    host_facts,
    new_run_id,
    package_versions,
    row_base,
)

SECRET_KINDS = ("unicode", "ascii", "binary")
# the subject holds the run's secrets; the control holds throwaway ones of the same shape
# and is searched for the run's: what it shows is the method's false positives
ROLES = ("subject", "control")
# Letters outside Latin-1 make CPython store a str as UCS-2: plain's copies show as UTF-16LE.
_UNICODE_EXTRA = "αβγδεζηθλμπσφψωЖДФЯ"


class LabError(RuntimeError):
    """The harness itself failed (victim died, protocol broken): the run is not valid."""


@dataclass
class LabSecrets:
    """Ground truth for one run. Lives in the harness only; never written anywhere."""

    plaintext: bytearray = field(repr=False)
    key: bytearray = field(repr=False)
    decoy: bytearray = field(repr=False)
    kind: str
    length: int

    @classmethod
    def generate(cls, kind: str = "unicode", length: int = 28) -> LabSecrets:
        if kind not in SECRET_KINDS:
            raise ValueError(f"secret kind must be one of {SECRET_KINDS}, got {kind!r}")

        def one() -> bytearray:
            if kind == "binary":
                return bytearray(secrets.token_bytes(length))
            alphabet = string.ascii_letters + string.digits
            chars = [secrets.choice(alphabet) for _ in range(length)]
            if kind == "unicode":
                for i in range(0, length, 7):
                    chars[i] = secrets.choice(_UNICODE_EXTRA)
            return bytearray("".join(chars).encode("utf-8"))

        return cls(one(), bytearray(secrets.token_bytes(32)), one(), kind, length)

    @property
    def text(self) -> bool:
        return self.kind != "binary"

    def needle_set(self) -> Any:
        """The plaintext, the key, the decoy, and the key's AES schedules (what a process
        that used the key may keep after the key itself is gone), in one pass."""
        from attacks.scan import NeedleSet, Secret, key_schedule_needles

        return NeedleSet(
            [
                Secret("plaintext", bytes(self.plaintext), self.text),
                Secret("key", bytes(self.key), False),
                Secret("decoy", bytes(self.decoy), self.text),
            ],
            extra=key_schedule_needles(bytes(self.key)),
        )

    def wipe(self) -> None:
        for buffer in (self.plaintext, self.key, self.decoy):
            wipe(buffer)


class Victim:
    """One victim process. Use as a context manager: it is always reaped."""

    def __init__(
        self, design: str, ballast_mib: int = 0, run_as: tuple[int, int] | None = None
    ) -> None:
        """`run_as`: (uid, gid) the victim drops to before it is given anything."""
        self.design = design
        self.run_as = run_as
        secret_r, self._secret_w = os.pipe()
        key_r, self._key_w = os.pipe()
        self._use_harness, use_victim = socket.socketpair()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memcryptor_lab.lab.victim",
                "--design",
                design,
                "--secret-fd",
                str(secret_r),
                "--key-fd",
                str(key_r),
                "--use-fd",
                str(use_victim.fileno()),
                "--ballast-mib",
                str(ballast_mib),
                *(["--run-as", f"{run_as[0]}:{run_as[1]}"] if run_as else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            pass_fds=(secret_r, key_r, use_victim.fileno()),
        )
        for fd in (secret_r, key_r):
            os.close(fd)
        use_victim.close()
        self.pid = self.proc.pid
        self.notes = ""
        self._expect("started")

    def _send(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise LabError(f"victim {self.pid} ({self.design}) is gone") from None
        return self._read_reply()

    def _read_reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=10)
            raise LabError(f"victim {self.pid} ({self.design}) exited with status {code}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise LabError(f"victim {self.design}: {reply.get('error')}: {reply.get('message')}")
        return reply

    def _expect(self, phase: str) -> dict[str, Any]:
        reply = self._read_reply()
        if reply.get("phase") != phase:
            raise LabError(f"victim reported phase {reply.get('phase')!r}, expected {phase!r}")
        return reply

    def load(self, plaintext: bytearray, key: bytearray) -> None:
        os.write(self._key_w, key)
        os.close(self._key_w)
        # A pipe holds 64 KiB; secrets are far smaller, so one write cannot block.
        os.write(self._secret_w, plaintext)
        os.close(self._secret_w)
        self._key_w = self._secret_w = -1
        self.notes = str(self._send(cmd="load", secret_len=len(plaintext)).get("notes", ""))

    def use(self, plaintext: bytearray) -> None:
        """Enter in-use and check that the victim really used the secret we gave it."""
        challenge = secrets.token_bytes(32)
        reply = self._send(cmd="use", challenge=challenge.hex())
        received = bytearray(len(plaintext))
        view = memoryview(received)
        got = 0
        while got < len(received):
            n = self._use_harness.recv_into(view[got:])
            if n == 0:
                break
            got += n
        view.release()
        expected_mac = hmac.digest(plaintext, challenge, "sha256").hex()
        ok = got == len(plaintext) and hmac.compare_digest(received, plaintext)
        wipe(received)
        if not ok or not hmac.compare_digest(reply["mac"], expected_mac):
            raise LabError(f"victim {self.design} did not use the secret it was given")

    def release(self) -> None:
        self._send(cmd="release")

    def collect(self) -> None:
        """A forced garbage collection in the victim (after release)."""
        self._send(cmd="collect")

    def close(self) -> None:
        for fd in (self._secret_w, self._key_w):
            if fd >= 0:
                os.close(fd)
        self._use_harness.close()
        if self.proc.poll() is None:
            try:
                self._send(cmd="exit")
                self.proc.wait(timeout=5)
            except (LabError, OSError, subprocess.TimeoutExpired, ValueError):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Victim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


WORKDIR_PREFIX = "memlab-"
OWNER_FILE = ".owner"


def _identity(pid: int) -> str:
    """pid and start time: a reused pid is another process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return f"{pid} {stat.read().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return f"{pid} gone"


def sweep_stale_workdirs() -> list[Path]:
    """Remove the private directories of harnesses that no longer run (or kept ones: no)."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        try:
            owner = (path / OWNER_FILE).read_text()
        except OSError:
            continue  # not ours, or kept on purpose without an owner
        pid = int(owner.split()[0])
        if _identity(pid) != owner:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def private_workdir(keep: bool = False) -> Iterator[Path]:
    """A 0700 directory for dumps and cores, removed afterwards unless `keep`.

    It names its owner (pid and start time), so that the directory of a harness killed
    with SIGKILL, whose `finally` never ran, is removed by the next run."""
    sweep_stale_workdirs()
    path = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    os.chmod(path, 0o700)
    (path / OWNER_FILE).write_text(_identity(os.getpid()))
    try:
        yield path
    finally:
        if keep:
            (path / OWNER_FILE).unlink(missing_ok=True)  # kept: no sweep may take it
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def terminate_as_interrupt() -> Iterator[Callable[[], None]]:
    """SIGINT and SIGTERM become KeyboardInterrupt, so every `finally` (victims, brokers,
    temp dirs) runs. Yields a check to call between steps: a KeyboardInterrupt raised while
    a finalizer (`__del__`) happened to run is swallowed by CPython, and was seen here to
    let an interrupted run finish with status 0; the check raises it again."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    def check() -> None:
        if received:
            raise KeyboardInterrupt(f"signal {received[0]}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield check
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def broker_for(
    designs: Sequence[str], workdir: Path, attackers: Sequence[str] = (ROOT,)
) -> Iterator[int | None]:
    """A broker for this run when the broker design is in it: its pid, or None.

    Scoped per process (like DPAPI's SAME_PROCESS), so subject and control victims have
    separate keys. Victims find it through MEMLAB_BROKER_SOCKET. It runs as root, a system
    service; when victims also run as the lab uid it serves that uid too, on an abstract
    socket (no file permissions: SO_PEERCRED and the uid allow-list are the door)."""
    if "broker" not in designs or DESIGNS["broker"].supported() is not None:
        yield None
        return
    from ..broker.client import start_broker

    if any(a != ROOT and attacker_supported(a) is None for a in attackers):
        address = f"@memlab-broker-{secrets.token_hex(8)}"
        proc = start_broker(
            address, identity="process", tied=True, allow_uids=(os.geteuid(), lab_identity()[0])
        )
    else:
        address = str(workdir / "broker" / "broker.sock")
        proc = start_broker(address, identity="process", tied=True)
    previous = os.environ.get("MEMLAB_BROKER_SOCKET")
    os.environ["MEMLAB_BROKER_SOCKET"] = address
    try:
        yield proc.pid
    finally:
        if previous is None:
            os.environ.pop("MEMLAB_BROKER_SOCKET", None)
        else:
            os.environ["MEMLAB_BROKER_SOCKET"] = previous
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class RunResult:
    run_dir: Path
    run_id: str
    rows: list[Row]
    duration_s: float


ProgressFn = Callable[[str], None]


def run_matrix(
    out: str | os.PathLike[str],
    designs: Sequence[str] | None = None,
    attacks: Sequence[str] | None = None,
    phases: Sequence[str] = PHASES,
    *,
    attackers: Sequence[str] = ATTACKER_CLASSES,
    roles: Sequence[str] = ROLES,
    secret_kind: str = "unicode",
    lab_secrets: LabSecrets | None = None,
    keep_artefacts: bool = False,
    progress: ProgressFn | None = None,
) -> RunResult:
    """Run the matrix and write `out/<run-id>/`. Returns the rows written."""
    from attacks import ATTACKS
    from attacks.scan import Scanner

    designs = list(designs or DESIGNS)
    attacks = list(attacks or ATTACKS)
    for name in designs:
        if name not in DESIGNS:
            raise ValueError(f"unknown design {name!r}; known: {', '.join(DESIGNS)}")
    for name in attacks:
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    for phase in phases:
        if phase not in EXPOSURE_PHASES:
            raise ValueError(f"unknown phase {phase!r}; phases: {', '.join(EXPOSURE_PHASES)}")
    if not set(roles) <= set(ROLES) or "subject" not in roles:
        raise ValueError(f"roles must include 'subject' and be among {ROLES}, got {roles}")
    for attacker in attackers:
        if attacker not in ATTACKER_CLASSES:
            raise ValueError(
                f"unknown attacker class {attacker!r}; known: {', '.join(ATTACKER_CLASSES)}"
            )

    from attacks._crash_core import restore_core_pattern
    from attacks._swapfile import restore_swap_state

    with contextlib.suppress(OSError):  # a harness killed mid-crash-core left it changed
        restore_core_pattern()
    with contextlib.suppress(OSError):  # ... or mid-swap: its swap file on, zswap off
        restore_swap_state()
    owned_secrets = lab_secrets is None
    truth = lab_secrets or LabSecrets.generate(secret_kind)
    needles = truth.needle_set()
    scanner = Scanner(needles)
    run_id = new_run_id()
    facts = host_facts()
    started = time.time()
    writer = ResultsWriter(Path(out) / run_id)
    rows: list[Row] = []
    base = row_base(run_id, facts)
    meta: dict[str, Any] = {
        "run_id": run_id,
        "started": started,
        "command": sys.argv,
        "designs": designs,
        "attacks": attacks,
        "phases": list(phases),
        "attackers": list(attackers),
        "roles": list(roles),
        "secret_kind": secret_kind,
        "secret_len": len(truth.plaintext),
        "key_len": len(truth.key),
        "scan_engine": scanner.engine_name,
        "host_facts": facts,
        "package_versions": package_versions(),
        "status": "running",
    }
    writer.write_meta(meta)

    def check_interrupted() -> None:  # replaced by the signal guard's check below
        return None

    def emit(cell: dict[str, Any], outcome: Any, design_notes: str = "") -> None:
        check_interrupted()
        from attacks.scan import reportable_hits, summarize

        for moment, follow_up in outcome.follow_ups:  # e.g. swap after the victim exited
            follow_up.attacker = outcome.attacker
            emit({**cell, "phase": moment}, follow_up, design_notes)

        findings = outcome.findings or summarize(needles, [])
        for f in findings:
            status = f.status if f.status != "ok" else outcome.status
            row = Row(
                **base,
                **cell,
                attacker=outcome.attacker,
                artefact=outcome.artefact,
                needle_kind=f.kind,
                encoding=f.encoding,
                form=f.form,
                needle_id=f.needle_id,
                needle_len=f.needle_len,
                hits=f.hits,
                copies=f.copies,
                regions=len(f.regions),
                region_names="; ".join(f.regions),
                bytes_scanned=outcome.stats.bytes_read,
                bytes_unreadable=outcome.stats.bytes_unreadable,
                read_errors=outcome.stats.errors_text(),
                regions_total=outcome.regions_total,
                duration_s=round(outcome.duration_s, 4),
                status=status,
                reason=f.reason or outcome.reason,
                design_notes=design_notes,
            )
            writer.add(row)
            rows.append(row)
        for h in reportable_hits(outcome.hits):
            region = h.region
            writer.add_hit(
                HitRow(
                    schema_version=SCHEMA_VERSION,
                    run_id=run_id,
                    **cell,
                    attacker=outcome.attacker,
                    needle_kind=h.kind,
                    encoding=h.encoding,
                    form=h.form,
                    needle_id=h.needle_id,
                    address=hex(h.address),
                    region=region.name if region else "",
                    perms=region.perms if region else "",
                    vmflags=" ".join(region.vmflags) if region else "",
                    anonymous=region.anonymous if region else False,
                    offset_in_region=h.address - region.start if region else 0,
                )
            )

    try:
        with (
            terminate_as_interrupt() as check_interrupted,
            private_workdir(keep_artefacts) as workdir,
            broker_for(designs, workdir, attackers) as broker_pid,
        ):
            for attacker in attackers:
                why_not = attacker_supported(attacker)
                with contextlib.ExitStack() as per_class:
                    identity, attack_dir = None, workdir
                    if why_not is None and attacker != ROOT:
                        identity = lab_identity()
                        # its cores go to a private directory the lab uid owns
                        attack_dir = per_class.enter_context(private_workdir(keep_artefacts))
                        os.chown(attack_dir, *identity)
                    who = _Attacker(attacker, identity, attack_dir)
                    for design in designs:
                        reason = why_not or DESIGNS[design].supported()
                        for role in roles:
                            if reason is not None:
                                for attack_name in attacks:
                                    for phase in phases:
                                        cell = {
                                            "design": design,
                                            "attack": attack_name,
                                            "victim": role,
                                            "phase": phase,
                                        }
                                        emit(cell, _skipped(ATTACKS[attack_name], reason, attacker))
                                continue
                            # the broker is a process too: attack it alongside its client
                            extra = (
                                {"broker-process": broker_pid}
                                if (design == "broker" and role == "subject" and broker_pid)
                                else {}
                            )
                            _walk_victim(
                                design,
                                role,
                                truth,
                                phases,
                                attacks,
                                scanner,
                                who,
                                emit,
                                progress,
                                extra,
                            )
            check_interrupted()
        meta["status"] = "complete"
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        raise
    except BaseException as exc:
        meta["status"] = f"failed: {type(exc).__name__}"
        raise
    finally:
        meta["finished"] = time.time()
        meta["duration_s"] = round(meta["finished"] - started, 3)
        meta["rows"], meta["hits"] = writer.row_count, writer.hit_count
        writer.write_meta(meta)
        writer.close()
        if owned_secrets:
            truth.wipe()
    return RunResult(writer.run_dir, run_id, rows, meta["duration_s"])


def _skipped(attack_cls: Any, reason: str, attacker: str) -> Any:
    from attacks import SKIPPED, AttackOutcome

    return AttackOutcome(attack_cls.name, attacker, attack_cls.artefact, 0, SKIPPED, reason)


def _run_attack(
    name: str, pid: int, scanner: Any, workdir: Path, target_files: Path | None = None
) -> Any:
    from attacks import ATTACKS

    if target_files is not None:  # in the attacker's own (forked) process only
        os.environ["MEMLAB_TARGET_FILES"] = str(target_files)
    return ATTACKS[name]().run(pid, scanner, workdir)


def _attack_supported(name: str) -> str | None:
    from attacks import ATTACKS

    return ATTACKS[name].supported()


@dataclass
class _Attacker:
    """One attacker class: its name, the uid it runs as (None: the harness itself), and the
    private directory its attacks write cores to."""

    name: str
    identity: tuple[int, int] | None
    workdir: Path
    _target_files: Path | None = None

    def target_files(self) -> Path:
        """Copies of the interpreter's files (they live under /root, out of the lab uid's
        reach) for the debugger's symbols: any attacker can have copies of a public binary."""
        if self._target_files is None:
            assert self.identity is not None
            folder = self.workdir / "target-files"
            folder.mkdir(mode=0o700)
            with open("/proc/self/maps") as maps:
                fields = (line.split(None, 5) for line in maps)
                mapped = {f[5].strip() for f in fields if len(f) == 6}
            mapped.add(os.path.realpath(sys.executable))
            for path in sorted(mapped):
                if path.startswith(sys.base_prefix) and os.path.isfile(path):
                    copy = folder / os.path.basename(path)
                    shutil.copyfile(path, copy)
                    os.chmod(copy, 0o500)
                    os.chown(copy, *self.identity)
            os.chown(folder, *self.identity)
            self._target_files = folder
        return self._target_files

    def supported(self, attack: str) -> str | None:
        if self.identity is None:
            return _attack_supported(attack)
        return run_as(*self.identity, _attack_supported, attack)

    def attack(self, name: str, pid: int, scanner: Any) -> Any:
        if self.identity is None:
            outcome = _run_attack(name, pid, scanner, self.workdir)
        else:
            files = self.target_files()
            outcome = run_as(*self.identity, _run_attack, name, pid, scanner, self.workdir, files)
        outcome.attacker = self.name  # the class measured, whatever the target's owner
        return outcome


def _walk_victim(
    design: str,
    role: str,
    truth: LabSecrets,
    phases: Sequence[str],
    attacks: Sequence[str],
    scanner: Any,
    who: _Attacker,
    emit: Callable[..., None],
    progress: ProgressFn | None,
    extra_targets: dict[str, int],
) -> None:
    from attacks import ATTACKS

    # The control victim gets throwaway secrets of the same shape, and is searched for
    # the run's secrets: whatever it shows is a false positive of the method.
    given = truth if role == "subject" else LabSecrets.generate(truth.kind, truth.length)
    lasting = [a for a in attacks if not ATTACKS[a].destructive]
    killing = [a for a in attacks if ATTACKS[a].destructive]
    try:
        with Victim(design, run_as=who.identity) as victim:
            victim.load(given.plaintext, given.key)
            for phase in _walk(victim, given, phases):
                for attack_name in lasting:
                    if progress:
                        progress(f"{who.name} {design} {role} {phase} {attack_name}")
                    cell = {"design": design, "attack": attack_name, "victim": role, "phase": phase}
                    emit(cell, who.attack(attack_name, victim.pid, scanner), victim.notes)
                    for target, pid in extra_targets.items():
                        outcome = who.attack(attack_name, pid, scanner)
                        emit({**cell, "victim": target}, outcome, victim.notes)
        # An attack that kills its target gets a fresh victim walked to each phase of the
        # default walk (the exposure delays are for the lasting attacks). Its follow-ups
        # (swap after exit) are kept from the last phase's victim only: one row each.
        killing_phases = [p for p in phases if p in PHASES]
        for attack_name in killing:
            reason = who.supported(attack_name)
            for wanted in killing_phases:
                cell = {"design": design, "attack": attack_name, "victim": role, "phase": wanted}
                if reason is not None:
                    emit(cell, _skipped(ATTACKS[attack_name], reason, who.name))
                    continue
                with Victim(design, run_as=who.identity) as victim:
                    victim.load(given.plaintext, given.key)
                    for _ in _walk(victim, given, [wanted], stop_after=wanted):
                        if progress:
                            progress(f"{who.name} {design} {role} {wanted} {attack_name}")
                        outcome = who.attack(attack_name, victim.pid, scanner)
                        if wanted != killing_phases[-1]:
                            outcome.follow_ups.clear()
                        emit(cell, outcome, victim.notes)
                        for target in extra_targets:  # the broker serves everyone: spare it
                            emit(
                                {**cell, "victim": target},
                                _skipped(
                                    ATTACKS[attack_name],
                                    "would kill the shared broker; run it on its own",
                                    who.name,
                                ),
                                victim.notes,
                            )
    finally:
        if given is not truth:
            given.wipe()


# seconds after release at which the exposure walk's delayed phases are attacked
RELEASE_DELAYS = {"released+1s": 1.0, "released+10s": 10.0}


def _walk(
    victim: Victim, given: LabSecrets, phases: Sequence[str], stop_after: str | None = None
) -> Iterator[str]:
    """Take the victim through the phases in order; yield those to attack. Delayed phases
    are timed from the release (attacks in between count towards the delay)."""
    released_at = 0.0
    for phase in EXPOSURE_PHASES:
        if phase not in phases and not any(
            EXPOSURE_PHASES.index(p) > EXPOSURE_PHASES.index(phase) for p in phases
        ):
            return  # nothing later is wanted
        if phase == "in-use":
            victim.use(given.plaintext)
        elif phase == "released":
            victim.release()
            released_at = time.monotonic()
        elif phase in RELEASE_DELAYS:
            if phase not in phases:
                continue  # no need to wait for a moment nobody attacks
            time.sleep(max(0.0, released_at + RELEASE_DELAYS[phase] - time.monotonic()))
        elif phase == "after-gc":
            victim.collect()
        if phase in phases:
            yield phase
        if phase == stop_after:
            return
