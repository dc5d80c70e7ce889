"""Attacker classes: running as the lab uid for real (fork, drop, report back)."""

from __future__ import annotations

import os

import pytest
from conftest import needs_root

from memcryptor_lab.lab import LabSecrets, Victim
from memcryptor_lab.lab._attacker import AttackerError, attacker_supported, lab_identity, run_as

pytestmark = needs_root()


def _whoami() -> tuple[int, int, list[int]]:
    return os.getuid(), os.geteuid(), os.getgroups()


def _fail() -> None:
    raise ValueError("no secret here")


def _can_read_maps(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return bool(maps.readline())
    except PermissionError:
        return False


def test_run_as_drops_for_good_and_returns_the_result() -> None:
    uid, gid = lab_identity()
    assert run_as(uid, gid, _whoami) == (uid, uid, [])
    assert os.geteuid() == 0  # the harness itself is untouched


def test_run_as_reports_a_failure_by_type_and_message() -> None:
    with pytest.raises(AttackerError, match="ValueError: no secret here"):
        run_as(*lab_identity(), _fail)


def test_attacker_classes_are_supported_here_and_unknown_ones_refused() -> None:
    assert attacker_supported("root") is None
    assert attacker_supported("same-user") is None
    with pytest.raises(ValueError, match="attacker class"):
        attacker_supported("kernel")


@pytest.mark.parametrize(("design", "readable"), [("plain", True), ("hardened", False)])
def test_a_same_user_victim_is_dumpable_unless_it_hardens(design: str, readable: bool) -> None:
    # a uid change leaves a process non-dumpable; the victim puts back what a process that
    # user exec'ed would have, so only the design's own hardening refuses its own uid
    uid, gid = lab_identity()
    given = LabSecrets.generate()
    try:
        with Victim(design, run_as=(uid, gid)) as victim:
            victim.load(given.plaintext, given.key)
            victim.use(given.plaintext)  # the design works after the drop
            with open(f"/proc/{victim.pid}/status") as status:
                uids = next(line.split()[1:] for line in status if line.startswith("Uid:"))
            assert set(uids) == {str(uid)}
            assert run_as(uid, gid, _can_read_maps, victim.pid) is readable
            assert _can_read_maps(victim.pid)  # root reads it either way
    finally:
        given.wipe()
