"""Read a live process with process_vm_readv(2): the syscall debuggers and aes-finder use.

It needs ptrace access to the target (root, or the same uid on a dumpable process), and it
cannot reach pages that are not in the kernel's direct map (memfd_secret): EFAULT, counted.
"""

from __future__ import annotations

import ctypes
import errno
import os

from .proc_mem import ProcessGoneError, ProcMemSource


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.process_vm_readv.argtypes = [
    ctypes.c_int,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.process_vm_readv.restype = ctypes.c_ssize_t


class VmReadvSource(ProcMemSource):
    name = "vm-readv"

    def _open(self) -> int:
        # Fail early, and the same way /proc/PID/mem would, when we may not read at all.
        probe = _IoVec(None, 0)
        if _libc.process_vm_readv(self.pid, ctypes.byref(probe), 1, ctypes.byref(probe), 1, 0) < 0:
            err = ctypes.get_errno()
            if err == errno.ESRCH:
                raise ProcessGoneError(f"process {self.pid} does not exist")
            if err in (errno.EPERM, errno.EACCES):
                raise PermissionError(err, os.strerror(err), f"process_vm_readv({self.pid})")
        return self.pid

    def _close(self, handle: int) -> None:
        pass

    def _read_at(self, handle: int, target: memoryview, address: int) -> int:
        local = _IoVec(ctypes.addressof(ctypes.c_char.from_buffer(target)), len(target))
        remote = _IoVec(address, len(target))
        got = _libc.process_vm_readv(handle, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(got)
