"""`inproc-aead`: AES-256-GCM with the key in ordinary process memory next to the ciphertext.

This is what Keychain or CryptoKit `dataRepresentation` leave a process with: the secret
is encrypted at rest, but anyone who can read the process reads the key too. Plaintext
exists only in wipeable buffers (readv straight in, decrypt_into straight out).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._errors import TamperedError
from .._protector import KEY_BYTES, NONCE_BYTES, TAG_BYTES, Protector, Sealed, read_key
from .._wipe import wipe

# Domain separation: a sealed secret can never be passed off as a bulk blob or vice versa.
_SEALED_AAD = b"memcryptor-lab/sealed-secret/v1"


class _AeadSealed(Sealed):
    def __init__(self, owner: InprocAead, nonce: bytes, ciphertext: bytearray, length: int):
        super().__init__(length)
        self._owner = owner
        self._nonce = nonce
        self._ciphertext = ciphertext

    @contextmanager
    def _revealed(self) -> Iterator[bytearray]:
        plaintext = bytearray(self._length)
        try:
            try:
                self._owner._aesgcm.decrypt_into(
                    self._nonce, self._ciphertext, _SEALED_AAD, plaintext
                )
            except InvalidTag:
                raise TamperedError("sealed secret failed authentication") from None
            yield plaintext
        finally:
            wipe(plaintext)

    def _wipe_storage(self) -> None:
        wipe(self._ciphertext)


class InprocAead(Protector):
    name = "inproc-aead"
    summary = "AES-256-GCM, key in ordinary process memory next to the ciphertext"
    key_location = "ordinary process memory (bytearray, wiped on close)"

    def _load_key(self, key_fd, key_buffer) -> None:  # type: ignore[no-untyped-def]
        self._key = bytearray(KEY_BYTES)
        read_key(key_fd, key_buffer, self._key)
        self._aesgcm = AESGCM(self._key)

    @contextmanager
    def _cipher(self) -> Iterator[AESGCM]:
        yield self._aesgcm

    def _wipe_key(self) -> None:
        wipe(self._key)
        self._aesgcm = AESGCM(bytes(KEY_BYTES))  # drop the OpenSSL context holding the schedule

    def _seal_view(self, plaintext: memoryview) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = bytearray(len(plaintext) + TAG_BYTES)
        self._aesgcm.encrypt_into(nonce, plaintext, _SEALED_AAD, ciphertext)
        return _AeadSealed(self, nonce, ciphertext, len(plaintext))
