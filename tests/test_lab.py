"""The whole slice: victims walk the phases, proc-mem attacks them, rows are written.

Expected outcomes were measured on this kernel (see results/README.md) and each would
fail if the protection it rests on broke: plain is the positive control, the decoy and
the control victim are the negative controls.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from conftest import memlab, needs_root

from attacks import ATTACKS
from attacks._crash_core import CORE_PATTERN
from attacks.scan import FULL, NeedleSet, Scanner, Secret
from attacks.sources import FileSource
from memcryptor_lab.lab import (
    EXPOSURE_PHASES,
    SCHEMA_VERSION,
    LabSecrets,
    load_results,
    run_matrix,
)
from memcryptor_lab.lab.matrix import sweep_stale_workdirs

pytestmark = [needs_root(), pytest.mark.integration]
ROOT = Path(__file__).resolve().parent.parent
ORIGINAL_CORE_PATTERN = CORE_PATTERN.read_text()


# The matrix `make lab` runs is every design x attack x phase x attacker class, each for a
# subject and a control victim (~10 min here). The tests split it in two to stay quick:
# `run` is every design, phase and attacker class with the attacks whose per-design results
# are pinned below, for the subject; `controls` is `plain` at rest with every attack (lldb's
# included), subject and control, for the positive and negative controls.
MAIN_ATTACKS = [
    "proc-mem",
    "vm-readv",
    "gcore",
    "gcore-all",
    "crash-core",
    "inject",
    "inject-api",
    "swap",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    truth = LabSecrets.generate("unicode")
    out = tmp_path_factory.mktemp("results")
    result = run_matrix(out, attacks=MAIN_ATTACKS, roles=("subject",), lab_secrets=truth)
    frame = load_results(result.run_dir)
    return truth, result, frame


@pytest.fixture(scope="module")
def controls(tmp_path_factory):
    truth = LabSecrets.generate("unicode")
    out = tmp_path_factory.mktemp("controls")
    result = run_matrix(out, designs=["plain"], phases=["at-rest"], lab_secrets=truth)
    return load_results(result.run_dir)


def _copies(frame, attacker: str = "root", **where) -> int:
    """Copies found by `attacker` in the cells `where` selects. Unless an attack is named,
    inject-api is left out: it counts what injected code can *get* (everything), not what
    memory holds."""
    sel = frame[(frame.status == "ok") & (frame.attacker == attacker)]
    if "attack" not in where:
        sel = sel[sel.attack != "inject-api"]
    for column, value in where.items():
        sel = sel[sel[column] == value]
    return int(sel.copies.sum())


def test_schema_and_metadata(run) -> None:
    _, _, frame = run
    assert set(frame.schema_version) == {SCHEMA_VERSION}
    assert str(frame.hits.dtype) == "int64" and str(frame.design.dtype) == "string"
    meta = frame.attrs["meta"]
    assert meta["status"] == "complete" and meta["scan_engine"] == "hyperscan"
    assert meta["host_facts"]["kernel"] == os.uname().release
    assert set(frame.design) == {
        "plain",
        "inproc-aead",
        "hardened",
        "secretmem",
        "keyring",
        "broker",
    }
    assert set(frame.phase) == {"at-rest", "in-use", "released", "after-exit"}
    assert set(frame.attacker) == {"root", "same-user"}
    assert set(frame.victim) == {"subject", "broker-process"}
    scanned = frame[(frame.status == "ok") & (frame.attack != "inject-api")]
    assert (scanned.bytes_scanned > 0).all()
    # injected code writes out what it could reveal: nothing, once the secret is destroyed
    revealed = frame[(frame.attack == "inject-api") & (frame.status == "ok")]
    assert (revealed[revealed.phase == "released"].bytes_scanned == 0).all()


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_attack_finds_plain_at_rest(controls, attack: str) -> None:
    # the positive control: if this fails, a zero elsewhere means nothing
    frame = controls
    assert (
        _copies(
            frame,
            design="plain",
            victim="subject",
            phase="at-rest",
            attack=attack,
            needle_kind="plaintext",
        )
        > 0
    )


def test_gcore_honours_dontdump_and_gcore_all_does_not(run) -> None:
    _, _, frame = run
    for design in ("hardened", "keyring", "broker"):
        cell = dict(design=design, victim="subject", phase="in-use", needle_kind="plaintext")
        assert _copies(frame, **cell, attack="gcore") == 0, design  # reveal slot is dd
        assert _copies(frame, **cell, attack="gcore-all") > 0, design


def test_crash_cores_are_blocked_by_the_hardened_processes(run) -> None:
    _, _, frame = run
    crash = frame[
        (frame.attack == "crash-core")
        & (frame.attacker == "root")
        & (frame.victim == "subject")
        & ~frame.status.isin(["n/a", "alias"])
    ]
    for design in ("hardened", "secretmem", "keyring"):
        rows = crash[crash.design == design]
        assert set(rows.status) == {"blocked"}, design
        assert rows.reason.str.contains("RLIMIT_CORE 0|non-dumpable").all()
    assert set(crash[crash.design.isin(["plain", "inproc-aead", "broker"])].status) == {"ok"}
    assert CORE_PATTERN.read_text() == ORIGINAL_CORE_PATTERN  # put back after every crash


def test_vm_readv_is_refused_by_prot_none_pages(run) -> None:
    _, _, frame = run
    rows = frame[
        (frame.design == "hardened")
        & (frame.attack == "vm-readv")
        & (frame.attacker == "root")
        & (frame.victim == "subject")
        & ~frame.status.isin(["n/a", "alias"])
    ]
    assert set(rows.status) == {"blocked"} and rows.read_errors.str.contains("EFAULT").all()


def test_inproc_aead_holds_the_raw_key_but_no_plaintext_at_rest(run) -> None:
    _, _, frame = run
    cell = dict(design="inproc-aead", victim="subject", phase="at-rest")
    assert _copies(frame, **cell, needle_kind="key", encoding="raw", form=FULL) > 0
    assert _copies(frame, **cell, needle_kind="plaintext") == 0


def test_inproc_aead_wipes_the_plaintext_it_revealed(run) -> None:
    _, _, frame = run
    assert (
        _copies(
            frame, design="inproc-aead", victim="subject", phase="in-use", needle_kind="plaintext"
        )
        > 0
    )
    assert (
        _copies(
            frame, design="inproc-aead", victim="subject", phase="released", needle_kind="plaintext"
        )
        == 0
    )


@pytest.mark.parametrize("design", ["hardened", "secretmem", "keyring"])
def test_hardened_designs_hold_no_plaintext_and_no_raw_key_at_rest(run, design: str) -> None:
    _, _, frame = run
    at_rest = dict(design=design, victim="subject", phase="at-rest")
    cells = frame[
        (frame.design == design)
        & (frame.victim == "subject")
        & (frame.phase == "at-rest")
        & frame.status.isin(["ok", "blocked"])
        & (frame.attack != "inject-api")  # reveals through the API: nothing survives it
    ]
    assert len(cells) > 0
    assert int(cells.copies.sum()) == 0, cells[cells.copies > 0][["needle_kind", "encoding"]]
    assert _copies(frame, **at_rest, needle_kind="key") == 0
    released = frame[
        (frame.design == design)
        & (frame.victim == "subject")
        & frame.phase.isin(["released", "after-exit"])
        & (frame.needle_kind == "plaintext")
    ]
    assert int(released.copies.sum()) == 0
    notes = set(frame[frame.design == design].design_notes) - {""}  # "": skipped, no victim
    assert notes and all("PR_SET_DUMPABLE=0" in n and "downgrades=none" in n for n in notes)


# Attacks that read memory and meet memfd_secret pages (gcore without -a never tries:
# the pages are MADV_DONTDUMP, so its core simply leaves them out).
READERS = ["proc-mem", "vm-readv", "gcore-all"]


def test_secretmem_reads_are_reported_blocked_not_zero(run) -> None:
    _, _, frame = run
    rows = frame[
        (frame.design == "secretmem")
        & (frame.attacker == "root")
        & ~frame.status.isin(["n/a", "alias"])
    ]
    readers = rows[rows.attack.isin(READERS)]
    assert set(readers.status) == {"blocked"}
    assert readers.reason.str.contains("refused reads|could not read").all()
    dumped = rows[rows.attack == "gcore"]
    assert set(dumped.status) == {"ok"} and dumped.reason.str.contains("excluded").all()
    plain = frame[(frame.design == "plain") & (frame.attacker == "root")]
    assert plain.status.isin(["ok", "n/a", "alias"]).all()


def test_keyring_reports_which_crypto_path_ran(run) -> None:
    _, _, frame = run
    notes = frame[frame.design == "keyring"].design_notes
    notes = notes[notes != ""]  # "": rows of skipped attacks, no victim behind them
    assert len(notes) > 0 and notes.str.contains("crypto=userspace").all()


def test_broker_client_never_holds_the_key_and_plaintext_only_while_revealed(run) -> None:
    _, _, frame = run
    client = dict(design="broker", victim="subject")
    for phase in ("at-rest", "in-use", "released"):
        assert _copies(frame, **client, phase=phase, needle_kind="key") == 0, phase
    assert _copies(frame, **client, phase="at-rest", needle_kind="plaintext") == 0
    assert _copies(frame, **client, phase="in-use", needle_kind="plaintext") > 0
    assert _copies(frame, **client, phase="released", needle_kind="plaintext") == 0


def test_the_broker_process_is_attacked_too(run) -> None:
    _, _, frame = run
    broker = frame[(frame.victim == "broker-process") & ~frame.status.isin(["n/a", "alias"])]
    assert set(broker.phase) == {"at-rest", "in-use", "released"}
    # keys in memfd_secret: the reads are refused and the rows say so
    assert set(broker[broker.attack.isin(READERS)].status) == {"blocked"}
    # the lab uid may use the broker (it runs as root, a system service) but not read it
    as_user = broker[(broker.attacker == "same-user") & (broker.status != "skipped")]
    assert len(as_user) > 0 and set(as_user.status) == {"blocked"}
    read = broker[broker.attack != "inject"]
    assert int(read[read.needle_kind.isin(["key", "plaintext"])].copies.sum()) == 0
    # but root that makes the broker copy its own memory out gets the key from its
    # memfd_secret arena: memfd_secret stops outside readers, not the process itself
    for phase in ("at-rest", "in-use", "released"):
        cell = dict(victim="broker-process", attack="inject", phase=phase, needle_kind="key")
        assert _copies(frame, design="broker", **cell) > 0, phase


def test_decoy_and_control_victim_show_nothing(run, controls) -> None:
    _, _, frame = run
    for attacker in ("root", "same-user"):
        assert _copies(frame, attacker, needle_kind="decoy") == 0
        assert _copies(controls, attacker, needle_kind="decoy") == 0
        assert _copies(controls, attacker, victim="control") == 0
    control, subject = (
        controls[controls.victim == "control"],
        controls[controls.victim == "subject"],
    )
    assert len(control) == len(subject) and set(control.attack) == set(ATTACKS)


def test_no_secret_bytes_in_the_results_folder(run) -> None:
    truth, result, _ = run
    scanner = Scanner(
        NeedleSet(
            [Secret("plaintext", bytes(truth.plaintext), True), Secret("key", bytes(truth.key))]
        )
    )
    files = [p for p in result.run_dir.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"results.csv", "hits.csv", "meta.json"}
    for path in files:
        assert not scanner.scan(FileSource(path)), path.name


def test_hits_are_attributed_to_regions(run) -> None:
    _, result, _ = run
    hits = load_results(result.run_dir, table="hits")
    assert len(hits) > 0
    assert (hits.region != "").all()
    assert set(hits.needle_kind) <= {"plaintext", "key", "key-schedule"}


# every attack that reads a live process or makes it act: the same-user attacker's tools
SAME_USER_ATTACKS = ["proc-mem", "vm-readv", "gcore", "gcore-all", "inject", "inject-api"]


ROOT_ONLY = {"crash-core", "swap"}  # core_pattern, swapon, pagemap swap offsets


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_same_user_finds_dumpable_victims(controls, attack: str) -> None:
    # the same-user positive control: the uid alone lets it in
    cell = dict(victim="subject", phase="at-rest", attack=attack, needle_kind="plaintext")
    if attack in ROOT_ONLY:
        rows = controls[(controls.attacker == "same-user") & (controls.attack == attack)]
        rows = rows[~rows.status.isin(["n/a", "alias"])]
        assert set(rows.status) == {"skipped"} and rows.reason.str.contains("root").all()
        return
    assert _copies(controls, "same-user", design="plain", **cell) > 0


@pytest.mark.parametrize("design", ["hardened", "secretmem", "keyring"])
def test_non_dumpable_victims_refuse_the_same_user(run, design: str) -> None:
    _, _, frame = run
    rows = frame[
        (frame.attacker == "same-user")
        & (frame.design == design)
        & frame.attack.isin(SAME_USER_ATTACKS)
        & ~frame.status.isin(["n/a", "alias"])
    ]
    assert set(rows.attack) == set(SAME_USER_ATTACKS)
    assert set(rows.status) == {"blocked"}, rows[rows.status != "blocked"][["attack", "reason"]]
    assert rows.reason.str.contains("refused|not permitted|EACCES").all()
    # and root is not refused: the same victims give root a readable process
    root = frame[
        (frame.attacker == "root") & (frame.design == design) & (frame.attack == "inject-api")
    ]
    assert _copies(root, design=design, victim="subject", phase="at-rest", attack="inject-api")


def test_injected_code_gets_every_design_but_not_after_release(run) -> None:
    _, _, frame = run
    for design in ("plain", "inproc-aead", "hardened", "secretmem", "keyring", "broker"):
        cell = dict(design=design, victim="subject", attack="inject-api", needle_kind="plaintext")
        assert _copies(frame, **cell, phase="at-rest") > 0, design
        assert _copies(frame, **cell, phase="in-use") > 0, design
        assert _copies(frame, **cell, phase="released") == 0, design


def test_inject_copies_out_what_secretmem_refuses_to_others(run) -> None:
    _, _, frame = run
    cell = dict(design="secretmem", victim="subject", phase="in-use", needle_kind="plaintext")
    assert _copies(frame, **cell, attack="inject") > 0  # the reveal slot, written by itself
    proc_mem = frame[
        (frame.attacker == "root")
        & (frame.design == "secretmem")
        & (frame.phase == "in-use")
        & (frame.attack == "proc-mem")
        & (frame.needle_kind == "plaintext")
    ]
    assert int(proc_mem.copies.sum()) == 0 and set(proc_mem.status) <= {"blocked", "n/a", "alias"}


def test_swap_sees_unlocked_pages_and_keeps_them_after_exit(run) -> None:
    _, _, frame = run
    cell = dict(design="plain", victim="subject", attack="swap", needle_kind="plaintext")
    assert _copies(frame, **cell, phase="at-rest") > 0
    assert _copies(frame, **cell, phase="after-exit") > 0  # freed slots are not cleared
    locked = frame[
        (frame.attack == "swap")
        & (frame.attacker == "root")
        & frame.design.isin(["hardened", "secretmem", "keyring"])
        & (frame.needle_kind.isin(["plaintext", "key"]))
    ]
    assert int(locked.copies.sum()) == 0
    assert set(locked[locked.phase != "after-exit"].status) <= {"blocked", "n/a", "alias"}
    assert (frame[frame.attacker == "same-user"].attack != "swap").all() or set(
        frame[(frame.attacker == "same-user") & (frame.attack == "swap")].status
    ) <= {"skipped", "n/a", "alias"}


def test_key_schedules_stay_with_long_lived_cipher_objects(run) -> None:
    # plain and inproc-aead keep an AESGCM object for their life: OpenSSL's expanded key
    # sits in the heap beside it; the others build a context per operation and OpenSSL
    # cleanses it on free
    _, _, frame = run
    for design in ("plain", "inproc-aead"):
        cell = dict(design=design, victim="subject", attack="proc-mem", needle_kind="key-schedule")
        assert _copies(frame, **cell, phase="at-rest") > 0, design
    for design in ("hardened", "keyring", "broker"):
        assert _copies(frame, design=design, needle_kind="key-schedule") == 0, design


def test_exposure_walk_attacks_each_moment(tmp_path: Path) -> None:
    truth = LabSecrets.generate("unicode")
    result = run_matrix(
        tmp_path,
        ["plain"],
        ["proc-mem"],
        EXPOSURE_PHASES,
        attackers=["root"],
        lab_secrets=truth,
    )
    frame = load_results(result.run_dir)
    assert list(dict.fromkeys(frame.phase)) == list(EXPOSURE_PHASES)
    for phase in EXPOSURE_PHASES:
        assert _copies(frame, design="plain", victim="subject", phase=phase) > 0, phase
        assert _copies(frame, victim="control", phase=phase) == 0


def _victims_of(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    victims = []
    for p in children:
        try:
            if "memcryptor_lab.lab.victim" in " ".join(p.cmdline()):
                victims.append(p)
        except psutil.Error:  # gone, or a zombie waiting to be reaped
            pass
    return victims


def _start_run(out: Path, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "memcryptor_lab", "run", "--out", str(out), "--quiet", *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_victim(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        victims = _victims_of(proc.pid)
        if victims:
            return victims
        time.sleep(0.02)
    raise AssertionError("no victim appeared")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_leaves_nothing_behind(sig: int, tmp_path: Path) -> None:
    workdirs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "memlab-*")))
    proc = _start_run(tmp_path)
    victims = _wait_for_victim(proc)
    time.sleep(0.3)  # let it get into an attack
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    psutil.wait_procs(victims, timeout=10)
    assert not [v for v in victims if v.is_running() and v.status() != psutil.STATUS_ZOMBIE]
    if sig == signal.SIGKILL:
        # no handler runs: PR_SET_PDEATHSIG took the victims down, and the next run sweeps
        # the dead harness's private directory
        sweep_stale_workdirs()
        assert set(glob.glob(os.path.join(tempfile.gettempdir(), "memlab-*"))) == workdirs_before
        return
    assert proc.returncode == 130, stderr.decode()
    assert CORE_PATTERN.read_text() == ORIGINAL_CORE_PATTERN
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "memlab-*"))) == workdirs_before
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"


def test_memlab_run_cli_prints_the_table_without_secrets(tmp_path: Path) -> None:
    out = memlab(
        "run",
        "--out",
        str(tmp_path),
        "--quiet",
        "--designs",
        "plain",
        "--phases",
        "at-rest",
        "--attacks",
        "proc-mem",
    )
    assert "plain" in out.stdout and "subject" in out.stdout and "control" in out.stdout
    (run_dir,) = tmp_path.iterdir()
    summary = (run_dir / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 2 * 2  # header, (subject, control) x (root, same-user)


def _inside(attack: str, proc: subprocess.Popen[bytes]) -> bool:
    """Is the run in the middle of the attack's acquisition (its tool or its swap on)?"""
    if attack == "swap":
        return "memlab-swap" in Path("/proc/swaps").read_text()
    marks = {"inject": "gdb", "lldb": "_lldb_helper"}
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            if marks[attack] in " ".join(child.cmdline()):
                return True
        except psutil.Error:
            pass
    return False


@pytest.mark.parametrize("attack", ["inject", "lldb", "swap"])
def test_run_interrupted_inside_an_attack_leaves_nothing(attack: str, tmp_path: Path) -> None:
    # SIGTERM while a debugger is attached, or while the lab swap is on
    if ATTACKS[attack].supported() is not None:
        pytest.skip(ATTACKS[attack].supported())
    workdirs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "memlab-*")))
    swaps_before = Path("/proc/swaps").read_text()
    options = ["--designs", "plain", "--attacks", attack, "--phases", "at-rest"]
    proc = _start_run(tmp_path, *options, "--attackers", "root")
    deadline = time.monotonic() + 60
    while not _inside(attack, proc) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before the attack was caught in the act"
    everyone = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    _, alive = psutil.wait_procs(everyone, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]  # victims, gdb, lldb
    assert Path("/proc/swaps").read_text() == swaps_before
    assert CORE_PATTERN.read_text() == ORIGINAL_CORE_PATTERN
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "memlab-*"))) == workdirs_before
