"""python -m attacks.crash_core --pid N --needle-file F   (kills the target)"""

from ._crash_core import CrashCore
from ._front import run_front

if __name__ == "__main__":
    raise SystemExit(run_front(CrashCore))
