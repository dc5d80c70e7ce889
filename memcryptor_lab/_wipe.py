"""Filling buffers with zeros, and reading from a descriptor straight into a buffer."""

from __future__ import annotations

import ctypes
import os

from ._errors import InputError


def wipe(buffer: bytearray | memoryview) -> None:
    """Overwrite a writable buffer with zeros in place (no temporary copies)."""
    view = memoryview(buffer).cast("B")
    if view.readonly:
        raise TypeError("cannot wipe a read-only buffer")
    if len(view):
        ctypes.memset((ctypes.c_char * len(view)).from_buffer(view), 0, len(view))
    view.release()


def read_exact_into(fd: int, target: bytearray | memoryview) -> None:
    """Fill `target` from `fd` with readv, so the bytes go from the kernel straight into it.

    `os.read` would return a fresh `bytes` object: an unwipeable copy of the secret.
    """
    view = memoryview(target).cast("B")
    done = 0
    try:
        while done < len(view):
            n = os.readv(fd, [view[done:]])
            if n == 0:
                raise InputError(
                    f"descriptor {fd} closed after {done} of {len(view)} bytes; "
                    "send the full secret before closing the writer"
                )
            done += n
    finally:
        view.release()
