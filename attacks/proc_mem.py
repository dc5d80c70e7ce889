"""python -m attacks.proc_mem --pid N --needle-file F [--key-file K] [--json]"""

from ._front import run_front
from ._proc_mem import ProcMem

if __name__ == "__main__":
    raise SystemExit(run_front(ProcMem))
