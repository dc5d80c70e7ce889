"""The `broker` design: the protector API, with every key in the broker process.

The client holds only blobs (ciphertext). Revealing a secret asks the broker to open its
blob; the plaintext arrives into a locked, no-dump scratch slot that is wiped when the
`with` block ends. Bulk data above the inline limit crosses in a sealed memfd passed with
SCM_RIGHTS, encrypted or decrypted in place by the broker: no plaintext in socket buffers.
"""

from __future__ import annotations

import array
import ctypes
import itertools
import mmap
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._arena import Arena, Slot
from .._errors import (
    InputError,
    MalformedBlobError,
    MemcryptorError,
    TamperedError,
)
from .._platform import IS_LINUX
from .._protector import KEY_BYTES, Protector, Sealed, read_key
from .._wipe import read_exact_into
from .daemon import BLOB_HEADER, BLOB_OVERHEAD, default_socket_path
from .protocol import (
    HEADER,
    MAX_INLINE,
    Code,
    Frame,
    Op,
    ProtocolError,
    Tag,
    encode_frame,
    parse_header,
    parse_payload,
)

_SEALED_AAD = b"memcryptor-lab/sealed-secret/v1"
F_ADD_SEALS = 1033
F_SEAL_SHRINK, F_SEAL_GROW = 0x0002, 0x0004


class BrokerError(MemcryptorError):
    """Base of the broker client's errors."""


class BrokerUnavailableError(BrokerError):
    """No broker answers at the address."""


class PeerRefusedError(BrokerError):
    """The broker refused this process (its uid or executable is not allowed)."""


class WrongScopeError(BrokerError):
    """The blob was sealed under another identity's scope; this identity cannot open it."""


class BrokerRestartedError(BrokerError):
    """The blob was sealed by a broker instance that is gone; its keys were not persisted."""


class KeyExistsError(BrokerError):
    """This identity already has a key in the broker; a key is imported only once."""


_CODE_ERRORS: dict[int, type[MemcryptorError]] = {
    Code.REFUSED: PeerRefusedError,
    Code.TAMPERED: TamperedError,
    Code.WRONG_SCOPE: WrongScopeError,
    Code.UNKNOWN_INSTANCE: BrokerRestartedError,
    Code.NO_KEY: BrokerRestartedError,
    Code.KEY_EXISTS: KeyExistsError,
    Code.MALFORMED: MalformedBlobError,
}


