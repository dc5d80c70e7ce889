"""The Protector interface every design implements, and the shared AEAD blob format.

A design decides where a secret and the bulk key live. The caller sees one API:

    protector = open_design("inproc-aead")
    sealed = protector.seal_fd(fd, length)      # or seal_buffer(bytearray) -> wiped
    with sealed.reveal() as view: use(view)     # view wiped and released on exit
    sealed.destroy()
    blob = protector.encrypt(data); protector.decrypt(blob)
    protector.close()                           # wipes the key
"""

from __future__ import annotations

import os
import struct
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._errors import InputError, MalformedBlobError, SecretDestroyedError, TamperedError
from ._wipe import read_exact_into, wipe

__all__ = ["KEY_BYTES", "Protector", "Sealed"]

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
TAG_BYTES = 16
_MAGIC = b"MCL"
_VERSION = 1
# magic, version, nonce: authenticated as associated data together with the caller's AAD
_HEADER = struct.Struct(f"!3sB{NONCE_BYTES}s")
BLOB_OVERHEAD = _HEADER.size + TAG_BYTES


class Sealed(ABC):
    """A secret held by a design. Reveal it only for as long as it is used."""

    __slots__ = ("__weakref__", "_destroyed", "_length")

    def __init__(self, length: int) -> None:
        self._length = length
        self._destroyed = False

    def __len__(self) -> int:
        return self._length

    @property
    def destroyed(self) -> bool:
        return self._destroyed

    def _check_alive(self) -> None:
        if self._destroyed:
            raise SecretDestroyedError("this secret was destroyed; seal it again to use it")

    @contextmanager
    def reveal(self) -> Iterator[memoryview]:
        """Yield a read-only view of the plaintext; wiped and released when the block ends."""
        self._check_alive()
        with self._revealed() as plaintext:
            view = memoryview(plaintext).cast("B").toreadonly()
            try:
                yield view
            finally:
                view.release()

    def destroy(self) -> None:
        """Wipe what this design holds of the secret. Idempotent."""
        if not self._destroyed:
            self._destroyed = True
            self._wipe_storage()

    @abstractmethod
    def _revealed(self) -> AbstractContextManager[bytes | bytearray | memoryview]:
        """The plaintext in a buffer the design controls, wiped when the context ends."""

    @abstractmethod
    def _wipe_storage(self) -> None: ...


