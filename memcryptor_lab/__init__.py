"""memcryptor-lab: keep a process's secrets out of dumps, debuggers, cores and swap.

The public API is what `__all__` lists; every other module is private.
"""

from __future__ import annotations

from ._errors import (
    CanaryError,
    DesignUnsupportedError,
    InputError,
    MalformedBlobError,
    MemcryptorError,
    MemlockError,
    ProtectionError,
    SecretDestroyedError,
    TamperedError,
)
from ._protector import KEY_BYTES, Protector, Sealed
from ._registry import DESIGNS, open_design
from ._wipe import wipe

__version__ = "0.1.0"

__all__ = [
    "DESIGNS",
    "KEY_BYTES",
    "CanaryError",
    "DesignUnsupportedError",
    "InputError",
    "MalformedBlobError",
    "MemcryptorError",
    "MemlockError",
    "ProtectionError",
    "Protector",
    "Sealed",
    "SecretDestroyedError",
    "TamperedError",
    "__version__",
    "open_design",
    "wipe",
]