class _Connection:
    def __init__(self, address: str) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = "\0" + address[1:] if address.startswith("@") else address
        try:
            self._sock.connect(target)
        except OSError as exc:
            self._sock.close()
            raise BrokerUnavailableError(
                f"no broker at {address} ({exc.strerror}): start one with "
                f"`memlab broker --socket {address}`, or open the design with autostart=True"
            ) from None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def request(
        self,
        op: Op,
        fields: list[tuple[Tag, bytes | bytearray | memoryview]],
        fds: tuple[int, ...] = (),
        into: Slot | None = None,
    ) -> Frame:
        """One round trip. A reply payload lands in `into` (locked) when given."""
        with self._lock:
            request_id = next(self._ids) & 0xFFFFFFFF
            parts = encode_frame(op, request_id, fields)
            ancillary = (
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            )
            send_error: OSError | None = None
            try:
                sent = self._sock.sendmsg(parts, ancillary)
                total = sum(len(p) for p in parts)
                if sent < total:
                    self._sock.sendall(b"".join(bytes(p) for p in parts)[sent:])
            except (ConnectionError, BrokenPipeError) as exc:
                # A broker that refuses us answers and closes at once, maybe before we
                # wrote: its answer is still in our receive buffer. Read it first.
                send_error = exc
            try:
                header_buf = bytearray(HEADER.size)
                self._recv_exact(memoryview(header_buf))
                header = parse_header(header_buf)
                if into is not None and header.length <= into.length:
                    payload = into.view()[: header.length]
                else:
                    payload = memoryview(bytearray(header.length))
                self._recv_exact(payload)
            except (ConnectionError, BrokenPipeError) as exc:
                raise BrokerUnavailableError(
                    f"the broker at {self.address} went away: {send_error or exc}"
                ) from None
            frame = parse_payload(header, payload, reply=True)
        if frame.op is Op.ERROR:
            code = frame.integer(Tag.CODE)
            message = bytes(frame.fields.get(Tag.MESSAGE, b"")).decode(errors="replace")
            raise _CODE_ERRORS.get(code, BrokerError)(f"broker: {message}")
        if frame.request_id != request_id:
            raise ProtocolError(f"reply to request {frame.request_id}, expected {request_id}")
        return frame

    def _recv_exact(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self._sock.recv_into(view[got:])
            if n == 0:
                raise ConnectionError("connection closed by the broker")
            got += n

    def close(self) -> None:
        self._sock.close()


class _BrokerSealed(Sealed):
    __slots__ = ("_blob", "_owner")

    def __init__(self, owner: BrokerClient, blob: bytes, length: int) -> None:
        super().__init__(length)
        self._owner = owner
        self._blob: bytes | None = blob

    @contextmanager
    def _revealed(self) -> Iterator[memoryview]:
        owner = self._owner
        assert self._blob is not None
        slot = owner._scratch.alloc(self._length + 64)
        try:
            frame = owner._call(
                Op.DECRYPT, [(Tag.BLOB, self._blob), (Tag.AAD, _SEALED_AAD)], into=slot
            )
            with frame.fields[Tag.DATA] as data:
                yield data
        finally:
            owner._scratch.free(slot)  # zeroes the whole reply, field headers included

    def _wipe_storage(self) -> None:
        self._blob = None  # ciphertext: nothing secret to wipe in this process


class BrokerClient(Protector):
    name = "broker"
    summary = "a separate hardened key-holder process does the crypto; data crosses by memfd"
    key_location = "another process: the memlab broker (memfd_secret arena)"
    out_of_process = True

    def __init__(
        self,
        *,
        key_fd: int | None = None,
        key_buffer: bytearray | memoryview | None = None,
        socket_path: str | None = None,
        autostart: bool = False,
        scope: str | None = None,
        inline_limit: int = 16 * 1024,
    ) -> None:
        self.address = socket_path or default_socket_path()
        # Without a scope name each protector has its own key, as in the in-process designs;
        # protectors (or processes of one identity) that name the same scope share one.
        self._scope = scope.encode() if scope is not None else os.urandom(16)
        self._scratch = Arena("anonymous", guard_idle=False)
        self._inline_limit = min(inline_limit, MAX_INLINE)
        self._shared: _SharedBuffer | None = None
        self._broker_process: subprocess.Popen[bytes] | None = None
        try:
            self._conn = _Connection(self.address)
        except BrokerUnavailableError:
            if not autostart:
                raise
            self._broker_process = start_broker(self.address)
            self._conn = _Connection(self.address)
        super().__init__(key_fd=key_fd, key_buffer=key_buffer)

    @classmethod
    def supported(cls) -> str | None:
        if not IS_LINUX:
            return (
                "the broker uses SO_PEERCRED and memfd: Linux only so far (launchd plist shipped)"
            )
        return None

    def _call(
        self,
        op: Op,
        fields: list[tuple[Tag, bytes | bytearray | memoryview]],
        fds: tuple[int, ...] = (),
        into: Slot | None = None,
    ) -> Frame:
        return self._conn.request(op, [*fields, (Tag.SCOPE, self._scope)], fds, into)

    def notes(self) -> str:
        info = self._conn.request(Op.PING, []).fields[Tag.INFO]
        return bytes(info).decode()

    # -- key: the broker's ----------------------------------------------------------------
    def _load_key(self, key_fd: int | None, key_buffer: bytearray | memoryview | None) -> None:
        """With no key given, the broker makes this identity's key and it never comes here.
        A given key is imported once, through locked scratch that is wiped at once."""
        if key_fd is None and key_buffer is None:
            return
        slot = self._scratch.alloc(KEY_BYTES)
        try:
            with slot.view() as view:
                read_key(key_fd, key_buffer, view)
                self._call(Op.IMPORT_KEY, [(Tag.KEY, view)])
        finally:
            self._scratch.free(slot)

    def _cipher(self) -> Iterator[AESGCM]:  # type: ignore[override]
        raise NotImplementedError("the broker design never holds a cipher")

    def _wipe_key(self) -> None:
        self._conn.close()
        self._scratch.close()

    # -- secrets --------------------------------------------------------------------------
    def seal_fd(self, fd: int, length: int) -> Sealed:
        self._check_open()
        if not 0 < length <= MAX_INLINE - 64:
            raise InputError(f"secret length must be 1..{MAX_INLINE - 64}, got {length}")
        slot = self._scratch.alloc(length)
        try:
            with slot.view() as view:
                read_exact_into(fd, view)
                return self._track(self._seal_view(view))
        finally:
            self._scratch.free(slot)

    def _seal_view(self, plaintext: memoryview) -> Sealed:
        frame = self._call(Op.ENCRYPT, [(Tag.DATA, plaintext), (Tag.AAD, _SEALED_AAD)])
        return _BrokerSealed(self, bytes(frame.fields[Tag.BLOB]), len(plaintext))

    # -- bulk data ------------------------------------------------------------------------
    def encrypt(self, data: bytes | bytearray | memoryview, aad: bytes = b"") -> bytearray:
        self._check_open()
        src = memoryview(data).cast("B")
        if len(src) <= self._inline_limit:
            frame = self._call(Op.ENCRYPT, [(Tag.DATA, src), (Tag.AAD, aad)])
            return bytearray(frame.fields[Tag.BLOB])
        shared = self._shared_for(len(src) + BLOB_OVERHEAD)
        shared.view[BLOB_HEADER.size : BLOB_HEADER.size + len(src)] = src
        n = self._shm(Op.ENCRYPT_SHM, len(src), aad, shared)
        return bytearray(shared.view[:n])  # the plaintext there was overwritten in place

    def decrypt(self, blob: bytes | bytearray | memoryview, aad: bytes = b"") -> bytearray:
        self._check_open()
        src = memoryview(blob).cast("B")
        if len(src) < BLOB_OVERHEAD:
            raise MalformedBlobError(f"blob of {len(src)} bytes is shorter than {BLOB_OVERHEAD}")
        if len(src) <= self._inline_limit:
            slot = self._scratch.alloc(len(src) + 64)  # the reply carries plaintext
            try:
                frame = self._call(Op.DECRYPT, [(Tag.BLOB, src), (Tag.AAD, aad)], into=slot)
                return bytearray(frame.fields[Tag.DATA])
            finally:
                self._scratch.free(slot)
        shared = self._shared_for(len(src))
        shared.view[: len(src)] = src
        try:
            n = self._shm(Op.DECRYPT_SHM, len(src), aad, shared)
            return bytearray(shared.view[BLOB_HEADER.size : BLOB_HEADER.size + n])
        finally:
            shared.zero(len(src))  # the plaintext was in shared memory

    def _shared_for(self, size: int) -> _SharedBuffer:
        """One shared buffer per client, replaced by a larger one when needed: a fresh memfd
        per call cost its page faults on both sides every time."""
        if self._shared is None or self._shared.size < size:
            if self._shared is not None:
                self._shared.close()
            grown = 2 * self._shared.size if self._shared is not None else 0
            self._shared = _SharedBuffer(max(size, grown))
        return self._shared

    def _shm(self, op: Op, length: int, aad: bytes, shared: _SharedBuffer) -> int:
        frame = self._call(
            op, [(Tag.LENGTH, length.to_bytes(8, "big")), (Tag.AAD, aad)], fds=(shared.fd,)
        )
        return frame.integer(Tag.LENGTH)

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        if self._shared is not None:
            self._shared.close()
            self._shared = None
        if self._broker_process is not None:
            self._broker_process.terminate()
            self._broker_process.wait(timeout=10)


class _SharedBuffer:
    """A memfd sealed against shrinking and growing, mapped here, handed to the broker."""

    def __init__(self, size: int) -> None:
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        self.size = size
        self.fd = os.memfd_create("memlab-bulk", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, size)
            import fcntl

            fcntl.fcntl(self.fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)
            self._map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self.view = memoryview(self._map)
        self._address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))

    def zero(self, length: int) -> None:
        ctypes.memset(self._address, 0, min(length, self.size))

    def close(self) -> None:
        self.zero(self.size)
        self.view.release()
        self._map.close()
        os.close(self.fd)


