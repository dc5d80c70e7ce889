"""Attack harnesses: real attempts to recover a secret from a process.

`ATTACKS` maps each attack's name (also its CLI choice) to its class.
"""

from ._base import BLOCKED, ERROR, OK, SKIPPED, Attack, AttackOutcome, attacker_class
from ._proc_mem import ProcMem

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (ProcMem,)}

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
