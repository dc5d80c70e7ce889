"""A lab swap file: made, switched on with the highest priority, and always taken down.

`lab_swap(workdir, size)` writes a zero-filled swap file in a private 0700 directory,
switches zswap off if it was on (compressed pages would stay in RAM and never reach the
file), and switches the file on with priority 32767 so freshly pushed-out pages land in
it. On exit: swapoff (which pulls any pages still swapped back into RAM), the file and its
directory are deleted and zswap is put back.

The file is written with zeros, not fallocate'd: the kernel writes swap pages straight to
the disk blocks behind the file, so an unwritten (fallocate'd) extent still reads back as
zeros through the filesystem, even with O_DIRECT; measured here: the secret in the swap
file was invisible to a reader until the file was zero-filled first.

What must be undone (the file, its directory, zswap's value) is saved to a file under the
system temp dir before anything changes, so a harness killed with SIGKILL is repaired by
the next run (`restore_swap_state`). A lock file serialises lab swaps: a repair never
touches the swap of a run that is still alive (the kernel drops a dead holder's lock).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import mmap
import os
import signal
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .sources import PAGE
from .sources.swap import pagemap_entries, read_direct, swap_entry

STATE_FILE = Path(tempfile.gettempdir()) / "memlab-swap.saved"
LOCK_FILE = Path(tempfile.gettempdir()) / "memlab-swap.lock"
ZSWAP = Path("/sys/module/zswap/parameters/enabled")
PROC_SWAPS = Path("/proc/swaps")
PRIORITY = 32767  # the highest swapon accepts
MIN_BYTES = 16 << 20
MAX_BYTES = 4 << 30
KEEP_FREE_BYTES = 512 << 20  # never fill the disk to make a swap file
_SWAP_FLAG_PREFER = 0x8000
_WRITE_BYTES = 4 << 20
_MADV_PAGEOUT = 21
# filesystems whose swap-file support needs nothing special (btrfs needs NOCOW files,
# tmpfs and overlayfs take none): ext2/3/4, xfs, f2fs
_SWAPFILE_FS = {0xEF53: "ext4", 0x58465342: "xfs", 0xF2F52010: "f2fs"}
_FALLBACK_DIRS = ("/var/tmp", "/var/lib", "/root", "/")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.swapon.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.swapoff.argtypes = [ctypes.c_char_p]
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]


class SwapUnavailableError(RuntimeError):
    """No lab swap can be made here; the message says why and how to fix it."""


class SwapCleanupError(RuntimeError):
    """The lab swap could not be fully taken down; the saved state lets the next run retry."""


@dataclass(slots=True)
class LabSwap:
    path: Path
    size: int
    priority: int
    swap_type: int  # the kernel's index for this file, as /proc/PID/pagemap reports it
    zswap_before: str | None  # 'Y', 'N', or None when zswap is not in this kernel
    others: list[str] = field(default_factory=list)  # other active swap areas
    note: str = ""  # where the file went and why, when not in the work directory

    def describe(self) -> str:
        zswap = {None: "absent", "N": "off"}.get(self.zswap_before, "turned off for the run")
        others = f"other swap active: {', '.join(self.others)}" if self.others else "no other swap"
        return (
            f"swap file {self.size >> 20} MiB, priority {self.priority}, {others}, "
            f"zswap {zswap}" + (f"; {self.note}" if self.note else "")
        )


def active_swaps() -> list[tuple[str, int]]:
    """(path, priority) of every active swap area."""
    swaps = []
    for line in PROC_SWAPS.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            # /proc/swaps escapes blanks in names as \040
            path = fields[0].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            swaps.append((path, int(fields[4])))
    return swaps


def swap_permitted() -> bool:
    """swapoff checks CAP_SYS_ADMIN before the path: EPERM means we may not, ENOENT we may."""
    probe = Path(tempfile.gettempdir()) / "memlab-swap-probe-does-not-exist"
    if _libc.swapoff(bytes(probe)) == 0:
        return True  # cannot happen: nothing is there
    return ctypes.get_errno() != errno.EPERM


def zswap_state() -> str | None:
    try:
        return ZSWAP.read_text().strip()
    except OSError:
        return None


def _fs_type(path: Path) -> int:
    buffer = ctypes.create_string_buffer(256)  # struct statfs: f_type is the first field
    if _libc.statfs(bytes(path), buffer) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return int(struct.unpack_from("l", buffer.raw)[0])


def _free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def _pick_directory(workdir: Path, size: int) -> tuple[Path, str]:
    """A directory on a filesystem that takes swap files, with room for `size` bytes."""
    tried = []
    for candidate in (workdir, *map(Path, _FALLBACK_DIRS)):
        try:
            kind = _fs_type(candidate)
            room = _free_bytes(candidate)
        except OSError:
            continue
        if kind not in _SWAPFILE_FS:
            tried.append(f"{candidate} (filesystem 0x{kind:x})")
            continue
        if room < size + KEEP_FREE_BYTES:
            tried.append(f"{candidate} ({room >> 20} MiB free)")
            continue
        if candidate == workdir:
            return Path(tempfile.mkdtemp(prefix="memlab-swap-", dir=workdir)), ""
        if not os.access(candidate, os.W_OK):
            tried.append(f"{candidate} (not writable)")
            continue
        made = Path(tempfile.mkdtemp(prefix="memlab-swap-", dir=candidate))
        why = "; ".join(tried)
        return made, f"swap file in {made} (the work directory cannot hold one: {why})"
    raise SwapUnavailableError(
        f"no directory here can hold a {size >> 20} MiB swap file: {'; '.join(tried)}; "
        "free some space on an ext4/xfs filesystem (e.g. /var/tmp)"
    )


# --- saved state, lock -------------------------------------------------------------------


def _save(state: dict[str, object]) -> None:
    scratch = STATE_FILE.with_suffix(".tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, STATE_FILE)


@contextlib.contextmanager
def _locked(blocking: bool) -> Iterator[bool]:
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _teardown(state: dict[str, object]) -> list[str]:
    """Undo what `state` records; what was done. SwapCleanupError (state kept) if stuck."""
    done: list[str] = []
    stuck = ""
    path = state.get("path")
    if isinstance(path, str):
        if any(os.path.realpath(p) == os.path.realpath(path) for p, _ in active_swaps()):
            if _libc.swapoff(path.encode()) == 0:
                done.append("swapoff")
            else:
                err = ctypes.get_errno()
                stuck = (
                    f"swapoff of the lab swap file failed ({errno.errorcode.get(err, err)}: "
                    f"{os.strerror(err)}); free memory, then run: swapoff {path} && rm {path}"
                )
        if not stuck:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                done.append("swap file deleted")
            directory = state.get("dir")
            if isinstance(directory, str):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(directory)
    before = state.get("zswap")
    if isinstance(before, str) and zswap_state() not in (None, before):
        ZSWAP.write_text(before)
        done.append(f"zswap back to {before}")
    if stuck:
        _save({k: v for k, v in state.items() if k != "zswap"})  # the next run retries
        raise SwapCleanupError(stuck)
    STATE_FILE.unlink(missing_ok=True)
    return done


def _restore_locked() -> str | None:
    try:
        state = json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        STATE_FILE.unlink()  # torn write before anything changed: nothing to undo
        return "unreadable state file removed"
    return ", ".join(_teardown(state)) or "nothing left to undo"


def restore_swap_state() -> str | None:
    """Undo a lab swap a killed harness left behind (swapoff, delete, zswap back).

    Returns what was done, or None when there was nothing to do or a live run owns it."""
    if not STATE_FILE.exists():
        return None
    with _locked(blocking=False) as mine:
        return _restore_locked() if mine else None


# --- signals -----------------------------------------------------------------------------


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while the swap is on, so `finally` takes it down.
    A handler someone installed already (the lab's) is left alone."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the swap is taken down: half a teardown is worse."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# --- making the file ---------------------------------------------------------------------


def _header(pages: int) -> bytes:
    """Page 0 of a swap area (union swap_header in include/linux/swap.h), as mkswap writes:
    version 1, last_page, no bad pages, and the SWAPSPACE2 magic at the end of the page."""
    page = bytearray(PAGE)
    struct.pack_into("<III", page, 1024, 1, pages - 1, 0)
    page[PAGE - 10 :] = b"SWAPSPACE2"
    return bytes(page)


def _write_swap_file(path: Path, size: int) -> None:
    """Zeros (through O_DIRECT: no page-cache copy to flush later), then the header."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT | os.O_CLOEXEC, 0o600)
    buffer = mmap.mmap(-1, _WRITE_BYTES)  # page-aligned, as O_DIRECT wants; zero-filled
    try:
        os.fchmod(fd, 0o600)
        done = 0
        while done < size:
            want = min(_WRITE_BYTES, size - done)
            done += os.pwritev(fd, [memoryview(buffer)[:want]], done)
        buffer[:PAGE] = _header(size // PAGE)
        os.pwritev(fd, [memoryview(buffer)[:PAGE]], 0)
        os.fsync(fd)
    finally:
        buffer.close()
        os.close(fd)


def writeback_settled(timeout_s: float = 10.0) -> bool:
    """Wait until no page is under writeback (swap writes are asynchronous: a slot read
    before its write completes reads as the old bytes). False if it did not settle."""
    deadline = time.monotonic() + timeout_s
    while True:
        with open("/proc/meminfo") as meminfo:
            line = next(x for x in meminfo if x.startswith("Writeback:"))
        if int(line.split()[1]) == 0:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def _probe_swap_type(path: Path) -> int:
    """Push one page of our own out and find it in the file: the kernel's type number for
    the file, and proof that what reaches swap can be read back from it."""
    for _ in range(5):
        page = mmap.mmap(-1, PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            page[:] = os.urandom(PAGE)  # not zeros: zero pages are only flagged, not written
            expected = bytes(page)
            pointer = ctypes.c_char.from_buffer(page)
            address = ctypes.addressof(pointer)
            del pointer
            page.madvise(_MADV_PAGEOUT)
            found = swap_entry(pagemap_entries("self", address // PAGE, 1)[0])
            if found is None:
                continue
            swap_type, slot = found
            writeback_settled()
            if read_direct(path, slot * PAGE, PAGE) == expected:
                return swap_type
        finally:
            page.close()
    raise SwapUnavailableError(
        "a page pushed to the lab swap file could not be found in it (another swap area "
        "with priority 32767, or the file full?): check `swapon --show`"
    )


@contextlib.contextmanager
def lab_swap(workdir: Path | None, size: int) -> Iterator[LabSwap]:
    """A swap file of about `size` bytes that receives the pages pushed out while it is on."""
    size = max(MIN_BYTES, min(MAX_BYTES, -(-size // (1 << 20)) << 20))
    base = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    if not swap_permitted():
        raise SwapUnavailableError(
            "swapon is not permitted (EPERM: no CAP_SYS_ADMIN in the initial user namespace, "
            "e.g. a container): run on a host or VM as root"
        )
    with _locked(blocking=True), _terminate_as_interrupt():
        _restore_locked()  # what a killed run left behind
        others = [f"{p} (priority {prio})" for p, prio in active_swaps()]
        zswap_before = zswap_state()
        state: dict[str, object] = {"zswap": zswap_before, "pid": os.getpid()}
        try:
            directory, note = _pick_directory(base, size)
            os.chmod(directory, 0o700)
            path = directory / "swapfile"
            state.update(dir=str(directory), path=str(path))
            _save(state)
            try:
                _write_swap_file(path, size)
            except OSError as exc:
                raise SwapUnavailableError(
                    f"writing the {size >> 20} MiB swap file in {directory} failed "
                    f"({exc.strerror}): free space there, or point TMPDIR at an ext4/xfs "
                    "directory with room"
                ) from None
            if zswap_before == "Y":
                try:
                    ZSWAP.write_text("N")
                except OSError as exc:
                    raise SwapUnavailableError(
                        f"zswap is on and cannot be turned off ({exc.strerror}): pages would "
                        f"stay compressed in RAM; run: echo N > {ZSWAP}"
                    ) from None
            if _libc.swapon(bytes(path), _SWAP_FLAG_PREFER | PRIORITY) != 0:
                err = ctypes.get_errno()
                raise SwapUnavailableError(
                    f"swapon {path} failed ({errno.errorcode.get(err, err)}: {os.strerror(err)})"
                )
            swap = LabSwap(path, size, PRIORITY, -1, zswap_before, others, note)
            swap.swap_type = _probe_swap_type(path)
            yield swap
        finally:
            with _signals_held():
                _teardown(state)
