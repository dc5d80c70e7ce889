"""`memlab bench`: latency, throughput and scale of every design and scanner, each figure
also given as a ratio to a baseline measured in the same run.

Absolute times on shared machines drift; ratios measured side by side do not. Nothing
here asserts a timing: goals are reported as met or not, with the measured value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._registry import DESIGNS, open_design
from ..lab.matrix import broker_for, private_workdir
from ..lab.results import (
    BENCH_FILE,
    BenchRow,
    TableWriter,
    host_facts,
    new_run_id,
    package_versions,
    row_base,
    write_meta,
)
from ._baselines import aesgcm_ops, echo_op, echo_peer, memcpy_op
from ._timing import Samples, measure

KIB, MIB = 1 << 10, 1 << 20
SECRET_BYTES = 32
ECHO_MAX_PAYLOAD = 64 * KIB  # larger echoes would fill both socket buffers and deadlock


@dataclass(frozen=True)
class Profile:
    name: str
    latency_samples: int
    payloads: tuple[int, ...]
    throughput_samples: int
    min_sample_s: float
    secrets_held: tuple[int, ...]
    scanner_image_bytes: int
    reference_engine_bytes: int
    attack_victim_mib: int
    concurrency_ops: int
    keysched_image_bytes: int


PROFILES = {
    "quick": Profile(
        "quick",
        400,
        (32, 1 * KIB, 64 * KIB, 1 * MIB, 16 * MIB),
        7,
        0.002,
        (1, 100, 10_000),
        128 * MIB,
        4 * MIB,
        200,
        500,
        32 * MIB,
    ),
    "full": Profile(
        "full",
        5000,
        (32, 256, 1 * KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB, 16 * MIB),
        25,
        0.005,
        (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000),
        512 * MIB,
        16 * MIB,
        200,
        5000,
        256 * MIB,
    ),
    # for the test suite: exercises every path, measures nothing worth quoting
    "smoke": Profile(
        "smoke", 20, (32, 64 * KIB), 3, 0.0, (1, 100), 4 * MIB, 1 * MIB, 8, 20, 1 * MIB
    ),
}

# The goals from the benchmark issue, checked against ratios measured in this run.
GOALS: list[tuple[Callable[[BenchRow], bool], str, float]] = [
    (
        lambda r: (
            r.subject in ("hardened", "secretmem")
            and r.group == "throughput"
            and r.param >= 64 * KIB
        ),
        ">= 0.8x aes-gcm",
        0.8,
    ),
    (
        lambda r: r.subject == "broker" and r.group == "throughput" and r.param == MIB,
        ">= 0.5x aes-gcm",
        0.5,
    ),
    (lambda r: r.subject == "broker" and r.operation == "reveal", "p50 <= 2x unix-echo", 2.0),
    (
        lambda r: r.metric == "locked_per_secret" and r.param == 1_000_000 and r.value > 0,
        "<= 2x the secrets' size, locked",
        2.0,
    ),
]
ABSOLUTE_GOALS: dict[tuple[str, str], tuple[str, float]] = {
    ("scanner", "needles/hyperscan"): (">= 1 GB/s on one core", 1e9),
    ("scanner", "aes-key-schedule/exact"): (">= 100 MB/s on one core", 1e8),
    ("scanner", "aes-key-schedule/tolerant"): (">= 20 MB/s on one core", 2e7),
}


ProgressFn = Callable[[str], None]


class _Bench:
    def __init__(
        self,
        profile: Profile,
        writer: TableWriter,
        base: dict[str, Any],
        progress: ProgressFn | None,
    ) -> None:
        self.profile = profile
        self.writer = writer
        self.base = base
        self.progress = progress or (lambda label: None)
        self.rows: list[BenchRow] = []

    def emit(
        self,
        group: str,
        subject: str,
        operation: str,
        param: int,
        metric: str,
        unit: str,
        better: str,
        samples: Samples | None = None,
        *,
        value: float = 0.0,
        transform: Callable[[float], float] = float,
        baseline: BenchRow | tuple[str, float] | None = None,
        status: str = "ok",
        reason: str = "",
    ) -> BenchRow:
        if isinstance(baseline, BenchRow):
            baseline = (baseline.subject, baseline.value)
        if samples is not None:
            stats = {
                q: transform(samples.quantile(x))
                for q, x in (
                    ("value", 0.5),
                    ("p99", 0.99),
                    ("q1", 0.25),
                    ("q3", 0.75),
                    ("min", 0.0),
                    ("max", 1.0),
                )
            }
            if better == "higher":  # a throughput's p99 is its slow tail: swap the ends
                stats["p99"] = transform(samples.quantile(0.01))
                stats["q1"], stats["q3"] = stats["q3"], stats["q1"]
                stats["min"], stats["max"] = stats["max"], stats["min"]
            n, inner = len(samples.seconds), samples.inner
        else:
            stats = dict.fromkeys(("value", "p99", "q1", "q3", "min", "max"), value)
            n, inner = (1 if status == "ok" else 0), 1
        row = BenchRow(
            **self.base,
            profile=self.profile.name,
            group=group,
            subject=subject,
            operation=operation,
            param=param,
            metric=metric,
            unit=unit,
            better=better,
            samples=n,
            inner=inner,
            **stats,
            baseline=baseline[0] if baseline else "",
            baseline_value=baseline[1] if baseline else 0.0,
            ratio=round(stats["value"] / baseline[1], 4) if baseline and baseline[1] else 0.0,
            goal="",
            meets_goal="",
            status=status,
            reason=reason,
        )
        self._check_goals(row)
        self.writer.add(row)
        self.rows.append(row)
        return row

    @staticmethod
    def _check_goals(row: BenchRow) -> None:
        if row.status != "ok":
            return
        for applies, text, bound in GOALS:
            if applies(row):
                ok = row.ratio >= bound if row.better == "higher" else row.ratio <= bound
                row.goal, row.meets_goal = text, "yes" if ok else "no"
        absolute = ABSOLUTE_GOALS.get((row.group, row.subject))
        if absolute:
            row.goal, row.meets_goal = absolute[0], "yes" if row.value >= absolute[1] else "no"

    # -- latency -----------------------------------------------------------------------
    def latency(self, designs: Sequence[str]) -> None:
        p = self.profile
        secret = os.urandom(SECRET_BYTES)
        encrypt, decrypt = aesgcm_ops(secret)
        self.progress("latency: baselines")
        base_seal = self.emit(
            "latency",
            "aes-gcm",
            "seal",
            SECRET_BYTES,
            "latency",
            "s",
            "lower",
            measure(encrypt, samples=p.latency_samples),
        )
        base_reveal = self.emit(
            "latency",
            "aes-gcm",
            "reveal",
            SECRET_BYTES,
            "latency",
            "s",
            "lower",
            measure(decrypt, samples=p.latency_samples),
        )
        with echo_peer() as sock:
            echo = self.emit(
                "latency",
                "unix-echo",
                "round-trip",
                SECRET_BYTES,
                "latency",
                "s",
                "lower",
                measure(echo_op(sock, secret), samples=p.latency_samples),
            )
        for name in designs:
            self.progress(f"latency: {name}")
            with open_design(name, harden_process=False) as protector:
                staging = bytearray(SECRET_BYTES)

                def seal(protector: Any = protector, staging: bytearray = staging) -> None:
                    staging[:] = secret
                    protector.seal_buffer(staging).destroy()

                sealed = protector.seal_buffer(bytearray(secret))

                def reveal(sealed: Any = sealed) -> None:
                    with sealed.reveal():
                        pass

                self.emit(
                    "latency",
                    name,
                    "seal",
                    SECRET_BYTES,
                    "latency",
                    "s",
                    "lower",
                    measure(seal, samples=p.latency_samples),
                    baseline=base_seal,
                )
                # out-of-process designs compare to the echo, in-process ones to aes-gcm
                reveal_base = echo if DESIGNS[name].out_of_process else base_reveal
                self.emit(
                    "latency",
                    name,
                    "reveal",
                    SECRET_BYTES,
                    "latency",
                    "s",
                    "lower",
                    measure(reveal, samples=p.latency_samples),
                    baseline=reveal_base,
                )

    # -- throughput --------------------------------------------------------------------
    def throughput(self, designs: Sequence[str]) -> None:
        p = self.profile
        for size in p.payloads:
            payload = os.urandom(size)
            per_second = _per_second(size)
            self.progress(f"throughput {_size(size)}: baselines")

            def run(op: Callable[[], object]) -> Samples:
                return measure(
                    op, samples=p.throughput_samples, warmup=2, min_sample_s=p.min_sample_s
                )

            encrypt, decrypt = aesgcm_ops(payload)
            ceiling = {
                "encrypt": self.emit(
                    "throughput",
                    "aes-gcm",
                    "encrypt",
                    size,
                    "throughput",
                    "B/s",
                    "higher",
                    run(encrypt),
                    transform=per_second,
                ),
                "decrypt": self.emit(
                    "throughput",
                    "aes-gcm",
                    "decrypt",
                    size,
                    "throughput",
                    "B/s",
                    "higher",
                    run(decrypt),
                    transform=per_second,
                ),
            }
            self.emit(
                "throughput",
                "memcpy",
                "copy",
                size,
                "throughput",
                "B/s",
                "higher",
                run(memcpy_op(payload)),
                transform=per_second,
            )
            if size <= ECHO_MAX_PAYLOAD:
                with echo_peer() as sock:
                    self.emit(
                        "throughput",
                        "unix-echo",
                        "round-trip",
                        size,
                        "throughput",
                        "B/s",
                        "higher",
                        run(echo_op(sock, payload)),
                        transform=per_second,
                    )
            for name in designs:
                self.progress(f"throughput {_size(size)}: {name}")
                with open_design(name, harden_process=False) as protector:
                    blob = protector.encrypt(payload)
                    ops = {
                        "encrypt": lambda pr=protector, data=payload: pr.encrypt(data),
                        "decrypt": lambda pr=protector, data=blob: pr.decrypt(data),
                    }
                    for operation, op in ops.items():
                        self.emit(
                            "throughput",
                            name,
                            operation,
                            size,
                            "throughput",
                            "B/s",
                            "higher",
                            run(op),
                            transform=per_second,
                            baseline=ceiling[operation],
                        )

    # -- scale -------------------------------------------------------------------------
    def scale(self, designs: Sequence[str]) -> None:
        for name in designs:
            for count in self.profile.secrets_held:
                self.progress(f"scale: {name} holding {count:,} secrets")
                try:
                    held = _hold_secrets(name, count)
                except subprocess.CalledProcessError as exc:
                    self.emit(
                        "scale",
                        name,
                        "hold",
                        count,
                        "rss",
                        "B",
                        "lower",
                        status="error",
                        reason=f"holder failed: {exc.stderr[-300:]}",
                    )
                    continue
                self.emit("scale", name, "hold", count, "rss", "B", "lower", value=held["rss"])
                self.emit(
                    "scale",
                    name,
                    "hold",
                    count,
                    "rss_per_secret",
                    "B",
                    "lower",
                    value=held["grown"] / count,
                )
                self.emit(
                    "scale", name, "hold", count, "locked", "B", "lower", value=held["locked"]
                )
                self.emit(
                    "scale",
                    name,
                    "hold",
                    count,
                    "locked_per_secret",
                    "B",
                    "lower",
                    value=held["locked"] / count,
                    baseline=("secret-bytes", SECRET_BYTES),
                )
                self.emit(
                    "scale", name, "hold", count, "mappings", "count", "lower", value=held["maps"]
                )
                self.emit(
                    "scale",
                    name,
                    "seal",
                    count,
                    "seal_time_per_secret",
                    "s",
                    "lower",
                    value=held["seal_s"] / count,
                )

    def concurrency(self, designs: Sequence[str]) -> None:
        shared = [name for name in designs if DESIGNS[name].out_of_process]
        if not shared:
            self.emit(
                "concurrency",
                "(none)",
                "clients",
                0,
                "throughput",
                "B/s",
                "higher",
                status="skipped",
                reason="no design shared between processes runs here",
            )
            return
        ops = self.profile.concurrency_ops
        for name in shared:
            single: BenchRow | None = None
            for clients in (1, 2, 4, 8):
                self.progress(f"concurrency: {name}, {clients} clients x {ops} ops")
                seconds = _clients_in_parallel(name, clients, ops, PAYLOAD_FOR_CONCURRENCY)
                row = self.emit(
                    "concurrency",
                    name,
                    "encrypt",
                    clients,
                    "throughput",
                    "B/s",
                    "higher",
                    value=clients * ops * PAYLOAD_FOR_CONCURRENCY / seconds,
                    baseline=single,
                    reason=f"{clients} client processes, {ops} x 1 KiB encrypt each",
                )
                single = single or row

    # -- scanners and attacks ------------------------------------------------------------
    def scanners(self) -> None:
        from attacks.scan import Scanner
        from attacks.sources import Chunk, Region

        from ..lab.matrix import LabSecrets

        truth = LabSecrets.generate("unicode")
        needles = truth.needle_set()
        p = self.profile
        for engine, size in (
            ("hyperscan", p.scanner_image_bytes),
            ("python", p.reference_engine_bytes),
        ):
            self.progress(f"scanner: needles/{engine} over {_size(size)}")
            image = memoryview(bytearray(os.urandom(size)))
            region = Region(0, size)
            scanner = Scanner(needles, engine=engine)

            def scan(
                scanner: Scanner = scanner, image: memoryview = image, region: Region = region
            ) -> None:
                chunks = (
                    Chunk(region, i, image[i : i + 16 * MIB])
                    for i in range(0, len(image), 16 * MIB)
                )
                scanner.scan_chunks(chunks, [region])

            self.emit(
                "scanner",
                f"needles/{engine}",
                "scan",
                size,
                "throughput",
                "B/s",
                "higher",
                measure(scan, samples=3, warmup=1),
                transform=_per_second(size),
                reason=f"{len(needles.patterns)} patterns: plaintext, key, decoy; "
                "7 encodings, full and partial (16 bytes of the secret)",
            )
        self._key_schedules()
        truth.wipe()

    def _key_schedules(self) -> None:
        """Blind key-schedule search over random data, exact and with aeskeyfind's default
        tolerance: every layout (128/192/256-bit, encrypt and decrypt, both byte orders)."""
        from attacks.scan import DEFAULT_TOLERANCE, KeyScheduleScanner
        from attacks.sources import Chunk, Region

        size = self.profile.keysched_image_bytes
        image = memoryview(bytearray(os.urandom(size)))
        region = Region(0, size)
        for mode, tolerance in (("exact", 0), ("tolerant", DEFAULT_TOLERANCE)):
            self.progress(f"scanner: aes-key-schedule/{mode} over {_size(size)}")
            scanner = KeyScheduleScanner(tolerance=tolerance)
            found: list[int] = []

            def scan(scanner: KeyScheduleScanner = scanner, found: list[int] = found) -> None:
                chunks = (
                    Chunk(region, i, image[i : i + 16 * MIB]) for i in range(0, size, 16 * MIB)
                )
                found.append(len(scanner.scan_chunks(chunks, [region])))

            samples = measure(scan, samples=3, warmup=1)
            self.emit(
                "scanner",
                f"aes-key-schedule/{mode}",
                "scan",
                size,
                "throughput",
                "B/s",
                "higher",
                samples,
                transform=_per_second(size),
                reason=f"blind, {tolerance} bit errors allowed; 128/192/256-bit encrypt and "
                f"decrypt schedules, both byte orders; random data: {max(found)} false hits",
            )

    def attacks(self, attacks: Sequence[str]) -> None:
        from attacks import ATTACKS
        from attacks.scan import Scanner

        from ..lab.matrix import LabSecrets, Victim

        truth = LabSecrets.generate("unicode")
        scanner = Scanner(truth.needle_set())
        mib = self.profile.attack_victim_mib
        self.progress(f"attacks: starting a {mib} MiB victim")
        # attacks that kill their target run last, each on a victim of its own
        ordered = sorted(attacks, key=lambda name: ATTACKS[name].destructive)
        victim: Victim | None = None
        try:
            for name in ordered:
                if victim is None or ATTACKS[name].destructive:
                    if victim is not None:
                        victim.close()
                    victim = Victim("plain", ballast_mib=mib)
                    victim.load(truth.plaintext, truth.key)
                self.progress(f"attacks: {name} on a {mib} MiB victim")
                with private_workdir() as workdir:
                    outcome = ATTACKS[name]().run(victim.pid, scanner, workdir)
                self.emit(
                    "attack",
                    name,
                    "acquire+scan",
                    outcome.stats.bytes_read,
                    "wall",
                    "s",
                    "lower",
                    value=outcome.duration_s,
                    status=outcome.status,
                    reason=outcome.reason or f"victim of {mib} MiB ballast, plain design",
                )
        finally:
            if victim is not None:
                victim.close()
        truth.wipe()


PAYLOAD_FOR_CONCURRENCY = 1024


def _clients_in_parallel(design: str, clients: int, ops: int, size: int) -> float:
    """Wall time for `clients` forked processes to do `ops` encryptions each."""
    payload = os.urandom(size)
    start_r, start_w = os.pipe()
    children = []
    for _ in range(clients):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                with open_design(design) as protector:
                    os.read(start_r, 1)  # all connected before anyone starts
                    for _ in range(ops):
                        protector.encrypt(payload)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    time.sleep(0.2)
    started = time.perf_counter()
    os.write(start_w, b"x" * clients)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    elapsed = time.perf_counter() - started
    os.close(start_r)
    os.close(start_w)
    if any(codes):
        raise RuntimeError(f"{design} clients failed: exit codes {codes}")
    return elapsed


def _per_second(size: int) -> Callable[[float], float]:
    return lambda seconds: size / seconds if seconds else 0.0


def _size(n: int) -> str:
    for unit, scale in (("MiB", MIB), ("KiB", KIB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


_HOLDER = """
import json, os, sys, time
from memcryptor_lab import open_design
name, count = sys.argv[1], int(sys.argv[2])
protector = open_design(name)
staging = bytearray(32)
held = []

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return lambda key: int(fields[key].split()[0]) * 1024

