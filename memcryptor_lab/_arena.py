"""The secret arena: locked, no-dump, guard-paged memory that serves many secrets.

libsodium gives every secret its own mapping (3-4 pages, ~4 VMAs), so a process stops near
16k secrets on vm.max_map_count; memguard does the same per enclave. Here one arena holds
slabs, each slab holds many fixed-size slots, and slabs grow geometrically, so 1,000,000
32-byte secrets take a handful of mappings and ~56 bytes of locked memory each.

A slab is   [guard page][slot 0][slot 1]...[slot n-1][final canary][...][guard page]
and a slot  [canary 8 B][payload]        (the next slot's canary guards the payload's end).

Pages are locked as the bump pointer reaches them (so locked memory follows use, not
capacity), excluded from core dumps (MADV_DONTDUMP), wiped in a forked child
(MADV_WIPEONFORK; MADV_DONTFORK for shared secretmem pages), and PROT_NONE whenever no
operation has the arena open. A protection the kernel refuses is an error, unless the
caller allowed that downgrade, and then it is recorded in `downgrades`.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ._errors import CanaryError, MemlockError, ProtectionError
from ._platform import fill_random, native

PAGE = mmap.PAGESIZE
CANARY = 8
FIRST_SLAB = 64 * 1024
MAX_SLAB = 64 * 1024 * 1024
LOCK_STEP = 16 * PAGE  # lock ahead in steps: fewer syscalls, adjacent locks merge into one VMA
DOWNGRADES = frozenset({"mlock", "dontdump", "wipeonfork"})
BACKINGS = ("anonymous", "secretmem")


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


class Slot:
    """One allocation. Its memory is only accessible inside `Arena.open()`."""

    __slots__ = ("index", "length", "slab", "stride_addr")

    def __init__(self, slab: _Slab, index: int, length: int) -> None:
        self.slab = slab
        self.index = index
        self.length = length
        self.stride_addr = slab.data + index * slab.stride

    @property
    def addr(self) -> int:
        return self.stride_addr + CANARY

    def view(self) -> memoryview:
        """A writable view of the payload; release it before the arena closes."""
        return memoryview((ctypes.c_char * self.length).from_address(self.addr)).cast("B")


class _Slab:
    __slots__ = (
        "canary",
        "capacity",
        "data",
        "free",
        "locked_upto",
        "next",
        "reserve",
        "reserve_size",
        "size",
        "stride",
    )

    def __init__(self, reserve: int, reserve_size: int, stride: int) -> None:
        self.reserve = reserve
        self.reserve_size = reserve_size
        self.data = reserve + PAGE
        self.size = reserve_size - 2 * PAGE
        self.stride = stride
        self.capacity = (self.size - CANARY) // stride
        canary = bytearray(CANARY)
        fill_random(canary)
        self.canary = bytes(canary)  # not secret: it only has to be unguessable by a bug
        self.free: list[int] = []
        self.next = 0
        self.locked_upto = 0


class Arena:
    """Locked, no-dump memory carved into slots. Not thread-safe; the GIL is not enough
    for the open/close reference count, so callers serialise (designs hold one lock)."""

    def __init__(
        self,
        backing: str = "anonymous",
        *,
        lock: bool = True,
        allow_downgrade: frozenset[str] | set[str] = frozenset(),
        guard_idle: bool = True,
    ) -> None:
        if backing not in BACKINGS:
            raise ValueError(f"backing must be one of {BACKINGS}, got {backing!r}")
        unknown = set(allow_downgrade) - DOWNGRADES
        if unknown:
            raise ValueError(f"unknown downgrades {sorted(unknown)}; known: {sorted(DOWNGRADES)}")
        self.backing = backing
        # memfd_secret mappings are locked and excluded from dumps by the kernel itself
        # (VmFlags 'lo dd'); mlock on them fails with ENOMEM.
        self._lock = lock and backing == "anonymous"
        self._allowed = frozenset(allow_downgrade)
        # PROT_NONE between operations; off for scratch arenas that hold only zeros at rest
        self._guard_idle = guard_idle
        self.downgrades: list[str] = []
        self._slabs: dict[int, list[_Slab]] = {}  # stride -> slabs
        self._current: dict[int, _Slab] = {}  # stride -> the slab allocations go to now
        self._page_refs: dict[int, int] = {}  # page address -> slot-level opens holding it
        self._opened = 0
        self._closed = False

    # -- mapping ---------------------------------------------------------------------------
    def _new_slab(self, stride: int) -> _Slab:
        slabs = self._slabs.setdefault(stride, [])
        size = min(MAX_SLAB, FIRST_SLAB << len(slabs))
        size = max(size, _round_up(stride + CANARY, PAGE))
        reserve_size = size + 2 * PAGE
        reserve = native.map_anonymous(reserve_size)  # PROT_NONE: both guard pages stay so
        data = reserve + PAGE
        try:
            if self.backing == "secretmem":
                self._map_secretmem(data, size)
                self._harden(data, size, "dontfork")
            else:
                self._harden(data, size, "wipeonfork")
            native.protect(data, size, writable=self._opened > 0 or not self._guard_idle)
        except BaseException:
            native.unmap(reserve, reserve_size)
            raise
        slab = _Slab(reserve, reserve_size, stride)
        slabs.append(slab)
        return slab

    @staticmethod
    def _map_secretmem(data: int, size: int) -> None:
        fd = native.memfd_secret()
        try:
            os.ftruncate(fd, size)
            native.map_secretmem_fixed(fd, data, size)
        finally:
            os.close(fd)  # the mapping keeps the pages; no fd is left for pidfd_getfd to steal

    def _harden(self, data: int, size: int, fork_advice: str) -> None:
        if self.backing == "anonymous":
            try:
                native.advise(data, size, native.MADV_DONTDUMP)
            except OSError as exc:
                self._refused("dontdump", f"madvise(MADV_DONTDUMP) refused: {exc.strerror}")
        advice = native.MADV_WIPEONFORK if fork_advice == "wipeonfork" else native.MADV_DONTFORK
        try:
            native.advise(data, size, advice)
        except OSError as exc:
            self._refused("wipeonfork", f"madvise({fork_advice}) refused: {exc.strerror}")

    def _refused(self, protection: str, message: str) -> None:
        if protection not in self._allowed:
            raise ProtectionError(
                f"{message}; secrets would lose this protection. Pass "
                f"allow_downgrade={{'{protection}'}} to accept that explicitly."
            )
        if message not in self.downgrades:
            self.downgrades.append(message)

    def _lock_through(self, slab: _Slab, end: int) -> None:
        if not self._lock or end <= slab.locked_upto:
            return
        upto = min(_round_up(end, LOCK_STEP), slab.size)
        start, size = slab.data + slab.locked_upto, upto - slab.locked_upto
        # mlock refuses PROT_NONE ranges (ENOMEM): open the range just for the call
        hidden = self._guard_idle and self._opened == 0
        try:
            if hidden:
                native.protect(start, size, True)
            try:
                native.lock(start, size)
            finally:
                if hidden:
                    native.protect(start, size, False)
                    for page in self._page_refs:  # pages a slot-level open still holds
                        if start <= page < start + size:
                            native.protect(page, PAGE, True)
        except OSError as exc:
            if exc.errno not in (errno.ENOMEM, errno.EPERM, errno.EAGAIN):
                raise
            soft, hard = native.memlock_limit()
            if "mlock" not in self._allowed:
                raise MemlockError(
                    f"mlock of {upto - slab.locked_upto} bytes refused "
                    f"({errno.errorcode[exc.errno]}): RLIMIT_MEMLOCK is {_limit(soft)} "
                    f"(hard {_limit(hard)}) and this arena "
                    f"already locks {self.locked_bytes()} bytes. Raise it: `ulimit -l <KiB>`, "
                    "LimitMEMLOCK= in the systemd unit, a memlock line in "
                    "/etc/security/limits.conf, or grant CAP_IPC_LOCK. Or pass "
                    "allow_downgrade={'mlock'} to accept that secrets may be swapped out."
                ) from None
            self._refused(
                "mlock", f"mlock refused, RLIMIT_MEMLOCK {_limit(soft)}: secrets may be swapped out"
            )
            self._lock = False
            return
        slab.locked_upto = upto

    # -- access ----------------------------------------------------------------------------
    # Between operations the slabs are PROT_NONE. An operation opens only the pages of the
    # slots it touches (mprotect costs per page it changes: opening a whole 64 MiB slab for
    # one 32-byte secret made a seal 10x slower at 1,000,000 secrets). Pages are counted, so
    # overlapping opens (two slots in one page, a reveal spanning other work) nest.
    @contextmanager
    def open(self) -> Iterator[None]:
        """Make every slab accessible for the duration of a block (small arenas only)."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self) -> None:
        if self._closed:
            raise ProtectionError("the arena was closed")
        if self._opened == 0:
            self._set_access(True)
        self._opened += 1

    def release(self) -> None:
        self._opened -= 1
        if self._opened == 0 and not self._closed:
            self._set_access(False)

    def _set_access(self, writable: bool) -> None:
        if not self._guard_idle:
            return
        for slabs in self._slabs.values():
            for slab in slabs:
                native.protect(slab.data, slab.size, writable)
        if not writable:  # pages a slot-level open still holds stay accessible
            for page in self._page_refs:
                native.protect(page, PAGE, True)

    @contextmanager
    def access(self, slot: Slot) -> Iterator[Slot]:
        """The slot's pages (canaries included) accessible for the block."""
        pages = self._pages_of(slot)
        self._open_pages(pages)
        try:
            yield slot
        finally:
            self._close_pages(pages)

    @staticmethod
    def _pages_of(slot: Slot) -> range:
        first = slot.stride_addr // PAGE * PAGE
        last = (slot.stride_addr + slot.slab.stride + CANARY - 1) // PAGE * PAGE
        return range(first, last + PAGE, PAGE)

    def _open_pages(self, pages: range) -> None:
        if self._closed:
            raise ProtectionError("the arena was closed")
        if not self._guard_idle:
            return
        changed = []
        for page in pages:
            count = self._page_refs.get(page, 0)
            if count == 0:
                changed.append(page)
            self._page_refs[page] = count + 1
        if self._opened == 0:
            _protect_runs(changed, True)

    def _close_pages(self, pages: range) -> None:
        if not self._guard_idle or self._closed:
            return
        changed = []
        for page in pages:
            count = self._page_refs[page] - 1
            if count:
                self._page_refs[page] = count
            else:
                del self._page_refs[page]
                changed.append(page)
        if self._opened == 0:
            _protect_runs(changed, False)

    # -- slots -----------------------------------------------------------------------------
    def alloc(self, length: int) -> Slot:
        """A slot of at least `length` bytes, zeroed, its canaries set."""
        if self._closed:
            raise ProtectionError("the arena was closed")
        stride = CANARY + _round_up(max(length, 1), CANARY)
        slab = self._current.get(stride)
        if slab is None or not (slab.free or slab.next < slab.capacity):
            slabs = self._slabs.get(stride, [])
            slab = next((s for s in slabs if s.free or s.next < s.capacity), None)
            if slab is None:
                slab = self._new_slab(stride)
            self._current[stride] = slab
        if slab.free:
            index = slab.free.pop()
        else:
            index = slab.next
            slab.next += 1
            self._lock_through(slab, (index + 1) * stride + CANARY)
        slot = Slot(slab, index, stride - CANARY)
        with self.access(slot):
            ctypes.memmove(slot.stride_addr, slab.canary, CANARY)
            ctypes.memmove(slot.stride_addr + stride, slab.canary, CANARY)
        slot.length = length
        return slot

    def check(self, slot: Slot) -> None:
        """Raise CanaryError if the canary before or after the slot was overwritten."""
        slab = slot.slab
        with self.access(slot):
            before = ctypes.string_at(slot.stride_addr, CANARY)
            after = ctypes.string_at(slot.stride_addr + slab.stride, CANARY)
        if before != slab.canary or after != slab.canary:
            raise CanaryError(
                "a canary next to a secret was overwritten: memory corruption (a buffer "
                "overrun) in this process; the secret is not trustworthy"
            )

    def free(self, slot: Slot) -> None:
        """Check the canaries, zero the payload, return the slot."""
        with self.access(slot):
            try:
                self.check(slot)
            finally:
                ctypes.memset(slot.addr, 0, slot.slab.stride - CANARY)
                slot.slab.free.append(slot.index)

    # -- accounting and teardown -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def locked_bytes(self) -> int:
        return sum(s.locked_upto for slabs in self._slabs.values() for s in slabs)

    def mappings(self) -> int:
        return sum(len(slabs) for slabs in self._slabs.values())

    def close(self) -> None:
        """Zero every slab and unmap it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for slabs in self._slabs.values():
            for slab in slabs:
                native.protect(slab.data, slab.size, writable=True)
                used = min(slab.size, slab.next * slab.stride + CANARY)  # never touched: zero
                ctypes.memset(slab.data, 0, used)
                native.unmap(slab.reserve, slab.reserve_size)
        self._slabs.clear()
        self._current.clear()


def _protect_runs(pages: list[int], writable: bool) -> None:
    """One mprotect per run of adjacent pages (ascending), not one per page."""
    run_start = previous = None
    for page in [*pages, None]:
        if page is not None and previous is not None and page == previous + PAGE:
            previous = page
            continue
        if run_start is not None and previous is not None:
            native.protect(run_start, previous + PAGE - run_start, writable)
        run_start = previous = page


def _limit(value: int) -> str:
    import resource

    return "unlimited" if value == resource.RLIM_INFINITY else f"{value} bytes"
