"""Linux system calls through libc (ctypes): memory mapping and locking, memfd_secret, prctl,
getrandom, the kernel keyring, and SHA-512 from libcrypto straight into a caller's buffer."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import resource
import signal

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
for _name in ("munmap", "mprotect", "mlock", "madvise"):
    getattr(_libc, _name).argtypes = [ctypes.c_void_p, ctypes.c_size_t] + (
        [ctypes.c_int] if _name in ("mprotect", "madvise") else []
    )
_libc.syscall.restype = ctypes.c_long

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PROT_NONE, PROT_READ, PROT_WRITE = 0, 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_FAILED = ctypes.c_void_p(-1).value
MADV_DONTFORK = 10
MADV_DONTDUMP = 16
MADV_WIPEONFORK = 18
SYS_MEMFD_SECRET = 447
SYS_ADD_KEY = 248
SYS_KEYCTL = 250
KEYCTL_READ, KEYCTL_INVALIDATE = 11, 21
KEY_SPEC_PROCESS_KEYRING = -2


def _check(result: int, what: str) -> int:
    """libc and raw syscalls return -1 and set errno on failure."""
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


def disable_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# -- memory ---------------------------------------------------------------------------------
def map_anonymous(size: int) -> int:
    """A private anonymous mapping, PROT_NONE (callers open what they use)."""
    addr = _libc.mmap(None, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if addr in (None, MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap({size}): {os.strerror(err)}")
    return int(addr)


def map_secretmem_fixed(fd: int, addr: int, size: int) -> None:
    """Map a memfd_secret over [addr, addr+size) of a reservation made by map_anonymous."""
    got = _libc.mmap(addr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)
    if got in (None, MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap(memfd_secret {fd}, {size}): {os.strerror(err)}")


def unmap(addr: int, size: int) -> None:
    _check(_libc.munmap(addr, size), "munmap")


def protect(addr: int, size: int, writable: bool) -> None:
    prot = PROT_READ | PROT_WRITE if writable else PROT_NONE
    _check(_libc.mprotect(addr, size, prot), "mprotect")


def lock(addr: int, size: int) -> None:
    _check(_libc.mlock(addr, size), "mlock")


def advise(addr: int, size: int, advice: int) -> None:
    _check(_libc.madvise(addr, size, advice), f"madvise({advice})")


def memfd_secret() -> int:
    """A memfd_secret descriptor; OSError(ENOSYS) where the kernel lacks it."""
    return _check(_libc.syscall(SYS_MEMFD_SECRET, 0), "memfd_secret")


def memlock_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_MEMLOCK)


# -- kernel keyring -------------------------------------------------------------------------
KEYCTL_GET_KEYRING_ID = 0


def keyring_available() -> str | None:
    """None if this process can have a keyring, else why not."""
    ring = _libc.syscall(
        SYS_KEYCTL,
        ctypes.c_int(KEYCTL_GET_KEYRING_ID),
        ctypes.c_int(KEY_SPEC_PROCESS_KEYRING),
        ctypes.c_int(1),
    )
    if ring < 0:
        err = ctypes.get_errno()
        return (
            f"kernel keyring unavailable ({os.strerror(err)}): needs CONFIG_KEYS; "
            "in a container, the seccomp profile may block add_key/keyctl"
        )
    return None


def add_user_key(
    description: bytes, payload_addr: int, length: int, keyring: int = KEY_SPEC_PROCESS_KEYRING
) -> int:
    serial = _libc.syscall(
        SYS_ADD_KEY,
        ctypes.c_char_p(b"user"),
        ctypes.c_char_p(description),
        ctypes.c_void_p(payload_addr),
        ctypes.c_size_t(length),
        ctypes.c_int(keyring),
    )
    return _check(serial, "add_key")


def read_key(serial: int, addr: int, length: int) -> int:
    n = _libc.syscall(
        SYS_KEYCTL,
        ctypes.c_int(KEYCTL_READ),
        ctypes.c_int(serial),
        ctypes.c_void_p(addr),
        ctypes.c_size_t(length),
    )
    return _check(n, f"keyctl(READ, {serial})")


def invalidate_key(serial: int) -> None:
    if _libc.syscall(SYS_KEYCTL, ctypes.c_int(KEYCTL_INVALIDATE), ctypes.c_int(serial)) < 0:
        err = ctypes.get_errno()
        if err not in (errno.ENOKEY, errno.EKEYREVOKED):
            raise OSError(err, f"keyctl(INVALIDATE, {serial}): {os.strerror(err)}")


def af_alg_available() -> bool:
    """Whether the kernel offers AF_ALG (crypto with a keyring key inside the kernel)."""
    import socket

    try:
        sock = socket.socket(38, socket.SOCK_SEQPACKET, 0)  # AF_ALG
    except OSError:
        return False
    sock.close()
    return True


# -- digests into a caller's buffer -------------------------------------------------------
_crypto_name = ctypes.util.find_library("crypto")
_libcrypto = ctypes.CDLL(_crypto_name) if _crypto_name else None
if _libcrypto is not None:
    for _md in ("EVP_sha256", "EVP_sha512"):
        getattr(_libcrypto, _md).restype = ctypes.c_void_p
    _libcrypto.EVP_Digest.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]


def digest_available() -> str | None:
    return None if _libcrypto is not None else "libcrypto not found: apt-get install libssl3"


def digest_into(algorithm: str, data_addr: int, length: int, out_addr: int) -> None:
    """`algorithm` ('sha256', 'sha512') of memory at data_addr, written at out_addr. No Python
    object ever holds the digest (hashlib would return an unwipeable `bytes`)."""
    if _libcrypto is None:
        raise OSError(errno.ENOSYS, digest_available())
    md = getattr(_libcrypto, f"EVP_{algorithm}")()
    if not _libcrypto.EVP_Digest(data_addr, length, out_addr, None, md, None):
        raise OSError(errno.EIO, f"EVP_Digest({algorithm}) failed")
