"""The locked arena and the designs built on it, checked against the kernel's own view."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import resource
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

import memcryptor_lab as mc
from attacks.sources import parse_maps
from memcryptor_lab._arena import CANARY, Arena
from memcryptor_lab._platform import native

pytestmark = pytest.mark.skipif(native.digest_available() is not None, reason="no libcrypto")


def _in_child(body: Callable[[], int]) -> int:
    """Run `body` in a forked child; return its exit code, or -signal if it was killed."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        faulthandler.disable()  # the expected SIGSEGV needs no traceback
        code = 1
        try:
            code = body()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _region_of(addr: int):
    with open("/proc/self/smaps") as handle:
        regions = parse_maps(handle.read())
    return next(r for r in regions if r.start <= addr < r.end)


def test_write_past_the_slab_hits_the_guard_page() -> None:
    def overrun() -> int:
        arena = Arena()
        with arena.open():
            slot = arena.alloc(32)
            end = slot.slab.data + slot.slab.size
            ctypes.memset(end - 1, 1, 1)  # last byte of the slab: fine
            ctypes.memset(end, 1, 1)  # first byte of the guard page: SIGSEGV
        return 0

    assert _in_child(overrun) == -signal.SIGSEGV


def test_slots_are_inaccessible_outside_an_operation() -> None:
    def touch_closed() -> int:
        arena = Arena()
        with arena.open():
            slot = arena.alloc(32)
        ctypes.memset(slot.addr, 1, 1)  # PROT_NONE now
        return 0

    assert _in_child(touch_closed) == -signal.SIGSEGV


def test_canary_corruption_is_detected() -> None:
    arena = Arena()
    with arena.open():
        slot = arena.alloc(32)
        ctypes.memset(slot.addr, 7, 32)
        arena.check(slot)
        ctypes.memset(slot.addr + 32, 0x41, 1)  # one byte over: the next slot's canary
        with pytest.raises(mc.CanaryError, match="overrun"):
            arena.check(slot)
        with pytest.raises(mc.CanaryError):
            arena.free(slot)
        assert ctypes.string_at(slot.addr, 32) == bytes(32)  # wiped even so
    arena.close()


def test_a_sealed_secret_next_to_a_corrupted_canary_will_not_reveal() -> None:
    protector = mc.open_design("hardened", harden_process=False)
    sealed = protector.seal_buffer(bytearray(b"s" * 32))
    with protector._store.open():
        ctypes.memset(sealed._slot.stride_addr, 0, CANARY)
    with pytest.raises(mc.CanaryError), sealed.reveal():
        pass
    with pytest.raises(mc.CanaryError):  # close still wipes everything, then reports it
        protector.close()
    assert protector._store.closed


def test_released_memory_reads_back_zero() -> None:
    with mc.open_design("hardened", harden_process=False) as protector:
        sealed = protector.seal_buffer(bytearray(b"z" * 32))
        slot = sealed._slot
        with sealed.reveal() as view:
            assert bytes(view) == b"z" * 32
            revealed_addr = ctypes.addressof(ctypes.c_char.from_buffer(view.obj))
        sealed.destroy()
        with protector._store.open():
            assert ctypes.string_at(slot.addr, 48) == bytes(48)
            assert ctypes.string_at(revealed_addr, 32) == bytes(32)


def test_smaps_shows_locked_and_dontdump() -> None:
    with mc.open_design("hardened", harden_process=False) as protector:
        sealed = protector.seal_buffer(bytearray(32))
        flags = _region_of(sealed._slot.addr).vmflags
        assert {"lo", "dd", "wf"} <= set(flags)


def test_secretmem_pages_are_locked_dontdump_and_leave_no_fd() -> None:
    if mc.DESIGNS["secretmem"].supported() is not None:
        pytest.skip(mc.DESIGNS["secretmem"].supported())
    before = set(os.listdir("/proc/self/fd"))
    with mc.open_design("secretmem", harden_process=False) as protector:
        sealed = protector.seal_buffer(bytearray(32))
        region = _region_of(sealed._slot.addr)
        assert {"lo", "dd"} <= set(region.vmflags)
        assert "secretmem" in region.path
        links = [
            os.readlink(f"/proc/self/fd/{fd}")
            for fd in os.listdir("/proc/self/fd")
            if fd not in before and os.path.exists(f"/proc/self/fd/{fd}")
        ]
        assert not [link for link in links if "secretmem" in link]


def test_many_secrets_share_few_mappings_and_little_locked_memory() -> None:
    count = 20_000
    with mc.open_design("hardened", harden_process=False) as protector:
        maps_before = len(Path("/proc/self/maps").read_text().splitlines())
        staging = bytearray(32)
        held = []
        for i in range(count):
            staging[:] = i.to_bytes(32, "little")
            held.append(protector.seal_buffer(staging))
        maps_after = len(Path("/proc/self/maps").read_text().splitlines())
        arena = protector._store
        assert arena.mappings() <= 12
        # a slab is at most 4 VMAs (guard, locked, not yet locked, guard); the rest is
        # CPython's own heap growing for 20,000 handles. libsodium would need ~80,000.
        assert maps_after - maps_before <= 4 * arena.mappings() + 8
        assert arena.locked_bytes() <= 2 * count * 32 + 256 * 1024  # slab growth step slack
        with held[12345].reveal() as view:
            assert bytes(view) == (12345).to_bytes(32, "little")


def test_exhausted_memlock_is_a_named_error_and_downgrade_is_opt_in() -> None:
    def constrained(allow: frozenset[str]) -> Callable[[], int]:
        def body() -> int:
            os.setgid(65534)
            os.setuid(65534)  # drops CAP_IPC_LOCK: RLIMIT_MEMLOCK applies
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (128 * 1024, 128 * 1024))
            try:
                with mc.open_design(
                    "hardened", harden_process=False, allow_downgrade=allow
                ) as protector:
                    for _ in range(10_000):
                        protector.seal_buffer(bytearray(32))
                    return 10 if "mlock refused" in protector.notes() else 11
            except mc.MemlockError as exc:
                return 20 if "RLIMIT_MEMLOCK is 131072 bytes" in str(exc) else 21

        return body

    assert _in_child(constrained(frozenset())) == 20
    assert _in_child(constrained(frozenset({"mlock"}))) == 10


def test_process_is_made_non_dumpable_without_cores() -> None:
    def body() -> int:
        mc.open_design("hardened")
        dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        return 0 if dumpable == 0 and resource.getrlimit(resource.RLIMIT_CORE) == (0, 0) else 1

    assert _in_child(body) == 0


def test_keyring_key_rests_in_the_kernel_and_is_invalidated_on_close() -> None:
    if mc.DESIGNS["keyring"].supported() is not None:
        pytest.skip(mc.DESIGNS["keyring"].supported())
    protector = mc.open_design("keyring", harden_process=False)
    serial = f"{protector._serial:08x}"
    with open("/proc/keys") as keys:
        assert any(line.startswith(serial) for line in keys)
    assert "crypto=userspace" in protector.notes()
    protector.close()
    with open("/proc/keys") as keys:
        assert not any(
            line.startswith(serial)
            and " perm " not in line
            and "I--Q" not in line[9:13]
            and "i" not in line[9:13]
            for line in keys
        )


def test_unknown_downgrade_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown downgrades"):
        mc.open_design("hardened", harden_process=False, allow_downgrade={"everything"})
