"""python -m attacks.vm_readv --pid N --needle-file F [--key-file K] [--json]"""

from ._front import run_front
from ._proc_mem import VmReadv

if __name__ == "__main__":
    raise SystemExit(run_front(VmReadv))
