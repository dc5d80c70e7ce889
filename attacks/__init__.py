"""Attack harnesses: real attempts to recover a secret from a process.

`ATTACKS` maps each attack's name (also its CLI choice) to its class.
"""

from ._base import BLOCKED, ERROR, OK, SKIPPED, Attack, AttackOutcome, attacker_class
from ._crash_core import CrashCore
from ._gcore import Gcore, GcoreAll
from ._inject import Inject, InjectApi
from ._lldb import Lldb, LldbCore
from ._proc_mem import ProcMem, VmReadv
from ._swap import Swap

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (
        ProcMem,
        VmReadv,
        Gcore,
        GcoreAll,
        Lldb,
        LldbCore,
        CrashCore,
        Swap,
        Inject,
        InjectApi,
    )
}

__all__ = [
    "ATTACKS",
    "BLOCKED",
    "ERROR",
    "OK",
    "SKIPPED",
    "Attack",
    "AttackOutcome",
    "attacker_class",
]
