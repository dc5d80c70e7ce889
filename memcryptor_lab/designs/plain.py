"""`plain`: what naive code does. The baseline every other design is measured against.

The secret is read with `os.read` and kept as an ordinary `str` (or `bytes` when it is not
text); the bulk key is an ordinary `bytes`. Nothing is ever wiped: `reveal` yields a view of
a fresh `bytes` from `str.encode`, and `destroy` only drops references. Copies remain
wherever CPython and the allocator left them, which is exactly what the lab measures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._errors import InputError
from .._protector import KEY_BYTES, Protector, Sealed


class _PlainSealed(Sealed):
    def __init__(self, value: str | bytes, length: int) -> None:
        super().__init__(length)
        self._value: str | bytes | None = value

    @contextmanager
    def _revealed(self) -> Iterator[bytes]:
        assert self._value is not None
        yield self._value.encode() if isinstance(self._value, str) else self._value

    def _wipe_storage(self) -> None:
        self._value = None  # immutable objects cannot be wiped; the bytes stay until reused


def _as_naive_value(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


class Plain(Protector):
    name = "plain"
    summary = "secret as an ordinary str/bytes, key as bytes: what naive code does"
    key_location = "ordinary process memory (immutable bytes, never wiped)"

    def _load_key(self, key_fd, key_buffer) -> None:  # type: ignore[no-untyped-def]
        if key_fd is not None:
            key = os.read(key_fd, KEY_BYTES)
        elif key_buffer is not None:
            key = bytes(key_buffer)
        else:
            key = AESGCM.generate_key(bit_length=256)
        if len(key) != KEY_BYTES:
            raise InputError(f"key must be {KEY_BYTES} bytes (AES-256), got {len(key)}")
        self._key: bytes | None = key
        self._aesgcm = AESGCM(key)

    @contextmanager
    def _cipher(self) -> Iterator[AESGCM]:
        yield self._aesgcm

    def _wipe_key(self) -> None:
        self._key = None

    def seal_fd(self, fd: int, length: int) -> Sealed:
        self._check_open()
        data = b""
        while len(data) < length:  # naive: every read makes a new bytes object
            chunk = os.read(fd, length - len(data))
            if not chunk:
                raise InputError(f"descriptor {fd} closed after {len(data)} of {length} bytes")
            data += chunk
        return self._track(_PlainSealed(_as_naive_value(data), length))

    def _seal_view(self, plaintext: memoryview) -> Sealed:
        return _PlainSealed(_as_naive_value(plaintext.tobytes()), len(plaintext))
