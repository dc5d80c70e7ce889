"""The explicit registry of designs: name -> class. A name is also the CLI choice."""

from __future__ import annotations

from typing import Any

from ._errors import DesignUnsupportedError
from ._protector import Protector
from .broker.client import BrokerClient
from .designs.hardened import Hardened, Keyring, SecretMem
from .designs.inproc_aead import InprocAead
from .designs.plain import Plain

DESIGNS: dict[str, type[Protector]] = {
    cls.name: cls for cls in (Plain, InprocAead, Hardened, SecretMem, Keyring, BrokerClient)
}


def open_design(
    name: str,
    *,
    key_fd: int | None = None,
    key_buffer: bytearray | memoryview | None = None,
    harden_process: bool = True,
    **options: Any,
) -> Protector:
    """Create a protector of the named design, or raise a named error saying why not.

    `options` go to the design: the arena designs take `allow_downgrade` (a set of
    'mlock', 'dontdump', 'wipeonfork'); `broker` takes `socket_path`, `autostart`, `scope`.
    `harden_process=False` skips PR_SET_DUMPABLE 0 and RLIMIT_CORE 0 where a design applies
    them: they are process-wide and inherited by children (a hard RLIMIT_CORE 0 cannot be
    raised again without CAP_SYS_RESOURCE), so harnesses and test runners pass False.
    """
    try:
        cls = DESIGNS[name]
    except KeyError:
        raise DesignUnsupportedError(
            f"unknown design {name!r}; known designs: {', '.join(DESIGNS)}"
        ) from None
    reason = cls.supported()
    if reason is not None:
        raise DesignUnsupportedError(f"design {name!r} cannot run here: {reason}")
    if cls.hardens_process:
        options["harden_process"] = harden_process
    return cls(key_fd=key_fd, key_buffer=key_buffer, **options)