rss_before = status()("VmRSS")
started = time.perf_counter()
for _ in range(count):
    staging[:] = os.urandom(32)
    held.append(protector.seal_buffer(staging))
elapsed = time.perf_counter() - started
after = status()
maps = sum(1 for _ in open("/proc/self/maps"))
print(json.dumps({"rss": after("VmRSS"), "grown": after("VmRSS") - rss_before,
                  "locked": after("VmLck"), "maps": maps, "seal_s": elapsed}))
"""


def _hold_secrets(design: str, count: int) -> dict[str, float]:
    """A fresh process seals `count` secrets and reports what it costs."""
    out = subprocess.run(
        [sys.executable, "-c", _HOLDER, design, str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def run_bench(
    out: str | os.PathLike[str],
    profile: str = "quick",
    *,
    designs: Sequence[str] | None = None,
    run_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> tuple[Path, list[BenchRow]]:
    """Run a bench profile; write `bench.csv` into `run_dir` (or a new run folder)."""
    from attacks import ATTACKS

    chosen = PROFILES[profile]
    designs = list(designs or [n for n, c in DESIGNS.items() if c.supported() is None])
    if run_dir is None:
        run_dir = Path(out) / new_run_id()
        run_dir.mkdir(parents=True)
    run_id = run_dir.name
    facts = host_facts()
    base = row_base(run_id, facts)
    started = time.time()
    write_meta(
        run_dir,
        {
            "run_id": run_id,
            "host_facts": facts,
            "package_versions": package_versions(),
            "bench": {"profile": profile, "status": "running", "designs": designs},
        },
    )
    writer = TableWriter(run_dir / BENCH_FILE, BenchRow)
    bench = _Bench(chosen, writer, base, progress)
    status = "failed"
    try:
        with private_workdir() as workdir, broker_for(designs, workdir):
            bench.latency(designs)
            bench.throughput(designs)
            bench.scale(designs)
            bench.concurrency(designs)
        bench.scanners()
        bench.attacks(list(ATTACKS))
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        writer.close()
        write_meta(
            run_dir,
            {
                "bench": {
                    "profile": profile,
                    "status": status,
                    "designs": designs,
                    "rows": writer.count,
                    "duration_s": round(time.time() - started, 2),
                }
            },
        )
    return run_dir, bench.rows