def start_broker(
    address: str,
    *,
    identity: str = "uid",
    allow_uids: tuple[int, ...] = (),
    timeout: float = 10.0,
    tied: bool = False,
    allow_exes: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start `memlab broker` for this uid and wait until it listens. `tied`: it dies with
    us (the lab's brokers); otherwise it outlives the client that started it."""
    uids = allow_uids or (os.geteuid(),)
    command = [
        sys.executable,
        "-m",
        "memcryptor_lab",
        "broker",
        "--socket",
        address,
        "--identity",
        identity,
        *itertools.chain.from_iterable(("--allow-uid", str(u)) for u in uids),
    ]
    for exe in allow_exes:
        command += ["--allow-exe", exe]
    from .._platform import die_with_parent

    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=not tied,
        preexec_fn=die_with_parent if tied else None,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    if not line.startswith(b"ready"):
        proc.kill()
        proc.wait()
        raise BrokerUnavailableError(f"the broker did not start (said {line!r})")
    while time.monotonic() < deadline:
        if address.startswith("@") or Path(address).exists():
            return proc
        time.sleep(0.01)
    proc.kill()
    raise BrokerUnavailableError(f"the broker did not listen on {address} in {timeout} s")


__all__ = [
    "BrokerClient",
    "BrokerError",
    "BrokerRestartedError",
    "BrokerUnavailableError",
    "KeyExistsError",
    "PeerRefusedError",
    "WrongScopeError",
    "start_broker",
]
