"""Named errors. Each says what went wrong and what to do; none carries secret bytes."""

from __future__ import annotations

__all__ = [
    "CanaryError",
    "DesignUnsupportedError",
    "InputError",
    "MalformedBlobError",
    "MemcryptorError",
    "MemlockError",
    "ProtectionError",
    "SecretDestroyedError",
    "TamperedError",
]


class MemcryptorError(Exception):
    """Base class of every error this library raises on purpose."""


class DesignUnsupportedError(MemcryptorError):
    """The design cannot run on this machine; the message says why and how to fix it."""


class InputError(MemcryptorError, ValueError):
    """A caller-supplied argument is unusable (wrong key length, short read, ...)."""


class TamperedError(MemcryptorError):
    """Authentication failed: the ciphertext was modified, or the key or AAD is wrong.

    Nothing was decrypted; no partial plaintext exists.
    """


class MalformedBlobError(MemcryptorError, ValueError):
    """A ciphertext blob is not in this library's format (truncated, unknown version)."""


class SecretDestroyedError(MemcryptorError):
    """The sealed secret was destroyed; it can no longer be revealed."""


class ProtectionError(MemcryptorError):
    """The kernel refused a memory protection (madvise, mprotect); nothing was downgraded."""


class MemlockError(ProtectionError):
    """mlock was refused, usually because RLIMIT_MEMLOCK is exhausted; the message gives the
    limit and how to raise it. Nothing was downgraded."""


class CanaryError(MemcryptorError):
    """A canary next to a secret was overwritten: memory corruption in this process."""
