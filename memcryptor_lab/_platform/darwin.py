"""macOS counterparts (not exercised on the Linux test machines)."""

from __future__ import annotations

import ctypes

_libc = ctypes.CDLL(None, use_errno=True)


def fill_random(buffer: bytearray | memoryview) -> None:
    """arc4random_buf straight into the caller's buffer."""
    view = memoryview(buffer).cast("B")
    c_buf = (ctypes.c_char * len(view)).from_buffer(view)
    _libc.arc4random_buf(c_buf, ctypes.c_size_t(len(view)))
    del c_buf
    view.release()


def die_with_parent(sig: int = 9) -> None:
    """macOS has no PDEATHSIG; the lab's harness reaps its victims itself."""


def set_dumpable(dumpable: bool) -> None:
    """macOS: process protection comes from the hardened runtime, not a syscall."""
    raise NotImplementedError(
        "on macOS, deny debugger attach with the hardened runtime (no get-task-allow)"
    )
