"""Baselines measured in the same run as the designs: the ceiling and floors they compare to.

- `aes-gcm`: cryptography's AESGCM in this process, the ceiling for an in-process design;
- `memcpy`: copying the payload into a preallocated buffer, the physical floor;
- `unix-echo`: a round trip through a Unix socket to another process that echoes it, the
  floor for any out-of-process design.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def aesgcm_ops(payload: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    blob = aead.encrypt(nonce, payload, b"")
    return (lambda: aead.encrypt(nonce, payload, b"")), (lambda: aead.decrypt(nonce, blob, b""))


def memcpy_op(payload: bytes) -> Callable[[], object]:
    target = bytearray(len(payload))

    def copy() -> None:
        target[:] = payload

    return copy


@contextmanager
def echo_peer() -> Iterator[socket.socket]:
    """A forked process that echoes whatever arrives on a Unix stream socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ours.close()
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        try:
            while True:
                n = theirs.recv_into(view)
                if not n:
                    break
                theirs.sendall(view[:n])
        finally:
            os._exit(0)
    theirs.close()
    try:
        yield ours
    finally:
        ours.close()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        except KeyboardInterrupt:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise


def echo_op(sock: socket.socket, payload: bytes) -> Callable[[], object]:
    received = bytearray(len(payload))
    view = memoryview(received)

    def round_trip() -> None:
        sock.sendall(payload)
        got = 0
        while got < len(payload):
            got += sock.recv_into(view[got:])

    return round_trip