class Protector(ABC):
    """One design's protector. Subclasses set `name`, `summary` and `key_location`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    key_location: ClassVar[str]
    # True where the key lives in another process: its floor is an IPC round trip
    out_of_process: ClassVar[bool] = False
    # True where opening the design hardens the whole process (see open_design)
    hardens_process: ClassVar[bool] = False

    @classmethod
    def supported(cls) -> str | None:
        """None if the design can run here, else the reason and the fix."""
        return None

    def __init__(
        self, *, key_fd: int | None = None, key_buffer: bytearray | memoryview | None = None
    ) -> None:
        if key_fd is not None and key_buffer is not None:
            raise InputError("pass key_fd or key_buffer, not both")
        # weak: a secret the caller dropped needs no tracking (and O(1) per seal at 1M)
        self._sealed: weakref.WeakSet[Sealed] = weakref.WeakSet()
        self._closed = False
        self._load_key(key_fd, key_buffer)

    def notes(self) -> str:
        """What this protector really has here (backing, downgrades, crypto path), for rows."""
        return ""

    # -- key -------------------------------------------------------------------------
    @abstractmethod
    def _load_key(self, key_fd: int | None, key_buffer: bytearray | memoryview | None) -> None:
        """Take the bulk key from a descriptor, a (then wiped) buffer, or make a fresh one."""

    @abstractmethod
    def _cipher(self) -> AbstractContextManager[AESGCM]:
        """The AEAD under the bulk key, for one operation (designs may rebuild and drop it)."""

    @abstractmethod
    def _wipe_key(self) -> None: ...

    # -- secrets ---------------------------------------------------------------------
    def seal_fd(self, fd: int, length: int) -> Sealed:
        """Read exactly `length` secret bytes from `fd` straight into this design's storage."""
        self._check_open()
        if length <= 0:
            raise InputError(f"secret length must be positive, got {length}")
        staging = bytearray(length)
        try:
            read_exact_into(fd, staging)
            return self._track(self._seal_view(memoryview(staging)))
        finally:
            wipe(staging)

    def seal_buffer(self, buffer: bytearray | memoryview) -> Sealed:
        """Seal the bytes in a writable buffer, then wipe the buffer."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise InputError("seal_buffer needs a writable buffer (bytearray) so it can wipe it")
        if not len(view):
            raise InputError("cannot seal an empty secret")
        try:
            return self._track(self._seal_view(view))
        finally:
            wipe(view)
            view.release()

    @abstractmethod
    def _seal_view(self, plaintext: memoryview) -> Sealed: ...

    def _track(self, sealed: Sealed) -> Sealed:
        self._sealed.add(sealed)
        return sealed

    # -- bulk data -------------------------------------------------------------------
    def encrypt(self, data: bytes | bytearray | memoryview, aad: bytes = b"") -> bytearray:
        """AES-256-GCM with a random 96-bit nonce. Returns header || ciphertext || tag."""
        self._check_open()
        src = memoryview(data).cast("B")
        nonce = os.urandom(NONCE_BYTES)
        header = _HEADER.pack(_MAGIC, _VERSION, nonce)
        out = bytearray(len(header) + len(src) + TAG_BYTES)
        out[: len(header)] = header
        with memoryview(out) as body, self._cipher() as aead:
            aead.encrypt_into(nonce, src, header + aad, body[len(header) :])
        return out

    def decrypt(self, blob: bytes | bytearray | memoryview, aad: bytes = b"") -> bytearray:
        """Authenticate and decrypt into a fresh bytearray the caller may wipe."""
        self._check_open()
        src = memoryview(blob).cast("B")
        if len(src) < BLOB_OVERHEAD:
            raise MalformedBlobError(
                f"blob of {len(src)} bytes is shorter than the {BLOB_OVERHEAD}-byte minimum"
            )
        magic, version, nonce = _HEADER.unpack_from(src)
        if magic != _MAGIC:
            raise MalformedBlobError("not a memcryptor-lab blob (bad magic)")
        if version != _VERSION:
            raise MalformedBlobError(f"blob version {version} is not supported (expected 1)")
        out = bytearray(len(src) - BLOB_OVERHEAD)
        try:
            with self._cipher() as aead:
                aead.decrypt_into(nonce, src[_HEADER.size :], bytes(src[: _HEADER.size]) + aad, out)
        except InvalidTag:
            wipe(out)
            raise TamperedError(
                "authentication failed: the blob was modified, or the key or AAD differ"
            ) from None
        return out

    # -- lifetime --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise SecretDestroyedError("this protector was closed and its key wiped")

    def close(self) -> None:
        """Destroy every secret sealed here and wipe the key. Idempotent."""
        if self._closed:
            return
        self._closed = True
        failure: BaseException | None = None
        for sealed in list(self._sealed):
            try:
                sealed.destroy()
            except Exception as exc:  # wipe everything else first, then report
                failure = failure or exc
        self._sealed.clear()
        self._wipe_key()
        if failure is not None:
            raise failure

    def __enter__(self) -> Protector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_key(
    key_fd: int | None, key_buffer: bytearray | memoryview | None, into: bytearray | memoryview
) -> None:
    """Fill `into` (KEY_BYTES long) from a descriptor or buffer; random if neither is given."""
    from ._platform import fill_random

    if key_fd is not None:
        read_exact_into(key_fd, into)
    elif key_buffer is not None:
        view = memoryview(key_buffer).cast("B")
        if len(view) != KEY_BYTES:
            raise InputError(f"key must be {KEY_BYTES} bytes (AES-256), got {len(view)}")
        into[:] = view
        if not view.readonly:
            wipe(view)
        view.release()
    else:
        fill_random(into)
