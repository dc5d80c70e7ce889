"""Linux system calls through libc (ctypes): prctl and getrandom."""

from __future__ import annotations

import ctypes
import os
import signal

_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def fill_random(buffer: bytearray | memoryview) -> None:
    """Fill a writable buffer from the kernel CSPRNG, without an intermediate `bytes`."""
    view = memoryview(buffer).cast("B")
    c_buf = (ctypes.c_char * len(view)).from_buffer(view)
    done = 0
    while done < len(view):
        n = _check(
            _libc.getrandom(ctypes.byref(c_buf, done), ctypes.c_size_t(len(view) - done), 0),
            "getrandom",
        )
        done += n
    del c_buf
    view.release()


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to signal us when our parent dies, so a victim is never orphaned."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_dumpable(dumpable: bool) -> None:
    """PR_SET_DUMPABLE: 0 makes /proc/PID root-owned, refuses same-uid ptrace, no cores."""
    _check(_libc.prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
